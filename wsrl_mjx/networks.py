"""The actor and the critic of WSRL, and how an ensemble of critics is held.

Both are MLPs of Dense -> LayerNorm -> ReLU hidden layers with orthogonal initialisation (scale
sqrt 2, the last hidden layer 1e-2), as in the WSRL reference. The critic ensemble is not an
`nn.vmap` module: critics are one `Critic` whose parameters carry a leading ensemble axis and are
applied with `jax.vmap`, so that the target can be evaluated on just the 2 drawn critics.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Matmul settings by name: (compute dtype, lax precision). Parameters are always float32.
PRECISIONS = {
    "default": (jnp.float32, None),
    "high": (jnp.float32, jax.lax.Precision.HIGH),
    "highest": (jnp.float32, jax.lax.Precision.HIGHEST),
    "bfloat16": (jnp.bfloat16, None),
}
STD_MIN, STD_MAX = 1e-5, 10.0


class MLP(nn.Module):
  hidden_sizes: Sequence[int]
  layer_norm: bool = True
  last_hidden_init_scale: float = 1e-2
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    for i, size in enumerate(self.hidden_sizes):
      last = i == len(self.hidden_sizes) - 1
      scale = self.last_hidden_init_scale if last else math.sqrt(2.0)
      x = nn.Dense(size, kernel_init=nn.initializers.orthogonal(scale), dtype=self.dtype,
                   precision=self.precision)(x)
      if self.layer_norm:
        x = nn.LayerNorm(dtype=self.dtype)(x)
      x = nn.relu(x)
    return x


class Critic(nn.Module):
  """Q(s, a) -> [...] (one critic; ensembles stack its parameters)."""
  hidden_sizes: Sequence[int]
  layer_norm: bool = True
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, observation, action):
    x = jnp.concatenate([observation, action], axis=-1)
    x = MLP(self.hidden_sizes, self.layer_norm, dtype=self.dtype, precision=self.precision)(x)
    q = nn.Dense(1, kernel_init=nn.initializers.orthogonal(math.sqrt(2.0)),
                 precision=self.precision)(x.astype(jnp.float32))
    return q[..., 0]


class TanhGaussianActor(nn.Module):
  """pi(a|s): returns the Gaussian (mean, std) before the tanh squashing, in float32.

  `state_dependent_std=False` learns one log-std vector (the AntMaze setting in WSRL).
  """
  action_size: int
  hidden_sizes: Sequence[int]
  state_dependent_std: bool = True
  layer_norm: bool = True
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, observation):
    x = MLP(self.hidden_sizes, self.layer_norm, dtype=self.dtype,
            precision=self.precision)(observation).astype(jnp.float32)
    init = nn.initializers.orthogonal(math.sqrt(2.0))
    mean = nn.Dense(self.action_size, kernel_init=init, name="mean",
                    precision=self.precision)(x)
    if self.state_dependent_std:
      log_std = nn.Dense(self.action_size, kernel_init=init, name="log_std",
                         precision=self.precision)(x)
    else:
      log_std = jnp.broadcast_to(
          self.param("log_std", nn.initializers.zeros, (self.action_size,)), mean.shape)
    std = jnp.clip(jnp.exp(log_std), STD_MIN, STD_MAX)
    return mean, std


def init_ensemble(module: nn.Module, key: jax.Array, size: int, *example_inputs):
  """Parameters of `size` independently initialised copies of `module`, stacked on axis 0.

  A sequential `lax.map`, not `vmap`: it runs once, and batched QR decompositions (orthogonal
  init) from several members at once can deadlock XLA's CPU backend.
  """
  return jax.lax.map(lambda k: module.init(k, *example_inputs), jax.random.split(key, size))


def apply_ensemble(module: nn.Module, params, *inputs):
  """Every member of a stacked ensemble on the same inputs -> [members, ...]."""
  return jax.vmap(lambda p: module.apply(p, *inputs))(params)

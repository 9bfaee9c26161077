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

from wsrl_mjx import compat

# Matmul settings by name: (compute dtype, lax precision). Parameters are always float32.
PRECISIONS = {
    "default": (jnp.float32, None),
    "high": (jnp.float32, jax.lax.Precision.HIGH),
    "highest": (jnp.float32, jax.lax.Precision.HIGHEST),
    "bfloat16": (jnp.bfloat16, None),
}
STD_MIN, STD_MAX = 1e-5, 10.0


def orthogonal(scale: float = 1.0):
  """`jax.nn.initializers.orthogonal`, with a QR that does not call LAPACK on jaxlib 0.10.

  The same draw (a normal matrix's Q with a positive-diagonal R, so Haar-distributed) and the
  same matrices to float rounding. Why not LAPACK: jaxlib 0.10's CPU kernels split a batched QR
  over XLA's intra-op thread pool and block until it is done, so two at once (the actor's and
  the critics' init in a many-seed program) deadlock a two-thread pool (`compat`, which says
  when to delete the workaround). Init runs once, so the extra flops do not matter.
  """
  def init(key, shape, dtype=jnp.float32):
    if len(shape) < 2:
      raise ValueError(f"orthogonal init needs a matrix, got shape {shape}")
    n_cols = shape[-1]
    n_rows = math.prod(shape) // n_cols
    z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
    q = compat.orthonormal_columns(z)
    q = q.T if n_rows < n_cols else q
    return jnp.asarray(scale, dtype) * q.reshape(shape)
  return init


def kernel_init(kind: str, scale: float):
  """WSRL's two initialisations: orthogonal (SAC/CQL) and variance scaling (IQL)."""
  if kind == "orthogonal":
    return orthogonal(scale)
  if kind == "variance_scaling":
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")
  raise ValueError(f"Unknown kernel init {kind!r}")


class MLP(nn.Module):
  """Dense -> [Dropout] -> [LayerNorm] -> ReLU hidden layers.

  The last hidden layer is initialised at `last_hidden_init_scale`; others at sqrt 2
  (orthogonal) or 1 (variance scaling). Dropout needs a "dropout" rng when not deterministic.
  """
  hidden_sizes: Sequence[int]
  layer_norm: bool = True
  last_hidden_init_scale: float | None = 1e-2
  initializer: str = "orthogonal"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    default_scale = math.sqrt(2.0) if self.initializer == "orthogonal" else 1.0
    for i, size in enumerate(self.hidden_sizes):
      last = i == len(self.hidden_sizes) - 1
      scale = (self.last_hidden_init_scale
               if last and self.last_hidden_init_scale is not None else default_scale)
      x = nn.Dense(size, kernel_init=kernel_init(self.initializer, scale), dtype=self.dtype,
                   precision=self.precision)(x)
      if self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
      if self.layer_norm:
        x = nn.LayerNorm(dtype=self.dtype)(x)
      x = nn.relu(x)
    return x


class Critic(nn.Module):
  """Q(s, a) -> [...] (one critic; ensembles stack its parameters)."""
  hidden_sizes: Sequence[int]
  layer_norm: bool = True
  initializer: str = "orthogonal"
  head_initializer: str | None = None   # None: `initializer`
  last_hidden_init_scale: float | None = 1e-2
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, observation, action):
    return _mlp_scalar(self, jnp.concatenate([observation, action], axis=-1))


class ValueNetwork(nn.Module):
  """V(s) -> [...] (IQL's state value): the critic's network without the action input."""
  hidden_sizes: Sequence[int]
  layer_norm: bool = True
  initializer: str = "orthogonal"
  head_initializer: str | None = None   # None: `initializer`
  last_hidden_init_scale: float | None = 1e-2
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    return _mlp_scalar(self, x)


def head_init(module):
  """The output layer's initialiser: `head_initializer` (else the body's `initializer`) at sqrt 2
  (orthogonal) or 1 (variance scaling). The reference's IQL has variance-scaling bodies and
  orthogonal(sqrt 2) heads: its `Policy`, `Critic` and `ValueCritic` take no `kernel_init_type`
  (`wsrl/networks/actor_critic_nets.py`, `wsrl/common/initialization.py`)."""
  kind = module.head_initializer or module.initializer
  return kernel_init(kind, math.sqrt(2.0) if kind == "orthogonal" else 1.0)


def _mlp_scalar(module, x):
  """MLP body and a float32 scalar head, created inside `module`'s compact call."""
  x = MLP(module.hidden_sizes, module.layer_norm, module.last_hidden_init_scale, module.initializer,
          dtype=module.dtype, precision=module.precision)(x)
  value = nn.Dense(1, kernel_init=head_init(module), precision=module.precision)(
      x.astype(jnp.float32))
  return value[..., 0]


class GaussianActor(nn.Module):
  """pi(a|s) as a diagonal Gaussian: returns (mean, std) in float32.

  SAC and CQL squash it with tanh (see tanh_gaussian); IQL uses it as is. With
  `state_dependent_std=False` one log-std vector is learned (WSRL's AntMaze and IQL setting).
  """
  action_size: int
  hidden_sizes: Sequence[int]
  state_dependent_std: bool = True
  layer_norm: bool = True
  initializer: str = "orthogonal"
  head_initializer: str | None = None   # None: `initializer`
  last_hidden_init_scale: float | None = 1e-2
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, observation, deterministic: bool = True):
    x = MLP(self.hidden_sizes, self.layer_norm, self.last_hidden_init_scale, self.initializer,
            self.dropout_rate, dtype=self.dtype,
            precision=self.precision)(observation, deterministic).astype(jnp.float32)
    mean = nn.Dense(self.action_size, kernel_init=head_init(self), name="mean",
                    precision=self.precision)(x)
    if self.state_dependent_std:
      log_std = nn.Dense(self.action_size, kernel_init=head_init(self), name="log_std",
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

"""The orthogonal initialiser (the same draw as jax's, and no LAPACK call in the init program) and
each network's initialisation, layer by layer, as the reference's."""

import jax
import numpy as np
import pytest

from wsrl_mjx import compat, networks
from wsrl_mjx.agents import sac


@pytest.mark.parametrize("shape", [(11, 256), (256, 256), (256, 3), (5, 7)])
def test_orthogonal_init_is_the_sign_fixed_q_of_the_same_normal_draw(shape):
  key = jax.random.PRNGKey(3)
  rows, cols = shape
  z = np.asarray(jax.random.normal(key, (max(rows, cols), min(rows, cols))), np.float64)
  q, r = np.linalg.qr(z)
  expected = q * np.sign(np.diag(r))
  expected = 1.5 * (expected.T if rows < cols else expected)

  got = np.asarray(networks.orthogonal(1.5)(key, shape))

  assert got.shape == shape and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, atol=1e-5)
  small = min(shape)
  gram = got.T @ got if rows >= cols else got @ got.T
  np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(small), atol=1e-4)


def is_orthogonal(kernel, scale):
  kernel = np.asarray(kernel, np.float64)
  gram = kernel.T @ kernel if kernel.shape[0] >= kernel.shape[1] else kernel @ kernel.T
  return np.allclose(gram, scale ** 2 * np.eye(min(kernel.shape)), atol=1e-4)


def is_variance_scaling(kernel, scale):
  """Uniform on +-sqrt(3 scale / fan_avg) (flax's variance_scaling(scale, "fan_avg",
  "uniform")): inside the bound, reaching most of it, and not orthogonal."""
  kernel = np.asarray(kernel, np.float64)
  bound = np.sqrt(3 * scale / np.mean(kernel.shape))
  return (np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound
          and not is_orthogonal(kernel, np.sqrt(scale)))


def test_iql_and_sac_initialise_each_layer_as_the_reference_does():
  """wsrl/agents/iql.py: MLPs with kernel_init_type="var_scaling" (the actor's last hidden layer
  at kernel_scale_final=1e-2), under Policy/Critic/ValueCritic heads that take no
  kernel_init_type, so orthogonal(sqrt 2) (wsrl/common/initialization.py); the log-std a zero
  vector. SAC/CQL: orthogonal(sqrt 2) everywhere but the last hidden layer (1e-2). Biases 0."""
  from wsrl_mjx.agents import iql
  params = iql.IQL(iql.IQLConfig(observation_size=5, action_size=2, hidden_sizes=(32, 16))
                   ).init_params(jax.random.PRNGKey(0))
  actor, value = params.actor["params"], params.value["params"]
  critic = jax.tree.map(lambda x: x[0], params.critic)["params"]       # one of the 2 critics
  assert is_variance_scaling(actor["MLP_0"]["Dense_0"]["kernel"], 1.0)
  assert is_variance_scaling(actor["MLP_0"]["Dense_1"]["kernel"], 1e-2)
  assert is_orthogonal(actor["mean"]["kernel"], np.sqrt(2))
  np.testing.assert_array_equal(actor["log_std"], 0.0)
  for network in (critic, value):
    for layer in ("Dense_0", "Dense_1"):
      assert is_variance_scaling(network["MLP_0"][layer]["kernel"], 1.0)
    assert is_orthogonal(network["Dense_0"]["kernel"], np.sqrt(2))
  for bias in [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
               if "bias" in jax.tree_util.keystr(path)]:
    np.testing.assert_array_equal(bias, 0.0)

  agent = sac.SAC(sac.SACConfig(observation_size=5, action_size=2, actor_hidden_sizes=(32, 16),
                                critic_hidden_sizes=(32, 16), num_critics=2))
  sac_params = agent.init_params(jax.random.PRNGKey(0))
  sac_actor = sac_params.actor["params"]
  sac_critic = jax.tree.map(lambda x: x[0], sac_params.critic)["params"]
  for network in (sac_actor, sac_critic):
    assert is_orthogonal(network["MLP_0"]["Dense_0"]["kernel"], np.sqrt(2))
    assert is_orthogonal(network["MLP_0"]["Dense_1"]["kernel"], 1e-2)
  for head in (sac_actor["mean"], sac_actor["log_std"], sac_critic["Dense_0"]):
    assert is_orthogonal(head["kernel"], np.sqrt(2))


def test_orthogonal_init_rejects_vectors():
  with pytest.raises(ValueError, match="needs a matrix"):
    networks.orthogonal()(jax.random.PRNGKey(0), (4,))


@pytest.mark.skipif(not compat.LAPACK_CAN_DEADLOCK, reason="jaxlib >= 0.11 keeps LAPACK's QR")
def test_many_seed_agent_init_calls_no_lapack_kernel():
  # jaxlib 0.10's batched CPU LAPACK kernels deadlock when two run at once (wsrl_mjx/compat.py).
  learner = sac.SAC(sac.SACConfig(observation_size=11, action_size=3))
  keys = jax.random.split(jax.random.PRNGKey(0), 8)
  hlo = jax.jit(jax.vmap(learner.init_params)).lower(keys).as_text()
  assert "lapack" not in hlo.lower() and "geqrf" not in hlo.lower()
  jax_orthogonal = jax.jit(jax.vmap(
      lambda k: jax.nn.initializers.orthogonal()(k, (4, 4)))).lower(keys).as_text()
  assert "geqrf" in jax_orthogonal.lower()  # The check above can tell.

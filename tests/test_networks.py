"""The orthogonal initialiser: the same draw as jax's, and no LAPACK call in the init program."""

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

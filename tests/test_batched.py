"""`wsrl_mjx.batched.batched_like`: values unchanged, and batched under `vmap` where the
reference is, size-0 leaves included (the reason it exists: a loop whose initial carry is
batched is batched once at trace time, not twice)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wsrl_mjx import batched

TREE = {"zeros": jnp.zeros((2, 3)), "special": jnp.array([np.nan, np.inf, -np.inf, -0.0]),
        "empty": jnp.zeros((0,)), "flag": jnp.ones((), bool), "count": jnp.int32(7),
        "key": jax.random.key(3)}


def _leaves_equal(a, b):
  if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
    a, b = jax.random.key_data(a), jax.random.key_data(b)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))   # NaN == NaN, -0.0 kept below
  assert a.dtype == b.dtype and a.shape == b.shape


@pytest.mark.parametrize("reference", [jnp.arange(4.0).at[1].set(np.nan),
                                       jax.random.split(jax.random.key(0), 4),
                                       (jnp.zeros((4, 0)), jnp.arange(4))])
def test_values_are_unchanged_and_every_leaf_is_batched(reference):
  out = jax.jit(jax.vmap(lambda r: batched.batched_like(TREE, r)))(reference)
  for leaf, got in zip(jax.tree.leaves(TREE), jax.tree.leaves(out)):
    assert got.shape[0] == 4
    for row in range(4):
      _leaves_equal(leaf, got[row])
  assert np.signbit(np.asarray(out["special"])[:, 3]).all()
  # `out_axes=None` accepts only unbatched outputs: every leaf, the size-0 one too, is batched
  for name in TREE:
    with pytest.raises(ValueError, match="output was batched"):
      jax.vmap(lambda r: batched.batched_like(TREE, r)[name], out_axes=None)(reference)
  assert jax.vmap(lambda r: TREE["empty"], out_axes=None)(reference).shape == (0,)   # control


def test_an_unbatched_reference_leaves_the_tree_unbatched():
  out = jax.vmap(lambda r, c: batched.batched_like(TREE, c), in_axes=(0, None),
                 out_axes=None)(jnp.arange(3.0), jnp.float32(1))
  for leaf, got in zip(jax.tree.leaves(TREE), jax.tree.leaves(out)):
    _leaves_equal(leaf, got)
  assert batched.batched_like(TREE, ()) is TREE

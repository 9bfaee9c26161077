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


def test_evaluation_and_the_bridge_rollout_batch_their_loop_bodies_once():
  """The call sites: under two `vmap`s (seeds, then evaluation episodes), the scan of
  `evaluation.evaluate` starts with every carry leaf batched, as does the bridge check's rollout
  and the physics scan inside both, so JAX's fixpoint never batches those bodies a second time.
  Read from JAX's scan batching rule (a private table: update this test with JAX if it moves)."""
  from jax._src.interpreters import batching
  from jax._src.lax.control_flow import loops

  import envs
  from envs import bridge
  from wsrl_mjx import evaluation

  rule = batching.fancy_primitive_batchers[loops.scan_p]
  seen = []

  def recording(axis_data, args, dims, **params):
    outs, out_dims = rule(axis_data, args, dims, **params)
    start, stop = params["num_consts"], params["num_consts"] + params["num_carry"]
    where = str(params["jaxpr"].jaxpr.debug_info.func_src_info)
    seen.append((where, [d is not None for d in dims[start:stop]],
                 [d is not None for d in out_dims[:stop - start]]))
    return outs, out_dims

  env, _ = envs.make("point-mass")
  act = lambda weights, observation: jnp.tanh(observation @ weights)
  weights = jnp.zeros((2, env.observation_size, env.action_size))
  keys = jax.random.split(jax.random.key(0), 2)
  model = env.mjx_model
  rollout_args = (jnp.zeros((3, model.nq)), jnp.zeros((3, model.nv)), jnp.zeros((3, 4, model.nu)))
  batching.fancy_primitive_batchers[loops.scan_p] = recording
  try:
    jax.make_jaxpr(jax.vmap(lambda w, k: evaluation.evaluate(env, act, w, k, 3, 5, 1.0)))(
        weights, keys)
    jax.make_jaxpr(bridge.mjx_rollout(env))(*rollout_args)
  finally:
    batching.fancy_primitive_batchers[loops.scan_p] = rule
  ours = [(where, before, after) for where, before, after in seen
          if any(name in where for name in ("evaluation.py", "bridge.py", "mjx_env.py"))]
  assert sum("evaluation.py" in where for where, _, _ in ours) == 2      # one per vmap
  assert sum("bridge.py" in where for where, _, _ in ours) == 1
  for where, before, after in ours:
    assert before == after and all(before), where   # batched from the start: batched once

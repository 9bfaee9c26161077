"""`batched_like`: a pytree made batched wherever a reference is, without changing a value.

Under `vmap`, a `lax.scan` (or `fori_loop`) whose initial carry is partly unbatched (zeros, a
constant of the reset) is batched twice at trace time: JAX batches the body, sees the carry come
out batched, and batches the body again (the fixpoint on the carry in `_scan_batching_rule`,
jax/_src/lax/control_flow/loops.py, jax 0.10). Nested loops compound it: an MJX step holds several.
Making the carry batched before the loop batches the body once. Values never change: the select
below has the same operand on both sides. XLA folds it away where the leaf is a constant or
already batched (every call site's carries: zeros, constants of a reset, states); a leaf
computed from unbatched inputs keeps one exact elementwise select per element (the loop would
have broadcast it anyway).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def batched_like(tree, reference):
  """`tree`, value for value (NaN, inf and size-0 leaves included), batched under every `vmap`
  that batches any leaf of the pytree `reference` (arrays of any dtype, PRNG keys included)."""
  flags = [jnp.all(leaf == leaf) for leaf in jax.tree.leaves(reference)]
  if not flags:
    return tree
  pick = flags[0]
  for flag in flags[1:]:
    pick = pick & flag
  return jax.tree.map(
      lambda leaf: jax.lax.select(jnp.broadcast_to(pick, jnp.shape(leaf)), leaf, leaf), tree)

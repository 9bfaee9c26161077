"""A Cholesky factorisation and solve in plain JAX ops, for MJX programs compiled for the CPU.

Why: MJX factors the mass matrix and the Newton solver's Hessian with
`jax.scipy.linalg.cho_factor`. On the CPU, jaxlib 0.10 runs a batched LAPACK `potrf` by
splitting the batch over XLA's intra-op thread pool and blocking its own pool thread until the
pieces are done; once batch x nv^3/3 passes ~2e5 flops (Adroit from ~23 envs, AntMaze ~220,
hopper ~3,000) two such calls at once occupy a two-thread pool and wait forever (BUILD.md). The
same mechanism as the orthogonal init's QR (wsrl_mjx/networks.py). The factorisations here are
loops over the matrix's columns, batched by `vmap` like any other op, so nothing waits on the
pool.

`lapack_free()` swaps these functions in for `jax.scipy.linalg`'s while a function is traced,
on the CPU backend only (GPUs use cuSOLVER, which is not affected). MJX looks the functions up
on that module when it is traced, so tracing is all the swap needs to cover.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp

# Products at full float32 precision, vector or matrix right-hand sides alike.
_dot = functools.partial(jnp.tensordot, axes=1, precision=jax.lax.Precision.HIGHEST)


def cholesky_lower(a: jax.Array) -> jax.Array:
  """L with a = L L^T (a symmetric positive definite; NaNs otherwise, as LAPACK's)."""
  a = jnp.asarray(a)
  n = a.shape[-1]
  index = jnp.arange(n)

  def column(j, lower):
    row = jnp.where(index < j, lower[j], 0.0)              # L[j, :j]
    diagonal = jnp.sqrt(a[j, j] - _dot(row, row))
    below = (a[:, j] - _dot(lower, row)) / diagonal         # columns >= j of `lower` are 0 yet
    return lower.at[:, j].set(jnp.where(index > j, below, jnp.where(index == j, diagonal, 0.0)))

  return jax.lax.fori_loop(0, n, column, jnp.zeros_like(a))


def _solve_lower(lower: jax.Array, b: jax.Array) -> jax.Array:
  """y with L y = b (forward substitution); b is [n] or [n, k]."""

  def row(i, y):
    return y.at[i].set((b[i] - _dot(lower[i], y)) / lower[i, i])   # y[i:] is 0 yet

  return jax.lax.fori_loop(0, b.shape[0], row, jnp.zeros_like(b))


def _solve_lower_transposed(lower: jax.Array, y: jax.Array) -> jax.Array:
  """x with L^T x = y (back substitution)."""
  n = y.shape[0]

  def row(step, x):
    i = n - 1 - step
    return x.at[i].set((y[i] - _dot(lower[:, i], x)) / lower[i, i])  # x[:i + 1] is 0 yet

  return jax.lax.fori_loop(0, n, row, jnp.zeros_like(y))


def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
  """`jax.scipy.linalg.cho_factor` (the other triangle is zero here, not left over)."""
  del overwrite_a, check_finite
  factor = cholesky_lower(a)
  return (factor if lower else factor.T), lower


def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
  """`jax.scipy.linalg.cho_solve` for a factor from `cho_factor` above."""
  del overwrite_b, check_finite
  factor, lower = c_and_lower
  factor = jnp.tril(factor if lower else jnp.asarray(factor).T)
  b = jnp.asarray(b)
  return _solve_lower_transposed(factor, _solve_lower(factor, b))


@contextlib.contextmanager
def lapack_free():
  """While the block runs (on the CPU backend), `jax.scipy.linalg.cho_factor` and `cho_solve`
  are the loops above; trace MJX calls inside it."""
  if jax.default_backend() != "cpu":
    yield
    return
  module = jax.scipy.linalg
  saved = module.cho_factor, module.cho_solve
  module.cho_factor, module.cho_solve = cho_factor, cho_solve
  try:
    yield
  finally:
    module.cho_factor, module.cho_solve = saved

"""Workarounds for the versions requirements.txt pins, each behind the check that says when to
delete it. Importing this module changes nothing: each workaround acts only when called.

requirements.txt pins jax and jaxlib 0.10.2 on Python 3.11 (development machines and CI, CPU)
and 0.11.2 on Python 3.12 (the GPU image), brax 0.14.2 and orbax-checkpoint 0.12.8. A check that
names the version that fixed its problem turns the workaround off there; delete the workaround
(and the lines that call it) once requirements.txt allows no version the check is true for. A
check whose fix is "unknown: re-test on upgrade" stays on until someone does.

1. jaxlib 0.10's batched LAPACK kernels on the CPU (BUILD.md, "Known issue worked around"):
   jaxlib 0.10 splits a batched LAPACK call (QR, Cholesky, ...) whose work exceeds ~2e5 flops
   over XLA's intra-op thread pool and blocks its own pool thread until the pieces are done, so
   as many such calls at once as the pool has threads (2 on a 2-core machine) wait forever.
   Fixed in jaxlib 0.11.0, whose open-source builds compile that path out (`LAPACK_CAN_DEADLOCK`).
   Three workarounds, each tested in tests/test_compat.py or tests/test_networks.py:
   - `orthonormal_columns`: the orthogonal initialiser's QR as Householder reflections in JAX
     ops (`wsrl_mjx.networks.orthogonal`: the actor's and the critics' init in a many-seed
     program are two independent batched QRs);
   - `lapack_free_cholesky`: MJX's `cho_factor` / `cho_solve` (mass matrix, Newton Hessian) as
     loops over columns in JAX ops while MJX calls are traced on the CPU (envs/mjx_env.py);
   - `configure_xla_cpu`: `--xla_cpu_enable_concurrency_optimized_scheduler=false` in
     `XLA_FLAGS`, so that XLA:CPU runs fewer independent operations at once (called by
     launch/runtime.py's `configure()` and tests/conftest.py before JAX starts a backend).
2. XLA:CPU's MLIR fusion emitters make MJX's forward kinematics orders of magnitude slower for
   some models (`MJX_CPU_FUSION_FLAG`, also set by `configure_xla_cpu`). On the kitchen (a
   7-link arm plus a kettle on a free joint) `mjx.kinematics` takes 25 ms for one env and 85 ms
   for a batch of 2, against 0.26 and 0.32 ms with `--xla_cpu_use_fusion_emitters=false`
   (jaxlib 0.10.2, 2-core CPU, BUILD.md "XLA:CPU's fusion emitters"). The optimised HLO shows
   loop fusions of ~400 instructions that compute 6-8 numbers each and take up to 27 ms, fed by
   the scatter that normalises the free joint's quaternion. jax-ml/jax issue 33761 and
   google-deepmind/mujoco issue 2957 report the same slowdown (a chain of bodies under a free
   joint). The flag exists in jaxlib 0.10 only: 0.11.2's XLA lists it among the removed
   (reserved) DebugOptions fields, and XLA stops the process on a flag it does not know, so it is
   set where jaxlib < 0.11 (`MJX_CPU_FUSION_FLAG_KNOWN`). Whether 0.11's CPU backend is still
   slow here: unknown (jaxlib 0.11 needs Python 3.12, which the development machine lacks): the
   GPU image can tell, `JAX_PLATFORMS=cpu python -m benchmarks.physics_breakdown
   --env=kitchen-complete-v0 --batch=2 --nobare_ant --repeats_in_scan=2`.
3. `patch_brax_for_this_jax`: brax 0.14.2's trainers call `jax.device_put_replicated`, which
   jax 0.10.0 removed (launch/train_ant_controller.py, launch/train_adroit_demonstrator.py,
   benchmarks/throughput.py). Fixed in brax: unknown (google/brax issue 671 is open): re-test on
   upgrade.
4. `drain_orbax_reads_on_failure`: orbax-checkpoint 0.12.8 runs a restore's reads as tasks on a
   fresh event loop and closes the loop as soon as one read fails, with the other reads still
   pending (saves run the same way). A damaged checkpoint (a file cut short) can then print
   hundreds of lines to stderr beside the one clear line wsrl-mjx writes (in 3 of 11 tries on the
   2-core CPU; it depends on which reads are still in flight): "RuntimeError: Event loop is closed"
   from TensorStore's threads as the abandoned reads finish, and "Exception ignored in: <coroutine
   object _read_array_index_and_device_put ...>" with a whole TensorStore spec for each read when
   the garbage collector closes it (under pytest: warnings charged to whichever test is running).
   The patch cancels and awaits the loop's pending tasks before it closes, on the failure path only
   (what `asyncio.run` does for its loop). wsrl_mjx/checkpoint.py calls it before opening a
   checkpoint manager. It replaces a private function, so it acts only up to orbax 0.12.8
   (`ORBAX_PATCHED_UP_TO`). Fixed in orbax: unknown: re-test on upgrade (tests/test_compat.py
   runs a failing restore on orbax's runner, patched and not).

Everything here depends on jax alone (envs/ imports this module; it imports nothing of ours),
except item 4, which imports orbax when it is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import threading

import jax
import jax.numpy as jnp
import jaxlib


def _release(version: str) -> tuple[int, ...]:
  """'0.10.2' or '0.11.2.dev20260101' -> (0, 10, 2)."""
  return tuple(int(part) for part in re.match(r"\d+(\.\d+)*", version).group(0).split(".")[:3])


JAXLIB_VERSION = _release(jaxlib.__version__)

# 1. Batched CPU LAPACK calls can deadlock XLA's thread pool. Fixed in jaxlib 0.11.0 (BUILD.md);
# delete `orthonormal_columns`'s Householder branch, the Cholesky below and `CPU_SCHEDULER_FLAG`
# once requirements.txt allows no jaxlib < 0.11 (today: jax 0.10.2 on Python 3.11).
LAPACK_CAN_DEADLOCK = JAXLIB_VERSION < (0, 11)


# --- 1a. The orthogonal initialiser's QR -----------------------------------------------------

def orthonormal_columns(z: jax.Array) -> jax.Array:
  """Q of z = QR (z is m x k, m >= k), signed so that R has a non-negative diagonal.

  Where batched CPU QRs can deadlock (`LAPACK_CAN_DEADLOCK`), a Householder QR in plain JAX
  ops, equal to LAPACK's Q to ~3e-6; elsewhere `jnp.linalg.qr`.
  """
  if LAPACK_CAN_DEADLOCK:
    return _householder_orthonormal_columns(z)
  q, r = jnp.linalg.qr(z)
  return q * jnp.sign(jnp.diagonal(r))


def _householder_orthonormal_columns(z: jax.Array) -> jax.Array:
  """`orthonormal_columns` without LAPACK: a Householder QR in plain JAX ops, with products at
  full float32 precision (GPUs would otherwise use TF32 and lose orthogonality)."""
  m, k = z.shape
  rows = jnp.arange(m)
  dot = lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST)

  def reflect(j, carry):
    r, vectors, betas = carry
    x = jnp.where(rows >= j, r[:, j], 0.0)
    alpha = -jnp.where(x[j] >= 0, 1.0, -1.0) * jnp.sqrt(jnp.sum(x * x))
    v = x.at[j].add(-alpha)
    vv = jnp.sum(v * v)
    beta = jnp.where(vv > 0, 2.0 / jnp.where(vv > 0, vv, 1.0), 0.0)
    r = r - beta * jnp.outer(v, dot(v, r))
    return r, vectors.at[:, j].set(v), betas.at[j].set(beta)

  zeros = (jnp.zeros((m, k), z.dtype), jnp.zeros((k,), z.dtype))
  r, vectors, betas = jax.lax.fori_loop(0, k, reflect, (z, *zeros))

  def apply_reflection(i, q):  # Q = H_0 ... H_{k-1} I[:, :k], applied right to left.
    j = k - 1 - i
    v = vectors[:, j]
    return q - betas[j] * jnp.outer(v, dot(v, q))

  q = jax.lax.fori_loop(0, k, apply_reflection, jnp.eye(m, k, dtype=z.dtype))
  return q * jnp.sign(jnp.diagonal(r))


# --- 1b. MJX's Cholesky factorisation and solve ----------------------------------------------
# MJX factors the mass matrix and the Newton solver's Hessian with `jax.scipy.linalg.cho_factor`.
# A batched `potrf` is split over the pool once batch x nv^3/3 passes ~2e5 flops: Adroit from ~23
# envs, AntMaze ~220, hopper ~3,000. The factorisations below are loops over the matrix's
# columns, batched by `vmap` like any other op, so nothing waits on the pool.

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


_SWAP_LOCK = threading.Lock()
_swap_depth = 0          # blocks inside `lapack_free_cholesky`, in every thread
_swap_saved = None       # jax.scipy.linalg's own functions while swapped


@contextlib.contextmanager
def lapack_free_cholesky():
  """While the block runs, on the CPU backend where batched LAPACK calls can deadlock,
  `jax.scipy.linalg.cho_factor` and `cho_solve` are the loops above; trace MJX calls inside it.

  MJX looks the functions up on `jax.scipy.linalg` when it is traced, so tracing is all the swap
  needs to cover. GPUs use cuSOLVER, which is not affected. The swap is counted across threads
  (a program compiled ahead in the background traces MJX while the host traces another): it
  holds while any block runs and is undone when the last one ends, so no thread's trace sees
  the other function midway, and none is left swapped.
  """
  global _swap_depth, _swap_saved
  if not LAPACK_CAN_DEADLOCK or jax.default_backend() != "cpu":
    yield
    return
  module = jax.scipy.linalg
  with _SWAP_LOCK:
    if _swap_depth == 0:
      _swap_saved = module.cho_factor, module.cho_solve
      module.cho_factor, module.cho_solve = cho_factor, cho_solve
    _swap_depth += 1
  try:
    yield
  finally:
    with _SWAP_LOCK:
      _swap_depth -= 1
      if _swap_depth == 0:
        module.cho_factor, module.cho_solve = _swap_saved
        _swap_saved = None


# --- 1c. XLA:CPU's scheduler -----------------------------------------------------------------

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


# --- 2. XLA:CPU's fusion emitters and MJX's kinematics ---------------------------------------

MJX_CPU_FUSION_FLAG = "--xla_cpu_use_fusion_emitters=false"
# Where XLA knows the flag (a flag it does not know stops the process): jaxlib 0.10.2 has it;
# 0.11.2's DebugOptions lists it as a removed field.
MJX_CPU_FUSION_FLAG_KNOWN = JAXLIB_VERSION < (0, 11)


def configure_xla_cpu(environ=os.environ) -> None:
  """Adds this module's XLA:CPU flags to `XLA_FLAGS`, each unless `XLA_FLAGS` names that flag
  already (a user's own setting wins):
    - `CPU_SCHEDULER_FLAG` where batched CPU LAPACK calls can deadlock: XLA:CPU then runs fewer
      independent operations at once, which makes two such calls at once rarer (1c);
    - `MJX_CPU_FUSION_FLAG` where XLA is known to take it: the legacy loop emitter instead of the
      MLIR fusion emitters, which run MJX's kinematics 100x slower on models like the kitchen (2).
  Both affect the CPU backend only; GPU and TPU programs compile as before.

  XLA reads `XLA_FLAGS` when JAX starts its first backend, so call this before anything asks
  for a device or runs a computation.
  """
  wanted = []
  if LAPACK_CAN_DEADLOCK:
    wanted.append(CPU_SCHEDULER_FLAG)
  if MJX_CPU_FUSION_FLAG_KNOWN:
    wanted.append(MJX_CPU_FUSION_FLAG)
  add_xla_flags(wanted, environ)


def add_xla_flags(wanted: list[str], environ=os.environ) -> None:
  """Appends each `--name=value` of `wanted` to `environ["XLA_FLAGS"]` unless that already names
  the option (a user's own setting wins). Leaves `environ` alone where nothing is set."""
  flags = environ.get("XLA_FLAGS", "")
  for flag in wanted:
    name = flag.split("=")[0].lstrip("-")
    if name not in flags:
      flags = (flags + " " + flag).strip()
  if flags:
    environ["XLA_FLAGS"] = flags


# --- 3. Brax's trainers on jax >= 0.10 -------------------------------------------------------

def patch_brax_for_this_jax() -> None:
  """brax 0.14.2's trainers call `jax.device_put_replicated`, which jax 0.10.0 removed; give
  them the documented equivalent (a copy per device along a new leading axis). Call it before
  training with Brax; it does nothing where jax still has the function.

  Which brax stops calling it: unknown: re-test on upgrade (grep brax/training for
  `device_put_replicated`); delete this once requirements.txt's brax does not.
  """
  try:
    jax.device_put_replicated  # noqa: B018
  except AttributeError:
    def device_put_replicated(tree, devices):
      return jax.tree.map(lambda x: jax.device_put(jnp.stack([jnp.asarray(x)] * len(devices))),
                          tree)
    jax.device_put_replicated = device_put_replicated


# --- 4. orbax-checkpoint's event loop after a failed read ------------------------------------
# The replaced function is private, so the patch is limited to the orbax it was written against:
# a newer orbax runs unpatched (re-test the noise there, then move this bound or delete it).
ORBAX_PATCHED_UP_TO = (0, 12, 8)


def drain_orbax_reads_on_failure() -> None:
  """Makes orbax cancel and await a failed call's other tasks before it closes their event
  loop (module docstring, item 4), so that a damaged checkpoint reports one error, not hundreds
  of lines of abandoned reads. Idempotent. Changes nothing for a call that succeeds, and nothing
  where orbax is newer than `ORBAX_PATCHED_UP_TO` or no longer has the function it replaces
  (`_run_sync_via_new_loop`, the fresh-loop runner of `asyncio_utils.run_sync`, which saves go
  through too: a failed save's pending writes are cancelled as well, rather than left running
  on a closed loop).
  """
  import orbax.checkpoint   # pylint: disable=import-outside-toplevel
  from orbax.checkpoint._src import asyncio_utils   # pylint: disable=import-outside-toplevel
  original = getattr(asyncio_utils, "_run_sync_via_new_loop", None)
  if (original is None or getattr(original, "drains_on_failure", False)
      or _release(orbax.checkpoint.__version__) > ORBAX_PATCHED_UP_TO):
    return

  def run_sync_via_new_loop(coro):
    loop = asyncio.new_event_loop()
    try:
      asyncio.set_event_loop(loop)
      return loop.run_until_complete(coro)
    except BaseException:
      try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
          task.cancel()
        if pending:
          loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
      except Exception:   # noqa: BLE001 (the draining must never hide the call's own error)
        pass
      raise
    finally:
      asyncio.set_event_loop(None)
      loop.close()

  run_sync_via_new_loop.drains_on_failure = True
  run_sync_via_new_loop.__wrapped__ = original     # orbax's own, for tests/test_compat.py
  asyncio_utils._run_sync_via_new_loop = run_sync_via_new_loop   # pylint: disable=protected-access

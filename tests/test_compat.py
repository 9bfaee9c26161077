"""The workarounds for the pinned JAX, Brax and orbax versions (wsrl_mjx/compat.py): nothing acts
on import, each acts where its version check says, the CPU Cholesky MJX programs are traced with
on jaxlib 0.10, and orbax's runner cancels a failed restore's other reads. (The orthogonal
initialiser's QR is tested in test_networks.py.)"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mujoco import mjx

import envs
from conftest import ROOT
from wsrl_mjx import compat


def _spd(rng, n):
  a = rng.normal(size=(n, n))
  return (a @ a.T + n * np.eye(n)).astype(np.float32)


@pytest.mark.parametrize("lower", [False, True])
@pytest.mark.parametrize("rhs_shape", [(7,), (7, 3)])
def test_factor_and_solve_match_jax_scipy(lower, rhs_shape):
  rng = np.random.default_rng(0)
  a = _spd(rng, 7)
  b = rng.normal(size=rhs_shape).astype(np.float32)
  factor, flag = compat.cho_factor(a, lower=lower)
  expected_factor, _ = jax.scipy.linalg.cho_factor(a, lower=lower)
  triangle = np.tril if lower else np.triu   # LAPACK leaves the other triangle as it was
  np.testing.assert_allclose(factor, triangle(expected_factor), rtol=1e-5, atol=1e-5)
  assert flag == lower
  x = compat.cho_solve((factor, lower), b)
  np.testing.assert_allclose(a @ x, b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)


def test_batched_under_vmap_and_nan_when_not_positive_definite():
  rng = np.random.default_rng(1)
  a = np.stack([_spd(rng, 5) for _ in range(4)])
  factors = jax.vmap(compat.cholesky_lower)(a)
  np.testing.assert_allclose(factors, np.linalg.cholesky(a), rtol=1e-5, atol=1e-5)
  assert np.isnan(compat.cholesky_lower(-np.eye(3, dtype=np.float32))).any()


@pytest.mark.skipif(not compat.LAPACK_CAN_DEADLOCK, reason="jaxlib >= 0.11 keeps LAPACK's potrf")
def test_batched_mjx_step_on_the_cpu_calls_no_lapack_kernel():
  # jaxlib 0.10's batched CPU potrf deadlocks XLA's pool at large batches (wsrl_mjx/compat.py).
  # halfcheetah: its step traces in 8 s against hopper's 13 on the 2-core CPU; any model whose
  # constraints MJX's Newton solver factorises shows it (the second assertion below).
  env, _ = envs.make("halfcheetah-medium-v2")
  states = jax.eval_shape(jax.vmap(env.reset), jax.random.split(jax.random.PRNGKey(0), 8))
  actions = jnp.zeros((8, env.action_size))
  ours = jax.jit(jax.vmap(env.step)).lower(states, actions).as_text().lower()
  assert "potrf" not in ours and "lapack" not in ours
  # The check can tell: MJX's own step, traced without the swap, calls LAPACK's potrf.
  plain = jax.jit(jax.vmap(mjx.step, in_axes=(None, 0))).lower(
      env.mjx_model, states.pipeline_state).as_text().lower()
  assert "potrf" in plain
  assert jax.scipy.linalg.cho_factor is not compat.cho_factor   # the swap was undone


def test_the_cholesky_swap_holds_while_any_thread_is_inside_and_is_undone_after_the_last():
  """A program compiled ahead traces MJX in a background thread while the host traces another:
  blocks that overlap across threads must all see the swap, and the last to end undoes it. Here
  the host's block starts first and ends first, with the background's still open: with a
  save-and-restore per block, the host would undo the swap under the background's trace, and
  the background would then restore the swap for good."""
  import threading
  swapped = compat.LAPACK_CAN_DEADLOCK and jax.default_backend() == "cpu"
  original = jax.scipy.linalg.cho_factor
  inside, host_done = threading.Event(), threading.Event()
  seen = {}

  def background():
    with compat.lapack_free_cholesky():
      inside.set()
      host_done.wait()
      seen["background, after the host's block ended"] = jax.scipy.linalg.cho_factor

  with compat.lapack_free_cholesky():
    thread = threading.Thread(target=background)
    thread.start()
    inside.wait()
    seen["host, inside"] = jax.scipy.linalg.cho_factor
  host_done.set()
  thread.join()
  expected = compat.cho_factor if swapped else original
  assert seen == {"host, inside": expected,
                  "background, after the host's block ended": expected}
  assert jax.scipy.linalg.cho_factor is original          # undone after the last block


IMPORT_EVERYTHING = textwrap.dedent("""
    import os, pkgutil, importlib
    import jax
    from jax._src import xla_bridge
    before = (os.environ.get("XLA_FLAGS"), jax.scipy.linalg.cho_factor,
              hasattr(jax, "device_put_replicated"))
    import envs, wsrl_mjx
    for package in (envs, wsrl_mjx):
      for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
    after = (os.environ.get("XLA_FLAGS"), jax.scipy.linalg.cho_factor,
             hasattr(jax, "device_put_replicated"))
    assert after == before, (before, after)
    # No backend started yet, so `configure()` as a main's first call is in time.
    assert not getattr(xla_bridge, "backends_are_initialized", lambda: False)()
    from launch import runtime
    runtime.configure()
    print("XLA_FLAGS after configure:", os.environ.get("XLA_FLAGS"))
""")


def test_importing_wsrl_mjx_and_envs_changes_nothing_and_configure_sets_the_flag():
  environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], cwd=ROOT,
                          env=dict(environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"XLA_FLAGS after configure: {_expected_flags() or None}" in result.stdout


def _expected_flags(before: str = "") -> str:
  flags = [before] if before else []
  if compat.LAPACK_CAN_DEADLOCK:
    flags.append(compat.CPU_SCHEDULER_FLAG)
  if compat.MJX_CPU_FUSION_FLAG_KNOWN:
    flags.append(compat.MJX_CPU_FUSION_FLAG)
  return " ".join(flags)


def test_cpu_flags_are_added_once_and_never_override_a_setting():
  environ = {}
  compat.configure_xla_cpu(environ)
  assert environ == ({"XLA_FLAGS": _expected_flags()} if _expected_flags() else {})
  environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  compat.configure_xla_cpu(environ)
  compat.configure_xla_cpu(environ)
  assert environ["XLA_FLAGS"] == _expected_flags("--xla_dump_to=/tmp/x")
  if compat.JAXLIB_VERSION[:2] == (0, 10):     # the CPU pin, written out
    assert environ["XLA_FLAGS"] == ("--xla_dump_to=/tmp/x "
                                    "--xla_cpu_enable_concurrency_optimized_scheduler=false "
                                    "--xla_cpu_use_fusion_emitters=false")
  one = {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=true"}     # the user's one setting stays,
  compat.configure_xla_cpu(one)                                  # the other flag is still added
  assert one["XLA_FLAGS"] == " ".join(
      ["--xla_cpu_use_fusion_emitters=true"]
      + ([compat.CPU_SCHEDULER_FLAG] if compat.LAPACK_CAN_DEADLOCK else []))
  mine = {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true "
                       "--xla_cpu_use_fusion_emitters=true"}
  compat.configure_xla_cpu(mine)
  assert mine == {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true "
                               "--xla_cpu_use_fusion_emitters=true"}


def test_the_tests_run_with_the_fusion_flag_on_the_pinned_jaxlibs():
  """conftest.py configures XLA before any test starts a backend, so the suite measures what
  users' launchers run: on jaxlib 0.10 (the CPU pin), the legacy emitter."""
  if compat.JAXLIB_VERSION[:2] == (0, 10):
    assert compat.MJX_CPU_FUSION_FLAG in os.environ.get("XLA_FLAGS", "")


def test_the_suite_builds_xla_cpu_code_at_llvm_level_0():
  """conftest.py's faster compiles: in the environment, so the launchers the tests start get it
  too, named once (conftest's own flag, or a user's XLA_FLAGS that names the option)."""
  import conftest
  if conftest.HAS_CUDA_PLUGIN:
    return
  levels = [f for f in os.environ["XLA_FLAGS"].split()
            if f.startswith("--xla_backend_optimization_level=")]
  assert len(levels) == 1, os.environ["XLA_FLAGS"]


def test_version_checks_read_the_release_numbers():
  assert compat._release("0.10.2") == (0, 10, 2)
  assert compat._release("0.11.2.dev20260101+cuda12") == (0, 11, 2)
  assert compat.LAPACK_CAN_DEADLOCK == (compat.JAXLIB_VERSION < (0, 11))


def test_both_qr_branches_give_the_same_orthonormal_columns(monkeypatch):
  # What deleting the Householder QR (jaxlib >= 0.11) changes: float rounding only.
  z = jax.random.normal(jax.random.PRNGKey(0), (64, 16))
  householder = compat._householder_orthonormal_columns(z)
  monkeypatch.setattr(compat, "LAPACK_CAN_DEADLOCK", False)
  np.testing.assert_allclose(compat.orthonormal_columns(z), householder, atol=1e-5)


def test_brax_patch_gives_jax_a_replicating_device_put():
  had_it = hasattr(jax, "device_put_replicated")
  compat.patch_brax_for_this_jax()
  try:
    replicated = jax.device_put_replicated({"w": jnp.arange(3.0)}, jax.devices())
    assert replicated["w"].shape == (len(jax.devices()), 3)
    np.testing.assert_array_equal(replicated["w"][0], np.arange(3.0))
  finally:
    if not had_it:
      del jax.device_put_replicated


def test_a_failed_restore_s_other_reads_are_cancelled_before_its_event_loop_closes(tmp_path):
  """compat item 4, on orbax's own runner (`asyncio_utils.run_sync`): one read fails while three
  are pending. orbax 0.12.8 closes the loop with them pending (what printed pages of "Event loop
  is closed" and "Exception ignored in: <coroutine ...>" after a damaged checkpoint); patched,
  each is cancelled and finishes before `run_sync` raises. A checkpoint manager turns it on."""
  import asyncio

  from orbax.checkpoint._src import asyncio_utils
  from wsrl_mjx import checkpoint

  def restore_with_a_damaged_read():
    finished = []

    async def pending_read(i):
      try:
        await asyncio.sleep(60)
      finally:
        finished.append(i)

    async def damaged_read():
      raise OSError("OUT_OF_RANGE: a file cut short")

    async def restore():
      await asyncio.gather(*(pending_read(i) for i in range(3)), damaged_read())

    with pytest.raises(OSError, match="OUT_OF_RANGE"):
      asyncio_utils.run_sync(restore())
    return finished

  checkpoint.RunCheckpoints(tmp_path).close()
  patched = asyncio_utils._run_sync_via_new_loop
  assert patched.drains_on_failure
  compat.drain_orbax_reads_on_failure()                       # idempotent
  assert asyncio_utils._run_sync_via_new_loop is patched
  assert sorted(restore_with_a_damaged_read()) == [0, 1, 2]
  assert asyncio_utils.run_sync(asyncio.sleep(0, result=7)) == 7    # a restore that succeeds

  def all_tasks_fails(loop=None):
    raise RuntimeError("Set changed size during iteration")
  with pytest.MonkeyPatch.context() as monkeypatch:    # a failed drain hides no read's error
    monkeypatch.setattr(asyncio, "all_tasks", all_tasks_fails)
    restore_with_a_damaged_read()
  try:                                                         # the control: orbax's own
    asyncio_utils._run_sync_via_new_loop = patched.__wrapped__
    assert restore_with_a_damaged_read() == []
  finally:
    asyncio_utils._run_sync_via_new_loop = patched


def test_the_orbax_patch_leaves_a_newer_orbax_alone(monkeypatch):
  """It replaces a private function, so an orbax past `ORBAX_PATCHED_UP_TO` runs unpatched; the
  pinned one is within it."""
  import orbax.checkpoint
  from orbax.checkpoint._src import asyncio_utils
  assert compat._release(orbax.checkpoint.__version__) <= compat.ORBAX_PATCHED_UP_TO
  compat.drain_orbax_reads_on_failure()
  own = asyncio_utils._run_sync_via_new_loop.__wrapped__
  monkeypatch.setattr(asyncio_utils, "_run_sync_via_new_loop", own)
  monkeypatch.setattr(orbax.checkpoint, "__version__", "0.12.9")
  compat.drain_orbax_reads_on_failure()
  assert asyncio_utils._run_sync_via_new_loop is own
  monkeypatch.setattr(orbax.checkpoint, "__version__", "0.12.8")
  compat.drain_orbax_reads_on_failure()
  assert asyncio_utils._run_sync_via_new_loop.__wrapped__ is own

"""Each chunk program is traced and compiled once per shape (Brax's SAC tests count traces too).

A retrace costs 10-20 s on a CPU (the MJX step and the learner are traced again) and a
recompilation as much again without the persistent cache; one in every chunk or evaluation would
dominate a run. The programs are the real ones (`finetune.build_programs`,
`pretrain.build_programs`), driven by the real host loop: a fresh run (init, several chunks,
several evaluations, checkpoints), a resumed run (the state restored from a checkpoint), and
direct calls with a freshly initialised state and with a host copy put back with the seed
sharding. None of them may trace or lower `init`, `run` or `evaluate` a second time (the
resumed online run did, until checkpoint.unflatten_restored put the MJX state's zero-size leaves
on the seed sharding).

Counting uses `jax.monitoring`: JAX records one trace event per jaxpr it traces (named after the
function) and one lowering event per program it lowers for compilation (named `jit(<function>)`;
every compilation, from the persistent cache or by XLA, starts with one), so a retrace and a
recompilation for new input shardings both show. Each module builds its own programs (fresh `jit`
objects, so the counts are exact whatever ran before) with the tiny configs of conftest.py; their
compiled code comes from the persistent cache when `tiny_programs` or `cql_run` compiled it first.
A different chunk length must trace `run` again: that shows the counter can fail.
"""

import collections
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from conftest import tiny_config, tiny_pretrain_config
from wsrl_mjx import configs, data, finetune, host_loop, per_seed, pretrain

TRACE_EVENT, LOWER_EVENT = host_loop.TRACE_EVENT, host_loop.LOWER_EVENT
PROGRAMS = ("init", "run", "evaluate")


class ProgramCounts:
  """Traces and lowerings of the functions named `PROGRAMS`, counted inside `recording()` only
  (the online and offline programs share those names)."""

  def __init__(self):
    self.traces = collections.Counter()
    self.lowerings = collections.Counter()
    self._active = False

  def __call__(self, event, duration, fun_name=None, **kwargs):
    del duration, kwargs
    if not self._active:
      return
    if event == TRACE_EVENT and fun_name in PROGRAMS:
      self.traces[fun_name] += 1
    elif event == LOWER_EVENT and fun_name in [f"jit({name})" for name in PROGRAMS]:
      self.lowerings[fun_name[len("jit("):-1]] += 1

  @contextlib.contextmanager
  def recording(self):
    self._active = True
    try:
      yield self
    finally:
      self._active = False

  def snapshot(self) -> dict[str, tuple[int, int]]:
    """{program: (traces, lowerings)} so far."""
    return {name: (self.traces[name], self.lowerings[name]) for name in PROGRAMS}

  def since(self, snapshot) -> dict[str, tuple[int, int]]:
    """{program: (new traces, new lowerings)} since `snapshot`, for programs with any."""
    now = self.snapshot()
    changes = {name: (now[name][0] - snapshot[name][0], now[name][1] - snapshot[name][1])
               for name in PROGRAMS}
    return {name: change for name, change in changes.items() if change != (0, 0)}


@contextlib.contextmanager
def counting():
  counts = ProgramCounts()
  jax.monitoring.register_event_duration_secs_listener(counts)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(counts)


def host_copy(state, sharding):
  """The state as a restore hands it over: host arrays put back with the seed sharding."""
  return jax.device_put(jax.tree.map(np.asarray, state), sharding)


# --- online fine-tuning ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def online_run(tmp_path_factory):
  """A fresh tiny fine-tuning run of 3 chunks (evaluations at 0, 100 and 150 steps, a checkpoint
  after every chunk) on programs built here -> (config, programs, counts, counts after the run,
  workdir)."""
  config = tiny_config(online_steps=150)
  env, env_spec = envs.make(config.env_name)
  workdir = tmp_path_factory.mktemp("online")
  with counting() as counts:
    with counts.recording():
      programs = finetune.build_programs(config, env, env_spec)
      finetune.train_and_evaluate(config, workdir, programs)
    yield config, programs, counts, counts.snapshot(), workdir


def test_a_fresh_run_traces_and_compiles_each_online_program_once(online_run):
  _, _, _, after_run, _ = online_run
  assert after_run == {"init": (1, 1), "run": (1, 1), "evaluate": (1, 1)}


def test_chunks_evaluations_and_a_restored_state_reuse_the_online_programs(online_run):
  config, programs, counts, _, _ = online_run
  before = counts.snapshot()
  with counts.recording():
    # As train_and_evaluate calls them: the keys and settings laid over the seed sharding.
    settings, _ = per_seed.seed_settings(config)
    settings = jax.device_put(jax.tree.map(jnp.asarray, settings), programs.sharding)
    keys = jax.device_put(host_loop.seed_keys(config), programs.sharding)
    state = programs.init(keys, settings, None, None)
    for _ in range(3):
      state, stats = programs.run(state, config.steps_per_chunk)
      programs.evaluate(state.agent.params.actor, state.eval_key, state.env_step)
    state = host_copy(state, programs.sharding)
    state, stats = programs.run(state, config.steps_per_chunk)
    programs.evaluate(state.agent.params.actor, state.eval_key, state.env_step)
  np.testing.assert_array_equal(state.env_step, [4 * config.steps_per_chunk] * config.num_seeds)
  assert np.all(np.asarray(stats.updates) > 0)
  assert counts.since(before) == {}


def test_a_resumed_run_reuses_the_online_programs(online_run):
  _, programs, counts, _, workdir = online_run
  before = counts.snapshot()
  with counts.recording():
    last = finetune.train_and_evaluate(tiny_config(online_steps=200), workdir, programs)
  assert last["env_step"] == 200
  assert counts.since(before) == {}


# --- offline pretraining -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def offline_run(random_dataset, tmp_path_factory):
  """A fresh tiny CQL run of 2 chunks on the random point-mass data, on programs built here ->
  (config, programs, the dataset on the device as train_and_evaluate puts it, counts, counts
  after the run, workdir)."""
  path, _ = random_dataset
  config = tiny_pretrain_config(path, algo="cql")
  env_spec = pretrain.env_spec_for(config)
  learner, _ = configs.make_learner(config, env_spec)
  env, _ = envs.make(config.env_name)
  workdir = tmp_path_factory.mktemp("offline")
  with counting() as counts:
    with counts.recording():
      programs = pretrain.build_programs(config, env, env_spec, learner)
      pretrain.train_and_evaluate(config, workdir, programs)
    dataset, _ = pretrain.load_dataset(config, env_spec)
    replicated = jax.sharding.NamedSharding(programs.sharding.mesh,
                                            jax.sharding.PartitionSpec())
    dataset = jax.device_put(data.to_replay_buffer(dataset), replicated)
    yield config, programs, dataset, counts, counts.snapshot(), workdir


def test_a_fresh_run_traces_and_compiles_each_offline_program_once(offline_run):
  *_, after_run, _ = offline_run
  assert after_run == {"init": (1, 1), "run": (1, 1), "evaluate": (1, 1)}


def test_chunks_evaluations_and_restores_reuse_the_offline_programs(offline_run):
  config, programs, dataset, counts, _, workdir = offline_run
  before = counts.snapshot()
  with counts.recording():
    last = pretrain.train_and_evaluate(tiny_pretrain_config(config.dataset, algo="cql",
                                                            offline_steps=150),
                                       workdir, programs)
    keys = jax.device_put(host_loop.seed_keys(config), programs.sharding)
    state = programs.init(keys)
    for _ in range(3):
      state, stats = programs.run(state, dataset, config.steps_per_chunk)
      programs.evaluate(state)
    state = host_copy(state, programs.sharding)
    state, stats = programs.run(state, dataset, config.steps_per_chunk)
    programs.evaluate(state)
  assert last["gradient_step"] == 150
  np.testing.assert_array_equal(state.step, [4 * config.steps_per_chunk] * config.num_seeds)
  np.testing.assert_array_equal(stats.updates, [config.steps_per_chunk] * config.num_seeds)
  assert counts.since(before) == {}


def test_a_new_chunk_length_traces_run_again(offline_run):
  """The counter sees a retrace: `run` at another (static) number of steps is a new program."""
  config, programs, dataset, counts, _, _ = offline_run
  keys = jax.device_put(host_loop.seed_keys(config), programs.sharding)
  state = programs.init(keys)
  before = counts.snapshot()
  with counts.recording():
    programs.run.lower(state, dataset, config.steps_per_chunk + 1)
  assert counts.since(before) == {"run": (1, 1)}


def test_the_compile_report_gives_each_tests_seconds_and_its_compiles(tmp_path):
  """WSRL_MJX_COMPILE_REPORT (conftest.py), on a file of its own: one line per test, with the
  tracing and compile seconds where the test compiles and none where it does not."""
  import json
  import os
  import subprocess
  import sys
  from conftest import ROOT
  (tmp_path / "test_two.py").write_text(
      "import jax, jax.numpy as jnp\n"
      "def test_compiles():\n"      # a loop of matmuls: tens of ms of XLA compile
      "  f = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: jnp.tanh(y @ y), x))\n"
      "  assert float(f(jnp.eye(16)).sum()) > 0\n"
      "def test_plain():\n"
      "  assert 1 + 1 == 2\n")
  (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
  report = tmp_path / "report.jsonl"
  result = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
       str(tmp_path / "test_two.py")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(ROOT), WSRL_MJX_COMPILE_REPORT=str(report),
               WSRL_MJX_TEST_CACHE=str(tmp_path / "cache")))
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  compiles, plain = (json.loads(line) for line in report.read_text().splitlines())
  assert compiles["test"].endswith("test_two.py::test_compiles")
  assert compiles["seconds"] >= compiles["compile_s"] > 0 and compiles["trace_s"] >= 0
  assert plain["test"].endswith("test_two.py::test_plain")
  assert set(plain) == {"test", "seconds"}

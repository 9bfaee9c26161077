"""The host loop's own behaviour, without an MJX program: chunk schedules, compile logging, rates
that count execution only, the progress line during warmup, the config it records.

`toy_phase` is a `host_loop.Phase` whose chunk sleeps a known time per step and whose first
chunk compiles a small jitted function with a known tracing time, so the progress line's rate
can be checked against the execution time alone."""

import dataclasses
import json
import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from launch.configs import finetune as finetune_config
from launch.configs import pretrain as pretrain_config
from wsrl_mjx import evaluation, host_loop

# --- chunk schedules ---------------------------------------------------------------------------


def stops_by_brute_force(total, eval_interval, checkpoint_interval):
  """Every step the host must act at: evaluations, checkpoints and the end."""
  return {s for s in range(1, total + 1)
          if s % eval_interval == 0 or s % checkpoint_interval == 0 or s == total}


@pytest.mark.parametrize("steps_per_chunk, total, eval_interval, checkpoint_interval", [
    (500, 400, 1000, 1000), (50, 130, 100, 50), (75, 200, 100, 50), (5000, 500_000, 20_000,
                                                                       100_000),
    (5000, 250_000, 25_000, 50_000), (64, 1001, 300, 700), (7, 7, 7, 7), (1000, 999, 1, 1000)])
def test_chunks_end_at_every_evaluation_checkpoint_and_the_end_and_never_overrun(
    steps_per_chunk, total, eval_interval, checkpoint_interval):
  chunk = host_loop.fitted_chunk(steps_per_chunk, total, eval_interval, checkpoint_interval)
  lengths = host_loop.chunk_lengths(0, total, chunk, eval_interval, checkpoint_interval)
  ends = set(np.cumsum(lengths).tolist())
  assert sum(lengths) == total and max(lengths) <= steps_per_chunk
  assert stops_by_brute_force(total, eval_interval, checkpoint_interval) <= ends
  # From any chunk end (a resume point), the rest of the schedule is the same.
  middle = sorted(ends)[len(ends) // 2]
  assert host_loop.chunk_lengths(middle, total, chunk, eval_interval, checkpoint_interval) == (
      lengths[sorted(ends).index(middle) + 1:])


def test_a_schedule_off_the_chunk_size_takes_one_program_where_a_divisor_fits():
  # --config.online_steps=400 on the demo (chunks of 500, evaluations every 1000): 2 x 200.
  demo = finetune_config.get_config("hopper-medium-v2,demo")
  chunk = host_loop.fitted_chunk(demo.steps_per_chunk, 400, demo.eval_interval,
                                 demo.checkpoint_interval)
  assert host_loop.chunk_lengths(0, 400, chunk, demo.eval_interval,
                                 demo.checkpoint_interval) == [200, 200]
  # The defaults keep their chunk.
  for config, total in ((finetune_config.get_config("hopper-medium-v2"), "online_steps"),
                        (pretrain_config.get_config("hopper-medium-v2"), "offline_steps")):
    assert host_loop.fitted_chunk(config.steps_per_chunk, config[total], config.eval_interval,
                                  config.checkpoint_interval) == config.steps_per_chunk
  # gcd(130, 100, 50) = 10 would mean 5x the host round trips: keep 50, one shorter chunk of 30.
  assert host_loop.fitted_chunk(50, 130, 100, 50) == 50
  assert host_loop.chunk_lengths(0, 130, 50, 100, 50) == [50, 50, 30]


# --- compile logging ---------------------------------------------------------------------------

def slow_to_trace(seconds):
  def f(x, n):
    time.sleep(seconds)            # runs while JAX traces, not when the program executes
    return x * n
  return f


def host_loop_messages(caplog):
  return [r.getMessage() for r in caplog.records if r.filename == "host_loop.py"]


def test_a_program_logs_when_it_compiles_and_how_long_it_took(caplog):
  caplog.set_level("INFO")
  program = host_loop.LoggedProgram("toy.run", jax.jit(slow_to_trace(0.3), static_argnums=1),
                                    static_argnums=(1,))
  np.testing.assert_array_equal(program(jnp.ones(3), 2), [2, 2, 2])
  messages = host_loop_messages(caplog)
  assert messages[0] == "Compiling toy.run(2) ..."
  seconds = float(re.fullmatch(r"Compiled toy\.run\(2\) in ([\d.]+) s.*", messages[1]).group(1))
  assert seconds >= 0.3
  caplog.clear()
  program(jnp.ones(3), 2)                                   # compiled: silent
  jax.eval_shape(lambda x: program(x, 2), jnp.ones(3))      # under a transformation: silent
  assert not host_loop_messages(caplog)


def test_a_program_compiled_ahead_is_used_for_matching_calls_only(caplog):
  """compile_ahead traces in the caller's thread (before it returns: a clock entered there
  charges the trace) and compiles in a background thread; a call with the same static value,
  shapes and dtypes runs that executable, tracing nothing again; any other call compiles as
  before, with the same result."""
  caplog.set_level("INFO")
  traces = []

  def f(x, n):
    traces.append(x.shape)
    time.sleep(0.3)
    return x * n

  program = host_loop.LoggedProgram("toy.run", jax.jit(f, static_argnums=1),
                                    static_argnums=(1,))
  zeros = jnp.zeros(3)
  same = jax.ShapeDtypeStruct((3,), jnp.float32, sharding=zeros.sharding)
  with host_loop.CompileClock() as clock:
    future = program.compile_ahead(zeros, 2)              # only its shape and sharding are read
    assert traces == [(3,)]                               # traced here, before it returned
    assert program.compile_ahead(same, 2) is future       # the same signature: compiled once
    assert future.result() is not None
  assert clock.seconds >= 0.3                                      # the trace (f sleeps 0.3 s)
  assert traces == [(3,)]
  messages = host_loop_messages(caplog)
  assert messages[0] == "Compiling toy.run(2) ahead, in the background ..."
  assert re.fullmatch(r"Compiled toy\.run\(2\) in [\d.]+ s, in the background", messages[1])
  caplog.clear()
  np.testing.assert_array_equal(program(jnp.ones(3), 2), [2, 2, 2])
  assert traces == [(3,)] and not host_loop_messages(caplog)     # the executable, silently
  np.testing.assert_array_equal(program(jnp.ones(4), 2), [2, 2, 2, 2])   # another shape
  np.testing.assert_array_equal(program(jnp.ones(3), 5), [5, 5, 5])      # another static
  assert traces == [(3,), (4,), (3,)]
  assert host_loop_messages(caplog)[0] == "Compiling toy.run(2) ..."


def test_a_failed_compile_ahead_leaves_the_call_to_compile(caplog):
  caplog.set_level("INFO")
  program = host_loop.LoggedProgram("toy.run",
                                    jax.jit(lambda x, n: x.reshape(n), static_argnums=1),
                                    static_argnums=(1,))
  # A 3-vector reshaped to 5 fails while tracing (in the caller's thread, before the background
  # compile): logged, and the future holds None; the call then traces itself and fails the same
  # way.
  assert program.compile_ahead(jnp.ones(3), 5).result() is None
  assert any(m.startswith("Compiling toy.run(5) ahead failed (TypeError")
             for m in host_loop_messages(caplog))
  with pytest.raises(TypeError):
    program(jnp.ones(3), 5)


def test_the_compile_clock_counts_nested_traces_once():
  inner = jax.jit(slow_to_trace(0.2), static_argnums=1)

  def outer(x):
    time.sleep(0.2)
    return inner(x, 3) + 1

  with host_loop.CompileClock() as clock:
    started = time.time()
    jax.jit(outer)(jnp.ones(2)).block_until_ready()
    wall = time.time() - started
  # Summed per event, the inner trace would count twice (once inside the outer one): >= 0.6 s.
  assert 0.4 <= clock.seconds <= wall < 0.6 + 0.5


# --- progress lines ----------------------------------------------------------------------------

SECONDS_PER_STEP = 0.25
TRACE_SECONDS = 2.0


def toy_phase(warmup_chunks=1, total_steps=4, seconds_per_step=None, evaluation_seconds=0.0,
              diverged_at=-1):
  """`total_steps` in chunks of 2 for one seed; each step sleeps SECONDS_PER_STEP (or chunk i's
  steps `seconds_per_step[i]`), each evaluation `evaluation_seconds`; the first chunk compiles
  a program that takes TRACE_SECONDS to trace; no updates in the first `warmup_chunks`
  chunks; the seed's `diverged_at` (-1: it did not diverge)."""
  program = jax.jit(slow_to_trace(TRACE_SECONDS), static_argnums=1)
  chunks = []

  def run(state, num_steps):
    program(jnp.ones(1), 2).block_until_ready()           # compiles once
    per_step = SECONDS_PER_STEP if seconds_per_step is None else seconds_per_step[len(chunks)]
    time.sleep(per_step * num_steps)
    chunks.append(num_steps)
    updates = 0 if len(chunks) <= warmup_chunks else num_steps
    return ({"step": state["step"] + num_steps},
            {"updates": np.array([updates]),
             "critic_loss": np.array([0.5 if updates else np.nan])})

  def evaluate(state):
    time.sleep(evaluation_seconds)
    return evaluation.EpisodeResults(returns=np.full((1, 2), 1000.0),
                                     successes=np.zeros((1, 2), bool))

  return host_loop.Phase(
      unit="env_step", total_steps=total_steps, steps_per_chunk=2, eval_interval=2,
      checkpoint_interval=total_steps, keep_checkpoints=1, num_seeds=1,
      env_spec=envs.spec("hopper-medium-v2"),
      description={"kind": "toy", "config": {"online_steps": total_steps,
                                              "steps_per_chunk": 2}},
      init=lambda: {"step": np.zeros(1, np.int32)},
      abstract_state=lambda: None, run=run, evaluate=evaluate,
      step_of=lambda state: int(state["step"][0]),
      diverged_at=lambda state: np.array([diverged_at]),
      agent_params=lambda state: state, check_resumable=lambda description: None,
      progress=(("critic loss", "critic_loss"),))


def progress_lines(caplog):
  return [r.getMessage() for r in caplog.records if re.match(r"env step \d+/", r.getMessage())]


def test_rates_and_eta_count_execution_time_not_compile_time(tmp_path, caplog):
  caplog.set_level("INFO")
  host_loop.run_phase(toy_phase(warmup_chunks=0), tmp_path)
  first, second = progress_lines(caplog)
  rate = float(re.search(r"\| ([\d.]+) env steps/s per seed", first).group(1))
  # 1 / SECONDS_PER_STEP = 4 steps/s executing; counting the compile it would be 2 / 2.5 s = 0.8.
  assert 2.5 <= rate <= 1 / SECONDS_PER_STEP + 0.5, first
  eta = re.search(r"ETA (\d+):(\d\d):(\d\d)", first).groups()
  assert int(eta[2]) <= 1 and eta[:2] == ("0", "00"), first     # 2 steps left at ~4/s: 0-1 s


def test_the_rate_is_the_last_chunk_s_and_the_eta_adds_the_evaluations_to_come(tmp_path, caplog):
  """A fast warmup chunk (0.02 s a step) then slow ones (0.3 s): the second line shows the slow
  chunk's rate, not the average since the start (which would be ~6), and its ETA is the 2
  steps left at that rate plus the last evaluation (0.4 s): 1.0 s, shown as 0:00:01."""
  caplog.set_level("INFO")
  host_loop.run_phase(toy_phase(total_steps=6, seconds_per_step=[0.02, 0.3, 0.3],
                                evaluation_seconds=0.4), tmp_path)
  lines = progress_lines(caplog)
  rates = [float(re.search(r"\| ([\d.]+) env steps/s per seed", line).group(1))
           for line in lines]
  assert rates[0] >= 20 and 2.5 <= rates[1] <= 1 / 0.3 + 0.5, lines
  assert re.search(r"ETA 0:00:01 ", lines[1]), lines[1]


def test_the_progress_line_says_warmup_instead_of_a_zero_loss(tmp_path, caplog):
  caplog.set_level("INFO")
  host_loop.run_phase(toy_phase(warmup_chunks=1), tmp_path)
  first, second = progress_lines(caplog)
  assert "warmup: no updates yet" in first and "critic loss" not in first, first
  assert "critic loss 0.5" in second and "warmup" not in second, second
  # A warmup chunk's rate says nothing of the training chunks' to come: no ETA from it.
  assert "| ETA once updates start |" in first, first
  assert re.search(r"\| ETA \d+:\d\d:\d\d \|", second), second


def test_the_progress_line_says_when_no_seed_updates_because_every_seed_diverged(tmp_path,
                                                                                   caplog):
  """No update in a chunk after the one seed diverged: that reason, not warmup, and an ETA (the
  rate is the rest of the run's)."""
  caplog.set_level("INFO")
  host_loop.run_phase(toy_phase(warmup_chunks=2, diverged_at=1), tmp_path)
  first, _ = progress_lines(caplog)
  assert "every seed diverged" in first and "warmup" not in first, first
  assert re.search(r"\| ETA \d+:\d\d:\d\d \|", first), first


def test_the_resolved_config_is_logged_and_written_to_the_run_directory(tmp_path, caplog):
  caplog.set_level("INFO")
  phase = toy_phase()
  host_loop.run_phase(phase, tmp_path)
  assert json.loads((tmp_path / "config.json").read_text()) == phase.description["config"]
  logged = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Config"))
  assert f"Config (also in {tmp_path / 'config.json'}):" in logged
  assert "  online_steps = 4" in logged.splitlines()
  assert not math.isnan(json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])[
      "normalized_scores"][0])


# --- a run that stops before its first result ----------------------------------------------------


class Refused(Exception):
  pass


def refused_at_init():
  raise Refused("the pretrained agent has other sizes")


def test_a_refused_fresh_run_removes_the_directory_it_created(tmp_path):
  workdir = tmp_path / "runs" / "a"
  with pytest.raises(Refused):
    host_loop.run_phase(dataclasses.replace(toy_phase(), init=refused_at_init), workdir)
  assert not workdir.exists()
  assert (tmp_path / "runs").is_dir()      # only the run's own folder goes, not its parent


def test_a_refused_run_leaves_an_empty_directory_it_was_given_empty(tmp_path):
  with pytest.raises(Refused):
    host_loop.run_phase(dataclasses.replace(toy_phase(), init=refused_at_init), tmp_path)
  assert tmp_path.is_dir() and list(tmp_path.iterdir()) == []


def test_a_refused_run_in_a_directory_holding_other_files_removes_only_its_own(tmp_path):
  (tmp_path / "notes.txt").write_text("mine\n")
  with pytest.raises(Refused):
    host_loop.run_phase(dataclasses.replace(toy_phase(), init=refused_at_init), tmp_path)
  assert (tmp_path / "notes.txt").read_text() == "mine\n"
  assert [entry.name for entry in tmp_path.iterdir()] == ["notes.txt"]


def test_a_run_interrupted_in_its_first_evaluation_leaves_nothing(tmp_path):
  """By then the metrics log exists, empty: no result yet, so it goes with the rest."""
  def interrupted(state):
    assert (workdir / "metrics.jsonl").exists()       # what the cleanup must recognise
    raise KeyboardInterrupt

  workdir = tmp_path / "a"
  with pytest.raises(KeyboardInterrupt):
    host_loop.run_phase(dataclasses.replace(toy_phase(), evaluate=interrupted), workdir)
  assert not workdir.exists()


def test_a_run_that_fails_after_its_first_evaluation_keeps_what_it_wrote(tmp_path):
  def failing_run(state, num_steps):
    raise Refused("out of memory")

  workdir = tmp_path / "a"
  with pytest.raises(Refused):
    host_loop.run_phase(dataclasses.replace(toy_phase(), run=failing_run), workdir)
  record = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
  assert record["env_step"] == 0 and (workdir / "config.json").exists()


@pytest.mark.parametrize("contents, before, expected", [
    ({}, None, True),
    ({".lock": "", "config.json": "{}", "checkpoints/": None, "metrics.jsonl": ""}, None, True),
    ({"config.json": "{}", "checkpoints/3/": None}, None, False),   # a checkpoint: kept
    ({"config.json": "{}", "metrics.jsonl": "{}"}, None, False),    # an evaluation: kept
    ({"checkpoints": "a file, not the run's folder"}, None, False),
    ({"notes.txt": "mine", "config.json": "{}", ".lock": ""}, {"notes.txt"}, True),
    ({"notes.txt": "mine", "config.json": "{}"}, set(), False),     # it added another file
    # An earlier run's record: not the run's to remove, and its evaluation keeps everything.
    ({"config.json": "{}", "metrics.jsonl": "{}", ".lock": ""}, {"config.json",
                                                                  "metrics.jsonl"}, False)])
def test_remove_if_untouched_removes_only_what_a_run_added_before_any_result(
    tmp_path, contents, before, expected):
  workdir = tmp_path / "run"
  workdir.mkdir()
  for name, text in contents.items():
    if name.endswith("/"):
      (workdir / name).mkdir(parents=True)
    else:
      (workdir / name).write_text(text)
  listing = lambda: sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
  initial = listing()
  assert host_loop.remove_if_untouched(workdir, before) is expected
  if not expected:
    assert listing() == initial
  elif before is None:
    assert not workdir.exists()
  else:
    assert listing() == sorted(before)


def test_the_final_line_gives_each_seed_its_grid_point_and_names_the_diverged():
  """Hand-written records: a grid of two points labels every seed's score; a run without a
  grid (or with one point) prints the scores alone; a diverged seed is named with its step."""
  record = {"normalized_scores": [7.46, 2.3, float("nan"), 11.7],
            "per_seed": [{"init_actor": True}, {"init_actor": False}] * 2,
            "diverged_at": [None, None, 1500, None]}
  assert host_loop.final_summary(record, "env_step") == (
      "Done. Final normalised scores per seed: 7.5 (init_actor=True), 2.3 (init_actor=False), "
      "n/a (init_actor=True), 11.7 (init_actor=False). Diverged (stopped learning at a "
      "non-finite update; scored with their last finite parameters): seed 2 at env step 1500")
  for per_seed in ([{}] * 4, [{"warmup_steps": 0}] * 4, None):
    assert host_loop.final_summary(dict(record, per_seed=per_seed, diverged_at=None),
                                   "env_step") == (
        "Done. Final normalised scores per seed: 7.5, 2.3, n/a, 11.7")

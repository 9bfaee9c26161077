"""User errors end a launcher with one line naming the field or the file, exit status 2 and no
stack trace (`--verbose` shows it); each is found before anything compiles, so these runs take
seconds. The library's noise stays out: no MJX "Failed to import warp" on stdout, no JAX TPU
INFO line, no orbax shutdown tracebacks after the message."""

import fcntl

import pytest

from conftest import ROOT, SIGINT_AS_IN_A_TERMINAL, run_launch

FINETUNE = ["launch.finetune", "--config=launch/configs/finetune.py:hopper-medium-v2,demo"]
PRETRAIN = ["launch.pretrain", "--config=launch/configs/pretrain.py:hopper-medium-v2,demo"]


def assert_one_line_error(result, *expected):
  """Exit status 2; the last line of stderr is `error: ...` holding each of `expected`."""
  output = result.stdout + result.stderr
  assert result.returncode == 2, output[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), output[-3000:]
  for text in expected:
    assert text in last, last
  for noise in ("Traceback", "Failed to import warp", "Unable to initialize backend",
                "Event loop is closed", "cannot schedule new futures"):
    assert noise not in output, output[-3000:]


@pytest.mark.parametrize("flags, expected", [
    (["--config.num_seeds=0"], ["config.num_seeds=0", "whole number >= 1"]),
    (["--config.eval_interval=-100"], ["config.eval_interval=-100"]),
    (["--config.discount=1.5"], ["config.discount=1.5", "[0, 1)"]),
    (["--config.env_name=hopper-medum-v2"], ["config.env_name", "Did you mean hopper-medium-v2"]),
    (["--config.per_seed=utd=1,2"], ["config.per_seed", "'utd' cannot vary per seed"]),
    (["--config.num_seedz=3"], ["--config.num_seedz: no such config field", "num_seeds"]),
    (["--config.num_seeds=many"], ["--config.num_seeds=many"]),
    (["--config.pretrained=/nonexistent/run"], ["/nonexistent/run: no such checkpoint directory"]),
    # The arms (wsrl_mjx/methods.py): the shipped demo agent is a CQL pretraining, which the
    # offline learners' demos do not default to.
    (["--config.method=iql", "--config.utd=1",
      "--config.pretrained=checkpoints/hopper-medium-v2-demo"],
     ["description/metadata: holds a cql agent, but config.method='iql' starts from iql"]),
    (["--config.method=iql", "--config.utd=1"],
     ["config.pretrained is empty but config.method='iql' continues a pretraining"]),
    (["--config.method=rlpd", "--config.pretrained=", "--config.offline_data=keep",
      "--config.dataset=/nonexistent/d.hdf5"],
     ["config.offline_data='keep' (config.method='rlpd') needs the offline dataset",
      "/nonexistent/d.hdf5: no such file"]),
])
def test_a_bad_fine_tuning_setting_is_one_line_naming_the_field(tmp_path, flags, expected):
  workdir = tmp_path / "run"
  assert_one_line_error(run_launch(*FINETUNE, f"--workdir={workdir}", *flags), *expected)
  assert not workdir.exists()          # refused before the run directory is touched


def test_an_unknown_env_or_config_file_is_one_line(tmp_path):
  result = run_launch("launch.finetune", "--config=launch/configs/finetune.py:hopper-medum-v2",
                      f"--workdir={tmp_path}")
  assert_one_line_error(result, "--config=launch/configs/finetune.py:hopper-medum-v2",
                        "Unknown environment 'hopper-medum-v2'")
  result = run_launch("launch.pretrain", "--config=launch/configs/nonesuch.py:hopper",
                      f"--workdir={tmp_path}")
  assert_one_line_error(result, "--config:", "launch/configs/nonesuch.py")


def test_a_missing_dataset_is_one_line_naming_the_file(tmp_path):
  result = run_launch(*PRETRAIN, f"--workdir={tmp_path / 'run'}",
                      f"--config.dataset={tmp_path / 'absent.hdf5'}")
  assert_one_line_error(result, f"{tmp_path / 'absent.hdf5'}: no such file")


def test_a_workdir_that_cannot_be_created_is_one_line_naming_it(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  result = run_launch(*FINETUNE, f"--workdir={blocker / 'run'}")
  assert_one_line_error(result, f"{blocker / 'run'}: cannot be used as the run directory")


@pytest.mark.parametrize("launcher", [FINETUNE, PRETRAIN])
def test_an_empty_workdir_is_refused_before_anything_is_written(tmp_path, launcher):
  """--workdir= would run in the current folder: from the repository root, into the repository
  and its shipped checkpoints/."""
  module, config = launcher
  result = run_launch(module, config.replace("=launch/", f"={ROOT}/launch/"), "--workdir=",
                      cwd=tmp_path)
  assert_one_line_error(result, "--workdir=: names no folder; give the run directory")
  assert list(tmp_path.iterdir()) == []


def test_a_workdir_another_run_holds_is_refused_and_left_as_it_was(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "metrics.jsonl").write_text('{"env_step": 0}\n')
  with open(workdir / ".lock", "w") as lock:     # what a running launcher holds
    lock.write("12345\n")
    lock.flush()
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    result = run_launch(*FINETUNE, f"--workdir={workdir}")
  assert_one_line_error(result, f"{workdir}: another run (process 12345) is using it")
  assert (workdir / "metrics.jsonl").read_text() == '{"env_step": 0}\n'
  assert not (workdir / "config.json").exists()


def test_verbose_shows_the_stack_trace_of_a_user_error(tmp_path):
  result = run_launch(*FINETUNE, f"--workdir={tmp_path}", "--config.num_seeds=0", "--verbose")
  assert result.returncode != 0
  assert "Traceback" in result.stderr and "ConfigError: config.num_seeds=0" in result.stderr


def test_the_collector_names_an_unknown_env_in_one_line(tmp_path):
  result = run_launch("launch.collect", "--env=hopper-medum-v2", "--policy=random",
                      f"--output={tmp_path / 'x.hdf5'}")
  assert_one_line_error(result, "--env=hopper-medum-v2: Unknown environment",
                        "Did you mean hopper-medium-v2")


def test_the_collector_refuses_to_overwrite_a_dataset_unless_asked(tmp_path):
  """A pretraining made from a dataset would silently stop matching it if a second collection
  replaced the file: an existing --output is refused before anything runs, and left as it was."""
  from launch import runtime
  from wsrl_mjx.errors import UserError
  existing = tmp_path / "data.hdf5"
  existing.write_bytes(b"the pretraining's data")
  result = run_launch("launch.collect", "--env=point-mass", "--policy=random", "--steps=10",
                      f"--output={existing}")
  assert_one_line_error(result, f"--output={existing}: exists; pass --overwrite to replace it")
  assert existing.read_bytes() == b"the pretraining's data"
  runtime.check_new_file(str(existing), overwrite=True)
  runtime.check_new_file(str(tmp_path / "new.hdf5"), overwrite=False)
  (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
  with pytest.raises(UserError, match="dangling: exists"):
    runtime.check_new_file(str(tmp_path / "dangling"), overwrite=False)
  with pytest.raises(UserError, match=f"^--output={tmp_path}: is a folder; give the file"):
    runtime.check_new_file(str(tmp_path), overwrite=True)
  # Where the file could not be written: refused before the rollout, nothing left behind.
  with pytest.raises(UserError, match="^--output=: names no file; give the file to write$"):
    runtime.check_new_file("", overwrite=False)
  with pytest.raises(UserError, match=f"^--output={existing}/sub/x.hdf5: {existing} is a file, "
                     "so no folder can be made under it$"):
    runtime.check_new_file(str(existing / "sub" / "x.hdf5"), overwrite=False)
  with pytest.raises(UserError, match=r"^--output=/proc/x.hdf5: cannot write in /proc \("):
    runtime.check_new_file("/proc/x.hdf5", overwrite=False)
  runtime.check_new_file(str(tmp_path / "new" / "deeper" / "x.hdf5"), overwrite=False)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "data.hdf5"]
  result = run_launch("launch.collect", "--env=point-mass", "--policy=random", "--steps=10",
                      "--output=/proc/x.hdf5")
  assert_one_line_error(result, "--output=/proc/x.hdf5: cannot write in /proc")


def test_bridge_check_refuses_windows_it_cannot_replay():
  import numpy as np
  from envs import bridge
  from wsrl_mjx.errors import UserError
  result = run_launch("launch.bridge_check", "--env=hopper-medium-v2", "--starts=0")
  assert_one_line_error(result, "flag --starts=0: 0 is not a positive integer")
  # Two episodes of 4 recorded states (3 steps each): a horizon of 3 fits, 4 does not.
  ends = np.array([3, 7])
  assert list(bridge.start_indices(ends, 3, 8, np.random.default_rng(0))) == [0, 4]
  with pytest.raises(UserError) as refused:
    bridge.start_indices(ends, 4, 8, np.random.default_rng(0))
  assert str(refused.value) == ("horizon 4: no episode is longer than it (the longest has 3 "
                                "steps); replay a shorter horizon or longer episodes")


def interruptible_finetune(workdir, **environment):
  """`python -m launch.finetune` of the point-mass demo in `workdir`, started so that SIGINT
  raises KeyboardInterrupt in it as in a terminal: a suite started in the background by a shell
  without job control (`cmd &` in a script) hands its children SIGINT ignored, and Python then
  installs no handler. The child sets Python's handler itself (a `preexec_fn` would fork a
  multithreaded JAX process)."""
  import os
  import subprocess
  import sys
  from conftest import ROOT
  return subprocess.Popen(
      [sys.executable, "-c", SIGINT_AS_IN_A_TERMINAL, "launch.finetune",
       "--config=launch/configs/finetune.py:point-mass,demo", f"--workdir={workdir}"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **environment),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_is_one_line_saying_what_the_same_command_does(tmp_path):
  """SIGINT (Ctrl-C) in a training run: exit status 130 and one line, not a stack trace."""
  import signal
  workdir = tmp_path / "run"
  process = interruptible_finetune(workdir)
  seen = []
  for line in process.stderr:            # absl logs here; the run is past its flags and checks
    seen.append(line)
    if "Config (also in" in line:
      break
  process.send_signal(signal.SIGINT)
  _, rest = process.communicate(timeout=300)
  output = "".join(seen) + rest
  assert process.returncode == 130, output[-3000:]
  # Stopped while compiling its first evaluation: nothing of value was written, and the
  # folder it created is gone (run_phase), so the line says the command starts afresh.
  assert rest.strip().splitlines()[-1] == (
      f"interrupted: nothing was written; the same command starts the run in {workdir} afresh")
  assert not workdir.exists()
  assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]


def test_ctrl_c_while_xla_compiles_exits_130_without_a_crash(tmp_path):
  """Interrupted 1 s into its first XLA compile (no compilation cache, so it compiles): the
  one line and exit status 130. Finalising Python under XLA's running compile threads
  segfaulted (exit -11 after the line) before the launcher left with os._exit."""
  import signal
  import time
  workdir = tmp_path / "run"
  process = interruptible_finetune(workdir, JAX_COMPILATION_CACHE_DIR="")
  for line in process.stderr:
    if "Compiling Online.init ..." in line:
      break
  time.sleep(1.0)
  process.send_signal(signal.SIGINT)
  _, rest = process.communicate(timeout=300)
  assert process.returncode == 130, rest[-3000:]
  assert rest.strip().splitlines()[-1].startswith("interrupted: "), rest[-3000:]
  assert "Fatal Python error" not in rest


FINALIZERS = ("gc callback", "__del__", "weakref callback")
CTRL_C_IN_A_FINALIZER = """
import gc, os, signal, sys, time, weakref
signal.signal(signal.SIGINT, signal.default_int_handler)    # as in a terminal
from launch import runtime
if sys.argv[1] == "ours":
  runtime.handle_interrupts()
def ctrl_c_here(*_):
  if not sent:
    sent.append(time.time())
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(100_000):    # the pending signal is handled here, inside the finalizer
      pass
class Finalized:
  def __del__(self):
    ctrl_c_here()
class Referent:
  pass
for finalizer in sys.argv[2:]:
  sent = []
  try:
    if finalizer == "gc callback":
      gc.callbacks.append(lambda phase, info: phase == "start" and ctrl_c_here())
      gc.collect()
      gc.callbacks.clear()
    elif finalizer == "__del__":
      Finalized()
    else:
      referent = Referent()
      reference = weakref.ref(referent, ctrl_c_here)
      del referent
    deadline = time.time() + 1
    while time.time() < deadline:
      pass
    print("lost", flush=True)
  except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_inside_a_finalizer_is_not_lost():
  """JAX's gc callback runs often while it traces; Python's own handler raises the interrupt
  inside it (as inside a `__del__` or a weakref callback), where it is printed as ignored and
  dropped (the control run), so the run went on. `runtime.handle_interrupts` sends it again
  once the finalizer is over: each of the three, one after the other, is interrupted."""
  import os
  import subprocess
  import sys
  from conftest import ROOT
  def run(handler):
    return subprocess.run(
        [sys.executable, "-c", CTRL_C_IN_A_FINALIZER, handler, *FINALIZERS], cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
  ours, pythons = run("ours"), run("python's")
  assert ours.stdout.split() == ["interrupted"] * 3, ours.stderr[-2000:]
  assert pythons.stdout.split() == ["lost"] * 3, pythons.stderr[-2000:]
  assert pythons.stderr.count("Exception ignored") == 3, pythons.stderr[-2000:]
  assert "Exception ignored" not in ours.stderr, ours.stderr[-2000:]


@pytest.mark.parametrize("contents, expected", [
    (None, "nothing was written; the same command starts the run in {} afresh"),
    (["config.json", "metrics.jsonl", "checkpoints/"],
     "no checkpoint yet; the same command starts the run in {} afresh"),
    (["notes.txt"], "nothing was written; the same command starts the run in {} afresh"),
    (["config.json", "metrics.jsonl", "checkpoints/2000/", "checkpoints/500/",
      "checkpoints/3000.orbax-checkpoint-tmp-1/"],
     "the same command resumes {} from its last checkpoint (step 2000)")])
def test_the_ctrl_c_line_says_what_the_same_command_will_do(tmp_path, contents, expected):
  from launch import runtime
  workdir = tmp_path / "run"
  for name in contents or []:
    path = workdir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith("/"):
      path.mkdir()
    else:
      path.write_text("{}")
  assert runtime._after_interrupt(str(workdir)) == expected.format(workdir)

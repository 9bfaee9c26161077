"""Seeds over devices and processes.

One process with two CPU devices (XLA's host-platform flag): 4 seeds, 2 on each device, a seed's
numbers independent of its placement, 3 seeds refused. Two processes on this machine as one
multi-host run (jax.distributed over 127.0.0.1, JAX's gloo CPU collectives, one CPU device
each): the same tiny fine-tuning run, killed after a checkpoint and resumed, writes exactly the
metrics of the one process with two devices (the same two seeds per device, so the same
computation per seed: equal bit for bit). Process 0 alone writes the run's files; a checkpoint
of 2 processes refuses 1.

Slow by nature: on the CPU, jax 0.10 never answers process 1 from the persistent compilation
cache (its cache key hashes that process's own view of the device topology, and only process 0
writes entries), so process 1 compiles the tiny programs afresh each time it starts, twice here
(the killed run and the resumed one)."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import pytest
from absl import app

from conftest import ROOT, TINY_ENV, TINY_OVERRIDES, as_flags
from launch import runtime

FLAGS = [f"--config=launch/configs/finetune.py:{TINY_ENV}",
         *as_flags(dict(TINY_OVERRIDES, method="sac", num_seeds=4))]
TIMEOUT = 900     # seconds one launch may take (minutes of it compiling with a cold cache)

# One process, two devices: where the seeds are, then the run itself (the reference).
ONE_PROCESS = textwrap.dedent("""
    import sys
    from conftest import tiny_config          # the tests' compilation cache, XLA's CPU flag
    import jax, jax.numpy as jnp, numpy as np
    import envs
    from wsrl_mjx import finetune, per_seed
    from wsrl_mjx.errors import ConfigError
    assert len(jax.devices()) == 2, jax.devices()
    config = tiny_config(num_seeds=4)
    env, spec = envs.make(config.env_name)
    programs = finetune.build_programs(config, env, spec)
    settings = jax.tree.map(jnp.asarray, per_seed.seed_settings(config)[0])
    keys = finetune.seed_keys(config)
    state = programs.init(jax.device_put(keys, programs.sharding),
                          jax.device_put(settings, programs.sharding), None, None)
    for leaf in jax.tree.leaves(state):
      shards = leaf.addressable_shards
      assert len({s.device for s in shards}) == 2, leaf.sharding
      assert all(s.data.shape[0] == 2 for s in shards)          # two seeds per device
    # Placement does not change the numbers: seed 3 equals an init of its key alone, to float32
    # rounding (a one-seed program is compiled on its own and may round differently; at LLVM's
    # level 0, which conftest.py sets, it does, by up to 3e-7).
    alone = jax.jit(programs.loop.init)(keys[3], jax.tree.map(lambda x: x[3], settings), None)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a)[3], b, rtol=1e-6,
                                                         atol=1e-6),
                 state.agent.params, alone.agent.params)
    try:
      finetune.seed_mesh(3)
    except ConfigError as error:
      assert "multiple of the number of devices (2)" in str(error), error
    else:
      raise AssertionError("3 seeds on 2 devices should be refused")
    finetune.train_and_evaluate(config, sys.argv[1].removeprefix("--workdir="), programs=programs)
    print("one process ok")
""")

def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(workdir, log, *extra, devices=1, command=("-m", "launch.finetune", *FLAGS)):
  environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
  if devices > 1:
    environment["XLA_FLAGS"] = (environment.get("XLA_FLAGS", "") +
                                f" --xla_force_host_platform_device_count={devices}").strip()
  return subprocess.Popen([sys.executable, *command, f"--workdir={workdir}", *extra], cwd=ROOT,
                          env=environment, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                          start_new_session=True)


def start_two(workdir, tmp_path, name):
  port = free_port()
  return [start(workdir, tmp_path / f"{name}.{i}.log", f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2", f"--process_id={i}") for i in range(2)]


def stop(processes):
  for process in processes:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def finish(processes, logs):
  deadline = time.time() + TIMEOUT
  for process, log in zip(processes, logs):
    process.wait(timeout=max(1, deadline - time.time()))
    assert process.returncode == 0, log.read_text()[-3000:]


def records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_seeds_over_devices_and_two_processes_killed_and_resumed_equal_one_process(tmp_path):
  reference, shared = tmp_path / "one-process", tmp_path / "two-processes"
  processes = []
  try:
    # The reference: one process, two CPU devices (alongside the two-process run).
    processes.append(start(reference, tmp_path / "reference.log", devices=2,
                           command=("-c", ONE_PROCESS)))
    two = start_two(shared, tmp_path, "killed")
    processes += two
    deadline = time.time() + TIMEOUT
    while not (shared / "checkpoints" / "50").is_dir():
      assert all(p.poll() is None for p in two), (tmp_path / "killed.0.log").read_text()[-3000:]
      assert time.time() < deadline, "no checkpoint at step 50 in time"
      time.sleep(0.05)
    stop(two)                                              # killed mid-run
    assert not (shared / "checkpoints" / "200").exists()
    finish(processes[:1], [tmp_path / "reference.log"])
    assert "one process ok" in (tmp_path / "reference.log").read_text()

    resumed = start_two(shared, tmp_path, "resumed")
    processes += resumed
    finish(resumed, [tmp_path / f"resumed.{i}.log" for i in range(2)])
  finally:
    stop(processes)

  expected = records(reference)
  assert [r["env_step"] for r in expected] == [0, 100, 200]
  assert records(shared) == expected                       # every number, bit for bit
  resumed_log = (tmp_path / "resumed.0.log").read_text()
  assert "Resumed" in resumed_log and "env step 200/200" in resumed_log
  assert "env step" not in (tmp_path / "resumed.1.log").read_text()   # progress: process 0 only
  # One TensorBoard file per start of process 0 (the killed run's and the resumed one's).
  assert len(list((shared / "tensorboard").iterdir())) == 2
  checkpoint = json.loads((shared / "checkpoints" / "200" / "description" / "metadata").read_text())
  assert checkpoint["layout"] == {"processes": 2, "devices": 2}

  # One process cannot resume the two processes' checkpoint: one line, exit status 2.
  alone = start(shared, tmp_path / "alone.log", "--config.online_steps=300", devices=2)
  try:
    alone.wait(timeout=TIMEOUT)
  finally:
    stop([alone])
  lines = (tmp_path / "alone.log").read_text().strip().splitlines()
  assert alone.returncode == 2, lines[-20:]
  assert lines[-1] == (
      f"error: {shared}: its checkpoint at env_step 200 was written by 2 processes with 2 "
      "devices; this run has 1 process with 2 devices. Resume it with the same layout, or "
      "choose a new --workdir.")
  assert records(shared) == expected                       # nothing lost


class _Value:
  def __init__(self, value):
    self.value = value


SLURM = {"SLURM_JOB_ID": "417", "SLURM_STEP_NODELIST": "gpu[003-004]", "SLURM_PROCID": "0",
         "SLURM_LOCALID": "0"}


def test_a_process_is_one_of_several_where_jax_detects_a_cluster_of_more_than_one(monkeypatch):
  for variable in ("OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST", *SLURM, "SLURM_NTASKS"):
    monkeypatch.delenv(variable, raising=False)
  assert runtime.cluster_process_count() == 1                   # no cluster
  for variable, value in SLURM.items():
    monkeypatch.setenv(variable, value)
  monkeypatch.setenv("SLURM_NTASKS", "1")                       # a one-task job (a sweep's cell)
  assert runtime.cluster_process_count() == 1
  monkeypatch.setenv("SLURM_NTASKS", "16")                      # srun --ntasks=16
  assert runtime.cluster_process_count() == 16


def test_the_process_flags_are_given_together_and_in_range():
  def flags(address, count, index, local=None):
    return runtime.DistributedFlags(_Value(address), _Value(count), _Value(index), _Value(local),
                                    _Value(10))
  with pytest.raises(app.UsageError, match=r"^--process_id: missing; --coordinator_address, "):
    runtime.start_distributed(flags("127.0.0.1:1", 2, None))
  with pytest.raises(app.UsageError, match=r"^--process_id=2: must be between 0 and "
                     r"--num_processes - 1 \(1\)\.$"):
    runtime.start_distributed(flags("127.0.0.1:1", 2, 2))
  with pytest.raises(app.UsageError, match=r"^--local_device_ids=0,x: whole numbers"):
    runtime.start_distributed(flags("127.0.0.1:1", 2, 1, ["0", "x"]))
  runtime.start_distributed(flags("127.0.0.1:1", 1, 0))          # one process: nothing to join
  assert jax.process_count() == 1

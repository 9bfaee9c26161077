"""Test-wide settings: the repository on sys.path, XLA's CPU flags for jaxlib 0.10 and a faster
XLA:CPU build for the tests (in the environment, so the subprocesses the tests start get them
too), and one compilation cache shared by both pytest-xdist workers and those subprocesses (MJX
programs take tens of seconds to compile on a CPU)."""

import importlib.util
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The tests' compilation cache: $WSRL_MJX_TEST_CACHE (default: in the temp folder), one folder
# for both pytest-xdist workers and every launcher they start (JAX_COMPILATION_CACHE_DIR is set
# here, in the environment). A size limit turns on JAX's LRU cache, which reads and writes each
# entry under a lock (the `filelock` package), so one process never reads another's half-written
# entry; without it JAX writes unlocked and each worker would need a folder of its own. Shared,
# a program the two workers both compile (the tiny loop's programs in files on either worker, an
# env's programs in two files) is compiled once where one worker gets to it after the other.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER:   # on a GPU host, two workers each taking 75% of its memory would not fit
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
CACHE_DIR = os.environ.setdefault(
    "WSRL_MJX_TEST_CACHE", os.path.join(tempfile.gettempdir(), "wsrl_mjx_test_jax_cache"))
CACHE_MAX_BYTES = 16 << 30    # far above a whole cold suite's entries (about 0.1 GiB)
os.environ["JAX_COMPILATION_CACHE_DIR"] = CACHE_DIR
os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(CACHE_MAX_BYTES)

# From empty caches the suite is mostly XLA:CPU compiling (CI starts empty every time), and much
# of a compile is LLVM optimising the generated code. The tests build that code at LLVM's level 0
# instead: the same XLA programs, compiled about 30% faster and run slower, which these tiny
# configs barely notice (tests/test_so2.py, test_online.py and three envs' registry tests from
# empty caches on the 2-core CPU: 195 s against 282 s). Launchers keep XLA's default. Not where a
# CUDA plugin is installed: the flag would slow the GPU's kernels as well. A user's XLA_FLAGS
# naming the option wins.
TESTS_XLA_FLAG = "--xla_backend_optimization_level=0"
HAS_CUDA_PLUGIN = any(importlib.util.find_spec(plugin)
                      for plugin in ("jax_cuda12_plugin", "jax_cuda13_plugin"))

from wsrl_mjx import compat  # noqa: E402

if not HAS_CUDA_PLUGIN:
  compat.add_xla_flags([TESTS_XLA_FLAG])
compat.configure_xla_cpu()   # before any test asks JAX for a device (XLA reads XLA_FLAGS once)

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

import pytest  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: compiles for a minute or more on a 2-core CPU; runs by default, "
      "-m 'not slow' deselects it")


# Where a test's time goes, for the CI budget: with WSRL_MJX_COMPILE_REPORT=FILE each test
# (setup, call and teardown) appends one JSON line to FILE: its seconds in all and those JAX
# spent tracing, lowering and compiling in this process (a persistent-cache load counts as a
# compile; `cache_hits` counts them), and each compile over 3 s by program. Launchers the test
# starts are not seen (their seconds are in `seconds` only). Both workers may append to one file.
COMPILE_REPORT = os.environ.get("WSRL_MJX_COMPILE_REPORT")
_compile_seconds: dict = {}

if COMPILE_REPORT:
  from wsrl_mjx import host_loop   # noqa: E402  (the names of JAX's events, CompileClock's)
  _PHASES = dict(zip(host_loop.COMPILE_EVENTS, ("trace_s", "lower_s", "compile_s")))

  def _on_jax_duration(event, duration, fun_name=None, **_):
    phase = _PHASES.get(event)
    if phase:
      _compile_seconds[phase] = _compile_seconds.get(phase, 0.0) + duration
      if phase == "compile_s" and duration > 3.0:
        _compile_seconds.setdefault("compiles_over_3s", []).append(
            [fun_name, round(duration, 1)])

  def _on_jax_event(event, **_):
    if event == host_loop.CACHE_HIT_EVENT:
      _compile_seconds["cache_hits"] = _compile_seconds.get("cache_hits", 0) + 1

  jax.monitoring.register_event_duration_secs_listener(_on_jax_duration)
  jax.monitoring.register_event_listener(_on_jax_event)

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_protocol(item, nextitem):
    del nextitem
    import json
    import time
    _compile_seconds.clear()
    start = time.perf_counter()
    yield
    record = {"test": item.nodeid, "seconds": round(time.perf_counter() - start, 2),
              **{k: round(v, 2) if isinstance(v, float) else v
                 for k, v in _compile_seconds.items()}}
    with open(COMPILE_REPORT, "a") as report:
      report.write(json.dumps(record) + "\n")


# The task the training loop's tests run on: the contact-free point mass (envs/point_mass.py),
# whose tiny run compiles in ~5 s on the 2-core CPU against ~38 s on hopper. Physics and the
# paper's tasks are tested in their own files (test_envs, test_antmaze, test_adroit, ...); door
# and the kitchen also with a tiny launch.finetune run each.
TINY_ENV = "point-mass"

# The one fine-tuning configuration every loop test compiles: the point mass, 2 seeds, tiny
# networks, the real ensemble and UTD.
TINY_OVERRIDES = dict(
    num_seeds=2, online_steps=200, warmup_steps=50, steps_per_chunk=50, eval_interval=100,
    checkpoint_interval=50, eval_episodes=2, episode_length=40, batch_size=64,
    actor_hidden_sizes=(32, 32), critic_hidden_sizes=(32, 32), replay_capacity=120)


def tiny_config(**overrides):
  """The tiny fine-tuning config: WSRL where `pretrained` is given, SAC from scratch else
  (unless `method` says otherwise)."""
  from launch.configs import finetune as finetune_config
  config = finetune_config.get_config(TINY_ENV)
  method = "wsrl" if overrides.get("pretrained") else "sac"
  config.update({**TINY_OVERRIDES, "method": method, **overrides})
  return config


def tiny_command_line_overrides():
  """The same tiny config as `--config.x=y` flags for launch.finetune."""
  return as_flags(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_programs():
  """Compiled once per session: (config, env, env_spec, Programs)."""
  import envs
  from wsrl_mjx import finetune
  config = tiny_config()
  env, env_spec = envs.make(config.env_name)
  return config, env, env_spec, finetune.build_programs(config, env, env_spec)


# Offline pretraining at the same toy size, with networks that hand over to `tiny_config`.
TINY_PRETRAIN_OVERRIDES = dict(
    num_seeds=2, offline_steps=100, steps_per_chunk=50, eval_interval=100,
    checkpoint_interval=50, eval_episodes=2, episode_length=40, batch_size=64,
    actor_hidden_sizes=(32, 32), critic_hidden_sizes=(32, 32), iql_hidden_sizes=(32, 32))


def tiny_pretrain_config(dataset, **overrides):
  from launch.configs import pretrain as pretrain_config
  config = pretrain_config.get_config(TINY_ENV)
  config.update(dict(TINY_PRETRAIN_OVERRIDES, dataset=str(dataset), **overrides))
  return config


def run_launch(module, *flags, timeout=300, cwd=ROOT):
  """`python -m module flags...` from the repository root (or `cwd`), its output captured."""
  import subprocess
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=cwd,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                        text=True, timeout=timeout)


def killed_then_resumed(train, monkeypatch, step=100):
  """Runs `train()` as a run killed right after writing its checkpoint at `step`, then
  `train()` again, the resume, whose result it returns. Undoes `monkeypatch`'s patches."""
  from wsrl_mjx import checkpoint
  save = checkpoint.RunCheckpoints.save

  def save_then_die(self, at, *args, **kwargs):
    save(self, at, *args, **kwargs)
    if at == step:
      raise KeyboardInterrupt("killed")

  monkeypatch.setattr(checkpoint.RunCheckpoints, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    train()
  monkeypatch.undo()
  return train()


def checkpointed_agent(workdir, step):
  """The agent item of the checkpoint at `step` in `workdir` (either phase), as numpy arrays."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  restored = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints").restore(
      step, args=ocp.args.Composite(agent=ocp.args.StandardRestore()))
  return jax.tree.map(np.asarray, restored.agent)


# `python -c SIGINT_AS_IN_A_TERMINAL <module> <args>` runs a launcher with Python's SIGINT
# handler, as a terminal starts it: a suite run as a background job of a shell without job
# control (CI's) hands its children SIGINT ignored, and a launcher keeps an ignored SIGINT so.
SIGINT_AS_IN_A_TERMINAL = """
import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def as_flags(overrides):
  flags = []
  for name, value in overrides.items():
    if isinstance(value, tuple):
      value = "(" + ",".join(map(str, value)) + ")"
    flags.append(f"--config.{name}={value}")
  return flags


@pytest.fixture(scope="session")
def random_dataset(tmp_path_factory):
  """A D4RL-format file of random-policy point-mass steps written by our collector (2 envs x
  300, time limit 25 steps: a random point mass leaves the arena after 15-38 steps, so both
  endings occur)."""
  import jax
  import envs
  from wsrl_mjx.datagen import collect
  env, env_spec = envs.make(TINY_ENV)
  rows = collect.collect(env, env_spec, collect.random_policy(env_spec.action_size), None,
                         jax.random.PRNGKey(0), steps_per_env=300, num_envs=2,
                         episode_length=25, action_clip=0.99999)
  path = tmp_path_factory.mktemp("data") / "point_mass_random.hdf5"
  collect.write(path, rows, {"algorithm": "test"})
  return path, rows


@pytest.fixture(scope="session")
def cql_run(random_dataset, tmp_path_factory):
  """A finished tiny CQL pretraining run on the random point-mass data: (workdir, last
  record)."""
  from wsrl_mjx import pretrain
  path, _ = random_dataset
  workdir = tmp_path_factory.mktemp("cql")
  return workdir, pretrain.train_and_evaluate(tiny_pretrain_config(path, algo="cql"), workdir)


def untrained_checkpoint(workdir, config):
  """A pretraining checkpoint (a CQL description) of untrained SAC networks of the fine-tuning
  `config`'s shapes, for arms that need a checkpoint but not a trained one (jsrl, so2), without
  compiling a pretraining -> (the agent's parameters, its Adam states), seed axis first."""
  import envs
  from wsrl_mjx import checkpoint, configs
  from wsrl_mjx.agents import sac
  spec = envs.spec(config.env_name)
  agent_config = configs.sac_config(config, spec)
  agent = sac.SAC(agent_config)
  rates = sac.LearningRates(actor=1e-4, critic=3e-4, temperature=1e-4)
  state = jax.jit(jax.vmap(lambda key: agent.init_state(agent.init_params(key), rates)))(
      jax.random.split(jax.random.PRNGKey(3), config.num_seeds))
  params = state.params
  description = {"kind": "wsrl-mjx pretrain", "algo": "cql", "env_name": spec.name,
                 "task": spec.task, "family": spec.family, "num_seeds": config.num_seeds,
                 "agent": dict(configs.agent_description(agent_config), algo="cql")}
  saver = checkpoint.RunCheckpoints(workdir, step_unit="gradient_step")
  saver.save(1, state, params, description, sac.optimizer_states(state))
  saver.close()
  return params, sac.optimizer_states(state)

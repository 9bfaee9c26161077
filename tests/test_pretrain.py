"""Offline phase end to end: collector -> D4RL file -> loader -> pretraining -> fine-tuning."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import serialization

import envs
from conftest import (ROOT, TINY_ENV, TINY_PRETRAIN_OVERRIDES, as_flags, checkpointed_agent,
                      tiny_command_line_overrides, tiny_config, tiny_pretrain_config)
from wsrl_mjx import checkpoint, configs, data, finetune, per_seed, pretrain


def test_collector_writes_d4rl_files_the_loader_reads_back(random_dataset):
  path, rows = random_dataset
  trajectories = data.read(path)
  np.testing.assert_array_equal(trajectories.observations, rows["observations"])
  np.testing.assert_array_equal(trajectories.terminals, rows["terminals"])
  np.testing.assert_array_equal(trajectories.timeouts, rows["timeouts"])
  assert trajectories.observations.dtype == np.float32 and trajectories.terminals.dtype == bool
  np.testing.assert_array_equal(trajectories.infos["qpos"].shape, (600, 2))
  # The observation is the qpos and qvel of the state it was taken in.
  np.testing.assert_allclose(rows["observations"], np.concatenate(
      [rows["qpos"], rows["qvel"]], axis=1), atol=1e-6)
  # Each stream of 300 steps ends cut, and time limits (25) are timeouts, never terminals.
  assert rows["timeouts"][299] or rows["terminals"][299]
  assert not np.any(rows["timeouts"] & rows["terminals"])
  ends = np.flatnonzero(rows["timeouts"] | rows["terminals"])
  starts = np.concatenate([[0], ends[:-1] + 1])
  lengths = ends - starts + 1
  assert np.all(lengths[rows["timeouts"][ends]] <= 25)
  assert np.all(lengths[rows["terminals"][ends]] <= 25)   # leaving on step 25 is terminal
  assert np.sum(lengths == 25) > 5 and np.sum(rows["terminals"]) > 5
  # A terminal row's next observation is outside the arena, and no other row's is.
  outside = np.linalg.norm(rows["next_observations"][:, :2], axis=1) > 1.0
  np.testing.assert_array_equal(outside, rows["terminals"])
  # Inside an episode the next row continues from the previous step's next observation.
  inside = np.setdiff1d(np.arange(599), ends)
  np.testing.assert_allclose(rows["observations"][inside + 1],
                             rows["next_observations"][inside], atol=1e-6)

  dataset = data.load(path, envs.spec(TINY_ENV))
  kept_terminals = int(dataset.terminals.sum())
  assert kept_terminals == int(rows["terminals"].sum())


def test_a_dataset_for_another_env_is_refused_before_training(random_dataset, tmp_path):
  path, _ = random_dataset
  config = tiny_pretrain_config(path)
  config.env_name = "walker2d-medium-v2"
  with pytest.raises(data.DatasetError, match=rf"{path.name}.*'observations'.*4.*17"):
    pretrain.train_and_evaluate(config, tmp_path)
  assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_an_offline_schedule_off_the_chunk_size_runs_exactly_with_a_shorter_last_chunk(
    random_dataset, tmp_path, caplog):
  """130 gradient steps in chunks of 50 (evaluations every 100): 50, 50, then 30, which is a
  second compiled chunk program (gcd(130, 100, 50) = 10 would mean 5x the host round trips)."""
  path, _ = random_dataset
  caplog.set_level("INFO")
  config = tiny_pretrain_config(path, algo="cql", offline_steps=130)
  last = pretrain.train_and_evaluate(config, tmp_path)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["gradient_step"] for r in records] == [0, 100, 130]
  assert last["gradient_step"] == 130 and records[-1]["train"]["updates"] == [30, 30]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [100, 130]
  assert any("Chunks of 50, 30 gradient steps" in r.getMessage() for r in caplog.records)


def test_cql_pretraining_writes_records_and_a_wsrl_shaped_checkpoint(cql_run):
  workdir, last = cql_run
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["gradient_step"] for r in records] == [0, 100]
  assert records[-1]["train"]["updates"] == [50, 50]
  assert np.all(np.isfinite(records[-1]["train"]["critic_loss"]))
  description = json.loads((workdir / "checkpoints/100/description/metadata").read_text())
  assert description["kind"] == "wsrl-mjx pretrain" and description["algo"] == "cql"
  assert description["step_unit"] == "gradient_step" and description["step"] == 100
  expected = configs.agent_description(
      configs.sac_config(tiny_config(), envs.spec(TINY_ENV)))
  for field in checkpoint.AGENT_SHAPE_FIELDS:
    assert description["agent"][field] == expected[field], field
  assert len(last["normalized_scores"]) == 2


def test_pretrain_to_finetune_handoff_restores_exactly_the_pretrained_agent(cql_run,
                                                                             tiny_programs):
  workdir, _ = cql_run
  config, _, spec, programs = tiny_programs
  params, optimizer, description = finetune.load_pretrained(
      tiny_config(pretrained=str(workdir)), programs, spec)
  assert description["algo"] == "cql"
  jax.tree.map(np.testing.assert_array_equal,
               serialization.to_state_dict(jax.tree.map(np.asarray, params)),
               checkpointed_agent(workdir, 100))
  settings = jax.tree.map(np.asarray, per_seed.seed_settings(config)[0])
  state = programs.init(finetune.seed_keys(config), settings, params, optimizer)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.agent.params),
               jax.tree.map(np.asarray, params))
  # The Adam states continue too (tests/test_reference_parity.py checks them in detail).
  np.testing.assert_array_equal(state.agent.critic_opt_state.inner_state[0].count, [100, 100])


def test_a_pretraining_run_given_as_a_fine_tuning_workdir_is_refused_and_left_as_it_was(
    cql_run, tiny_programs):
  """The easy slip of --workdir for --config.pretrained: one line that says so (it was a KeyError
  on a field fine-tuning configs have and pretraining configs do not)."""
  workdir, _ = cql_run
  _, _, _, programs = tiny_programs
  files = lambda: {p: p.read_bytes() for p in workdir.rglob("*")
                   if p.is_file() and p.name != ".lock"}
  before = files()
  with pytest.raises(checkpoint.CheckpointError) as refused:
    finetune.train_and_evaluate(tiny_config(), workdir, programs)
  assert str(refused.value) == (
      f"{workdir}: holds a wsrl-mjx pretrain run, and this is a wsrl-mjx finetune run; choose a "
      "new --workdir. To fine-tune from it, pass it as --config.pretrained.")
  assert files() == before


def test_pretraining_resumes_exactly(random_dataset, cql_run, tmp_path, monkeypatch):
  path, _ = random_dataset
  full_dir, _ = cql_run
  save = checkpoint.RunCheckpoints.save

  def save_then_die(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    if step == 50:
      raise KeyboardInterrupt

  monkeypatch.setattr(checkpoint.RunCheckpoints, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    pretrain.train_and_evaluate(tiny_pretrain_config(path, algo="cql"), tmp_path)
  monkeypatch.undo()
  pretrain.train_and_evaluate(tiny_pretrain_config(path, algo="cql"), tmp_path)
  jax.tree.map(np.testing.assert_array_equal, checkpointed_agent(tmp_path, 100),
               checkpointed_agent(full_dir, 100))


def test_iql_pretrains_but_cannot_start_wsrl_finetuning(random_dataset, tmp_path,
                                                         tiny_programs):
  path, _ = random_dataset
  last = pretrain.train_and_evaluate(tiny_pretrain_config(path, algo="iql"), tmp_path)
  assert np.all(np.isfinite(last["returns"]))
  np.testing.assert_array_equal(last["train"]["updates"], [50, 50])
  _, _, spec, programs = tiny_programs
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"agent.policy is 'gaussian' but this run needs 'tanh_gaussian'"):
    finetune.load_pretrained(tiny_config(pretrained=str(tmp_path)), programs, spec)


def test_unknown_algo_is_refused():
  with pytest.raises(ValueError, match=r"config.algo='sac'; choose one of calql, cql, iql"):
    configs.make_learner(tiny_pretrain_config("x.hdf5", algo="sac"), envs.spec(TINY_ENV))


def test_collect_pretrain_finetune_from_the_command_line(tmp_path):
  """The README's pipeline at toy size, each command consuming the last one's output: collect,
  check the bridge, pretrain, fine-tune (then run again: a resume of a finished run is a no-op),
  and collect with the fine-tuned policy. On the point mass: the commands and what they hand
  each other do not depend on the task, and each family's physics, bridge check and launch runs
  are tested in its own file (hopper's physics against MuJoCo and gym: test_envs.py)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT))

  def run(*command):
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result

  dataset = tmp_path / "point_mass_random.hdf5"
  collected = run("launch.collect", f"--env={TINY_ENV}", "--policy=random", "--steps=600",
                  "--num_envs=2", "--episode_length=40", f"--output={dataset}")
  assert dataset.exists()
  assert "Collecting 600 steps in 2 point-mass envs with " in collected.stderr   # before compiling
  # The log states the data's quality: its finished episodes' mean return and D4RL score, by
  # hand from the file. Finished: leaving the arena (terminal) or the 40-step limit; each env's
  # stream of 300 steps ends in an episode that had neither (a timeout row, under 40 steps), not
  # counted.
  import h5py
  with h5py.File(dataset) as f:
    rewards, terminals = f["rewards"][:].astype(np.float64), f["terminals"][:]
    ends = terminals | f["timeouts"][:]
  cuts = np.flatnonzero(ends) + 1
  episodes = list(zip(np.split(rewards, cuts), np.split(terminals, cuts)))[:len(cuts)]
  returns = [r.sum() for r, t in episodes if t[-1] or len(r) == 40]
  cut = len(episodes) - len(returns)
  assert cut >= 1
  score = 100 * np.mean(returns) / 200          # envs/point_mass.py: 100 x return / 200
  assert (f"Finished episodes: {len(returns)} ({cut} cut short by the end of a stream not "
          f"counted), mean return {np.mean(returns):.1f}, normalised score {score:.1f}"
          ) in collected.stderr
  # The MuJoCo bridge replays the collector's recorded states through MJX and C MuJoCo.
  report = tmp_path / "bridge.json"
  run("launch.bridge_check", f"--env={TINY_ENV}", f"--dataset={dataset}", "--starts=8",
      "--horizon=4", "--cones=model", f"--json={report}")
  (checked,) = json.loads(report.read_text())
  assert checked["starts"] == 8 and not checked["failures"]
  assert set(checked["mjx_vs_mujoco"]) == {"position", "velocity"}
  # The file was written by MJX: replaying it in MJX reproduces it to float32 rounding.
  assert all(e["one_step"] < 1e-4 for e in checked["mjx_vs_recorded"].values())
  offline, online = tmp_path / "offline", tmp_path / "online"
  run("launch.pretrain", f"--config=launch/configs/pretrain.py:{TINY_ENV}",
      f"--workdir={offline}", f"--config.dataset={dataset}", "--config.algo=calql",
      *as_flags(TINY_PRETRAIN_OVERRIDES))
  finetune_command = ("launch.finetune", f"--config=launch/configs/finetune.py:{TINY_ENV}",
                      f"--workdir={online}", f"--config.pretrained={offline}",
                      *tiny_command_line_overrides(), "--config.keep_checkpoints=5")
  result = run(*finetune_command)
  assert "Pretrained agent" in result.stderr and "env steps/s" in result.stderr
  assert "Final normalised scores per seed" in result.stderr
  # What the run says while it compiles and warms up; no library noise.
  assert "Warmup: the pretrained agent, frozen, collects" in result.stderr
  # The first chunk compiles in the background while the starting policy is evaluated.
  assert "Compiling Online.run(50) ahead, in the background ..." in result.stderr
  assert re.search(r"Compiled Online\.run\(50\) in [\d.]+ s, in the background",
                   result.stderr)
  progress = [line for line in result.stderr.splitlines() if re.search(r"] env step \d+/", line)]
  assert "env step 50/200" in progress[0] and "warmup: no updates yet" in progress[0]
  assert "critic loss" not in progress[0] and "critic loss" in progress[1]
  assert "Failed to import warp" not in result.stdout
  assert "Unable to initialize backend" not in result.stderr
  assert "Config (also in" in result.stderr and (online / "config.json").exists()
  records = [json.loads(line) for line in (online / "metrics.jsonl").read_text().splitlines()]
  assert [r["env_step"] for r in records] == [0, 100, 200]
  # At the end of warmup (step 50) the agent is still exactly the pretrained one; then it learns.
  pretrained = checkpointed_agent(offline, TINY_PRETRAIN_OVERRIDES["offline_steps"])
  jax.tree.map(np.testing.assert_array_equal, checkpointed_agent(online, 50), pretrained)
  kernel = lambda agent: agent["actor"]["params"]["mean"]["kernel"]
  assert not np.array_equal(kernel(checkpointed_agent(online, 100)), kernel(pretrained))
  again = run(*finetune_command)
  assert "Resumed" in again.stderr
  assert [json.loads(line)
          for line in (online / "metrics.jsonl").read_text().splitlines()] == records
  # A collector run from the fine-tuned checkpoint closes the loop.
  run("launch.collect", f"--env={TINY_ENV}", f"--policy={online}",
      "--steps=100", "--episode_length=40", f"--output={tmp_path / 'finetuned.hdf5'}")
  assert data.read(tmp_path / "finetuned.hdf5").observations.shape == (100, 4)



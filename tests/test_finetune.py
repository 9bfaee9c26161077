"""The host loop and checkpoints: exact resume, atomic saves, clear errors, the launch command."""

import json
import os
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import serialization

import envs
from conftest import ROOT, checkpointed_agent, tiny_config
from wsrl_mjx import checkpoint, finetune, per_seed


@pytest.fixture(scope="module")
def finished_run(tiny_programs, tmp_path_factory):
  """A complete tiny run: (workdir, last evaluation record)."""
  config, _, _, programs = tiny_programs
  workdir = tmp_path_factory.mktemp("finished")
  return workdir, finetune.train_and_evaluate(config, workdir, programs)


def read_records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def tensorboard_scalars(workdir):
  """[(tag, step, value)] as TensorBoard shows them: event files in name order, a SessionLog
  START at step s hiding the events read before it at steps >= s (TensorBoard's
  EventAccumulator purges orphaned data this way). Records: u64 length, u32 CRC, data, u32 CRC."""
  from tensorboardX.proto import event_pb2
  shown = []
  for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        shown = [scalar for scalar in shown if scalar[1] < event.step]
      shown += [(value.tag, event.step, value.simple_value) for value in event.summary.value]
  return sorted(shown)


def test_run_writes_metrics_checkpoints_and_tensorboard(finished_run, tiny_programs):
  config = tiny_programs[0]
  workdir, last = finished_run
  records = read_records(workdir)
  assert [r["env_step"] for r in records] == [0, 100, 200]
  for record in records:
    assert len(record["returns"]) == len(record["normalized_scores"]) == config.num_seeds
    assert np.asarray(record["episode_returns"]).shape == (config.num_seeds, config.eval_episodes)
    spec = envs.spec(config.env_name)
    np.testing.assert_allclose(record["normalized_scores"],
                               spec.normalized_score(np.asarray(record["returns"])), rtol=1e-6)
  assert records[-1]["train"]["updates"] == [50, 50]
  assert list(workdir.glob("tensorboard/events.out.tfevents.*"))
  assert ("eval/normalized_score_mean", 200, pytest.approx(np.mean(last["normalized_scores"]))
          ) in tensorboard_scalars(workdir)
  # The resolved config, as the run used it, at the run directory's root.
  assert json.loads((workdir / "config.json").read_text()) == json.loads(
      json.dumps(config.to_dict()))
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [150, 200]                                  # keep_checkpoints=2
  description = json.loads((workdir / "checkpoints/200/description/metadata").read_text())
  assert description["env_name"] == "point-mass"
  assert description["agent"]["observation_size"] == 4
  assert description["agent"]["critic_hidden_sizes"] == [32, 32]
  assert description["num_seeds"] == 2 and description["step"] == 200
  assert description["step_unit"] == "env_step" and description["agent"]["policy"] == "tanh_gaussian"


def test_killed_run_resumes_to_the_same_numbers(finished_run, tiny_programs, tmp_path,
                                                monkeypatch, caplog):
  config, _, _, programs = tiny_programs
  full_dir, _ = finished_run
  save = checkpoint.RunCheckpoints.save
  saved = []

  def save_then_die(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    saved.append(step)
    if step == 100:
      raise KeyboardInterrupt("killed")

  monkeypatch.setattr(checkpoint.RunCheckpoints, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    finetune.train_and_evaluate(config, tmp_path, programs)
  monkeypatch.undo()
  assert saved == [50, 100]
  # The killed run had logged nothing past its checkpoint; pretend it had, to check truncation.
  with (tmp_path / "metrics.jsonl").open("a") as f:
    f.write(json.dumps({"env_step": 150, "returns": [0.0, 0.0]}) + "\n")

  caplog.set_level("INFO")
  caplog.clear()
  finetune.train_and_evaluate(config, tmp_path, programs)
  assert read_records(tmp_path) == read_records(full_dir)
  assert tensorboard_scalars(tmp_path) == tensorboard_scalars(full_dir)
  # The resumed run's first progress line shows the score of the evaluation it resumed after.
  first = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("env step "))
  score_at_100 = np.mean(read_records(full_dir)[1]["normalized_scores"])
  assert first.startswith("env step 150/200") and f"last eval score {score_at_100:.1f}" in first
  jax.tree.map(np.testing.assert_array_equal, checkpointed_agent(tmp_path, 200),
               checkpointed_agent(full_dir, 200))


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once_when_restarted(
    finished_run, tiny_programs, tmp_path, monkeypatch):
  config, _, _, programs = tiny_programs
  full_dir, _ = finished_run

  def die(self, step, *args, **kwargs):
    raise KeyboardInterrupt("killed before the first checkpoint was written")

  monkeypatch.setattr(checkpoint.RunCheckpoints, "save", die)
  with pytest.raises(KeyboardInterrupt):
    finetune.train_and_evaluate(config, tmp_path, programs)
  monkeypatch.undo()
  assert [r["env_step"] for r in read_records(tmp_path)] == [0]   # written, not checkpointed
  finetune.train_and_evaluate(config, tmp_path, programs)
  assert read_records(tmp_path) == read_records(full_dir)          # env_step 0 once
  assert tensorboard_scalars(tmp_path) == tensorboard_scalars(full_dir)


def test_a_schedule_off_the_chunk_size_runs_on_the_same_program_to_the_same_numbers(
    finished_run, tiny_programs, tmp_path):
  """steps_per_chunk 75 does not divide the evaluation interval (100): chunks of 50 fit every
  evaluation and checkpoint, on the program already compiled for 50 (it was a ValueError)."""
  _, _, _, programs = tiny_programs
  full_dir, _ = finished_run
  last = finetune.train_and_evaluate(tiny_config(steps_per_chunk=75), tmp_path, programs)
  assert last["env_step"] == 200
  assert read_records(tmp_path) == read_records(full_dir)


def test_a_failed_save_keeps_the_last_good_checkpoint(finished_run, tiny_programs, tmp_path):
  config, _, _, programs = tiny_programs
  workdir, _ = finished_run
  checkpoints = checkpoint.RunCheckpoints(workdir, max_to_keep=5)
  abstract = jax.eval_shape(programs.init, finetune.seed_keys(config),
                            jax.tree.map(np.asarray, per_seed.seed_settings(config)[0]),
                            None)
  good = checkpoints.restore(200, abstract)
  unsavable = {"fine": np.zeros(3), "broken": object()}
  with pytest.raises(Exception):
    checkpoints.save(300, unsavable, unsavable, {"kind": "test"})
  checkpoints.close()
  reopened = checkpoint.RunCheckpoints(workdir)
  assert reopened.latest_step() == 200
  again = reopened.restore(200, abstract)
  jax.tree.map(np.testing.assert_array_equal, again, good)
  assert not (workdir / "checkpoints" / "300").exists()


def test_resume_with_a_different_config_is_refused(finished_run, tiny_programs):
  _, _, _, programs = tiny_programs
  workdir, _ = finished_run
  recorded = (workdir / "config.json").read_text()
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"config.utd=4 \(this one: 2\), config.num_critics=10 \(this one: 5\)"):
    finetune.train_and_evaluate(tiny_config(num_critics=5, utd=2), workdir, programs)
  # The refused run left the run's record alone.
  assert (workdir / "config.json").read_text() == recorded


def test_pretrained_checkpoint_must_match_env_and_networks(finished_run):
  workdir, _ = finished_run
  for overrides, field in [(dict(critic_hidden_sizes=(64, 64)), "critic_hidden_sizes"),
                           (dict(num_critics=4), "num_critics")]:
    config = tiny_config(pretrained=str(workdir), **overrides)
    env, spec = envs.make(config.env_name)
    programs = finetune.build_programs(config, env, spec)
    with pytest.raises(checkpoint.CheckpointError,
                       match=rf"description/metadata: agent.{field} is .* but this run needs "
                             r".* \(both are point-mass: the run's config asks for other sizes "
                             r"than the pretraining's\)\.$"):
      finetune.load_pretrained(config, programs, spec)

  config = tiny_config(pretrained=str(workdir))
  config.env_name = "walker2d-medium-v2"
  env, spec = envs.make(config.env_name)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"agent.observation_size is 4 .* 17 \(env walker2d-medium-v2\); the "
                           r"checkpoint was made for point-mass\.$"):
    finetune.load_pretrained(config, finetune.build_programs(config, env, spec), spec)

  with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint directory"):
    checkpoint.resolve(workdir / "nope")


def test_pretrained_handoff_restores_the_checkpoint_seed_by_seed(finished_run, tiny_programs):
  config, _, spec, programs = tiny_programs
  workdir, _ = finished_run
  for path in (workdir, workdir / "checkpoints", workdir / "checkpoints" / "150"):
    params, _, description = finetune.load_pretrained(tiny_config(pretrained=str(path)),
                                                      programs, spec)
    step = 150 if path.name == "150" else 200
    assert description["step"] == step
    jax.tree.map(np.testing.assert_array_equal,
                 serialization.to_state_dict(jax.tree.map(np.asarray, params)),
                 checkpointed_agent(workdir, step))
  # More run seeds than checkpoint seeds: seed i starts from checkpoint seed i mod 2.
  params, optimizer, _ = finetune.load_pretrained(
      tiny_config(pretrained=str(workdir), num_seeds=4), programs, spec)
  kernel = np.asarray(params.actor["params"]["mean"]["kernel"])
  np.testing.assert_array_equal(kernel[2], kernel[0])
  np.testing.assert_array_equal(kernel[3], kernel[1])
  moments = np.asarray(optimizer["actor"].inner_state[0].mu["params"]["mean"]["kernel"])
  np.testing.assert_array_equal(moments[2], moments[0])
  assert not np.array_equal(moments[1], moments[0])


def test_unknown_env_name_fails_before_any_work(tmp_path):
  command = [sys.executable, "-m", "launch.finetune",
             "--config=launch/configs/finetune.py:hopper-medum-v2", f"--workdir={tmp_path}"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert result.returncode != 0
  assert "Unknown environment 'hopper-medum-v2'" in result.stderr
  assert "hopper-medium-v2" in result.stderr


def test_a_diverging_seed_is_reported_and_the_run_goes_on(finished_run, tiny_programs, tmp_path,
                                                          caplog):
  config, _, _, programs = tiny_programs
  source, _ = finished_run
  agent = checkpointed_agent(source, 200)
  agent["critic"] = jax.tree.map(lambda x: x.copy(), agent["critic"])
  for leaf in jax.tree.leaves(agent["critic"]):
    leaf[1] = np.nan                                           # seed 1's critics only
  description = json.loads((source / "checkpoints/200/description/metadata").read_text())
  poisoned = checkpoint.RunCheckpoints(tmp_path / "poisoned")
  poisoned.save(200, {"unused": np.zeros(1)}, agent, description)
  poisoned.close()

  caplog.set_level("INFO")
  workdir = tmp_path / "run"
  finetune.train_and_evaluate(
      tiny_config(pretrained=str(tmp_path / "poisoned"), online_steps=100), workdir, programs)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  # The first update (the reference's floor: step index > max(warmup 50, batch 64)) is at
  # step index 65, env step 66.
  assert any("Seed 1 stopped learning at env step 66" in w and "non-finite" in w
             for w in warnings), warnings
  last = read_records(workdir)[-1]
  assert last["diverged_at"] == [None, 66] and last["diverged_seeds"] == [1]
  assert all(np.isfinite(last["returns"]))                     # both seeds still evaluated
  assert last["train"]["updates"] == [35, 0]                   # indices 65..99 of the chunk
  # No update of seed 1 in the chunk: its losses are missing (NaN -> null), not 0.
  for name in ("critic_loss", "actor_loss", "q", "entropy"):
    assert last["train"][name][1] is None and np.isfinite(last["train"][name][0]), name
  assert warnings[-1].startswith("Done. Final normalised scores per seed: ")
  assert "Diverged" in warnings[-1] and "seed 1 at env step 66" in warnings[-1], warnings[-1]


def copy_of_step(workdir, step, destination):
  """A copy of one checkpoint step folder of `workdir` (tests edit the copy)."""
  import shutil
  target = destination / "checkpoints" / str(step)
  shutil.copytree(workdir / "checkpoints" / str(step), target)
  return target


def edit_description(step_folder, edit):
  path = step_folder / "description" / "metadata"
  description = json.loads(path.read_text())
  edit(description)
  path.write_text(json.dumps(description))


def test_a_pretrained_agent_of_another_task_reward_or_discount_is_refused(finished_run, tmp_path,
                                                                          caplog):
  """Same shapes, other meaning: a point-mass agent's Q-values are returns of its reward at
  scale 1, bias 0, discount 0.99 (issue 19: a walker2d agent for halfcheetah, scale 10 / bias -5
  for a 1 / 0 run, were accepted)."""
  workdir, _ = finished_run

  def load(pretrained, **overrides):
    config = tiny_config(pretrained=str(pretrained), **overrides)
    env, spec = envs.make(config.env_name)
    return finetune.load_pretrained(config, finetune.build_programs(config, env, spec), spec)

  for overrides, message in [
      (dict(reward_scale=10.0), r"agent.reward_scale is 1.0 but this run has 10.0"),
      (dict(reward_bias=-5.0), r"agent.reward_bias is 0.0 but this run has -5.0"),
      (dict(discount=0.9), r"agent.discount is 0.99 but this run has 0.9")]:
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"200/description/metadata: " + message + r".*allow_transfer"):
      load(workdir, **overrides)

  walker = copy_of_step(workdir, 200, tmp_path / "walker")
  edit_description(walker, lambda d: d.update(task="walker2d", env_name="walker2d-medium-v2"))
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"task is 'walker2d' but this run has 'point-mass'.*walker2d-medium-v2"):
    load(walker)

  # An explicit transfer loads it, saying what differs.
  caplog.set_level("WARNING")
  params, _, _ = load(walker, allow_transfer=True, reward_scale=10.0)
  assert np.asarray(params.actor["params"]["mean"]["kernel"]).shape[0] == 2
  warnings = " ".join(r.getMessage() for r in caplog.records)
  assert "task is 'walker2d'" in warnings and "agent.reward_scale is 1.0" in warnings

  # A checkpoint of an older version that does not record them: a warning, not a refusal.
  caplog.clear()
  old = copy_of_step(workdir, 200, tmp_path / "old")

  def forget(description):
    del description["task"]
    for name in ("reward_scale", "reward_bias", "discount"):
      del description["agent"][name]

  edit_description(old, forget)
  load(old)
  warnings = " ".join(r.getMessage() for r in caplog.records)
  assert "records no task (this run: 'point-mass'), agent.reward_scale" in warnings


def cut_short(item_folder):
  """Truncates the largest file of a checkpoint item to half its size (a disk-full copy)."""
  largest = max((p for p in item_folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  data = largest.read_bytes()
  largest.write_bytes(data[:len(data) // 2])
  return largest


def test_a_damaged_checkpoint_is_set_aside_and_the_run_resumes_from_the_older_one(
    finished_run, tiny_programs, tmp_path, caplog):
  import shutil
  config, _, _, programs = tiny_programs
  full_dir, _ = finished_run
  workdir = tmp_path / "run"
  shutil.copytree(full_dir, workdir)
  cut_short(workdir / "checkpoints" / "200" / "train_state")

  caplog.set_level("WARNING")
  finetune.train_and_evaluate(config, workdir, programs)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any(f"{workdir / 'checkpoints' / '200'}: damaged" in w and "damaged-200" in w
             for w in warnings), warnings
  # Resumed at 150, ran 150..200 again: the same numbers as the run that was never damaged.
  assert read_records(workdir) == read_records(full_dir)
  jax.tree.map(np.testing.assert_array_equal, checkpointed_agent(workdir, 200),
               checkpointed_agent(full_dir, 200))
  assert (workdir / "checkpoints" / "damaged-200" / "train_state").is_dir()   # kept, aside


def test_a_damaged_pretrained_checkpoint_is_a_checkpoint_error_naming_it(finished_run,
                                                                          tiny_programs, tmp_path):
  _, _, spec, programs = tiny_programs
  workdir, _ = finished_run
  for item in ("agent", "optimizer"):
    folder = copy_of_step(workdir, 200, tmp_path / item)
    cut_short(folder / item)
    with pytest.raises(checkpoint.CheckpointError,
                       match=rf"{folder / item}: damaged, cannot be read \(.*\); a file was cut"):
      finetune.load_pretrained(tiny_config(pretrained=str(folder)), programs, spec)

"""launch.report and launch.export on one real tiny run (2 seeds, a per-seed warmup grid), and
the statistics against rliable's numbers."""

import csv
import dataclasses
import errno
import hashlib
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import envs
from conftest import ROOT, killed_then_resumed, run_launch, tiny_config
from wsrl_mjx import claims, export, finetune, networks, report, runs, statistics

# A fixed [10 runs, 3 tasks] array and rliable 1.2.0's numbers for it:
# rly.get_interval_estimates({"a": SCORES}, lambda x: np.array([metrics.aggregate_iqm(x),
#   metrics.aggregate_mean(x)]), reps=50000, random_state=np.random.RandomState(0))
# (rliable's percentile intervals moved by up to 0.15 between random states 0-3.)
SCORES = np.array([[48.6, 66.3, 14.2], [71.5, 79.8, 20.9], [49.2, 27.6, 13.5],
                   [19.1, 89.1, 22.2], [69.1, 87.6, 5.5], [53.3, 65.8, 27.1],
                   [54.1, 66.2, 45.9], [53.9, 79.4, 1.9], [40.7, 65.5, 48.8],
                   [96.7, 81.4, -13.5]])
RLIABLE_ALL_TASKS = dict(iqm=50.26875, iqm_ci=(41.775, 58.275), mean=48.38,
                         mean_ci=(41.8467, 54.8433))
RLIABLE_FIRST_TASK = dict(iqm=54.7, iqm_ci=(44.1667, 67.3667), mean=55.62,
                          mean_ci=(43.91, 67.99))
GRID = "warmup_steps=50,100"


def test_iqm_and_stratified_bootstrap_intervals_match_rliable_on_a_fixed_array():
  for scores, expected in ((list(SCORES.T), RLIABLE_ALL_TASKS),
                           (SCORES[:, 0], RLIABLE_FIRST_TASK)):
    estimate = statistics.estimate(scores, resamples=50_000)
    assert estimate.iqm == pytest.approx(expected["iqm"], abs=1e-9)
    assert estimate.mean == pytest.approx(expected["mean"], abs=1e-9)
    np.testing.assert_allclose([estimate.iqm_low, estimate.iqm_high], expected["iqm_ci"],
                               atol=0.5)
    np.testing.assert_allclose([estimate.mean_low, estimate.mean_high], expected["mean_ci"],
                               atol=0.5)
  # By hand: 8 values, int(8/4) = 2 dropped from each end -> mean(2, 3, 4, 5).
  assert statistics.iqm(np.array([100.0, 0, 5, 1, 3, 2, 4, 6])) == 3.5
  single = statistics.estimate(np.array([7.0]))
  assert (single.iqm_low, single.iqm, single.iqm_high) == (7.0, 7.0, 7.0)


@pytest.fixture(scope="module")
def grid_run(tiny_programs, tmp_path_factory):
  """A finished tiny run whose 2 seeds are 2 grid points (warmup 50 and 100): its workdir."""
  _, _, _, programs = tiny_programs
  workdir = tmp_path_factory.mktemp("grid_run")
  finetune.train_and_evaluate(tiny_config(per_seed=GRID), workdir, programs)
  return workdir


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def copy_of_metrics(source, destination, shift=0.0, keep=None, diverged=None, **config_changes):
  """A run directory with `source`'s metrics (scores + shift, the first `keep` records, the last
  record's diverged_at replaced) and its resolved config (changed) as config.json."""
  destination.mkdir()
  lines = records(source)[:keep]
  for record in lines:
    record["normalized_scores"] = [s + shift for s in record["normalized_scores"]]
  if diverged is not None:
    lines[-1]["diverged_at"] = diverged
  (destination / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  config = runs.read(source).config
  (destination / "config.json").write_text(json.dumps(dict(config, **config_changes)))
  return destination


def test_report_command_writes_an_arm_per_grid_point_with_every_evaluation(grid_run, tmp_path):
  out = tmp_path / "report"
  result = run_launch("launch.report", str(grid_run), f"--out={out}", "--resamples=2000")
  assert result.returncode == 0, result.stderr[-3000:]
  curves = read_csv(out / "curves.csv")
  scores = {r["env_step"]: r["normalized_scores"] for r in records(grid_run)}
  assert sorted({r["arm"] for r in curves}) == ["sac warmup_steps=100",
                                                "sac warmup_steps=50"]
  assert len(curves) == 2 * 3                           # 2 arms x evaluations at 0, 100, 200
  for row in curves:
    seed = 0 if row["point"] == "warmup_steps=50" else 1
    assert (row["env"], row["step_unit"], row["seeds"]) == ("point-mass", "env_step", "1")
    for column in ("mean", "iqm", "iqm_ci_low", "iqm_ci_high"):   # one seed: its own score
      assert float(row[column]) == pytest.approx(scores[int(row["step"])][seed], rel=1e-5)
  finals = read_csv(out / "final_scores.csv")
  assert len(finals) == 2 and {r["final_step_max"] for r in finals} == {"200"}
  for row in finals:
    seed = 0 if row["point"] == "warmup_steps=50" else 1
    # After step 0 (the starting policy's evaluation), as the claims count it: 100 and 200.
    assert float(row["last3_mean"]) == pytest.approx(
        np.mean([scores[s][seed] for s in (100, 200)]), rel=1e-5)
  text = (out / "report.md").read_text()
  for link in ("learning_curves.png", "diagnostics.png", "final_scores.md", "final_scores.csv",
               "curves.csv"):
    assert f"]({link})" in text
  assert "finished" in text and "unfinished" not in text
  assert "python -m launch.report" in text and (out / "final_scores.md").read_text() in text
  # The run's cost: one wall_time.jsonl line per evaluation, the device the run used.
  wall = [json.loads(line) for line in (grid_run / "wall_time.jsonl").read_text().splitlines()]
  assert [w["env_step"] for w in wall] == [0, 100, 200]
  assert len({w["session"] for w in wall}) == 1 and wall[0]["device"] == "1 x cpu"
  assert 0 < wall[0]["seconds"] <= wall[1]["seconds"] <= wall[2]["seconds"]
  seconds = int(round(wall[2]["seconds"]))
  assert (f"| finished | {seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d} | "
          "1 x cpu |") in text
  import matplotlib.image
  for figure in ("learning_curves.png", "diagnostics.png"):
    image = matplotlib.image.imread(out / figure)
    assert image.shape[0] > 150 and image.shape[1] > 250
    assert np.std(image[..., :3]) > 0.05                # something drawn, not a blank canvas


def test_wall_time_sums_each_session_once_and_skips_a_cut_line(tmp_path):
  """Two sessions (the second resumed the first) and a line cut short by a kill: the sessions'
  last seconds added up, the devices listed once each in order."""
  lines = [{"env_step": 0, "session": "A", "seconds": 10.0, "device": "1 x cpu"},
           {"env_step": 100, "session": "A", "seconds": 70.5, "device": "1 x cpu"},
           {"env_step": 100, "session": "B", "seconds": 20.0, "device": "1 x NVIDIA H200"},
           {"env_step": 200, "session": "B", "seconds": 45.0, "device": "1 x NVIDIA H200"}]
  text = "".join(json.dumps(line) + "\n" for line in lines) + '{"env_step": 300, "sess'
  (tmp_path / "wall_time.jsonl").write_text(text)
  from wsrl_mjx import metrics_log
  assert metrics_log.wall_time(tmp_path) == (115.5, ["1 x cpu", "1 x NVIDIA H200"])
  assert metrics_log.wall_time(tmp_path / "nowhere") is None


def test_a_grid_runs_tensorboard_has_each_points_mean_beside_the_mean_of_all_seeds(tmp_path):
  """A hand-built record of 4 seeds on a 2-point grid (seeds 0 and 2: point A, 1 and 3: B),
  written as the run writes it and read back from the event file."""
  from test_finetune import tensorboard_scalars
  from wsrl_mjx import metrics_log
  a, b = {"warmup_steps": 0, "init_critic": True}, {"warmup_steps": 5000, "init_critic": False}
  nan = float("nan")
  record = {"env_step": 100, "per_seed": [a, b, a, b],
            "normalized_scores": np.array([10.0, 40.0, 30.0, 80.0]),
            "returns": np.array([100.0, 400.0, 300.0, 800.0]),
            "train": {"updates": np.array([50, 0, 50, 0]),
                      "critic_loss": np.array([1.0, nan, 3.0, nan]),    # B: in its warmup
                      "q": np.array([4.0, nan, 6.0, 8.0])}}             # a NaN is left out
  a, b = "warmup_steps_0/init_critic_True", "warmup_steps_5000/init_critic_False"
  expected = {f"eval/normalized_score/{a}": 20.0, f"eval/normalized_score/{b}": 60.0,
              f"eval/return/{a}": 200.0, f"eval/return/{b}": 600.0,
              f"train/updates/{a}": 50.0, f"train/updates/{b}": 0.0,
              f"train/critic_loss/{a}": 2.0, f"train/q/{a}": 5.0, f"train/q/{b}": 8.0}
  scalars = metrics_log.point_scalars(record)
  assert np.isnan(scalars.pop(f"train/critic_loss/{b}"))   # all NaN: NaN, which is not written
  assert scalars == expected
  log = metrics_log.MetricsLog(tmp_path)
  log.write_evaluation(record)
  # From metrics.jsonl (NaN written as null, the points' true as JSON's): the same numbers.
  read_back = metrics_log.point_scalars(log.records()[-1])
  assert np.isnan(read_back.pop(f"train/critic_loss/{b}")) and read_back == expected
  log.write_scalars(100, {"eval/normalized_score_mean": 40.0, **metrics_log.point_scalars(record)})
  log.close()
  assert tensorboard_scalars(tmp_path) == sorted(
      [("eval/normalized_score_mean", 100, 40.0)]
      + [(tag, 100, value) for tag, value in expected.items()])
  # One label per setting, in the grid's order, in the characters TensorBoard keeps.
  assert metrics_log.point_label({"critic_learning_rate": 3e-4, "init_actor": False}) == (
      "critic_learning_rate_0.0003/init_actor_False")
  # No grid, a grid of one point, a record without per_seed (pretraining): nothing per point.
  for per_seed in ([{}] * 4, [{"warmup_steps": 5000}] * 4, None):
    assert metrics_log.point_scalars(dict(record, per_seed=per_seed)) == {}


def test_a_grid_run_writes_each_points_scores_and_updates_to_tensorboard(grid_run):
  """The tiny grid run (seed 0: warmup 50, seed 1: warmup 100; batch 64, so updates start past
  env step max(warmup, 64); chunks of 50, evaluations every 100): each point's curves, at the
  evaluations and at the chunks between them."""
  from test_finetune import tensorboard_scalars
  shown = {(tag, step): value for tag, step, value in tensorboard_scalars(grid_run)}
  points = ("warmup_steps_50", "warmup_steps_100")
  fields = {"eval/normalized_score": "normalized_scores", "eval/return": "returns"}
  for record in records(grid_run):
    for seed, point in enumerate(points):    # one seed per point: its own numbers
      for tag, field in fields.items():
        assert shown[(f"{tag}/{point}", record["env_step"])] == pytest.approx(
            record[field][seed], rel=1e-6)
  # Updates per chunk, by hand: seed 0 from step 65, seed 1 from step 101 on.
  updates = {50: (0, 0), 100: (35, 0), 150: (50, 49), 200: (50, 50)}
  assert {step: tuple(shown[(f"train/updates/{point}", step)] for point in points)
          for step in updates} == updates
  assert {step: shown[("train/updates", step)] for step in updates} == {
      step: np.mean(counts) for step, counts in updates.items()}
  # A point's loss only where it updated (a mean of nothing is not written).
  losses = [step for tag, step in shown if tag == "train/critic_loss/warmup_steps_100"]
  assert sorted(losses) == [150, 200]
  assert not any(tag.startswith("train/") for tag, step in shown if step == 0)


def test_a_resumed_grid_run_shows_the_same_per_point_curves(grid_run, tiny_programs, tmp_path,
                                                            monkeypatch):
  """Killed after its checkpoint at step 100 and resumed: TensorBoard shows what the grid run
  that ran through shows, its per-point curves included (step 150's from the chunk after the
  resume, which no evaluation record precedes in that session)."""
  from test_finetune import tensorboard_scalars
  killed_then_resumed(lambda: finetune.train_and_evaluate(tiny_config(per_seed=GRID), tmp_path,
                                                          tiny_programs[3]), monkeypatch)
  shown = tensorboard_scalars(tmp_path)
  assert ("train/updates/warmup_steps_100", 150, 49.0) in shown
  assert shown == tensorboard_scalars(grid_run)


def test_seeds_of_runs_pool_into_arms_with_their_iqm_and_intervals(grid_run, tmp_path):
  shifts = [0.0, 10.0, 20.0, 40.0]
  dirs = [copy_of_metrics(grid_run, tmp_path / f"run{i}", shift) for i, shift in
          enumerate(shifts)]
  results = report.make_report(dirs, tmp_path / "out", resamples=2000)
  assert [r.arm.label for r in results] == ["sac warmup_steps=50", "sac warmup_steps=100"]
  last = records(grid_run)[-1]["normalized_scores"]
  for seed, result in enumerate(results):
    pooled = np.sort(last[seed] + np.asarray(shifts))
    assert result.last.seeds == 4 and result.warmup == [[50, 100][seed]]
    assert result.last.mean == pytest.approx(pooled.mean())
    assert result.last.iqm == pytest.approx(pooled[1:3].mean())   # 4 seeds: 1 cut each end
    assert pooled[0] <= result.last.iqm_low < result.last.iqm < result.last.iqm_high <= pooled[-1]
  assert len(read_csv(tmp_path / "out" / "curves.csv")) == 2 * 3


def test_runs_with_different_configs_are_pooled_only_when_asked(grid_run, tmp_path):
  same = copy_of_metrics(grid_run, tmp_path / "same")
  other = copy_of_metrics(grid_run, tmp_path / "other", utd=2)
  with pytest.raises(report.ReportError, match=r"configs differ: utd \(4 vs 2\).*--pool"):
    report.make_report([same, other], tmp_path / "refused")
  assert not (tmp_path / "refused").exists()
  report.make_report([same, other], tmp_path / "pooled", pool=True, resamples=200)
  text = (tmp_path / "pooled" / "report.md").read_text()
  assert "whose configs differ: utd (4 vs 2) (--pool)" in text
  assert {r["seeds"] for r in read_csv(tmp_path / "pooled" / "curves.csv")} == {"2"}


def test_unfinished_and_diverged_runs_are_reported_and_diverged_seeds_excluded_when_asked(
    grid_run, tmp_path):
  unfinished = copy_of_metrics(grid_run, tmp_path / "unfinished", keep=2)
  diverged = copy_of_metrics(grid_run, tmp_path / "diverged", shift=5.0, diverged=[None, 150])
  results = report.make_report([unfinished, diverged], tmp_path / "kept", resamples=200)
  text = (tmp_path / "kept" / "report.md").read_text()
  assert f"{unfinished} is unfinished: its last evaluation is at 100 of 200 env steps" in text
  assert f"{diverged} seed 1 (arm 'sac warmup_steps=100', point-mass) at env steps 150" \
      in text
  assert [r.last.seeds for r in results] == [2, 2] and results[1].final_steps == (100, 200)

  results = report.make_report([unfinished, diverged], tmp_path / "excluded",
                               exclude_diverged=True, resamples=200)
  assert [r.last.seeds for r in results] == [2, 1]
  excluded = read_csv(tmp_path / "excluded" / "curves.csv")
  # Left: the unfinished run's seed 1, evaluated at steps 0 and 100.
  assert [(r["step"], r["seeds"]) for r in excluded if r["point"] == "warmup_steps=100"] == [
      ("0", "1"), ("100", "1")]
  assert "excluded from the aggregates (--exclude_diverged)" in \
      (tmp_path / "excluded" / "report.md").read_text()


def test_a_pretraining_run_is_its_own_arm_counted_in_gradient_steps(grid_run, tmp_path):
  offline = tmp_path / "offline"
  offline.mkdir()
  lines = [{"gradient_step": step, "normalized_scores": [score, score + 2.0], "algo": "calql",
            "diverged_at": [None, None], "train": {"critic_loss": [1.0, 3.0], "updates": [5, 5]}}
           for step, score in ((0, 1.0), (50, 4.0))]
  (offline / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  (offline / "config.json").write_text(json.dumps(
      {"env_name": "hopper-medium-v2", "algo": "calql", "offline_steps": 100}))
  results = report.make_report([grid_run, offline], tmp_path / "out", resamples=200)
  pretraining = results[-1]
  assert (pretraining.arm.label, pretraining.arm.panel) == ("calql", ("hopper-medium-v2",
                                                                      "pretrain"))
  assert pretraining.arm.step_unit == "gradient_step" and list(pretraining.steps) == [0, 50]
  assert pretraining.last.mean == 5.0 and pretraining.warmup == []
  assert runs.read(offline).train_statistic("critic_loss")[1].tolist() == [1.0, 3.0]
  assert f"{offline} is unfinished: its last evaluation is at 50 of 100 gradient steps" in \
      (tmp_path / "out" / "report.md").read_text()
  rows = read_csv(tmp_path / "out" / "curves.csv")
  assert [(r["arm"], r["step_unit"], r["step"]) for r in rows][-2:] == [
      ("calql", "gradient_step", "0"), ("calql", "gradient_step", "50")]


def test_a_directory_without_metrics_is_refused_in_one_line(grid_run, tmp_path):
  empty = tmp_path / "not_a_run"
  empty.mkdir()
  result = run_launch("launch.report", str(grid_run), str(empty), f"--out={tmp_path / 'out'}")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {empty}: has no metrics.jsonl; not a wsrl-mjx run directory, or the run "
      "stopped before its first evaluation")
  assert not (tmp_path / "out").exists()


def test_a_folder_of_runs_given_as_one_run_is_named_as_such(tmp_path):
  """`launch.export --run=<a sweep's folder>` reads one run: the error says it is a folder of
  runs and names some (it said no cell had an evaluation, though all were done)."""
  from wsrl_mjx import runs as runs_lib
  sweep = tmp_path / "sweep"
  (sweep / "sweep.json").parent.mkdir()
  (sweep / "sweep.json").write_text("{}")
  with pytest.raises(runs_lib.RunError, match="a sweep folder none of whose cells has written"):
    runs_lib.read(sweep)
  for cell in ("b/wsrl", "a/wsrl", "a/sac", "a/wsrl-warmup"):
    (sweep / "runs" / cell).mkdir(parents=True)
    (sweep / "runs" / cell / "metrics.jsonl").write_text("")
  with pytest.raises(runs_lib.RunError) as error:
    runs_lib.read(sweep)
  assert str(error.value) == (
      f"{sweep}: a folder of 4 run directories (e.g. a sweep's), not one run directory; name "
      "one of them: runs/a/sac, runs/a/wsrl, runs/a/wsrl-warmup, ...")


def hand_run(path, phase, algo, scores_at):
  """A run directory without training: 2 seeds that both score `scores_at[step]` at each
  evaluation, as a fine-tuning (`--config.method=algo`, env steps) or a pretraining
  (`--config.algo=algo`, gradient steps) on hopper-medium-v2 would log them."""
  path.mkdir()
  unit = {"finetune": "env_step", "pretrain": "gradient_step"}[phase]
  lines = [{unit: step, "normalized_scores": [score, score], "diverged_at": [None, None]}
           for step, score in scores_at.items()]
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  last = max(scores_at)
  config = ({"method": algo, "pretrained": "runs/x", "offline_data": "none", "warmup_steps": 0,
             "online_steps": last} if phase == "finetune" else
            {"algo": algo, "offline_steps": last})
  (path / "config.json").write_text(json.dumps(
      dict(config, env_name="hopper-medium-v2", seed=0, num_seeds=2)))
  return path


def test_final_scores_tell_a_pretraining_arm_from_a_fine_tuning_arm_of_the_same_name(tmp_path):
  """launch.report ft-cql pre-cql ft-iql pre-iql: both phases have a 'cql' and an 'iql' arm.
  The table gets a phase column and the † footnote names each arm's phase; with one phase
  there is no phase column. Every seed of an arm scores the same, so each estimate and its
  interval is that score (by hand: the mean of the evaluations after step 0, last 3)."""
  hand_run(tmp_path / "ft-cql", "finetune", "cql", {0: 10.0, 100: 20.0, 200: 40.0})
  hand_run(tmp_path / "pre-cql", "pretrain", "cql", {0: 5.0, 50: 15.0})
  hand_run(tmp_path / "ft-iql", "finetune", "iql", {0: 30.0, 100: 50.0, 200: 60.0, 300: 70.0})
  hand_run(tmp_path / "pre-iql", "pretrain", "iql", {0: 1.0, 50: 2.0, 100: 3.0, 150: 9.0})
  runs_in_order = [tmp_path / name for name in ("ft-cql", "pre-cql", "ft-iql", "pre-iql")]
  report.make_report(runs_in_order, tmp_path / "both", resamples=200)

  def row(label, phase, final_step, last, mean_of_last, short):
    mark = " †" if short else ""
    estimates = [f"{last:.1f} [{last:.1f}, {last:.1f}]"] * 2 + [
        f"{mean_of_last:.1f} [{mean_of_last:.1f}, {mean_of_last:.1f}]{mark}"] * 2
    return " | ".join([f"| {label}", *phase, "hopper-medium-v2", "2*", final_step, *estimates,
                       "0 |"])

  columns = ("last evaluation: IQM [95% CI] | mean [95% CI] | mean of last 3 after step 0: IQM "
             "[95% CI] | mean [95% CI] | diverged seeds |")
  footnote = ("† seeds with fewer than 3 evaluations after step 0, whose mean is over the ones "
              "they have: ")
  assert (tmp_path / "both" / "final_scores.md").read_text() == "\n".join([
      f"| arm | phase | env | seeds | final step | {columns}",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
      row("cql", ["finetune"], "200", 40, 30, short=True),    # (20 + 40) / 2
      row("cql", ["pretrain"], "50", 15, 15, short=True),
      row("iql", ["finetune"], "300", 70, 60, short=False),   # (50 + 60 + 70) / 3
      row("iql", ["pretrain"], "150", 9, 14 / 3, short=False),   # (2 + 3 + 9) / 3
      "", report.FEW_SEEDS_FOOTNOTE, "",
      footnote + "'cql' (hopper-medium-v2, finetune) 2 of 2, 'cql' (hopper-medium-v2, pretrain) "
      "2 of 2.", ""])
  # One phase: the table as it was, no phase column, the footnote naming the env alone.
  report.make_report(runs_in_order[::2], tmp_path / "one", resamples=200)
  assert (tmp_path / "one" / "final_scores.md").read_text() == "\n".join([
      f"| arm | env | seeds | final step | {columns}",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
      row("cql", [], "200", 40, 30, short=True), row("iql", [], "300", 70, 60, short=False),
      "", report.FEW_SEEDS_FOOTNOTE, "", footnote + "'cql' (hopper-medium-v2) 2 of 2.", ""])


def warmup_grid_run(path, online_steps, scores_at, updates):
  """A fine-tuning program without training: 4 seeds, seed i at warmup_steps (0, 5000)[i mod 2]
  (`--config.per_seed="warmup_steps=0,5000"`), scoring `scores_at[step]` [4] at each evaluation,
  `updates` [evaluations - 1, 4] the `train.updates` of the chunk before each evaluation after
  the first, as the fine-tuning loop logs them."""
  path.mkdir()
  points = [{"warmup_steps": 0}, {"warmup_steps": 5000}] * 2
  lines = [{"env_step": step, "normalized_scores": list(scores), "diverged_at": [None] * 4,
            "per_seed": points} for step, scores in scores_at.items()]
  for record, counts in zip(lines[1:], updates):
    record["train"] = {"updates": list(counts), "critic_loss": [1.0] * 4}
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  (path / "config.json").write_text(json.dumps(
      {"method": "wsrl", "pretrained": "runs/x", "offline_data": "none", "warmup_steps": 0,
       "online_steps": online_steps, "per_seed": "warmup_steps=0,5000",
       "env_name": "hopper-medium-v2", "seed": 0, "num_seeds": 4}))
  return path


def test_seeds_that_never_updated_are_noted_marked_and_counted(tmp_path):
  """The README's warmup grid with too few online steps: the warmup_steps=5000 seeds (1, 3) of
  a 2,000-step run log 0 updates in every chunk. report.md names them and why, final_scores
  marks their arm ‡ with a footnote, the csv counts them. By hand: warmup 0 scores 40, 60, 80
  (last 80, mean after step 0 70), warmup 5000 stays at 40."""
  grid = warmup_grid_run(tmp_path / "grid", 2000, {0: [40.0] * 4, 1000: [60.0, 40.0] * 2,
                                                   2000: [80.0, 40.0] * 2},
                         updates=[[7, 0, 7, 0], [8, 0, 8, 0]])
  assert [runs.read(grid).updated(seed) for seed in range(4)] == [True, False, True, False]
  report.make_report([grid], tmp_path / "out", resamples=200)
  text = (tmp_path / "out" / "report.md").read_text()
  assert (f"- Arm 'wsrl warmup_steps=5000' (hopper-medium-v2): 2 of 2 seeds never updated "
          f"({grid} seeds 1, 3): the run ended before its first update (warmup_steps=5000, not "
          "shorter than online_steps=2000). Their scores are the starting policy's, not "
          "fine-tuning's: final_scores.md marks the arm ‡ and the claims do not use it.\n") in text
  assert "warmup_steps=0' (hopper-medium-v2): " not in text
  never = ("‡ seeds that never updated: their run stopped before their first update (report.md's "
           "notes say why), so their scores are the starting policy's, not fine-tuning's, and "
           "the claims do not use them: ")
  assert (tmp_path / "out" / "final_scores.md").read_text().splitlines()[2:] == [
      "| wsrl warmup_steps=0 | hopper-medium-v2 | 2* | 2,000 | 80.0 [80.0, 80.0] | "
      "80.0 [80.0, 80.0] | 70.0 [70.0, 70.0] † | 70.0 [70.0, 70.0] † | 0 |",
      "| wsrl warmup_steps=5000 ‡ | hopper-medium-v2 | 2* | 2,000 | 40.0 [40.0, 40.0] | "
      "40.0 [40.0, 40.0] | 40.0 [40.0, 40.0] † | 40.0 [40.0, 40.0] † | 0 |",
      "", report.FEW_SEEDS_FOOTNOTE, "",
      "† seeds with fewer than 3 evaluations after step 0, whose mean is over the ones they "
      "have: 'wsrl warmup_steps=0' (hopper-medium-v2) 2 of 2, 'wsrl warmup_steps=5000' "
      "(hopper-medium-v2) 2 of 2.", "",
      never + "'wsrl warmup_steps=5000' (hopper-medium-v2) 2 of 2."]
  assert [(r["arm"], r["never_updated_seeds"])
          for r in read_csv(tmp_path / "out" / "final_scores.csv")] == [
      ("wsrl warmup_steps=0", "0"), ("wsrl warmup_steps=5000", "2")]

  # Unfinished (a 100,000-step run stopped at 2,000) and pooled with a 6,000-step run whose
  # warmup-5000 seeds updated after step 5,000: 2 of the arm's 4 seeds, the unfinished ones.
  unfinished = warmup_grid_run(tmp_path / "unfinished", 100_000,
                               {0: [40.0] * 4, 2000: [80.0, 40.0] * 2}, updates=[[9, 0, 9, 0]])
  long = warmup_grid_run(tmp_path / "long", 6000, {0: [40.0] * 4, 3000: [80.0, 40.0] * 2,
                                                   6000: [90.0, 70.0] * 2},
                         updates=[[9, 0, 9, 0], [9, 9, 9, 9]])
  results = report.make_report([unfinished, long], tmp_path / "pooled", pool=True,
                               resamples=200)
  assert [len(r.never_updated) for r in results] == [0, 2]
  text = (tmp_path / "pooled" / "report.md").read_text()
  assert (f"- Arm 'wsrl warmup_steps=5000' (hopper-medium-v2): 2 of 4 seeds never updated "
          f"({unfinished} seeds 1, 3): the run is unfinished and its last evaluation, at env step "
          "2,000 of 100,000, comes before its first update (warmup_steps=5000). Their scores "
          "are the starting policy's, not fine-tuning's: final_scores.md marks the arm ‡ and "
          "the claims do not use these seeds.\n") in text
  assert (tmp_path / "pooled" / "final_scores.md").read_text().endswith(
      never + "'wsrl warmup_steps=5000' (hopper-medium-v2) 2 of 4.\n")
  # The claims' final scores of that arm: the 2 seeds that trained, (40 + 70) / 2 each, not
  # the frozen ones' 40. The 0 arm's: 80, 80 (unfinished) and 85, 85: IQM mean(80, 85).
  final = [f for f in claims.check(results, resamples=200) if f.statistic.startswith("final")]
  assert [(f.compared, f.seeds) for f in final] == [
      ("wsrl warmup_steps=5000 vs wsrl warmup_steps=0", (2, 4))]
  assert final[0].value == pytest.approx(55.0 - 82.5)
  # A pretraining counts gradient steps: its updates say nothing of a warmup.
  offline = hand_run(tmp_path / "offline", "pretrain", "cql", {0: 1.0, 50: 2.0})
  lines = records(offline)
  lines[1]["train"] = {"updates": [0, 0]}
  (offline / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  assert runs.read(offline).updated(0) is None
  assert [r.never_updated for r in report.make_report([offline], tmp_path / "pre",
                                                       resamples=200)] == [[]]
  assert "‡" not in (tmp_path / "pre" / "final_scores.md").read_text()


@pytest.mark.parametrize("launcher, what, example", [
    ("launch.report", "the report", "runs/report"), ("launch.export", "the policy", "runs/policy")])
def test_an_empty_or_unwritable_out_is_refused_before_the_runs_are_read(tmp_path, launcher, what,
                                                                       example):
  """--out= would write into the current folder, /proc takes no folders and a file is no
  folder: each is one line naming --out, exit status 2, before the run is read (it does not
  exist here, and the error is --out's), nothing written in the current folder (the repository
  root); the library refuses an empty folder too."""
  missing = tmp_path / "no-such-run"
  a_file = tmp_path / "notes.txt"
  a_file.write_text("x")
  before = sorted(p.name for p in ROOT.iterdir())
  run = [str(missing)] if launcher == "launch.report" else [f"--run={missing}", "--seed=1"]
  for out, message in (
      ("", f"--out=: names no folder; give the folder to write {what} into "
           f"(e.g. --out={example})"),
      ("/proc/x", "--out=/proc/x: cannot write in /proc (No such file or directory)"),
      (str(a_file), f"--out={a_file}: is a file, not a folder; give the folder to write "
                    f"{what} into")):
    result = run_launch(launcher, *run, f"--out={out}")
    assert (result.returncode, result.stderr) == (2, f"error: {message}\n"), result.stderr
    assert result.stdout == ""
  assert sorted(p.name for p in ROOT.iterdir()) == before
  if launcher == "launch.report":
    with pytest.raises(report.ReportError, match=r"^--out=: names no folder; "):
      report.make_report([missing], "")
  else:
    with pytest.raises(export.ExportError, match=r"^--out=: names no folder; give the folder"):
      export.export(missing, "", seed=1)


# --- export -------------------------------------------------------------------------------------

def checkpoint_actor(workdir, step, seed):
  restored = ocp.CheckpointManager(workdir / "checkpoints").restore(
      step, args=ocp.args.Composite(agent=ocp.args.StandardRestore()))
  return jax.tree.map(lambda x: np.asarray(x)[seed], restored.agent["actor"])


def load_module(path):
  spec = importlib.util.spec_from_file_location("exported_policy", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_onnx_numpy_and_jax_policies_agree(grid_run, tmp_path):
  import onnx
  import onnxruntime
  config = tiny_config()
  info = export.export(grid_run, tmp_path, seed=1)
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(export.FILES)
  spec = envs.spec(config.env_name)
  observations = np.random.default_rng(0).normal(
      0, 3, (64, spec.observation_size)).astype(np.float32)

  actor = networks.GaussianActor(spec.action_size, config.actor_hidden_sizes)
  mean, _ = actor.apply(checkpoint_actor(grid_run, 200, 1), jnp.asarray(observations))
  expected = np.clip(np.tanh(np.asarray(mean)), -config.action_clip, config.action_clip)
  assert np.abs(expected).max() > 0.25                  # the inputs move the policy

  model = onnx.load(tmp_path / "policy.onnx")
  assert model.opset_import[0].version >= 17
  assert {n.op_type for n in model.graph.node} == {"Gemm", "LayerNormalization", "Relu", "Tanh",
                                                  "Clip"}
  session = onnxruntime.InferenceSession(str(tmp_path / "policy.onnx"))
  from_onnx, = session.run(["action"], {"observation": observations})
  from_numpy = load_module(tmp_path / "policy.py").load(tmp_path / "policy.npz")(observations)
  np.testing.assert_allclose(from_onnx, expected, atol=1e-5, rtol=0)
  np.testing.assert_allclose(from_numpy, expected, atol=1e-5, rtol=0)
  assert info["source"]["seed"] == 1 and info["source"]["per_seed"] == {"warmup_steps": 100}

  # policy.py alone, with jax and this repository unimportable: one observation from the shell.
  block = ("import sys, runpy; sys.modules['jax'] = sys.modules['wsrl_mjx'] = None; "
           "sys.argv = sys.argv[1:]; runpy.run_path('policy.py', run_name='__main__')")
  shell = subprocess.run([sys.executable, "-I", "-c", block, "policy.py", "policy.npz",
                          *map(str, observations[0])], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
  assert shell.returncode == 0, shell.stderr
  np.testing.assert_allclose(np.asarray(shell.stdout.split(), float), expected[0], atol=1e-5)
  # An observation of the wrong size is one line naming the size it needs.
  wrong = subprocess.run([sys.executable, "-I", "-c", block, "policy.py", "policy.npz", "1", "2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert wrong.returncode == 1 and wrong.stderr.strip() == (
      "error: an observation has 4 values (policy.json lists them); got shape (2,)")


def test_policy_json_matches_the_env_and_the_run(grid_run, tmp_path):
  info = export.export(grid_run, tmp_path, seed=0)
  assert json.loads((tmp_path / "policy.json").read_text()) == info
  env, spec = envs.make("point-mass")
  assert info["env"]["name"] == "point-mass" and info["env"]["episode_length"] == 40
  assert info["control_period_s"] == pytest.approx(env.dt) == pytest.approx(0.05)
  layout = info["observation"]["layout"]
  assert info["observation"]["size"] == spec.observation_size == layout[-1]["stop"]
  assert [(f["name"], slice(f["start"], f["stop"])) for f in layout] == [
      (name, slice(*part.indices(4)[:2])) for name, part in env.observation_fields().items()]
  assert all(a["stop"] == b["start"] for a, b in zip(layout, layout[1:]))
  assert [a["name"] for a in info["action"]["actuators"]] == ["x", "y"]
  assert info["network"]["hidden_sizes"] == [32, 32] and info["network"]["layer_norm"]
  assert all(field["clip"] is None for field in layout)   # the point mass clips nothing
  assert [field["units"] for field in layout] == [["m", "m"], ["m/s", "m/s"]]   # x, y slides
  assert not info["observation"]["clipped_by_the_policy"]
  assert [a["gear"] for a in info["action"]["actuators"]] == list(env.mj_model.actuator_gear[:, 0])
  last = records(grid_run)[-1]
  assert info["last_evaluation"] == {"env_step": 200, "of_this_checkpoint": True,
                                     "normalized_score": pytest.approx(
                                         last["normalized_scores"][0]),
                                     "return": pytest.approx(last["returns"][0])}
  assert info["sha256"] == {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
                            for name in ("policy.onnx", "policy.npz", "policy.py")}
  assert info["source"]["checkpoint_step"] == 200 and info["action"]["clip"] == pytest.approx(
      tiny_config().action_clip)
  # The scaling JSON gives is the env's own map, on a family that rescales (AntMaze: x30).
  antmaze, _ = envs.make("antmaze-umaze-v2")
  for env in (env, antmaze):
    scaling = export.action_scaling(env)
    actions = np.random.default_rng(1).uniform(-1, 1, (5, env.action_size))
    np.testing.assert_allclose(
        np.asarray(scaling["offset"]) + np.asarray(scaling["scale"]) * actions,
        env.action_to_ctrl(jnp.asarray(actions, jnp.float32)), rtol=1e-6, atol=1e-5)
  assert scaling["scale"] == [30.0] * 8


def test_best_picks_the_best_seed_that_did_not_diverge(grid_run, tmp_path):
  scores = records(grid_run)[-1]["normalized_scores"]
  best = int(np.argmax(scores))
  assert export.export(grid_run, tmp_path / "best", best=True)["source"]["seed"] == best
  poisoned = tmp_path / "poisoned"
  shutil.copytree(grid_run, poisoned)
  lines = records(poisoned)
  lines[-1]["diverged_at"] = [150 if i == best else None for i in range(2)]
  (poisoned / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  assert export.export(poisoned, tmp_path / "next", best=True)["source"]["seed"] == 1 - best
  with pytest.raises(export.ExportError, match=rf"--seed={best}: .* diverged at env step 150"):
    export.export(poisoned, tmp_path / "refused", seed=best)
  assert not (tmp_path / "refused").exists()


def with_scores(run, destination, scores_at):
  """A copy of `run` whose evaluation at each step in `scores_at` has those scores."""
  shutil.copytree(run, destination)
  lines = records(destination)
  for line in lines:
    line["normalized_scores"] = scores_at.get(line["env_step"], line["normalized_scores"])
  (destination / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  return destination


def test_an_older_checkpoint_exports_with_the_evaluation_of_its_own_weights(grid_run, tmp_path):
  """Checkpoints at 150 and 200, evaluations at 0, 100 and 200 (the tiny config). --step=150
  exports the weights of step 150 and reports (and with --best, ranks by) the evaluation at 100,
  the newest of weights up to it; so does the latest checkpoint once 200's is gone (a run killed
  between its evaluation and its checkpoint)."""
  run = with_scores(grid_run, tmp_path / "run", {100: [90.0, 10.0], 200: [10.0, 90.0]})
  assert export.export(run, tmp_path / "latest", best=True)["source"]["seed"] == 1
  info = export.export(run, tmp_path / "older", best=True, step=150)
  assert info["source"]["seed"] == 0 and info["source"]["checkpoint_step"] == 150
  assert info["last_evaluation"]["env_step"] == 100
  assert info["last_evaluation"]["normalized_score"] == 90.0
  assert not info["last_evaluation"]["of_this_checkpoint"]
  config = tiny_config()
  actor = networks.GaussianActor(envs.spec(config.env_name).action_size,
                                 config.actor_hidden_sizes)
  observations = np.random.default_rng(2).normal(0, 3, (16, 4)).astype(np.float32)
  exported = load_module(tmp_path / "older" / "policy.py").load()(observations)
  for step in (150, 200):
    mean, _ = actor.apply(checkpoint_actor(grid_run, step, 0), jnp.asarray(observations))
    matches = np.allclose(exported, np.clip(np.tanh(np.asarray(mean)), -config.action_clip,
                                            config.action_clip), atol=1e-5)
    assert matches == (step == 150), step    # the weights of step 150, not 200's

  shutil.rmtree(run / "checkpoints" / "200")
  info = export.export(run, tmp_path / "killed", best=True)
  assert (info["source"]["seed"], info["source"]["checkpoint_step"]) == (0, 150)
  assert info["last_evaluation"]["env_step"] == 100
  with pytest.raises(export.ExportError, match=r"--step=200: .* has checkpoints at env steps 150$"):
    export.export(run, tmp_path / "x", seed=0, step=200)
  # A seed that diverged after a checkpoint exports from it, not from a later one.
  diverged = with_scores(grid_run, tmp_path / "diverged", {})
  lines = records(diverged)
  lines[-1]["diverged_at"] = [None, 175]
  (diverged / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  assert export.export(diverged, tmp_path / "before", seed=1, step=150)["source"]["seed"] == 1
  with pytest.raises(export.ExportError, match=r"--seed=1: .* diverged at env step 175"):
    export.export(diverged, tmp_path / "x", seed=1)
  assert not (tmp_path / "x").exists()


def test_a_description_that_does_not_fit_the_agent_or_the_run_is_refused(grid_run, tmp_path):
  def copy_with(name, description=None, config=None):
    copy = tmp_path / name
    shutil.copytree(grid_run, copy)
    for path, changes in ((copy / "checkpoints" / "200" / "description" / "metadata",
                           description), (copy / "config.json", config)):
      if changes:
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return copy

  hopper = "hopper-medium-v2"
  both = copy_with("both", description={"env_name": hopper}, config={"env_name": hopper})
  metadata = both / "checkpoints" / "200" / "description" / "metadata"
  with pytest.raises(export.ExportError) as refused:
    export.export(both, tmp_path / "x", seed=0)
  assert str(refused.value) == (f"{metadata}: agent.observation_size is 4 but {hopper} has 11; "
                                "the description does not belong to this agent")
  config_only = copy_with("config_only", config={"env_name": hopper})
  with pytest.raises(export.ExportError) as refused:
    export.export(config_only, tmp_path / "x", seed=0)
  assert str(refused.value) == (
      f"{config_only / 'checkpoints' / '200' / 'description' / 'metadata'}: env_name is "
      f"'point-mass' but the run's config.json says '{hopper}'")
  assert not (tmp_path / "x").exists()


def test_a_failed_export_leaves_the_earlier_one_as_it_was(grid_run, tmp_path, monkeypatch):
  out = tmp_path / "policy"
  export.export(grid_run, out, seed=0)
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  (out / "notes.txt").write_text("the robot team's own file")
  writes = []

  def full_disk(path, data):
    writes.append(path.name)
    if len(writes) == 3:
      raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return original(path, data)

  original = pathlib.Path.write_bytes
  monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)
  with pytest.raises(export.ExportError, match=rf"^--out={out}: cannot write the policy there "
                                               r"\(No space left on device: .*policy.py\)$"):
    export.export(grid_run, out, seed=1)
  monkeypatch.undo()
  assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "notes.txt"} == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]     # no staging folder left
  # Over a good export, a new one replaces the four files and leaves others alone.
  assert export.export(grid_run, out, seed=1)["source"]["seed"] == 1
  assert json.loads((out / "policy.json").read_text())["source"]["seed"] == 1
  assert (out / "notes.txt").read_text() == "the robot team's own file"
  with pytest.raises(export.ExportError, match=r"is a file, not a folder$"):
    export.export(grid_run, out / "notes.txt", seed=0)


def test_a_damaged_checkpoint_is_one_short_line_pointing_at_an_older_one(grid_run, tmp_path):
  """Without its manifest, TensorStore's error carries the file's whole JSON spec (kilobytes);
  the message keeps its start and says how to export the checkpoint before."""
  damaged = tmp_path / "damaged"
  shutil.copytree(grid_run, damaged)
  manifests = list((damaged / "checkpoints" / "200" / "agent").rglob("manifest.ocdbt"))
  assert manifests
  for manifest in manifests:
    manifest.unlink()
  with pytest.raises(export.ExportError) as refused:
    export.export(damaged, tmp_path / "x", seed=0)
  message = str(refused.value)
  assert message.startswith(f"{damaged / 'checkpoints' / '200' / 'agent'}: damaged, cannot be "
                            "read (") and message.endswith("(launch.export --step=N exports an "
                                                           "older checkpoint)")
  assert len(message) < 600 and "\n" not in message, message
  assert export.export(damaged, tmp_path / "older", seed=0, step=150)["source"][
      "checkpoint_step"] == 150


def hand_made_policy(folder, bounds=None, seed=0):
  """An export's policy.npz and policy.py for random weights on hopper's sizes (11 -> 8 -> 8 -> 3,
  layer norm, action clip 0.9), with `bounds` (low, high) or none; the weights as ActorWeights."""
  rng = np.random.default_rng(seed)
  sizes = (11, 8, 8)
  hidden = [{"kernel": rng.normal(0, 0.5, (a, b)).astype(np.float32),
             "bias": rng.normal(0, 0.1, b).astype(np.float32),
             "norm_scale": rng.uniform(0.5, 1.5, b).astype(np.float32),
             "norm_bias": rng.normal(0, 0.1, b).astype(np.float32)}
            for a, b in zip(sizes, sizes[1:])]
  low, high = bounds if bounds is not None else (None, None)
  weights = export.ActorWeights(hidden, rng.normal(0, 0.5, (8, 3)).astype(np.float32),
                                rng.normal(0, 0.1, 3).astype(np.float32), True, 0.9, low, high)
  folder.mkdir(parents=True, exist_ok=True)
  np.savez(folder / "policy.npz", **weights.arrays())
  shutil.copyfile(pathlib.Path(export.__file__).with_name("standalone_policy.py"),
                  folder / "policy.py")
  return weights


def reference_policy(weights, observations):
  """The deterministic policy by hand, float64: clip to the bounds, (Dense, LayerNorm, ReLU) per
  hidden layer, the mean head, tanh, the action clip."""
  x = np.asarray(observations, np.float64)
  if weights.observation_low is not None:
    x = np.minimum(np.maximum(x, weights.observation_low), weights.observation_high)
  for layer in weights.hidden:
    x = x @ layer["kernel"].astype(np.float64) + layer["bias"]
    centred = x - x.mean(-1, keepdims=True)
    x = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-6)
    x = np.maximum(x * layer["norm_scale"] + layer["norm_bias"], 0.0)
  mean = x @ weights.mean_kernel.astype(np.float64) + weights.mean_bias
  clip = float(np.float32(weights.action_clip))   # policy.npz stores it as float32
  return np.clip(np.tanh(mean), -clip, clip)


def test_the_exported_policy_clips_velocities_as_hopper_observes_them(tmp_path):
  import onnxruntime
  env, _ = envs.make("hopper-medium-v2")
  low, high = env.observation_bounds()
  # The env's observation is qpos[1:] and qvel, clipped to those bounds (gym: qvel to +-10).
  rng = np.random.default_rng(3)
  qpos = rng.normal(0, 1, env.mj_model.nq).astype(np.float32)
  qvel = rng.normal(0, 30, env.mj_model.nv).astype(np.float32)
  assert (np.abs(qvel) > 10).any() and (np.abs(qvel) < 10).any()
  np.testing.assert_array_equal(env.observation(jnp.asarray(qpos), jnp.asarray(qvel)),
                                np.clip(np.concatenate([qpos[1:], qvel]), low, high))
  assert [(f["name"], f["clip"]) for f in export.observation_layout(env, 11)] == [
      ("root height, angle", None), ("joint angles", None),
      ("root velocities", [-10.0, 10.0]), ("joint velocities", [-10.0, 10.0])]

  weights = hand_made_policy(tmp_path, (low, high))
  observations = rng.normal(0, 20, (64, 11)).astype(np.float32)   # raw: velocities past 10
  expected = reference_policy(weights, observations)
  unclipped = reference_policy(dataclasses.replace(weights, observation_low=None), observations)
  assert np.abs(expected - unclipped).max() > 0.1                 # the clip matters here
  from_numpy = load_module(tmp_path / "policy.py").load()(observations)
  np.testing.assert_allclose(from_numpy, expected, atol=1e-9, rtol=0)
  model = export.onnx_model(weights, 11)
  assert [n.op_type for n in model.graph.node][:3] == ["Max", "Min", "Gemm"]
  session = onnxruntime.InferenceSession(model.SerializeToString())
  np.testing.assert_allclose(session.run(["action"], {"observation": observations})[0],
                             expected, atol=1e-5, rtol=0)


def test_the_numpy_runner_refuses_what_it_has_no_action_for(tmp_path):
  hand_made_policy(tmp_path)
  module = load_module(tmp_path / "policy.py")
  act = module.load(tmp_path / "policy.npz")
  assert (act.observation_size, act.action_size) == (11, 3)
  observation = np.zeros(11)
  observation[[2, 7]] = np.nan, -np.inf
  with pytest.raises(ValueError, match=r"^observation values at indices \[2, 7\] are NaN or "):
    act(observation)
  batch = np.zeros((3, 11))
  batch[1, 4] = np.inf
  with pytest.raises(ValueError, match=r"indices \[4\]"):
    act(batch)
  for bad in (np.array(["1"] * 11), np.array([None] * 11), np.zeros(11, np.complex64)):
    with pytest.raises(ValueError, match=rf"holds real numbers; got an array of {bad.dtype}$"):
      act(bad)
  assert act(np.zeros((2, 5, 11), np.int32)).shape == (2, 5, 3)   # integers are numbers

  weights_file = tmp_path / "policy.npz"
  (tmp_path / "cut.npz").write_bytes(weights_file.read_bytes()[:1000])
  (tmp_path / "policy.json").write_text('{"format": "wsrl-mjx policy 1"}')
  np.save(tmp_path / "one.npy", np.zeros(3))
  arrays = dict(np.load(weights_file))
  del arrays["mean_kernel"]
  np.savez(tmp_path / "partial.npz", **arrays)
  for name, message in (("missing.npz", "no such file"),
                        ("cut.npz", "cannot be read as policy.npz (File is not a zip file)"),
                        ("policy.json", "cannot be read as policy.npz (not a .npz file)"),
                        ("one.npy", "holds one array, not the .npz of launch.export"),
                        ("partial.npz", "has no 'mean_kernel' array; not a policy.npz written "
                                        "by launch.export")):
    with pytest.raises(ValueError) as refused:
      module.load(tmp_path / name)
    assert str(refused.value) == f"{tmp_path / name}: {message}"
  shell = subprocess.run([sys.executable, "policy.py", "policy.json", *["0"] * 11],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert (shell.returncode, shell.stderr) == (
      1, "error: policy.json: cannot be read as policy.npz (not a .npz file)\n")


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_and_the_next_line_stands_alone(tmp_path):
  from wsrl_mjx import metrics_log
  log = metrics_log.MetricsLog(tmp_path, device="1 x cpu")
  for step in (0, 100):
    log.write_evaluation({"env_step": step, "normalized_scores": [1.0, 2.0]})
  for name in ("metrics.jsonl", metrics_log.WALL_TIME_FILE):   # the kill, mid-line
    with open(tmp_path / name, "a") as f:
      f.write('{"env_step": 200, "normalized_sc')
  assert [r["env_step"] for r in log.records()] == [0, 100]
  assert [r["env_step"] for r in runs.read(tmp_path).records] == [0, 100]
  resumed = metrics_log.MetricsLog(tmp_path, device="1 x cpu")    # the next session
  assert resumed.restart_at(100) == 0
  resumed.write_evaluation({"env_step": 200, "normalized_scores": [3.0, 4.0]})
  assert [r["env_step"] for r in runs.read(tmp_path).records] == [0, 100, 200]
  wall = (tmp_path / metrics_log.WALL_TIME_FILE).read_text().splitlines()
  assert len(wall) == 4 and json.loads(wall[-1])["session"] == resumed.session
  assert metrics_log.wall_time(tmp_path)[0] == pytest.approx(
      json.loads(wall[1])["seconds"] + json.loads(wall[3])["seconds"])
  # A line that is not JSON anywhere but at the end is a damaged file, named with its line.
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write("garbage\n" + json.dumps({"env_step": 300, "normalized_scores": [0, 0]}) + "\n")
  with pytest.raises(runs.RunError, match=r"metrics.jsonl: line 4 is not valid JSON"):
    runs.read(tmp_path)


def test_export_command_refuses_a_wrong_seed_and_a_checkpoint_without_an_agent(grid_run,
                                                                               tmp_path):
  result = run_launch("launch.export", f"--run={grid_run}", "--best", f"--out={tmp_path / 'ok'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Exported seed" in result.stdout and (tmp_path / "ok" / "policy.onnx").is_file()
  best = json.loads((tmp_path / "ok" / "policy.json").read_text())["source"]
  assert export.source_text(best) == (f"seed {best['seed']} of {grid_run}, checkpoint at env "
                                      f"step {best['checkpoint_step']}")
  # Another seed into the same folder replaces the policy there, and says whose it was.
  other = 1 - best["seed"]
  result = run_launch("launch.export", f"--run={grid_run}", f"--seed={other}",
                      f"--out={tmp_path / 'ok'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().startswith(f"Exported seed {other} of {grid_run}, checkpoint at "
                                          f"env step {best['checkpoint_step']} (")
  assert result.stdout.strip().endswith(
      f", to {tmp_path / 'ok'}, replacing the policy exported there before "
      f"({export.source_text(best)})"), result.stdout
  assert export.exported_source(tmp_path / "ok")["seed"] == other
  assert export.exported_source(tmp_path / "nothing here") is None

  result = run_launch("launch.export", f"--run={grid_run}", "--seed=2", f"--out={tmp_path / 'x'}")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: --seed=2: {grid_run} has seeds 0 to 1")

  agentless = tmp_path / "agentless"
  shutil.copytree(grid_run, agentless)
  shutil.rmtree(agentless / "checkpoints" / "200" / "agent")
  result = run_launch("launch.export", f"--run={agentless}", "--seed=0", f"--out={tmp_path / 'x'}")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {agentless / 'checkpoints' / '200'}: holds no agent item "
      "(checkpoints/<step>/agent); there is no policy to export")
  assert not (tmp_path / "x").exists()


def test_an_iql_run_is_refused_naming_which_runs_export(grid_run, tmp_path):
  """An IQL agent's description (agent.policy 'gaussian', algo 'iql', as configs.make_learner
  writes it): the message names the file and field, says which runs export and that IQL
  agents cannot yet."""
  iql = tmp_path / "iql"
  shutil.copytree(grid_run, iql)
  metadata = iql / "checkpoints" / "200" / "description" / "metadata"
  description = json.loads(metadata.read_text())
  description["agent"].update(policy="gaussian", algo="iql")
  metadata.write_text(json.dumps(description))
  with pytest.raises(export.ExportError) as refused:
    export.export(iql, tmp_path / "x", seed=0)
  assert str(refused.value) == (
      f"{metadata}: agent.policy is 'gaussian': an IQL agent, whose actor is a Gaussian "
      "without the tanh squashing; IQL agents cannot be exported yet. launch.export exports "
      "runs of WSRL, SAC, RLPD, CQL and Cal-QL (pretraining or fine-tuning) and the other "
      "SAC-based methods, whose actor is a tanh-squashed Gaussian (agent.policy "
      "'tanh_gaussian').")
  assert not (tmp_path / "x").exists()


def joint_units(model):
  """(unit of each qpos value [nq], of each qvel value [nv]) from the model's joint types, by
  MuJoCo's conventions: slide m and m/s, hinge rad and rad/s, free joint a position (m) and a
  quaternion (unitless), then a linear (m/s) and an angular velocity (rad/s)."""
  import mujoco
  qpos, qvel = [None] * model.nq, [None] * model.nv
  for joint in range(model.njnt):
    at, dof = model.jnt_qposadr[joint], model.jnt_dofadr[joint]
    kind = mujoco.mjtJoint(int(model.jnt_type[joint]))
    if kind == mujoco.mjtJoint.mjJNT_FREE:
      qpos[at:at + 7] = ["m"] * 3 + ["unitless"] * 4
      qvel[dof:dof + 6] = ["m/s"] * 3 + ["rad/s"] * 3
    else:
      assert kind in (mujoco.mjtJoint.mjJNT_SLIDE, mujoco.mjtJoint.mjJNT_HINGE)
      slide = kind == mujoco.mjtJoint.mjJNT_SLIDE
      qpos[at], qvel[dof] = ("m", "m/s") if slide else ("rad", "rad/s")
  return qpos, qvel


def expected_observation_units(task, model):
  """Each observation value's unit, from how the env builds its observation (envs/*.py) and
  the joints of its model: joint coordinates take their joint's unit, site and body positions
  m, directions, quaternions and flags unitless."""
  qpos, qvel = joint_units(model)
  if task in ("hopper", "walker2d", "halfcheetah"):
    return qpos[1:] + qvel                                  # x is not observed
  if task == "point-mass":
    return qpos + qvel
  if task == "antmaze-umaze":
    return qpos[:15] + qvel[:14]
  if task == "pen":   # hand, pen position, pen qvel, 2 axes, position error, axis error
    return (qpos[:-6] + ["m"] * 3 + qvel[-6:] + ["unitless"] * 6 + ["m"] * 3
            + ["unitless"] * 3)
  if task == "door":   # arm and hand, latch, door hinge, palm/handle/difference, open flag
    return qpos[1:-2] + [qpos[-1], qpos[28]] + ["m"] * 9 + ["unitless"]
  if task == "relocate":
    return qpos[:-6] + ["m"] * 9
  assert task == "kitchen-mixed"
  return qpos[:30] * 2                                      # positions, then their goal


@pytest.mark.parametrize("task", ["hopper", "walker2d", "halfcheetah", "point-mass",
                                  "antmaze-umaze", "pen", "door", "relocate", "kitchen-mixed"])
def test_every_observation_value_of_every_task_has_its_unit(task):
  env, spec = envs.make(task)
  layout = export.observation_layout(env, spec.observation_size)
  assert layout[0]["start"] == 0 and layout[-1]["stop"] == spec.observation_size
  assert all(a["stop"] == b["start"] for a, b in zip(layout, layout[1:]))
  for field in layout:
    assert len(field["units"]) == field["stop"] - field["start"], field["name"]
  units = [unit for field in layout for unit in field["units"]]
  assert units == expected_observation_units(task, env.mj_model)
  if task == "hopper":   # by hand: rootz, rooty, 3 joints; their velocities and rootx's
    assert [f["units"] for f in layout] == [["m", "rad"], ["rad"] * 3, ["m/s", "m/s", "rad/s"],
                                           ["rad/s"] * 3]
  if task == "kitchen-mixed":   # the goal the env appends, which the policy needs fed too
    from envs import kitchen
    assert layout[-1]["name"] == "goal" and (layout[-1]["start"], layout[-1]["stop"]) == (30, 60)
    observation = env.observe(jnp.asarray(env.mj_model.qpos0, jnp.float32), None)
    np.testing.assert_array_equal(layout[-1]["value"], np.asarray(observation)[30:])
    assert layout[-1]["value"][22] == kitchen.ELEMENT_GOALS["microwave"][0] == -0.75

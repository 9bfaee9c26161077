"""The WSRL paper's claims (wsrl_mjx/claims.py) on hand-made studies: run directories written
here with scores chosen so that each verdict is known, their statistics checked against numbers
worked out by hand, the bootstrap interval against a plain numpy bootstrap."""

import json

import numpy as np
import pytest

from conftest import run_launch
from wsrl_mjx import claims, report, runs, statistics

ENV = "hopper-medium-v2"
STEPS = [0, 5_000, 10_000, 15_000, 20_000, 25_000, 30_000]
JITTER = np.array([-1.5, -0.5, 0.0, 0.5, 1.0, 2.5])        # per seed, 6 seeds per arm
WSRL = "wsrl init_actor=True init_critic=True warmup_steps=5000"
NO_WARMUP = "wsrl init_actor=True init_critic=True warmup_steps=0"
NO_INIT = "wsrl init_actor=False init_critic=False warmup_steps=5000"
RESAMPLES = 4000


def write_run(path, config, scores, points=None, steps=STEPS, updates=None):
  """A fine-tuning run directory: metrics.jsonl with `scores` [evaluations, seeds] at `steps`
  (NaN written as null), each evaluation after the first with `updates` [evaluations - 1,
  seeds] as its chunk's `train.updates` where given, and config.json: `config` over WSRL's
  defaults."""
  path.mkdir(parents=True)
  full = dict(env_name=ENV, method="wsrl", pretrained="runs/offline", warmup_steps=5000,
              offline_data="none", init_actor=True, init_critic=True, online_steps=steps[-1],
              seed=0, num_seeds=scores.shape[1])
  full.update(config)
  lines = []
  for step, row in zip(steps, scores):
    record = {"env_step": step, "diverged_at": [None] * scores.shape[1],
              "normalized_scores": [None if np.isnan(s) else float(s) for s in row]}
    if points is not None:
      record["per_seed"] = points
    if updates is not None and step != steps[0]:
      record["train"] = {"updates": [int(u) for u in updates[len(lines) - 1]]}
    lines.append(json.dumps(record) + "\n")
  (path / "metrics.jsonl").write_text("".join(lines))
  (path / "config.json").write_text(json.dumps(full))
  return path


def curve(start, early, final, seeds=6):
  """[evaluations, seeds]: `start` at steps 0 and 5,000, `early` at 10,000, their mean with
  `final` at 15,000, then `final` + JITTER at the last three evaluations."""
  jitter = JITTER[:seeds]
  rows = [[start] * seeds, [start] * seeds, [early] * seeds, [(early + final) / 2] * seeds]
  rows += [list(final + jitter)] * 3
  return np.asarray(rows, np.float64)


def point(warmup, init):
  return {"warmup_steps": warmup, "init_actor": init, "init_critic": init}


def write_wsrl_program(path, wsrl, no_warmup, no_init, steps=STEPS):
  """One program whose seeds are 3 grid points (seed i takes arm i mod 3), as per_seed lays
  them out."""
  scores = np.stack([wsrl, no_warmup, no_init], axis=-1).reshape(len(steps), -1)
  return write_run(path, {"per_seed": "warmup_steps=5000,0;init_actor=true,false"}, scores,
                   points=[point(5000, True), point(0, True), point(5000, False)] * 6,
                   steps=steps)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """WSRL with its no-warmup and no-init ablations in one program, Cal-QL without and with its
  data, RLPD: the folder holding the run directories."""
  root = tmp_path_factory.mktemp("study") / "runs"
  write_wsrl_program(root / "wsrl", wsrl=curve(50, 48, 80), no_warmup=curve(50, 10, 70),
                     no_init=curve(0, 20, 79.5))
  calql = curve(50, 30, 40)
  calql[5, 2] = np.nan       # a non-finite evaluation at 25,000: left out, not a zero
  write_run(root / "calql", dict(method="calql", warmup_steps=0), calql)
  write_run(root / "calql-data", dict(method="calql", warmup_steps=0, offline_data="keep"),
            curve(50, 45, 95))
  write_run(root / "rlpd", dict(method="rlpd", pretrained="", offline_data="keep"),
            curve(0, 20, 81))
  return root


def by_comparison(findings):
  return {(f.claim, f.compared, f.statistic.split(" ")[1]): f for f in findings}


def numpy_bootstrap(x, y, statistic, resamples=40_000, seed=1):
  """The 95% percentile interval of statistic(x*) - statistic(y*), x* and y* drawn with
  replacement from x and y independently: the plain definition, in float64 numpy."""
  rng = np.random.default_rng(seed)
  xs = x[rng.integers(0, x.size, (resamples, x.size))]
  ys = y[rng.integers(0, y.size, (resamples, y.size))]
  differences = statistic(xs) - statistic(ys)
  return np.percentile(differences, [2.5, 97.5])


def trimmed(values):
  """IQM by hand for rows of 6 values: drop the lowest and highest (int(6 / 4) = 1 each)."""
  return np.sort(values, axis=-1)[..., 1:-1].mean(axis=-1)


def test_each_claim_gets_the_verdict_its_numbers_give(study):
  results = report.make_report([study], study.parent / "report", resamples=RESAMPLES)
  findings = claims.check(results, resamples=RESAMPLES)
  found = by_comparison(findings)
  assert [f.claim for f in findings] == ["a", "b", "c", "c", "d", "d", "e"]
  wsrl_final = trimmed(80 + JITTER)                     # 80.25

  # (a) every WSRL seed's lowest evaluation in (5000, 25000] is 48 (step 10,000); at step 0, 50.
  a = found["a", WSRL, "drop:"]
  assert (a.value, a.low, a.high, a.seeds, a.verdict) == (-2.0, -2.0, -2.0, (6,),
                                                          claims.REPRODUCED)
  # (b) Cal-QL's seed 2 has a null at 25,000: its final is the mean of its last 3 finite
  # evaluations, (35 + 40 + 40) / 3, not 40 (null skipped) or 26.7 (null as 0).
  b = found["b", f"{WSRL} vs calql", "score"]
  calql_finals = 40 + JITTER
  calql_finals[2] = 115 / 3
  assert b.value == pytest.approx(wsrl_final - trimmed(calql_finals)) == pytest.approx(40.375)
  assert b.low > 0 and b.verdict == claims.REPRODUCED
  # (c) no warmup: lowest in (0, 20000] is 10, a drop of 40; warmup's drop is 2: 38 better.
  c_drop = found["c", f"{WSRL} vs {NO_WARMUP}", "early"]
  assert (c_drop.value, c_drop.low, c_drop.high) == (38.0, 38.0, 38.0)
  c_final = found["c", f"{WSRL} vs {NO_WARMUP}", "score"]
  assert c_final.value == pytest.approx(10.0) and c_final.verdict == claims.REPRODUCED
  # (d) RLPD ends 1 above WSRL (within the 5-point tolerance, with its interval); Cal-QL with
  # its data 15 above (beyond it).
  d_rlpd = found["d", f"{WSRL} vs rlpd", "score"]
  assert d_rlpd.value == pytest.approx(-1.0) and d_rlpd.verdict == claims.REPRODUCED
  assert d_rlpd.low > -5
  expected = numpy_bootstrap(80 + JITTER, 81 + JITTER, trimmed)
  np.testing.assert_allclose([d_rlpd.low, d_rlpd.high], expected, atol=0.3)
  d_kept = found["d", f"{WSRL} vs calql+data", "score"]
  assert d_kept.value == pytest.approx(-15.0) and d_kept.high < -5
  assert d_kept.verdict == claims.NOT_REPRODUCED
  # (e) no policy and no Q init ends 0.5 lower: the interval holds 0.
  e = found["e", f"{WSRL} vs {NO_INIT}", "score"]
  assert e.value == pytest.approx(0.5) and e.low < 0 < e.high
  assert e.verdict == claims.NOT_DISTINGUISHABLE

  assert claims.overall(findings, "a") == claims.REPRODUCED
  assert claims.overall(findings, "d") == "mixed"
  assert claims.overall(findings, "e") == claims.NOT_DISTINGUISHABLE

  out = study.parent / "report"
  table = (out / "claims.md").read_text()
  assert "| (d) WSRL matches or beats methods that keep the offline data | mixed |" in table
  assert "| (b) | hopper-medium-v2 | " in table and "+40.4 [" in table
  assert "## The WSRL paper's claims" in (out / "report.md").read_text()
  rows = (out / "claims.csv").read_text().splitlines()
  assert rows[0].startswith("claim,env,compared") and len(rows) == 1 + len(findings)


def test_a_verdict_from_few_seeds_says_it_is_indicative(tmp_path):
  """WSRL 30 points above Cal-QL: reproduced at any seed count, but from 3 seeds a side the
  reason and the overall line say the interval is too narrow to be 95%; from 5, not."""
  for seeds in (3, 5):
    root = tmp_path / str(seeds)
    write_run(root / "wsrl", {}, curve(50, 48, 80, seeds=seeds))
    write_run(root / "calql", dict(method="calql", warmup_steps=0), curve(50, 30, 50,
                                                                         seeds=seeds))
    results = report.make_report([root], tmp_path / f"report{seeds}", resamples=RESAMPLES)
    scores_table = (tmp_path / f"report{seeds}" / "final_scores.md").read_text()
    footnote = ("\\* fewer than 5 seeds: a percentile bootstrap interval cannot reach past the "
                "seeds' own range")
    for arm in ("calql", "wsrl"):
      assert f"| {arm} | {ENV} | {seeds}{'*' if seeds == 3 else ''} | 30,000 |" in scores_table
    assert (footnote in scores_table) == (seeds == 3)
    findings = claims.check(results, resamples=RESAMPLES)
    b = by_comparison(findings)["b", "wsrl vs calql", "score"]
    assert b.verdict == claims.REPRODUCED and b.seeds == (seeds, seeds)
    table = claims.markdown(findings)
    row = dict(zip(claims.CSV_COLUMNS, claims.csv_rows([b])[0]))
    assert (row["verdict"], row["indicative"]) == (claims.REPRODUCED, seeds == 3)
    if seeds == 3:
      assert b.reason == ("the interval lies above 0; indicative only: 3 seeds on a side, and "
                          "below 5 a bootstrap interval is narrower than 95%")
      assert ("| (b) WSRL beats fine-tuning the offline algorithm without its data | "
              "reproduced (indicative: fewer than 5 seeds a side) |") in table
    else:
      assert b.reason == "the interval lies above 0"
      assert ("| (b) WSRL beats fine-tuning the offline algorithm without its data | "
              "reproduced |") in table


def test_a_report_says_where_seeds_have_fewer_than_last_n_and_drops_an_older_reports_claims(
    tmp_path):
  """A run with 2 evaluations after step 0 under --last_n 3: its means are over 2, marked † with
  a footnote naming the arm; a second report into the same folder without claims removes the
  first one's claims files (they described other runs)."""
  out = tmp_path / "report"
  root = tmp_path / "runs"
  write_run(root / "wsrl", {}, curve(50, 48, 80, seeds=3))
  write_run(root / "calql", dict(method="calql", warmup_steps=0), curve(50, 30, 50, seeds=3))
  report.make_report([root], out, resamples=RESAMPLES)
  assert (out / "claims.md").is_file() and (out / "claims.csv").is_file()
  short = write_run(tmp_path / "short", dict(method="calql", warmup_steps=0),
                    curve(50, 48, 80, seeds=3)[:3], steps=STEPS[:3])     # no WSRL arm: no claims
  report.make_report([short], out, resamples=RESAMPLES)
  assert not (out / "claims.md").exists() and not (out / "claims.csv").exists()
  table = (out / "final_scores.md").read_text()
  row = next(line for line in table.splitlines() if line.startswith("| calql |"))
  # last evaluation 48 (step 10,000); mean of the 2 after step 0: (50 + 48) / 2 = 49
  assert row.startswith(f"| calql | {ENV} | 3* | 10,000 | 48.0 [48.0, 48.0] | 48.0 [48.0, 48.0] "
                        "| 49.0 [49.0, 49.0] † | 49.0 [49.0, 49.0] † | 0 |"), row
  assert table.endswith(
      f"\n\n† seeds with fewer than 3 evaluations after step 0, whose mean is over the ones they "
      f"have: 'calql' ({ENV}) 3 of 3.\n")
  assert "\n\n\\* fewer than 5 seeds" in table
  full = report.make_report([root], out, resamples=RESAMPLES)
  assert [r.short for r in full] == [0, 0] and "†" not in (out / "final_scores.md").read_text()


def test_runs_of_one_arm_compare_paths_by_where_they_led(tmp_path):
  """A run resumed with `runs/offline/` (or from another folder) records that spelling in
  config.json; its checkpoints' description says where it led. Runs whose pretrained agent is
  the same folder are one experiment, whatever the text; another folder is not."""
  import dataclasses
  made = [runs.read(write_run(tmp_path / name, dict(pretrained=text, seed=seed),
                              curve(50, 48, 80, seeds=2)))
          for name, text, seed in (("a", "runs/offline", 0), ("b", "../x/runs/offline/", 1),
                                   ("c", "runs/offline", 2))]
  where = {"a": "/data/runs/offline", "b": "/data/runs/offline", "c": "/elsewhere/runs/offline"}
  a, b, c = [dataclasses.replace(run, description={"resolved_paths": {"pretrained": where[name]}})
             for run, name in zip(made, "abc")]
  arms, _ = report.group([a, b])
  assert [len(arm.members) for arm in arms] == [4]
  with pytest.raises(report.ReportError, match="configs differ: pretrained "
                     r"\('/data/runs/offline' vs '/elsewhere/runs/offline'\)"):
    report.group([a, c])
  with pytest.raises(report.ReportError, match="configs differ: pretrained"):
    report.group(made[:2])          # recorded no resolved paths: the text is all there is


def test_tolerances_move_the_verdicts(study):
  results = report.make_report([study], study.parent / "report-tight", resamples=RESAMPLES)
  found = by_comparison(claims.check(results, resamples=RESAMPLES, collapse_tolerance=1.0,
                                     match_tolerance=0.0))
  assert found["a", WSRL, "drop:"].verdict == claims.NOT_REPRODUCED      # -2 below -1
  assert found["d", f"{WSRL} vs rlpd", "score"].verdict == claims.NOT_DISTINGUISHABLE


def test_a_missing_start_a_short_window_and_one_seed_are_not_measured(tmp_path):
  late = [0, 5_000, 30_000, 35_000, 40_000, 45_000, 50_000]
  write_wsrl_program(tmp_path / "no-start" / "wsrl", curve(50, 48, 80), curve(50, 10, 70),
                     curve(0, 20, 80))
  lines = (tmp_path / "no-start" / "wsrl" / "metrics.jsonl").read_text().splitlines()
  (tmp_path / "no-start" / "wsrl" / "metrics.jsonl").write_text("\n".join(lines[1:]) + "\n")
  write_run(tmp_path / "no-start" / "calql", dict(method="calql", warmup_steps=0),
            curve(50, 30, 40, seeds=1))
  results = report.make_report([tmp_path / "no-start"], tmp_path / "out1", resamples=500)
  found = by_comparison(claims.check(results, resamples=500))
  a = found["a", WSRL, "drop:"]
  assert a.verdict == claims.NOT_MEASURED and "no evaluation at step 0" in a.reason
  b = found["b", f"{WSRL} vs calql", "score"]
  assert b.verdict == claims.NOT_MEASURED and b.seeds == (6, 1) and "fewer than 2" in b.reason
  assert "not measured" in (tmp_path / "out1" / "claims.md").read_text()

  write_wsrl_program(tmp_path / "late" / "wsrl", curve(50, 48, 80), curve(50, 10, 70),
                     curve(0, 20, 80), steps=late)
  results = report.make_report([tmp_path / "late"], tmp_path / "out2", resamples=500)
  found = by_comparison(claims.check(results, resamples=500, window=20_000))
  a = found["a", WSRL, "drop:"]
  assert a.verdict == claims.NOT_MEASURED and "within 20,000 env steps" in a.reason
  # A window that reaches step 30,000 measures it: the lowest there is 48, a drop of 2.
  found = by_comparison(claims.check(results, resamples=500, window=25_000))
  assert found["a", WSRL, "drop:"].value == -2.0
  # A window longer than the runs (50,000 steps, warmup 5,000): not judged on what exists.
  found = by_comparison(claims.check(results, resamples=500, window=46_000))
  a = found["a", WSRL, "drop:"]
  assert a.verdict == claims.NOT_MEASURED and "stop before 46,000 env steps" in a.reason


def test_a_run_stopped_after_its_first_evaluation_has_no_final_score(tmp_path):
  """Cal-QL's 6 seeds, and a second Cal-QL run of 2 seeds killed after its step-0 evaluation
  (pooled with --pool: its config says it was 100 steps long): 6 final scores, not 8."""
  write_wsrl_program(tmp_path / "runs" / "wsrl", curve(50, 48, 80), curve(50, 10, 70),
                     curve(0, 20, 80))
  write_run(tmp_path / "runs" / "calql", dict(method="calql", warmup_steps=0), curve(50, 30, 40))
  write_run(tmp_path / "runs" / "calql-killed", dict(method="calql", warmup_steps=0),
            np.full((1, 2), 50.0), steps=[0])
  results = report.make_report([tmp_path / "runs"], tmp_path / "out", resamples=500, pool=True)
  found = by_comparison(claims.check(results, resamples=500))
  b = found["b", f"{WSRL} vs calql", "score"]
  assert b.seeds == (6, 6) and b.value == pytest.approx(40.0)


def test_no_wsrl_arm_no_claims_and_bad_tolerances_are_refused(tmp_path):
  write_run(tmp_path / "runs" / "sac", dict(method="sac", pretrained=""), curve(0, 20, 40))
  results = report.make_report([tmp_path / "runs"], tmp_path / "out", resamples=500)
  assert claims.check(results) == []
  assert not (tmp_path / "out" / "claims.md").exists()
  assert "paper's claims" not in (tmp_path / "out" / "report.md").read_text()
  with pytest.raises(report.ReportError, match="--match_tolerance must be a non-negative"):
    report.make_report([tmp_path / "runs"], tmp_path / "out", match_tolerance=-1)
  (tmp_path / "a-file").write_text("x")
  with pytest.raises(report.ReportError, match="a-file is a file; give a folder"):
    report.make_report([tmp_path / "runs"], tmp_path / "a-file")
  (tmp_path / "sweep").mkdir()
  (tmp_path / "sweep" / "sweep.json").write_text("{}")
  with pytest.raises(runs.RunError, match="a sweep folder none of whose cells has written"):
    report.make_report([tmp_path / "sweep"], tmp_path / "out4")
  result = run_launch("launch.report", str(tmp_path / "runs"), f"--out={tmp_path / 'out3'}",
                      "--claims_window=0")
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --claims_window must be at least 1 env step, got 0")
  assert not (tmp_path / "out3").exists()


def test_arms_are_named_by_the_run_method_and_kept_data(tmp_path):
  """`runs.Run.method`: the config's method, '+data' for an offline learner keeping its data
  (RLPD always keeps it), and the old pretrained/scratch naming for configs without a method."""
  scores = curve(0, 0, 0, seeds=2)
  cases = [(dict(method="calql", offline_data="keep"), "calql+data"),
           (dict(method="calql"), "calql"), (dict(method="rlpd", offline_data="keep"), "rlpd"),
           (dict(method="sac", pretrained=""), "sac")]
  for i, (config, expected) in enumerate(cases):
    assert runs.read(write_run(tmp_path / str(i), config, scores)).method == expected
  legacy = write_run(tmp_path / "legacy", {}, scores)
  config = json.loads((legacy / "config.json").read_text())
  del config["method"]
  (legacy / "config.json").write_text(json.dumps(config))
  assert runs.read(legacy).method == "wsrl"
  (legacy / "config.json").write_text(json.dumps(dict(config, pretrained="")))
  assert runs.read(legacy).method == "scratch"


def test_overall_verdicts_and_the_interval_of_a_mean():
  def finding(verdict):
    return claims.Finding("b", ENV, "x", "s", 0.0, 0.0, 0.0, (2, 2), verdict, "")
  cases = [([claims.REPRODUCED, claims.NOT_DISTINGUISHABLE], claims.REPRODUCED),
           ([claims.NOT_REPRODUCED, claims.NOT_MEASURED], claims.NOT_REPRODUCED),
           ([claims.REPRODUCED, claims.NOT_REPRODUCED], "mixed"),
           ([claims.NOT_DISTINGUISHABLE], claims.NOT_DISTINGUISHABLE),
           ([claims.NOT_MEASURED], claims.NOT_MEASURED), ([], claims.NOT_MEASURED)]
  for verdicts, expected in cases:
    assert claims.overall([finding(v) for v in verdicts], "b") == expected
  # One sample's mean against the plain bootstrap; the estimate agrees with statistics'.
  x = np.array([-12.0, -3.0, 0.5, 1.0, 4.0, -30.0, 2.0, -1.0])
  value, low, high = statistics.interval([x], lambda s, axis=-1: np.mean(s, axis=axis), 20_000)
  rng = np.random.default_rng(3)
  means = x[rng.integers(0, x.size, (40_000, x.size))].mean(axis=1)
  np.testing.assert_allclose([low, high], np.percentile(means, [2.5, 97.5]), atol=0.4)
  assert value == x.mean()
  estimate = statistics.estimate(x, resamples=20_000)
  np.testing.assert_allclose([estimate.mean_low, estimate.mean_high], [low, high], atol=0.4)


def test_a_warning_where_grid_points_start_from_different_pretrained_seeds(caplog):
  """8 grid points over 64 run seeds from 2 pretrained seeds: point p only ever starts from seed
  p mod 2 (the reproduction grid's trap); from 3 (no common factor) every point sees all 3; from 64
  every seed has its own agent (nothing shared, nothing to warn of)."""
  import itertools
  from wsrl_mjx import checkpoint, finetune
  grid = [dict(zip("wac", values)) for values in itertools.product((5000, 0), (1, 0), (1, 0))]
  points = [grid[i % 8] for i in range(64)]
  caplog.set_level("WARNING")
  assert finetune.warn_if_grid_points_share_sources(points, checkpoint.seed_sources(64, 2))
  assert "only some of the checkpoint's 2 seeds" in caplog.text
  sources = checkpoint.seed_sources(64, 2)
  assert {int(sources[i]) for i in range(64) if i % 8 == 3} == {1}     # by hand: 3, 11, ... odd
  caplog.clear()
  for checkpoint_seeds in (1, 3, 5, 64):
    assert not finetune.warn_if_grid_points_share_sources(
        points, checkpoint.seed_sources(64, checkpoint_seeds)), checkpoint_seeds
  assert caplog.text == ""
  assert not finetune.warn_if_grid_points_share_sources([{}] * 8, checkpoint.seed_sources(8, 2))


def test_runs_of_one_arm_that_share_their_seed_are_noted(tmp_path):
  """Two runs of the same config and --config.seed (the same command in two folders) pooled
  into one arm: a note names them; a third with its own seed is not named."""
  for name, seed in (("sac-a", 0), ("sac-b", 0), ("sac-c", 7)):
    write_run(tmp_path / "runs" / name, dict(method="sac", pretrained="", seed=seed),
              curve(0, 20, 40))
  report.make_report([tmp_path / "runs"], tmp_path / "out", resamples=500)
  text = (tmp_path / "out" / "report.md").read_text()
  line = next(l for l in text.splitlines() if "share --config.seed=0" in l)
  assert "sac-a" in line and "sac-b" in line and "sac-c" not in line
  assert "share --config.seed=7" not in text


def test_arms_that_ran_the_same_settings_in_separate_programs_are_noted(tmp_path):
  """A sweep's plain WSRL cell (warmup 5,000 from its config) and its warmup ablation's
  warmup_steps=5000 point ran the same settings: a note names both arms (and their shared
  --config.seed); the ablation's warmup_steps=0 arm and Cal-QL are not named."""
  write_run(tmp_path / "runs" / "wsrl", {}, curve(50, 48, 80, seeds=4))
  write_run(tmp_path / "runs" / "wsrl-warmup", {"per_seed": "warmup_steps=5000,0"},
            curve(50, 48, 80, seeds=4),
            points=[{"warmup_steps": 5000}, {"warmup_steps": 0}] * 2)
  write_run(tmp_path / "runs" / "calql", dict(method="calql", warmup_steps=0),
            curve(50, 30, 40, seeds=4))
  report.make_report([tmp_path / "runs"], tmp_path / "out", resamples=500)
  text = (tmp_path / "out" / "report.md").read_text()
  lines = [l for l in text.splitlines() if "ran the same settings" in l]
  assert len(lines) == 1, text
  runs = tmp_path / "runs"
  assert (f"Arms 'wsrl' ({runs / 'wsrl'}), 'wsrl warmup_steps=5000' ({runs / 'wsrl-warmup'}) of "
          "hopper-medium-v2 ran the same settings (wsrl warmup_steps=5000) in separate programs and are reported "
          "apart; where they are the claims' WSRL arm, the claims take the one with the most "
          "seeds; they share --config.seed=0, so their seeds of the same index repeat each "
          "other's random draws (give each program its own --config.seed to make them "
          "independent).") in lines[0]
  assert "'wsrl warmup_steps=0'" not in lines[0] and "calql" not in lines[0]
  # The claims' WSRL arm: the plain run's 4 seeds, not the program's 2 at warmup_steps=5000.
  findings = claims.check(report.make_report([tmp_path / "runs"], tmp_path / "again",
                                             resamples=500), resamples=500)
  b = next(f for f in findings if f.claim == "b")
  assert b.compared == "wsrl vs calql" and b.seeds == (4, 4)


def test_an_arm_that_never_updated_is_left_out_of_the_claims(tmp_path):
  """The README's warmup grid cut short: one program, seed i at warmup_steps (0, 1000, 5000,
  20000)[i mod 4], 5,000 online steps. The 5000 and 20000 seeds never update (their chunks'
  `updates` are 0 throughout) and score the pretrained policy, 50 + JITTER; they would be the
  claims' WSRL arm (K = 5,000). The reference is warmup 1000, the longest that trained; claim
  (a) on the two frozen arms is not measured, saying why."""
  steps = [0, 1_000, 2_000, 3_000, 4_000, 5_000]
  late = [80 + JITTER] * 3
  arms = {0: np.stack([[50] * 6, [10] * 6, [60] * 6, *[70 + JITTER] * 3]),
          1000: np.stack([[50] * 6, [50] * 6, [48] * 6, *late]),
          5000: np.stack([50 + JITTER] * 6), 20000: np.stack([50 + JITTER] * 6)}
  trains = {0: [5] * 5, 1000: [0, 5, 5, 5, 5], 5000: [0] * 5, 20000: [0] * 5}
  warmups = list(arms)
  scores = np.stack([arms[w] for w in warmups], axis=-1).reshape(len(steps), -1)
  updates = np.tile(np.stack([trains[w] for w in warmups], axis=-1), 6)   # [5, 24]
  write_run(tmp_path / "runs" / "warmup-grid", {"per_seed": "warmup_steps=0,1000,5000,20000"},
            scores, points=[{"warmup_steps": w} for w in warmups] * 6, steps=steps,
            updates=updates)
  results = report.make_report([tmp_path / "runs"], tmp_path / "out", resamples=500)
  assert [len(r.never_updated) for r in results] == [0, 0, 6, 6]
  findings = claims.check(results, resamples=500, window=2_000)
  assert [(f.claim, f.compared) for f in findings] == [
      ("a", "wsrl warmup_steps=1000"), ("a", "wsrl warmup_steps=5000"),
      ("a", "wsrl warmup_steps=20000"), ("c", "wsrl warmup_steps=1000 vs wsrl warmup_steps=0"),
      ("c", "wsrl warmup_steps=1000 vs wsrl warmup_steps=0")]
  a, frozen, frozen_long, c_drop, c_final = findings
  # (a) warmup 1000: lowest in (1000, 3000] is 48 (step 2,000), step 0 is 50: a drop of 2.
  assert (a.value, a.seeds, a.verdict) == (-2.0, (6,), claims.REPRODUCED)
  for finding, warmup in ((frozen, 5000), (frozen_long, 20000)):
    assert (finding.verdict, finding.seeds) == (claims.NOT_MEASURED, (0,))
    assert finding.reason == (
        f"'wsrl warmup_steps={warmup}' never updated: the run ended before its first update "
        f"(warmup_steps={warmup}, not shorter than online_steps=5000)")
  # (c) no warmup: lowest in (0, 2000] is 10, a drop of 40; 38 less with warmup 1000. Finals:
  # IQM 80.25 vs 70.25 (the frozen 5000 arm's 50.25 would have made it "not reproduced").
  assert (c_drop.value, c_drop.seeds) == (38.0, (6, 6))
  assert c_final.value == pytest.approx(10.0) and c_final.verdict == claims.REPRODUCED
  text = (tmp_path / "out" / "claims.md").read_text()
  assert "wsrl warmup_steps=5000 vs" not in text and "| not measured | 'wsrl warmup_steps=5000' " \
      "never updated: the run ended before its first update" in text

  # With no warmup arm that trained, the frozen one stays the reference and its comparisons
  # are not measured, naming it.
  only_frozen = [r for r in results if r.arm.label in ("wsrl warmup_steps=0",
                                                       "wsrl warmup_steps=5000")]
  findings = claims.check(only_frozen, resamples=500, window=2_000)
  assert [(f.claim, f.verdict) for f in findings] == [("a", claims.NOT_MEASURED)] + [
      ("c", claims.NOT_MEASURED)] * 2
  assert {f.reason for f in findings} == {
      "'wsrl warmup_steps=5000' never updated: the run ended before its first update "
      "(warmup_steps=5000, not shorter than online_steps=5000)"}
  assert findings[2].seeds == (0, 6)

"""A study's report: seeds grouped into arms, learning curves with confidence bands, WSRL's
training diagnostics and a final-score table, from any number of run directories.

An arm is the seeds of one phase, env, method (`runs.Run.method`) and `--config.per_seed` grid
point. Seeds of different runs join an arm only if the runs' configs agree on every field that
defines the experiment (`NOT_THE_EXPERIMENT` lists those that do not), unless `pool=True`.

Statistics (`wsrl_mjx.statistics`): per arm and evaluation step, the mean and IQM of the seeds'
normalised scores with 95% stratified bootstrap intervals; one panel per env and phase, so a
curve's strata are one task and the bootstrap resamples seeds. `make_report` writes into `out`:

- `learning_curves.png`: IQM and its 95% interval per arm vs step, one panel per env (and phase);
- `diagnostics.png`: mean Q-value, critic loss and temperature (mean over seeds that updated in
  the chunk before each evaluation), the end of each arm's warmup marked;
- `final_scores.md`, `final_scores.csv`: each seed's last evaluation and the mean of its last
  `last_n` after step 0 (the starting policy's), aggregated per arm, an arm of fewer than
  `claims.FEW_SEEDS` seeds starred (its interval is narrower than 95%) and one with seeds of
  fewer than `last_n` evaluations after step 0 marked †, one with fine-tuning seeds that never
  updated (their run stopped before the first update: `runs.Run.updated`) marked ‡ and left out
  of the claims; where the runs span both phases, the .md has a phase column (a pretraining's
  and a fine-tuning's arm may share a label, e.g. `cql`);
  `curves.csv`: every arm's estimates at every step;
- `claims.md`, `claims.csv`: where the study has the arms, the WSRL paper's claims checked one
  comparison at a time (`wsrl_mjx.claims`);
- `report.md`: the runs, what is unfinished or diverged or never updated, the figures and the
  tables.

Files an earlier report left in `out` that this one does not write (its claims, its figures)
are removed, so the folder describes these runs only.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import pathlib
from typing import Any, Sequence

import numpy as np

from wsrl_mjx import claims as claims_lib
from wsrl_mjx import metrics_log
from wsrl_mjx import runs as runs_lib
from wsrl_mjx import statistics
from wsrl_mjx.errors import UserError

# Config fields that do not make two runs different experiments (seeds, sizes of the host
# loop's steps); a run's per-seed grid fields are compared through its seeds' grid points.
NOT_THE_EXPERIMENT = ("seed", "num_seeds", "per_seed", "steps_per_chunk", "eval_interval",
                      "checkpoint_interval", "keep_checkpoints")
DIAGNOSTICS = (("q", "mean Q-value"), ("critic_loss", "critic loss"),
               ("temperature", "temperature"))
STEP_LABELS = {"env_step": "env steps", "gradient_step": "gradient steps"}
DPI = 80


class ReportError(UserError):
  """Runs that cannot be reported as asked, with the reason."""


@dataclasses.dataclass
class Arm:
  phase: str
  env_name: str
  method: str
  point: tuple[tuple[str, Any], ...]          # the grid point's (name, value) pairs
  members: list[tuple[runs_lib.Run, int]] = dataclasses.field(default_factory=list)

  @property
  def label(self) -> str:
    """e.g. "wsrl warmup_steps=0" (the env and phase are the panel's)."""
    return " ".join([self.method] + [f"{name}={value}" for name, value in self.point])

  @property
  def panel(self) -> tuple[str, str]:
    return self.env_name, self.phase

  @property
  def step_unit(self) -> str:
    return self.members[0][0].step_unit


def _experiment(run: runs_lib.Run, point: dict) -> dict[str, Any]:
  """The run's config fields that define its experiment; a path field (`runs.PATH_FIELDS`) as
  where it led (`runs.resolved_paths` in its checkpoints' description), where the run recorded
  that: a run resumed with `runs/x/` for `runs/x`, or from another folder, is the same
  experiment."""
  resolved = (run.description or {}).get("resolved_paths") or {}
  return {k: resolved.get(k, v) if k in runs_lib.PATH_FIELDS and v else v
          for k, v in (run.config or {}).items()
          if k not in NOT_THE_EXPERIMENT and k not in point}


def group(runs: Sequence[runs_lib.Run], pool: bool = False) -> tuple[list[Arm], list[str]]:
  """Seeds of `runs` grouped into arms (in order of first appearance) -> (arms, notes).

  Raises ReportError where two runs with different configs would share an arm and `pool` is
  false; with `pool` they are pooled and a note names the differing fields.
  """
  arms: dict[tuple, Arm] = {}
  notes = []
  for run in runs:
    for seed, point in enumerate(run.seed_points):
      key = (run.phase, run.env_name or "unknown env", run.method, tuple(sorted(point.items())))
      arm = arms.setdefault(key, Arm(*key))
      arm.members.append((run, seed))
  for arm in arms.values():
    seeds_of: dict[Any, list[str]] = {}
    for run in dict.fromkeys(r for r, _ in arm.members):
      if run.config is not None and "seed" in run.config:
        seeds_of.setdefault(run.config["seed"], []).append(run.name)
    for seed, names in seeds_of.items():
      if len(names) > 1:
        notes.append(f"Arm '{arm.label}' ({arm.env_name}) pools runs that share --config.seed="
                     f"{seed} ({', '.join(names)}): their seeds draw the same random numbers, "
                     "so they may repeat each other and the intervals be too narrow. Give "
                     "each run of an arm its own --config.seed.")
    first = arm.members[0][0]
    reference = _experiment(first, dict(arm.point))
    for run in dict.fromkeys(r for r, _ in arm.members):
      if run.config is None or first.config is None:
        continue
      other = _experiment(run, dict(arm.point))
      differing = sorted(k for k in set(reference) | set(other)
                         if reference.get(k) != other.get(k))
      if not differing:
        continue
      fields = ", ".join(f"{k} ({reference.get(k)!r} vs {other.get(k)!r})" for k in differing)
      if not pool:
        raise ReportError(
            f"{first.name} and {run.name} both have seeds of arm '{arm.label}' "
            f"({arm.env_name}, {arm.phase}) but their configs differ: {fields}. Report them "
            "separately, or pass --pool to pool them into one arm.")
      notes.append(f"Arm '{arm.label}' ({arm.env_name}) pools {first.name} and {run.name}, "
                   f"whose configs differ: {fields} (--pool).")
  notes += _same_settings_notes(list(arms.values()))
  return list(arms.values()), notes


def _same_settings_notes(arms: list[Arm]) -> list[str]:
  """Notes on arms of one env, phase and method that ran the same settings in separate programs
  (e.g. a sweep's plain WSRL cell, its warmup ablation's warmup_steps=5000 and its init
  ablation's init_actor=True init_critic=True). They stay apart: programs started with the
  same --config.seed give seed i the same random numbers, so pooled they could count a seed
  twice. An arm's settings are its grid point's values, and its run's config values for the
  fields other arms of the group vary."""
  groups: dict[tuple, list[Arm]] = {}
  for arm in arms:
    groups.setdefault((arm.phase, arm.env_name, arm.method), []).append(arm)
  notes = []
  for (_, env_name, _), group in groups.items():
    axes = sorted({name for arm in group for name, _ in arm.point})
    same: dict[tuple, list[Arm]] = {}
    for arm in group:
      config = arm.members[0][0].config
      point = dict(arm.point)
      if not axes or config is None or any(n not in point and n not in config for n in axes):
        continue
      settings = tuple((name, point[name] if name in point else config[name]) for name in axes)
      same.setdefault(settings, []).append(arm)
    for settings, alike in same.items():
      if len(alike) < 2:
        continue
      labels = ", ".join(
          f"'{arm.label}' ({', '.join(dict.fromkeys(run.name for run, _ in arm.members))})"
          for arm in alike)
      values = " ".join(f"{name}={value}" for name, value in settings)
      seeds = {(arm.members[0][0].config or {}).get("seed") for arm in alike}
      repeat = (f"; they share --config.seed={seeds.pop()}, so their seeds of the same index "
                "repeat each other's random draws (give each program its own --config.seed to "
                "make them independent)" if len(seeds) == 1 else "")
      claims = ("; where they are the claims' WSRL arm, the claims take the one with the most "
                "seeds" if alike[0].method == "wsrl" else "")
      notes.append(f"Arms {labels} of {env_name} ran the same settings ({alike[0].method} "
                   f"{values}) in separate programs and are reported apart{claims}{repeat}.")
  return notes


@dataclasses.dataclass
class ArmResult:
  arm: Arm
  used: list[tuple[runs_lib.Run, int]]        # the seeds aggregated (diverged ones maybe not)
  diverged: list[tuple[runs_lib.Run, int, int]]   # (run, seed, step)
  steps: np.ndarray                           # [points] the steps with at least one score
  curve: list[statistics.Estimate]            # one per step
  last: statistics.Estimate | None            # each seed's last evaluation
  last_n: statistics.Estimate | None          # each seed's mean of its last n after step 0
  final_steps: tuple[int, int] | None         # smallest and largest last step of its seeds
  warmup: list[int]                           # the seeds' distinct warmup lengths
  short: int = 0                              # seeds with 1 to last_n - 1 evaluations after 0
  # Fine-tuning seeds of `used` that made no update (`runs.Run.updated` False; diverged ones
  # are listed as such): their run stopped before their first update, so they score the
  # starting policy.
  never_updated: list[tuple[runs_lib.Run, int]] = dataclasses.field(default_factory=list)


def aggregate(arm: Arm, last_n: int, exclude_diverged: bool,
              resamples: int = statistics.DEFAULT_RESAMPLES) -> ArmResult:
  """The arm's per-step and final estimates over its seeds' finite scores."""
  diverged = [(run, seed, run.diverged_at[seed]) for run, seed in arm.members
              if run.diverged_at[seed] is not None]
  used = [(run, seed) for run, seed in arm.members
          if not (exclude_diverged and run.diverged_at[seed] is not None)]
  by_step: dict[int, list[float]] = {}
  lasts, last_means, final_steps = [], [], []
  short = 0
  for run, seed in used:
    scores, steps = run.scores[:, seed], run.steps
    finite = np.isfinite(scores)
    for step, score in zip(steps[finite], scores[finite]):
      by_step.setdefault(int(step), []).append(float(score))
    if finite.any():
      lasts.append(scores[finite][-1])
      final_steps.append(int(steps[finite][-1]))
    final = claims_lib.final_score(run, seed, last_n)    # after step 0, as the claims
    if final is not None:
      last_means.append(final)
      short += int(np.sum(finite & (steps > 0)) < last_n)
  steps = np.asarray(sorted(by_step), np.int64)
  curve = [statistics.estimate(np.asarray(by_step[s]), resamples) for s in steps]
  warmup = sorted({w for run, seed in arm.members
                   if (w := run.warmup_steps(seed)) is not None})
  never_updated = [(run, seed) for run, seed in used
                   if run.updated(seed) is False and run.diverged_at[seed] is None]
  return ArmResult(
      arm=arm, used=used, diverged=diverged, steps=steps, curve=curve,
      last=statistics.estimate(np.asarray(lasts), resamples) if lasts else None,
      last_n=statistics.estimate(np.asarray(last_means), resamples) if last_means else None,
      final_steps=(min(final_steps), max(final_steps)) if final_steps else None, warmup=warmup,
      short=short, never_updated=never_updated)


# --- files --------------------------------------------------------------------------------------

_CURVE_COLUMNS = ("arm", "env", "phase", "method", "point", "step_unit", "step", "seeds", "mean",
                  "mean_ci_low", "mean_ci_high", "iqm", "iqm_ci_low", "iqm_ci_high")


def _point_text(arm: Arm) -> str:
  return ";".join(f"{name}={value}" for name, value in arm.point)


def _arm_columns(arm: Arm) -> list:
  return [arm.label, arm.env_name, arm.phase, arm.method, _point_text(arm)]


def _estimate_columns(estimate: statistics.Estimate | None) -> list:
  if estimate is None:
    return [0] + [""] * 6
  return [estimate.seeds] + [f"{v:.6g}" for v in (
      estimate.mean, estimate.mean_low, estimate.mean_high, estimate.iqm, estimate.iqm_low,
      estimate.iqm_high)]


def _write_csv(path: pathlib.Path, header, rows) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  path.write_text(buffer.getvalue())


def write_curves_csv(results: list[ArmResult], path: pathlib.Path) -> None:
  rows = []
  for result in results:
    for step, estimate in zip(result.steps, result.curve):
      columns = _estimate_columns(estimate)
      rows.append(_arm_columns(result.arm) + [result.arm.step_unit, int(step), columns[0],
                  *columns[1:4], *columns[4:7]])
  _write_csv(path, _CURVE_COLUMNS, rows)


def write_final_scores_csv(results: list[ArmResult], last_n: int, path: pathlib.Path) -> None:
  header = ["arm", "env", "phase", "method", "point", "step_unit", "final_step_min",
            "final_step_max", "diverged_seeds", "never_updated_seeds"]
  for prefix in ("last", f"last{last_n}"):
    header += [f"{prefix}_{c}" for c in ("seeds", "mean", "mean_ci_low", "mean_ci_high", "iqm",
                                          "iqm_ci_low", "iqm_ci_high")]
  rows = []
  for result in results:
    low, high = result.final_steps or ("", "")
    rows.append(_arm_columns(result.arm) + [result.arm.step_unit, low, high,
                                            len(result.diverged), len(result.never_updated)]
                + _estimate_columns(result.last) + _estimate_columns(result.last_n))
  _write_csv(path, header, rows)


def _interval_text(point: float, low: float, high: float) -> str:
  return f"{point:.1f} [{low:.1f}, {high:.1f}]"


FEW_SEEDS_FOOTNOTE = (
    f"\\* fewer than {claims_lib.FEW_SEEDS} seeds: a percentile bootstrap interval cannot reach "
    "past the seeds' own range, so it holds the true value less often than 95% (with 2 seeds, "
    "the mean's interval is their range); read it as indicative.")


NEVER_UPDATED_FOOTNOTE = (
    "‡ seeds that never updated: their run stopped before their first update (report.md's notes "
    "say why), so their scores are the starting policy's, not fine-tuning's, and the claims do "
    "not use them: ")


def final_scores_markdown(results: list[ArmResult], last_n: int) -> str:
  """The final-score table (markdown) of `results`, one row per arm, with its footnotes (* few
  seeds, † seeds short of `last_n` evaluations, ‡ after the label: seeds that never updated).
  Where the arms span both phases, a phase column
  follows the arm's label (a pretraining's `cql` and a fine-tuning's `cql` arm share a label)
  and the footnotes name each arm's phase beside its env."""
  both = len({result.arm.phase for result in results}) > 1
  phase_header, phase_rule = ("phase | ", "--- | ") if both else ("", "")
  lines = [f"| arm | {phase_header}env | seeds | final step | last evaluation: IQM [95% CI] | "
           f"mean [95% CI] | mean of last {last_n} after step 0: IQM [95% CI] | mean [95% CI] | "
           "diverged seeds |",
           f"| --- | {phase_rule}--- | --- | --- | --- | --- | --- | --- | --- |"]
  few, short, frozen = False, [], []
  for result in results:
    arm = result.arm
    phase = f"{arm.phase} | " if both else ""
    where = f"{arm.env_name}, {arm.phase}" if both else arm.env_name
    label = arm.label
    if result.never_updated:
      label += " ‡"
      frozen.append(f"'{arm.label}' ({where}) {len(result.never_updated)} of {len(result.used)}")
    if result.last is None:
      lines.append(f"| {label} | {phase}{arm.env_name} | 0 | - | - | - | - | - | "
                   f"{len(result.diverged)} |")
      continue
    low, high = result.final_steps
    final = f"{low:,}" if low == high else f"{low:,}-{high:,}"
    cells = []
    for estimate in (result.last, result.last_n):
      cells += (["-", "-"] if estimate is None else   # no evaluation after step 0
                [_interval_text(estimate.iqm, estimate.iqm_low, estimate.iqm_high),
                 _interval_text(estimate.mean, estimate.mean_low, estimate.mean_high)])
    if result.short:
      cells[2:4] = [f"{cell} †" for cell in cells[2:4]]
      short.append(f"'{arm.label}' ({where}) {result.short} of {result.last_n.seeds}")
    seeds = f"{result.last.seeds}"
    if result.last.seeds < claims_lib.FEW_SEEDS:
      seeds, few = seeds + "*", True
    lines.append(f"| {label} | {phase}{arm.env_name} | {seeds} | {final} | "
                 f"{' | '.join(cells)} | {len(result.diverged)} |")
  if few:
    lines += ["", FEW_SEEDS_FOOTNOTE]
  if short:
    lines += ["", f"† seeds with fewer than {last_n} evaluations after step 0, whose mean is over "
                 f"the ones they have: {', '.join(short)}."]
  if frozen:
    lines += ["", NEVER_UPDATED_FOOTNOTE + ", ".join(frozen) + "."]
  return "\n".join(lines) + "\n"


def _panels(results: list[ArmResult]) -> list[tuple[str, str]]:
  return list(dict.fromkeys(r.arm.panel for r in results))


def _step_label(results: list[ArmResult], panel: tuple[str, str]) -> str:
  return STEP_LABELS[next(r.arm.step_unit for r in results if r.arm.panel == panel)]


def _colours(results: list[ArmResult]) -> dict[str, Any]:
  import matplotlib
  palette = matplotlib.colormaps["tab10"]
  labels = list(dict.fromkeys(r.arm.label for r in results))
  return {label: palette(i % 10) for i, label in enumerate(labels)}


def _figure(rows: int, columns: int):
  """A matplotlib figure without pyplot (no global state, the Agg canvas)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  figure = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
  FigureCanvasAgg(figure)
  return figure, figure.subplots(rows, columns, squeeze=False)


def _mark_warmup(axis, result: ArmResult, colour) -> None:
  for warmup in result.warmup:
    if warmup > 0:
      axis.axvline(warmup, color=colour, linestyle=":", linewidth=1.2)


def plot_learning_curves(results: list[ArmResult], path: pathlib.Path) -> None:
  panels = _panels(results)
  colours = _colours(results)
  figure, axes = _figure(1, len(panels))
  for axis, panel in zip(axes[0], panels):
    for result in (r for r in results if r.arm.panel == panel and len(r.steps)):
      colour = colours[result.arm.label]
      iqm = [e.iqm for e in result.curve]
      axis.plot(result.steps, iqm, color=colour, marker="o", markersize=3,
                label=f"{result.arm.label} (n={len(result.used)})")
      axis.fill_between(result.steps, [e.iqm_low for e in result.curve],
                        [e.iqm_high for e in result.curve], color=colour, alpha=0.2)
      _mark_warmup(axis, result, colour)
    env_name, phase = panel
    axis.set_title(f"{env_name} ({phase})")
    axis.set_xlabel(_step_label(results, panel))
    axis.set_ylabel("normalised score (IQM, 95% CI)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
  figure.savefig(path, dpi=DPI)


def plot_diagnostics(results: list[ArmResult], path: pathlib.Path) -> None:
  """One row per panel (env, phase), one column per statistic of `DIAGNOSTICS`."""
  panels = _panels(results)
  colours = _colours(results)
  figure, axes = _figure(len(panels), len(DIAGNOSTICS))
  for row, panel in enumerate(panels):
    for column, (name, title) in enumerate(DIAGNOSTICS):
      axis = axes[row][column]
      drawn = False
      for result in (r for r in results if r.arm.panel == panel):
        values: dict[int, list[float]] = {}
        for run, seed in result.used:
          for step, value in zip(run.steps, run.train_statistic(name)[:, seed]):
            if np.isfinite(value):
              values.setdefault(int(step), []).append(value)
        if not values:
          continue
        steps = sorted(values)
        colour = colours[result.arm.label]
        axis.plot(steps, [np.mean(values[s]) for s in steps], color=colour, marker="o",
                  markersize=3, label=result.arm.label)
        _mark_warmup(axis, result, colour)
        drawn = True
      if drawn:
        axis.legend(fontsize=7)
      else:
        axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
      env_name, phase = panel
      axis.set_title(f"{env_name} ({phase}): {title}", fontsize=9)
      axis.set_xlabel(_step_label(results, panel))
      axis.grid(alpha=0.3)
  figure.savefig(path, dpi=DPI)


# --- the report ---------------------------------------------------------------------------------

def _run_notes(runs: Sequence[runs_lib.Run]) -> list[str]:
  notes = []
  for run in runs:
    unit = STEP_LABELS[run.step_unit]
    if run.finished is False:
      notes.append(f"{run.name} is unfinished: its last evaluation is at {int(run.steps[-1]):,} "
                   f"of {int(run.total_steps):,} {unit}; the report uses the "
                   f"{len(run.records)} evaluation{'' if len(run.records) == 1 else 's'} it "
                   "has.")
    if run.config is None:
      notes.append(f"{run.name} records no config (no config.json, no checkpoint yet): whether "
                   "it finished is unknown, and its seeds are grouped by its metrics alone"
                   f"{'' if run.env_name else ' (env unknown)'}.")
    missing = int(np.sum(~np.isfinite(run.scores)))
    if missing:
      notes.append(f"{run.name}: {missing} seed evaluations were not finite and are left out.")
  return notes


def _never_updated_notes(results: list[ArmResult]) -> list[str]:
  """Per arm with seeds that never updated: which (run and seed), why, and what it means."""
  notes = []
  for result in results:
    if not result.never_updated:
      continue
    by_run: dict[runs_lib.Run, list[int]] = {}
    for run, seed in result.never_updated:
      by_run.setdefault(run, []).append(seed)
    which = ", ".join(f"{run.name} seed{'' if len(seeds) == 1 else 's'} "
                      f"{', '.join(map(str, seeds))}" for run, seeds in by_run.items())
    reasons = "; ".join(dict.fromkeys(claims_lib.no_update_reason(run, seed)
                                      for run, seed in result.never_updated))
    count, used = len(result.never_updated), len(result.used)
    unused = "it" if count == used else "these seeds"   # claims.untrained, claims.trained
    notes.append(f"Arm '{result.arm.label}' ({result.arm.env_name}): {count} of {used} "
                 f"seed{'' if used == 1 else 's'} never updated ({which}): {reasons}. Their "
                 "scores are the starting policy's, not fine-tuning's: final_scores.md marks "
                 f"the arm ‡ and the claims do not use {unused}.")
  return notes


def make_report(run_dirs: Sequence[str | pathlib.Path], out: str | pathlib.Path, *,
                last_n: int = 3, exclude_diverged: bool = False, pool: bool = False,
                resamples: int = statistics.DEFAULT_RESAMPLES,
                command: str | None = None, claims_window: int = claims_lib.WINDOW,
                collapse_tolerance: float = claims_lib.COLLAPSE_TOLERANCE,
                match_tolerance: float = claims_lib.MATCH_TOLERANCE) -> list[ArmResult]:
  """Reads `run_dirs` (a folder holding run directories, such as a sweep's, stands for all of
  them: `runs.find`), writes the report into `out` (created) and returns the arms' results.

  Raises runs.RunError for a directory that is not a run (naming it), ReportError for configs
  that would be pooled without `pool`, `last_n` < 1, or an `out` that is empty or a file.
  Nothing is written before every run has been read and grouped. `claims_window` (env steps),
  `collapse_tolerance` and `match_tolerance` (normalised score) are `claims.check`'s.
  """
  if last_n < 1:
    raise ReportError(f"--last_n must be at least 1, got {last_n}")
  if claims_window < 1:
    raise ReportError(f"--claims_window must be at least 1 env step, got {claims_window}")
  for name, value in (("collapse_tolerance", collapse_tolerance),
                      ("match_tolerance", match_tolerance)):
    if not value >= 0:
      raise ReportError(f"--{name} must be a non-negative number of normalised points, "
                        f"got {value}")
  if not run_dirs:
    raise ReportError("no run directories given")
  if not str(out).strip():   # would be the current folder
    raise ReportError("--out=: names no folder; give the folder to write the report into "
                      "(e.g. --out=runs/report)")
  if pathlib.Path(out).exists() and not pathlib.Path(out).is_dir():
    raise ReportError(f"--out={out} is a file; give a folder to write the report into")
  runs = [runs_lib.read(d) for given in run_dirs for d in runs_lib.find(given)]
  arms, pool_notes = group(runs, pool)
  results = [aggregate(arm, last_n, exclude_diverged, resamples) for arm in arms]

  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  write_curves_csv(results, out / "curves.csv")
  write_final_scores_csv(results, last_n, out / "final_scores.csv")
  table = final_scores_markdown(results, last_n)
  (out / "final_scores.md").write_text(table)
  findings = claims_lib.check(results, last_n=last_n, window=claims_window,
                              collapse_tolerance=collapse_tolerance,
                              match_tolerance=match_tolerance, resamples=resamples)
  claims_text = (
      f"Each comparison the arms allow (`wsrl_mjx/claims.py` defines the statistics): final "
      f"scores are each seed's mean of its last {last_n} evaluations after step 0; the early "
      f"drop is a seed's lowest evaluation in the {claims_window:,} env steps after its warmup "
      f"minus its step-0 score; a collapse is a mean drop beyond {collapse_tolerance:g}, and "
      f"\"matches\" means at most {match_tolerance:g} worse. Intervals: 95% percentile "
      "bootstrap over seeds, each arm resampled on its own; a verdict from fewer than "
      f"{claims_lib.FEW_SEEDS} seeds a side says it is indicative (with so few, the interval is "
      "narrower than 95%).")
  # What this report does not write, an earlier one into the same folder may have: removed, so
  # the folder holds this report only.
  stale = ([] if findings else ["claims.md", "claims.csv"]) + (
      [] if any(len(r.steps) for r in results) else ["learning_curves.png", "diagnostics.png"])
  for name in stale:
    (out / name).unlink(missing_ok=True)
  if findings:
    (out / "claims.md").write_text(
        "# The WSRL paper's claims\n\n" + (f"Made with `{command}`.\n\n" if command else "")
        + claims_text + "\n\n" + claims_lib.markdown(findings))
    _write_csv(out / "claims.csv", claims_lib.CSV_COLUMNS, claims_lib.csv_rows(findings))
  plotted = [r for r in results if len(r.steps)]
  if plotted:
    plot_learning_curves(plotted, out / "learning_curves.png")
    plot_diagnostics(plotted, out / "diagnostics.png")

  lines = ["# Report", ""]
  if command:
    lines += ["Made with:", "", "```bash", command, "```", ""]
  lines += ["## Runs", "", "| run | phase | env | method | seeds | evaluations | last step | "
            "status | wall time | device | config from |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for run in runs:
    status = {True: "finished", False: "unfinished", None: "unknown"}[run.finished]
    total = f" of {int(run.total_steps):,}" if run.total_steps else ""
    wall_time = run.wall_time
    seconds, devices = ((metrics_log.format_duration(round(wall_time[0])),
                         ", ".join(wall_time[1])) if wall_time else ("-", "-"))
    lines.append(f"| {run.name} | {run.phase} | {run.env_name or '?'} | {run.method} | "
                 f"{run.num_seeds} | {len(run.records)} | {int(run.steps[-1]):,}{total} | "
                 f"{status} | {seconds} | {devices} | {run.config_source or '-'} |")
  lines += ["", "Wall time: every session of the run summed (`wall_time.jsonl`; a resumed run's "
            "redone steps count twice), from its start to its last evaluation.", "",
            f"{len(arms)} arm{'' if len(arms) == 1 else 's'}: seeds grouped by phase, env, "
            "method and per-seed grid point.", ""]
  notes = _run_notes(runs) + pool_notes + _never_updated_notes(results)
  diverged = [(r, d) for r in results for d in r.diverged]
  if diverged:
    what = ("excluded from the aggregates (--exclude_diverged)" if exclude_diverged else
            "kept in the aggregates with their last finite parameters (--exclude_diverged "
            "drops them)")
    notes.append(f"{len(diverged)} seeds diverged (a non-finite update stopped their learning), "
                 f"{what}:")
    notes += [f"  - {run.name} seed {seed} (arm '{result.arm.label}', {result.arm.env_name}) "
              f"at {STEP_LABELS[run.step_unit]} {step:,}" for result, (run, seed, step) in diverged]
  if notes:
    lines += ["## Notes", ""] + [n if n.startswith("  -") else f"- {n}" for n in notes] + [""]
  if plotted:
    lines += ["## Learning curves", "",
              "IQM of the seeds' normalised scores per evaluation, shaded: its 95% bootstrap "
              "confidence interval; dotted: the end of each arm's warmup.", "",
              "![learning curves](learning_curves.png)", "", "## Training diagnostics", "",
              "Mean over seeds of each statistic in the chunk before each evaluation (seeds "
              "without an update in that chunk left out); dotted: the end of each arm's warmup.",
              "", "![diagnostics](diagnostics.png)", ""]
  lines += ["## Final scores", "",
            f"Per seed: its last evaluation, and the mean of its last {last_n} after step 0 (which "
            "evaluates the starting policy); per arm: the mean "
            "and the interquartile mean (IQM) over seeds with 95% stratified bootstrap "
            f"confidence intervals (percentile, {resamples:,} resamples; Agarwal et al. 2021).",
            "", table, "Files: [final_scores.md](final_scores.md), "
            "[final_scores.csv](final_scores.csv), [curves.csv](curves.csv) (every arm at every "
            "evaluation step).", ""]
  if findings:
    lines += ["## The WSRL paper's claims", "", claims_text, "", claims_lib.markdown(findings),
              "Files: [claims.md](claims.md), [claims.csv](claims.csv).", ""]
  (out / "report.md").write_text("\n".join(lines))
  return results

"""The WSRL paper's claims (Zhou et al. 2024, arXiv 2412.07762), checked on a study's arms.

`check(results)` finds, per env, the fine-tuning arms each claim compares and returns one
`Finding` per comparison, with a verdict from a 95% bootstrap interval:

(a) with warmup, fine-tuning does not collapse at its start: per seed of a WSRL arm, the lowest
    evaluation in the first `window` env steps after its warmup minus its evaluation at step 0
    (the pretrained policy), averaged over seeds (the mean, not the IQM: a collapse of a few seeds
    is what the claim is about). Reproduced where the interval's lower end is above
    -`collapse_tolerance`; not reproduced where its upper end is below it.
(b) WSRL beats fine-tuning its offline algorithm (Cal-QL, CQL, IQL) without the offline data:
    the IQM of the seeds' final scores (each seed's mean of its last `last_n` evaluations), WSRL
    minus the other; reproduced where the interval is above 0, not reproduced where below.
(c) the warmup matters: WSRL against the same agent without warmup (`warmup_steps` 0), on the
    early drop of (a) (warmup minus none: above 0 means a smaller drop with warmup) and on the
    final score, each judged as (b).
(d) WSRL matches or beats methods that keep the offline data (RLPD; Cal-QL/CQL/IQL with
    `offline_data=keep`): the final-score IQM difference; reproduced where the interval's lower
    end is above -`match_tolerance` (at most that much worse, or better), not reproduced where
    its upper end is below -`match_tolerance`.
(e) the policy and the Q initialisation matter: WSRL against the same warmup with
    `init_actor=false` and/or `init_critic=false`, final score, judged as (b).

Otherwise the verdict is "not distinguishable". A comparison with fewer than 2 seeds on a side,
without the evaluations it needs (step 0, one inside the window), or with an arm none of whose
seeds made an update (`report.ArmResult.never_updated`: its run stopped before its first update,
so its scores are its starting policy's), is "not measured", with the reason; seeds that never
updated in an arm whose other seeds did are left out of its statistics. A verdict either way
from fewer than `FEW_SEEDS` seeds on a side keeps its verdict but says it is indicative only,
in its reason and in the claim's overall line: a percentile bootstrap cannot reach past the
seeds' own range, so with a handful of seeds its interval is narrower than a 95% one (with 2, a
mean's is their range, which holds the true mean half the time for a symmetric distribution).

Arms (`report.Arm`, fine-tuning phase): the method is the run's `--config.method`
(`runs.Run.method`); warmup and the init switches are the arm's grid point's or its config's.
"The WSRL arm" of an env is method `wsrl` with both inits on, no offline data and a warmup; where
several warmups exist, the paper's K = 5,000 if present, else the longest (claim (a) is checked
for each); where several arms ran K = 5,000 (a sweep's plain cell and its ablations' matching
points), the one with the most seeds. Arms none of whose seeds updated are passed over where
another warmup's arm did update (a 2,000-step run's warmup_steps=5000 arm never trains: its
warmup_steps=1000 arm is the reference).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from wsrl_mjx import statistics

CLAIMS = {
    "a": "with warmup, fine-tuning does not collapse at its start",
    "b": "WSRL beats fine-tuning the offline algorithm without its data",
    "c": "the warmup matters (without it: a larger early drop or a lower final score)",
    "d": "WSRL matches or beats methods that keep the offline data",
    "e": "the policy and the Q initialisation matter",
}
REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
NOT_DISTINGUISHABLE, NOT_MEASURED = "not distinguishable", "not measured"
OFFLINE_LEARNERS = ("calql", "cql", "iql")
PAPER_WARMUP = 5000          # WSRL's K (paper; the reference's --warmup_steps)
# The lines the claims draw (launch.report's flags default to them): fixed before any run.
WINDOW = 20_000              # env steps after the warmup in which the early drop is looked for
COLLAPSE_TOLERANCE = 10.0    # normalised points: a larger mean drop is a collapse
MATCH_TOLERANCE = 5.0        # normalised points: at most this much worse still "matches"
FEW_SEEDS = 5                # our line: a decisive verdict from fewer seeds is indicative only


@dataclasses.dataclass(frozen=True)
class Finding:
  """One comparison of one claim on one env."""
  claim: str                   # "a" .. "e"
  env_name: str
  compared: str                # e.g. "wsrl vs calql" (arm labels)
  statistic: str               # what the difference is of
  value: float                 # the point estimate (NaN when not measured)
  low: float                   # its 95% interval
  high: float
  seeds: tuple[int, ...]       # seeds on each side
  verdict: str
  reason: str                  # why this verdict, in words


@dataclasses.dataclass(frozen=True)
class Settings:
  """The fine-tuning settings that decide an arm's role in a claim."""
  method: str
  warmup: int | None
  init_actor: bool
  init_critic: bool
  offline_data: str


def arm_settings(result) -> Settings:
  """`result`: a `report.ArmResult`. Grid-point values win over the run's config."""
  arm = result.arm
  run = arm.members[0][0]
  config = run.config or {}
  point = dict(arm.point)

  def flag(name):
    value = point.get(name, config.get(name, True))
    return value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")

  warmups = result.warmup
  return Settings(method=arm.method.removesuffix("+data"),
                  warmup=warmups[0] if len(warmups) == 1 else None,
                  init_actor=flag("init_actor"), init_critic=flag("init_critic"),
                  offline_data=str(config.get("offline_data", "none")))


# --- per-seed statistics ------------------------------------------------------------------------

def final_score(run, seed: int, last_n: int) -> float | None:
  """The seed's mean of its last `last_n` finite evaluations after step 0 (step 0 evaluates the
  starting policy: the pretrained one, or a random initialisation), None where it has none (a
  run stopped after its first evaluation)."""
  scores = run.scores[:, seed]
  scores = scores[np.isfinite(scores) & (run.steps > 0)]
  return float(scores[-last_n:].mean()) if scores.size else None


def final_scores(result, last_n: int) -> np.ndarray:
  """[seeds] each used seed's `final_score`; a seed without one is left out."""
  values = [final_score(run, seed, last_n) for run, seed in result.used]
  return np.asarray([v for v in values if v is not None], np.float64)


def early_drops(result, window: int) -> tuple[np.ndarray, str]:
  """[seeds] per used seed: the lowest evaluation in (w, w + window] minus the one at step 0,
  w its warmup. Left out: seeds without a finite step-0 evaluation, without one in the window,
  or whose evaluations stop before w + window (the window not yet run: every seed's drop is
  over the same length). Returns (drops, why none where empty)."""
  values, missing_start, short, missing_window = [], 0, 0, 0
  for run, seed in result.used:
    steps, scores = run.steps, run.scores[:, seed]
    finite = np.isfinite(scores)
    start = scores[steps == 0]
    warmup = run.warmup_steps(seed) or 0
    inside = scores[(steps > warmup) & (steps <= warmup + window) & finite]
    if not start.size or not np.isfinite(start[0]):
      missing_start += 1
    elif not finite.any() or steps[finite].max() < warmup + window:
      short += 1
    elif not inside.size:
      missing_window += 1
    else:
      values.append(inside.min() - start[0])
  why = ""
  if not values:
    why = ("no evaluation at step 0 (the pretrained policy)" if missing_start else
           f"the runs stop before {window:,} env steps after the warmup" if short else
           f"no evaluation within {window:,} env steps after the warmup")
  return np.asarray(values, np.float64), why


def no_update_reason(run, seed: int) -> str:
  """Why a fine-tuning seed made no update in its run (`runs.Run.updated` False), in words: its
  run stopped before the first update, which comes once the buffer holds
  max(warmup_steps, the batch's online rows; for Cal-QL also one episode) + 2 transitions."""
  warmup, total, last = run.warmup_steps(seed), run.total_steps, int(run.steps[-1])
  if run.finished is False:
    return (f"the run is unfinished and its last evaluation, at env step {last:,} of "
            f"{int(total):,}, comes before its first update (warmup_steps={warmup})")
  if warmup is None or total is None:
    return (f"the run's last evaluation, at env step {last:,}, comes before its first update "
            "(no config recorded to say why)")
  if warmup >= int(total):
    return (f"the run ended before its first update (warmup_steps={warmup}, not shorter than "
            f"online_steps={total})")
  return (f"the run ended before its first update (online_steps={total} ran out while, after "
          f"warmup_steps={warmup}, updates waited for the buffer to hold a batch's online rows, "
          "or for Cal-QL one episode)")


def untrained(result) -> str:
  """Why none of the arm's seeds trained, "" where some did: `result`, a `report.ArmResult`,
  whose every used seed is one of its `never_updated`. Its runs' reasons, each once."""
  if not result.used or len(result.never_updated) < len(result.used):
    return ""
  reasons = dict.fromkeys(no_update_reason(run, seed) for run, seed in result.never_updated)
  return f"'{result.arm.label}' never updated: {'; '.join(reasons)}"


def trained(result):
  """`result` with its seeds that never updated left out of `used`: the claims are about
  fine-tuning, and such a seed's scores are its starting policy's."""
  if not result.never_updated:
    return result
  return dataclasses.replace(result, used=[member for member in result.used
                                           if member not in result.never_updated])


# --- intervals ----------------------------------------------------------------------------------

def _mean(x, axis=-1):
  return np.mean(x, axis=axis)


def _iqm_difference(x, y, axis=-1):
  return statistics.iqm(x, axis=axis) - statistics.iqm(y, axis=axis)


def _mean_difference(x, y, axis=-1):
  return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _judge(low: float, high: float, lower_bound: float) -> tuple[str, str]:
  """Verdict of a difference whose claim says it is above `lower_bound`."""
  if low > lower_bound:
    return REPRODUCED, f"the interval lies above {lower_bound:g}"
  if high < lower_bound:
    return NOT_REPRODUCED, f"the interval lies below {lower_bound:g}"
  return NOT_DISTINGUISHABLE, f"the interval contains {lower_bound:g}"


def _finding(claim, env_name, compared, statistic_text, samples, statistic, lower_bound,
             resamples, why_missing="") -> Finding:
  seeds = tuple(int(s.size) for s in samples)
  if why_missing or min(seeds) < 2:
    reason = why_missing or "fewer than 2 seeds on a side (no interval)"
    return Finding(claim, env_name, compared, statistic_text, float("nan"), float("nan"),
                   float("nan"), seeds, NOT_MEASURED, reason)
  value, low, high = statistics.interval(samples, statistic, resamples)
  verdict, reason = _judge(low, high, lower_bound)
  finding = Finding(claim, env_name, compared, statistic_text, value, low, high, seeds, verdict,
                    reason)
  if _indicative(finding):             # also csv's `indicative` column and the overall line
    finding = dataclasses.replace(finding, reason=(
        f"{reason}; indicative only: {min(seeds)} seeds on a side, and below {FEW_SEEDS} a "
        "bootstrap interval is narrower than 95%"))
  return finding


# --- the claims ---------------------------------------------------------------------------------

def check(results: Sequence[Any], *, last_n: int = 3, window: int = WINDOW,
          collapse_tolerance: float = COLLAPSE_TOLERANCE,
          match_tolerance: float = MATCH_TOLERANCE,
          resamples: int = statistics.DEFAULT_RESAMPLES) -> list[Finding]:
  """Every comparison the arms of `results` (`report.ArmResult`s) allow, env by env, in claim
  order. Scores are normalised (0-100), tolerances in the same units; `window` in env steps."""
  findings = []
  envs = dict.fromkeys(r.arm.env_name for r in results if r.arm.phase == "finetune")
  for env_name in envs:
    arms = [(r, arm_settings(r)) for r in results
            if r.arm.phase == "finetune" and r.arm.env_name == env_name and r.used]
    wsrl = [(r, s) for r, s in arms if s.method == "wsrl" and s.init_actor and s.init_critic
            and s.offline_data == "none"]
    warmed = [(r, s) for r, s in wsrl if s.warmup]
    if not warmed:
      continue
    # An arm none of whose seeds updated (the run ended within its warmup) is its starting
    # policy: the reference is chosen among the others where there are any.
    candidates = [(r, s) for r, s in warmed if not untrained(r)] or warmed
    paper = [(r, s) for r, s in candidates if s.warmup == PAPER_WARMUP]
    reference, reference_settings = (
        max(paper, key=lambda rs: len(rs[0].used)) if paper     # first of the largest
        else max(candidates, key=lambda rs: rs[1].warmup))
    label = reference.arm.label
    reference_why = untrained(reference)
    final = final_scores(trained(reference), last_n)
    drops, why = early_drops(trained(reference), window)
    final_text = f"final score IQM difference (mean of each seed's last {last_n})"

    def final_finding(claim, result, lower_bound):
      """The reference's final score against `result`'s (not measured where either arm never
      updated)."""
      return _finding(claim, env_name, f"{label} vs {result.arm.label}", final_text,
                      [final, final_scores(trained(result), last_n)], _iqm_difference,
                      lower_bound, resamples, reference_why or untrained(result))

    for result, _ in warmed:                                              # (a)
      arm_drops, arm_why = ((drops, why) if result is reference
                            else early_drops(trained(result), window))
      findings.append(_finding(
          "a", env_name, result.arm.label,
          f"mean drop: lowest evaluation in the {window:,} env steps after the warmup minus "
          "step 0", [arm_drops], _mean, -collapse_tolerance, resamples,
          untrained(result) or arm_why))

    for result, settings in arms:                                         # (b)
      if settings.method in OFFLINE_LEARNERS and settings.offline_data == "none":
        findings.append(final_finding("b", result, 0.0))

    for result, _ in (rs for rs in wsrl if rs[1].warmup == 0):            # (c)
      other_drops, other_why = early_drops(trained(result), window)
      findings.append(_finding(
          "c", env_name, f"{label} vs {result.arm.label}",
          "mean early drop difference (warmup minus none; above 0: a smaller drop with warmup)",
          [drops, other_drops], _mean_difference, 0.0, resamples,
          reference_why or untrained(result) or why or other_why))
      findings.append(final_finding("c", result, 0.0))

    for result, settings in arms:                                         # (d)
      if settings.method == "rlpd" or (settings.method in OFFLINE_LEARNERS
                                       and settings.offline_data == "keep"):
        findings.append(final_finding("d", result, -match_tolerance))

    for result, settings in arms:                                         # (e)
      if (settings.method == "wsrl" and settings.offline_data == "none"
          and settings.warmup == reference_settings.warmup
          and not (settings.init_actor and settings.init_critic)):
        findings.append(final_finding("e", result, 0.0))
  order = {claim: i for i, claim in enumerate(CLAIMS)}
  return sorted(findings, key=lambda f: order[f.claim])


def overall(findings: Sequence[Finding], claim: str) -> str:
  """One verdict for a claim over its comparisons: reproduced (some reproduced, none not),
  not reproduced (some not, none reproduced), mixed (both), not distinguishable, or not
  measured (no comparison could be made)."""
  verdicts = {f.verdict for f in findings if f.claim == claim} - {NOT_MEASURED}
  if not verdicts:
    return NOT_MEASURED
  if REPRODUCED in verdicts and NOT_REPRODUCED in verdicts:
    return "mixed"
  for verdict in (REPRODUCED, NOT_REPRODUCED):
    if verdict in verdicts:
      return verdict
  return NOT_DISTINGUISHABLE


def _overall_line(findings: Sequence[Finding], claim: str) -> str:
  """`overall`, saying "indicative" where every verdict behind it had too few seeds."""
  verdict = overall(findings, claim)
  decisive = [f for f in findings if f.claim == claim and f.verdict in (REPRODUCED,
                                                                          NOT_REPRODUCED)]
  if decisive and all(_indicative(f) for f in decisive):
    verdict += f" (indicative: fewer than {FEW_SEEDS} seeds a side)"
  return verdict


def markdown(findings: Sequence[Finding]) -> str:
  """The claims table (`claims.md`): the overall verdict per claim, then every comparison."""
  lines = ["| claim | overall |", "| --- | --- |"]
  lines += [f"| ({c}) {text} | {_overall_line(findings, c)} |" for c, text in CLAIMS.items()]
  lines += ["", "| claim | env | compared | statistic | value [95% CI] | seeds | verdict | why |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for f in findings:
    value = ("-" if f.verdict == NOT_MEASURED else
             f"{f.value:+.1f} [{f.low:+.1f}, {f.high:+.1f}]")
    lines.append(f"| ({f.claim}) | {f.env_name} | {f.compared} | {f.statistic} | {value} | "
                 f"{' / '.join(map(str, f.seeds))} | {f.verdict} | {f.reason} |")
  return "\n".join(lines) + "\n"


CSV_COLUMNS = ("claim", "env", "compared", "statistic", "value", "ci_low", "ci_high", "seeds",
               "verdict", "indicative", "reason")


def csv_rows(findings: Sequence[Finding]) -> list[list]:
  return [[f.claim, f.env_name, f.compared, f.statistic, f"{f.value:.6g}", f"{f.low:.6g}",
           f"{f.high:.6g}", "/".join(map(str, f.seeds)), f.verdict, _indicative(f), f.reason]
          for f in findings]


def _indicative(finding: Finding) -> bool:
  """Whether a verdict either way rests on fewer than FEW_SEEDS seeds on a side."""
  return finding.verdict in (REPRODUCED, NOT_REPRODUCED) and min(finding.seeds) < FEW_SEEDS

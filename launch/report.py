r"""A study's report from its run directories: learning curves, diagnostics, final scores.

  python -m launch.report runs/ablation runs/ablation-more-seeds --out=runs/report

Groups the seeds into arms (phase, env, method, `--config.per_seed` grid point), aggregates them
with IQM and 95-percent stratified bootstrap intervals and writes `report.md` with its figures and
tables into `--out` (wsrl_mjx/report.py says what each file holds), with the WSRL paper's claims
checked where the study has the arms they compare (wsrl_mjx/claims.py). An empty `--out`, or
one where nothing can be written (read-only, under /proc), is refused before any run is read.
"""

import pathlib
import shlex
import sys

from absl import app, flags

from launch import runtime
from wsrl_mjx import claims, report, statistics

_OUT = flags.DEFINE_string("out", None, "Folder to write the report into (created).")
_LAST_N = flags.DEFINE_integer("last_n", 3, "The final-score table also averages each seed's "
                               "last N evaluations.")
_EXCLUDE_DIVERGED = flags.DEFINE_bool("exclude_diverged", False, "Leave seeds that diverged out "
                                      "of the aggregates (they are listed either way).")
_POOL = flags.DEFINE_bool("pool", False, "Pool seeds of runs whose configs differ into one arm "
                          "(refused otherwise).")
_RESAMPLES = flags.DEFINE_integer("resamples", statistics.DEFAULT_RESAMPLES,
                                  "Bootstrap resamples per confidence interval.")
_CLAIMS_WINDOW = flags.DEFINE_integer(
    "claims_window", claims.WINDOW, "The WSRL claims' early drop: a seed's lowest evaluation "
    "within this many env steps after its warmup, minus its step-0 score (wsrl_mjx/claims.py).")
_COLLAPSE_TOLERANCE = flags.DEFINE_float(
    "collapse_tolerance", claims.COLLAPSE_TOLERANCE, "Claim (a): a mean early drop beyond this "
    "many normalised points is a collapse.")
_MATCH_TOLERANCE = flags.DEFINE_float(
    "match_tolerance", claims.MATCH_TOLERANCE, "Claim (d): WSRL 'matches' a method that keeps "
    "the offline data when at most this many normalised points worse.")
flags.mark_flags_as_required(["out"])


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("Give one or more run directories: python -m launch.report RUN_DIR "
                         "[RUN_DIR ...] --out=DIR")
  out = _OUT.value
  runtime.check_out_folder(out, "the report", "runs/report")   # before any run is read
  command = "python -m launch.report " + shlex.join(sys.argv[1:])
  report.make_report(argv[1:], _OUT.value, last_n=_LAST_N.value,
                     exclude_diverged=_EXCLUDE_DIVERGED.value, pool=_POOL.value,
                     resamples=_RESAMPLES.value, command=command,
                     claims_window=_CLAIMS_WINDOW.value,
                     collapse_tolerance=_COLLAPSE_TOLERANCE.value,
                     match_tolerance=_MATCH_TOLERANCE.value)
  print(f"Report written to {pathlib.Path(out) / 'report.md'}")


if __name__ == "__main__":
  runtime.run(main)

r"""One seed's deterministic policy for a robot: ONNX, numpy weights and runner, and its JSON.

  python -m launch.export --run=runs/ablation --best --out=runs/policy
  python -m launch.export --run=runs/ablation --seed=3 --out=runs/policy-seed3

  python -m launch.export --run=runs/ablation --step=50000 --best --out=runs/policy-50k

Reads the run's latest checkpoint (or the one at `--step`) and `metrics.jsonl`; `--best` takes
the seed whose evaluation of that checkpoint is best among those that had not diverged. Writes
`policy.onnx`, `policy.npz`, `policy.py` (numpy only) and `policy.json` into `--out`
(wsrl_mjx/export.py says what each holds); a failed export leaves `--out` as it was, and one
that replaces another seed's or checkpoint's policy there says which.
"""


from absl import app, flags

from launch import runtime
from wsrl_mjx import export

_RUN = flags.DEFINE_string("run", None, "The run directory to export from.")
_SEED = flags.DEFINE_integer("seed", None, "The seed to export (0-based).")
_BEST = flags.DEFINE_bool("best", False, "Export the seed whose evaluation of the checkpoint is "
                         "best (among seeds that had not diverged).")
_STEP = flags.DEFINE_integer("step", None, "The checkpoint to export, by its step (env steps; "
                             "gradient steps for a pretraining run); default: the latest.")
_OUT = flags.DEFINE_string("out", None, "Folder to write the policy into (created).")
flags.mark_flags_as_required(["run", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.check_out_folder(_OUT.value, "the policy", "runs/policy")   # before the run is read
  runtime.configure()
  previous = export.exported_source(_OUT.value)
  info = export.export(_RUN.value, _OUT.value, seed=_SEED.value, best=_BEST.value,
                       step=_STEP.value)
  source, evaluation = info["source"], info["last_evaluation"]
  unit = source["step_unit"].replace("_", " ")
  if evaluation is None:
    scored = "no evaluation at or before it"
  else:
    score = evaluation["normalized_score"]
    when = ("" if evaluation["of_this_checkpoint"]
            else f" last at {unit} {evaluation[source['step_unit']]}")
    scored = f"evaluated{when}: normalised score {'n/a' if score is None else f'{score:.1f}'}"
  replaced = ("" if previous is None or previous == source
              else f", replacing the policy exported there before ({export.source_text(previous)})")
  print(f"Exported {export.source_text(source)} ({scored}), to {_OUT.value}{replaced}")


if __name__ == "__main__":
  runtime.run(main)

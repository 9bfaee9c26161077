r"""One seed's deterministic policy for a robot: ONNX, numpy weights and runner, and its JSON.

  python -m launch.export --run=runs/ablation --best --out=runs/policy
  python -m launch.export --run=runs/ablation --seed=3 --out=runs/policy-seed3

Reads the run's latest checkpoint and `metrics.jsonl`; `--best` takes the seed with the best last
evaluation that did not diverge. Writes `policy.onnx`, `policy.npz`, `policy.py` (numpy only) and
`policy.json` into `--out` (wsrl_mjx/export.py says what each holds).
"""

from absl import app, flags

from launch import runtime
from wsrl_mjx import export

_RUN = flags.DEFINE_string("run", None, "The run directory to export from.")
_SEED = flags.DEFINE_integer("seed", None, "The seed to export (0-based).")
_BEST = flags.DEFINE_bool("best", False, "Export the seed with the best last evaluation.")
_OUT = flags.DEFINE_string("out", None, "Folder to write the policy into (created).")
flags.mark_flags_as_required(["run", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.configure()
  info = export.export(_RUN.value, _OUT.value, seed=_SEED.value, best=_BEST.value)
  score = info["last_evaluation"]["normalized_score"]
  print(f"Exported seed {info['source']['seed']} of {info['source']['run']} (last evaluation: "
        f"normalised score {'n/a' if score is None else f'{score:.1f}'}) to {_OUT.value}")


if __name__ == "__main__":
  runtime.run(main)

r"""WSRL online fine-tuning of many seeds in one program.

  python -m launch.finetune --config=launch/configs/finetune.py:hopper-medium-v2 \
      --workdir=/tmp/wsrl/hopper --config.num_seeds=64 --config.pretrained=/path/to/offline/run

  python -m launch.finetune --config=launch/configs/finetune.py:point-mass,demo --workdir=runs/pm

`--config=launch/configs/finetune.py:<env>[,demo][,<method>]`: `<env>` a D4RL dataset name or a
task, `,demo` a run of minutes on a CPU, `<method>` an arm other than WSRL (README "Methods").
Every field of that file can be set as `--config.<field>=<value>`; its comments say what each
means, and the run logs them all with their values at its start. Writes `metrics.jsonl`,
TensorBoard scalars and orbax checkpoints to `--workdir`; running the same command again resumes
from the latest checkpoint there. A bad value ends the run with one line naming it (`--verbose`:
with the stack trace).
"""

from absl import flags
from ml_collections import config_flags

from launch import runtime
from launch.configs import finetune as finetune_config
from wsrl_mjx import finetune

_CONFIG = config_flags.DEFINE_config_file("config", None, "Fine-tuning configuration.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])

main = runtime.phase_main(finetune.train_and_evaluate, _CONFIG, _WORKDIR,
                          config_of=finetune_config.from_flags)


if __name__ == "__main__":
  runtime.run(main)

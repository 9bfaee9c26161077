r"""Offline pretraining (Cal-QL, CQL or IQL) of many seeds in one program.

  python -m launch.pretrain --config=launch/configs/pretrain.py:hopper-medium-v2 \
      --workdir=/tmp/wsrl/hopper-offline --config.algo=cql --config.dataset=/data/hopper.hdf5

The final checkpoint is what `launch.finetune --config.pretrained=<workdir>` starts from.
Rerunning the same command resumes from the latest checkpoint in `--workdir`. Every field of
launch/configs/pretrain.py can be set as `--config.<field>=<value>` (its comments say what each
means); `:<env>,demo` is a run of minutes on a CPU. A bad value ends the run with one line
naming it (`--verbose`: with the stack trace).
"""

from absl import flags
from ml_collections import config_flags

from launch import runtime
from wsrl_mjx import pretrain

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pretraining configuration.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


main = runtime.phase_main(pretrain.train_and_evaluate, _CONFIG, _WORKDIR)


if __name__ == "__main__":
  runtime.run(main)

"""What the launch entry points share: process-wide JAX settings and the training phases' main."""

import logging as python_logging
import os

import jax
from absl import app, logging

from wsrl_mjx import compat

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "wsrl_mjx", "jax")


def _not_orbax_chatter(record: python_logging.LogRecord) -> bool:
  """Orbax logs every step of every save at INFO; keep its warnings and errors only."""
  return record.levelno >= python_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def configure() -> None:
  """Sets XLA's CPU flag for jaxlib 0.10 (`compat.configure_xla_cpu`), turns on JAX's persistent
  compilation cache (MJX programs take minutes to compile) and quiets orbax's per-save INFO lines.
  Call it first in `main`, before anything asks JAX for a device.

  `JAX_COMPILATION_CACHE_DIR` chooses the folder; set it to an empty string to disable caching.
  """
  compat.configure_xla_cpu()
  logging.get_absl_handler().addFilter(_not_orbax_chatter)
  cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_CACHE)
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  logging.info("JAX %s on %s; compilation cache: %s", jax.__version__,
               ", ".join(str(d) for d in jax.devices()), cache_dir or "off")


def phase_main(train_and_evaluate, config_flag, workdir_flag):
  """The absl `main` of a training phase's launcher (launch/pretrain.py, launch/finetune.py):
  `configure()`, then `train_and_evaluate(config, workdir)` with the flags' values, then the
  final normalised score of every seed in the log."""
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    configure()
    record = train_and_evaluate(config_flag.value, workdir_flag.value)
    scores = record.get("normalized_scores")
    if scores is not None:
      logging.info("Done. Final normalised scores per seed: %s",
                   ", ".join("n/a" if s is None else f"{s:.1f}" for s in scores))
  return main

"""Process-wide JAX settings shared by the launch entry points."""

import os

import jax
from absl import logging

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "wsrl_mjx", "jax")


def configure() -> None:
  """Turns on JAX's persistent compilation cache (MJX programs take minutes to compile).

  `JAX_COMPILATION_CACHE_DIR` chooses the folder; set it to an empty string to disable caching.
  """
  cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_CACHE)
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  logging.info("JAX %s on %s; compilation cache: %s", jax.__version__,
               ", ".join(str(d) for d in jax.devices()), cache_dir or "off")

"""wsrl-mjx: WSRL (warm-start RL) fine-tuning with MJX environments, many seeds per program."""

import os as _os

# XLA's CPU backend (jaxlib 0.10) can deadlock when its concurrency-optimised scheduler runs two
# batched LAPACK calls at once, e.g. the QR decompositions of a vmapped orthogonal init of a
# 10-critic ensemble. The flag only affects the CPU backend; it must be set before JAX starts one.
_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in _os.environ.get("XLA_FLAGS", ""):
  _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

"""wsrl-mjx: WSRL (warm-start RL) fine-tuning with MJX environments, many seeds per program."""

import os as _os

# jaxlib 0.10's CPU LAPACK kernels deadlock when several large batched calls run at once (BUILD.md;
# our orthogonal init avoids LAPACK for this reason). Running fewer independent operations at once
# makes that rarer. The flag only affects the CPU backend; it must be set before JAX starts one.
_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in _os.environ.get("XLA_FLAGS", ""):
  _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

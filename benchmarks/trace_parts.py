"""Reading a `jax.profiler` trace of a fused step: each device kernel's time, charged to the part
of the step it ran for (benchmarks/profile_step.py; no absl flags here, so tests import it).

A part is a `jax.named_scope` on the op's JAX name stack (online.step, sac.update). The stack
comes from the event's own `tf_op`/`long_name`/`name` stat where it holds one, else from the
compiled HLO's op metadata of the instruction the event names (its `hlo_op` stat or its name).
"""

from __future__ import annotations

import os
import re

# Named scopes, most specific first: a kernel belongs to the first one on its op's name stack.
PARTS = ("td_target", "critic_gradient", "critic_adam", "target_update", "momentum_steps",
         "actor_temperature_step", "accept_update", "sample_batch", "update", "reset",
         "buffer_insert", "mc_returns", "act", "env_step")


_HLO_LINE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?op_name=\"([^\"]*)\"")


def hlo_op_names(hlo_text: str) -> dict[str, str]:
  """Instruction name (dots and dashes as underscores, as kernel names spell them) -> the JAX
  name stack of its op metadata, from a compiled program's HLO text."""
  names = {}
  for line in hlo_text.splitlines():
    match = _HLO_LINE.match(line)
    if match:
      names[re.sub(r"[.\-]", "_", match.group(1))] = match.group(2)
  return names


def part_of(op_name: str) -> str:
  """The step part an op belongs to: the first of `PARTS` on its name stack, else `other`."""
  stack = set(re.split(r"[/()]", op_name))
  for part in PARTS:
    if part in stack:
      return part
  return "other"


def kernel_times(trace_dir: str) -> list[tuple[str, dict[str, str], int, int]]:
  """(event name, its string stats, start ns, duration ns) of every event on a device plane of
  the newest trace under `trace_dir`."""
  from jax.profiler import ProfileData
  paths = []
  for root, _, files in os.walk(trace_dir):
    paths += [os.path.join(root, f) for f in files if f.endswith(".xplane.pb")]
  if not paths:
    return []
  data = ProfileData.from_file(max(paths, key=os.path.getmtime))
  events = []
  for plane in data.planes:
    if not plane.name.startswith("/device:"):
      continue
    for line in plane.lines:
      for event in line.events:
        stats = {str(k): str(v) for k, v in event.stats}
        events.append((event.name, stats, int(event.start_ns), int(event.duration_ns)))
  return events


def attribute(events, hlo_names: dict[str, str]):
  """Each event -> (part, op name): by its `tf_op`/`name` stats if they hold a name stack, else
  through the HLO instruction its `hlo_op` stat or its own name gives."""
  for name, stats, start, duration in events:
    op_name = ""
    for key in ("tf_op", "long_name", "name"):
      if "/" in stats.get(key, ""):
        op_name = stats[key]
        break
    if not op_name:
      for candidate in (stats.get("hlo_op", ""), name):
        key = re.sub(r"[.\-]", "_", candidate)
        if key in hlo_names:
          op_name = hlo_names[key]
          break
    yield part_of(op_name) if op_name else "unattributed", op_name, name, start, duration


def union_ns(spans) -> int:
  """Nanoseconds covered by at least one (start, end) span: kernels on several streams overlap."""
  covered, end = 0, None
  for start, stop in sorted(spans):
    if end is None or start > end:
      covered += stop - start
      end = stop
    elif stop > end:
      covered += stop - end
      end = stop
  return covered

"""What a run reports: `metrics.jsonl` (one JSON object per evaluation) and TensorBoard scalars.

`metrics.jsonl` is the record a sweep is analysed from, so it is kept consistent with the
checkpoints: on resume, lines written after the checkpoint being resumed are dropped (the resumed
run writes them again, with the same numbers).
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import numpy as np


def _plain(value):
  """numpy scalars/arrays -> JSON values; non-finite floats -> None."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return _plain(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class MetricsLog:
  def __init__(self, workdir: str | os.PathLike, step_key: str = "env_step"):
    self.step_key = step_key      # the field that orders records: env or gradient steps
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.path = self.workdir / "metrics.jsonl"
    self._tensorboard = None

  def _writer(self):
    if self._tensorboard is None:
      from tensorboardX import SummaryWriter
      self._tensorboard = SummaryWriter(str(self.workdir / "tensorboard"))
    return self._tensorboard

  def records(self) -> list[dict]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

  def truncate_after(self, step: int) -> None:
    """Drops evaluation records past `step` (written after the checkpoint resumed from)."""
    kept = [r for r in self.records() if r[self.step_key] <= step]
    temporary = self.path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(temporary, self.path)

  def write_evaluation(self, record: dict) -> None:
    with self.path.open("a") as f:
      f.write(json.dumps(_plain(record)) + "\n")

  def write_scalars(self, env_step: int, scalars: dict[str, float]) -> None:
    writer = self._writer()
    for name, value in scalars.items():
      if value is not None and math.isfinite(float(value)):
        writer.add_scalar(name, float(value), env_step)
    writer.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()

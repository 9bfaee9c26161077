"""What a run reports: `metrics.jsonl` (one JSON object per evaluation) and TensorBoard scalars.

`metrics.jsonl` is the record a sweep is analysed from, so it always matches the state the run
continues from (`restart_at`): on resume, lines written after the checkpoint being resumed are
dropped, and a run that starts fresh (no checkpoint yet, e.g. killed before its first one) drops
them all; the run writes them again, with the same numbers. TensorBoard scalars are purged the
same way (tensorboardX's `purge_step`: TensorBoard hides the events of earlier files at or past
the step a new file starts at).

`wall_time.jsonl` is what the run cost, not what it found: one line per evaluation with the
seconds since this process's session of the run started (`session`: its start, ISO 8601 UTC)
and the devices it ran on. It only grows: a resumed run's redone stretch is counted again, as it
was paid for again, and `wall_time.seconds` sums each session's last line.

A fine-tuning run with a `--config.per_seed` grid of more than one point also writes, per grid
point, the means over that point's seeds of the evaluation's normalised score and return and of
each training statistic (`point_scalars`): `eval/normalized_score/warmup_steps_0`,
`train/critic_loss/warmup_steps_0/init_critic_True`, ... beside the means over all seeds.

Of a run's several processes only process 0 writes (`write=False` elsewhere: the writing methods
do nothing; `records` reads what process 0 wrote).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import re
import time

import numpy as np

from wsrl_mjx.errors import UserError


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


METRICS_FILE = "metrics.jsonl"    # the evaluation records, one JSON line each
WALL_TIME_FILE = "wall_time.jsonl"


class MetricsFileError(UserError):
  """A `metrics.jsonl` line that is not JSON (other than a last line cut short)."""


def read_jsonl(path: pathlib.Path) -> list[tuple[int, object]]:
  """(line number, value) of each non-blank line of a JSON-lines file written by appending.

  A last line that has no newline at its end and does not parse is left out: what a process
  killed while appending it (or a full disk) leaves, which the run's resume drops anyway. Raises
  MetricsFileError naming the file and the line for any other line that is not JSON."""
  text = path.read_text()
  lines = text.split("\n")      # a file ending in a newline ends with an empty piece
  values = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      values.append((number, json.loads(line)))
    except json.JSONDecodeError as error:
      if number == len(lines):   # no newline after it: cut short while being written
        break
      raise MetricsFileError(f"{path}: line {number} is not valid JSON ({error})") from None
  return values


def format_duration(seconds: float) -> str:
  """h:mm:ss of whole seconds (cut, not rounded); "?" for a non-finite duration."""
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def wall_time(workdir: str | os.PathLike) -> tuple[float, list[str]] | None:
  """(seconds, devices) a run directory's sessions took from its `wall_time.jsonl`: the sum of
  each session's last `seconds`, and the distinct `device` strings in order. None where the run
  wrote no such file (before this version). A line that does not parse is skipped (a session
  killed while writing it)."""
  path = pathlib.Path(workdir) / WALL_TIME_FILE
  if not path.is_file():
    return None
  last: dict[str, float] = {}
  devices: list[str] = []
  for line in path.read_text().splitlines():
    try:
      entry = json.loads(line)
      last[entry["session"]] = float(entry["seconds"])
      device = str(entry["device"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
      continue
    if device not in devices:
      devices.append(device)
  return sum(last.values()), devices


def _append_line(path: pathlib.Path, line: str) -> None:
  """Appends `line` and a newline, on a line of its own even where the file's last line was cut
  short (a session killed while writing it), so that it does not join that line."""
  with path.open("a+b") as f:       # writes go to the end whatever the position
    if f.seek(0, os.SEEK_END) > 0:
      f.seek(-1, os.SEEK_END)
      if f.read(1) != b"\n":
        f.write(b"\n")
    f.write(line.encode() + b"\n")


# What tensorboardX keeps of a tag: other characters it rewrites to "_" (its summary._clean_tag).
_NOT_IN_TAGS = re.compile(r"[^-/\w.]")


def point_label(point: dict) -> str:
  """A `--config.per_seed` grid point as the last part of a TensorBoard tag, in the characters
  TensorBoard tags keep: `name_value` per setting, in the grid's order, joined by "/";
  {"warmup_steps": 0, "init_critic": True} -> "warmup_steps_0/init_critic_True"."""
  return "/".join(_NOT_IN_TAGS.sub("_", f"{name}_{_plain(value)}")
                  for name, value in point.items())


def nanmean(values) -> float:
  """The mean of the finite values of `values` (None counts as NaN); NaN where there are none."""
  values = np.asarray(values, np.float64)
  return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


# A record's per-seed fields written per grid point, and their tags (before the point's label).
_PER_POINT_FIELDS = {"normalized_scores": "eval/normalized_score", "returns": "eval/return"}


def point_scalars(record: dict) -> dict[str, float]:
  """TensorBoard scalars per `--config.per_seed` grid point of an evaluation record (or of the
  part of one, e.g. {"train": summary, "per_seed": ...}): for each point, the mean over that
  point's seeds (NaN left out; NaN where all are) of the normalised score
  (`eval/normalized_score/<point_label>`), the return (`eval/return/<point_label>`) and each
  training statistic (`train/<name>/<point_label>`); a field that is not one value per seed is
  left out. {} where the record's seeds do not span more than one point (no grid, a grid of one
  point, or a record without `per_seed`)."""
  labels = [point_label(point) for point in record.get("per_seed") or []]
  if len(set(labels)) < 2:
    return {}
  per_seed = {tag: record[field] for field, tag in _PER_POINT_FIELDS.items() if field in record}
  per_seed.update({f"train/{name}": values for name, values in (record.get("train") or {}).items()})
  labels = np.asarray(labels)
  scalars = {}
  for tag, values in per_seed.items():
    values = np.asarray(values, np.float64)       # None (non-finite, in metrics.jsonl) -> NaN
    if values.shape != labels.shape:              # not one value per seed
      continue
    for label in dict.fromkeys(labels.tolist()):  # the grid's order
      scalars[f"{tag}/{label}"] = nanmean(values[labels == label])
  return scalars


class MetricsLog:
  def __init__(self, workdir: str | os.PathLike, step_key: str = "env_step", write: bool = True,
               device: str = ""):
    self.step_key = step_key      # the field that orders records: env or gradient steps
    self.write = write            # false: a process other than the run's first writes nothing
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.path = self.workdir / METRICS_FILE
    self.device = device          # e.g. "1 x NVIDIA H200" (wall_time.jsonl)
    self.started = time.time()
    self.session = datetime.datetime.fromtimestamp(
        self.started, datetime.timezone.utc).isoformat(timespec="microseconds")
    self._tensorboard = None
    self._purge_step = None

  def _writer(self):
    if self._tensorboard is None:
      from tensorboardX import SummaryWriter
      # The suffix orders two files started within the same second (their names are
      # events.out.tfevents.<seconds>.<host><suffix>; TensorBoard reads them in name order).
      self._tensorboard = SummaryWriter(str(self.workdir / "tensorboard"),
                                        purge_step=self._purge_step,
                                        filename_suffix=f".{time.time_ns()}")
    return self._tensorboard

  def restart_at(self, step: int | None) -> int:
    """The run continues from the state at `step` (a checkpoint's; None: a fresh start, which
    writes step 0 again): drops the records past it, and has the TensorBoard file written next
    hide earlier files' events from `step + 1` on (from 0 on a fresh start). Returns how many
    records were dropped (0 where this log does not write)."""
    if not self.write:
      return 0
    before = len(self.records())
    self.truncate_after(-1 if step is None else step)
    self._purge_step = 0 if step is None else step + 1
    return before - len(self.records())

  def records(self) -> list[dict]:
    """The evaluation records written so far, without a last line cut short (`read_jsonl`)."""
    if not self.path.exists():
      return []
    return [record for _, record in read_jsonl(self.path)]

  def truncate_after(self, step: int) -> None:
    """Drops evaluation records past `step` (written after the checkpoint resumed from)."""
    if not self.write:
      return
    kept = [r for r in self.records() if r[self.step_key] <= step]
    temporary = self.path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(temporary, self.path)

  def write_evaluation(self, record: dict) -> None:
    if not self.write:
      return
    with self.path.open("a") as f:
      f.write(json.dumps(_plain(record)) + "\n")
    _append_line(self.workdir / WALL_TIME_FILE, json.dumps(
        {self.step_key: _plain(record[self.step_key]), "session": self.session,
         "seconds": round(time.time() - self.started, 3), "device": self.device}))

  def write_scalars(self, env_step: int, scalars: dict[str, float]) -> None:
    if not self.write:
      return
    writer = self._writer()
    for name, value in scalars.items():
      if value is not None and math.isfinite(float(value)):
        writer.add_scalar(name, float(value), env_step)
    writer.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()

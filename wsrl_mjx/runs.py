"""A run directory read back: what `launch.report` and `launch.export` know about a run.

A run directory (written by `host_loop.run_phase`, either phase) holds `metrics.jsonl` (one record
per evaluation: the step, per-seed `normalized_scores`, `diverged_at`, the last chunk's `train`
statistics, fine-tuning's per-seed grid points `per_seed`, pretraining's `algo`),
`checkpoints/<step>/description/metadata` (env, agent shapes and the config, see checkpoint.py)
and, from runs that write it, `config.json` (the resolved config). The config is read from
`config.json` where it exists, else from the latest checkpoint's description; a run stopped
before its first checkpoint and without `config.json` has none, and `Run.config` is None.

Only JSON is read here (no JAX, no orbax): reports are made on machines without an accelerator.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np

from wsrl_mjx import metrics_log
from wsrl_mjx.errors import UserError

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
STEP_UNITS = {"env_step": "finetune", "gradient_step": "pretrain"}   # record step key -> phase
TOTAL_FIELDS = {"finetune": "online_steps", "pretrain": "offline_steps"}


class RunError(UserError):
  """A run directory that cannot be read as one, with the file and the reason."""


@dataclasses.dataclass(frozen=True, eq=False)   # runs compare and hash by identity
class Run:
  path: pathlib.Path              # absolute
  name: str                       # the directory as it was given (what reports show)
  phase: str                      # "finetune" or "pretrain"
  step_unit: str                  # "env_step" or "gradient_step"
  records: list[dict[str, Any]]   # metrics.jsonl, in order
  config: dict[str, Any] | None   # the resolved config, None where the run recorded none
  config_source: str | None       # the file it came from, relative to the run directory
  description: dict[str, Any] | None   # the latest checkpoint's description, None without one

  @property
  def num_seeds(self) -> int:
    return len(self.records[0]["normalized_scores"])

  @property
  def env_name(self) -> str | None:
    if self.config is not None and self.config.get("env_name"):
      return self.config["env_name"]
    return (self.description or {}).get("env_name")

  @property
  def method(self) -> str:
    """A fine-tuning's arm: its `--config.method` (README "Methods"), with "+data" where an
    offline learner kept its offline data (`--config.offline_data=keep`: "calql+data"; RLPD
    always keeps it); for a config from before the methods existed, "wsrl" (from a checkpoint)
    or "scratch". A pretraining's offline learner. The phase where the run does not say."""
    if self.phase == "pretrain":
      return (self.config or {}).get("algo") or self.records[0].get("algo") or "pretrain"
    if self.config is None:
      return "finetune"
    if "method" not in self.config:
      return "wsrl" if self.config.get("pretrained") else "scratch"
    name = self.config["method"]
    keeps = self.config.get("offline_data", "none") == "keep" and name != "rlpd"
    return f"{name}+data" if keeps else name

  @property
  def seed_points(self) -> list[dict[str, Any]]:
    """Per seed, the `--config.per_seed` grid values it ran with ({} without a grid)."""
    points = self.records[-1].get("per_seed") or (self.description or {}).get("per_seed")
    return [dict(p) for p in points] if points else [{} for _ in range(self.num_seeds)]

  @property
  def steps(self) -> np.ndarray:
    """[evaluations] the step of each evaluation (env or gradient steps: `step_unit`)."""
    return np.asarray([r[self.step_unit] for r in self.records], np.int64)

  @property
  def scores(self) -> np.ndarray:
    """[evaluations, seeds] normalised scores; NaN where an evaluation was not finite."""
    return np.asarray([[np.nan if s is None else s for s in r["normalized_scores"]]
                       for r in self.records], np.float64)

  def train_statistic(self, name: str) -> np.ndarray:
    """[evaluations, seeds] a training statistic of the chunk before each evaluation; NaN where
    it was not logged or the seed made no update in that chunk (warmup, divergence)."""
    values = np.full((len(self.records), self.num_seeds), np.nan)
    for i, record in enumerate(self.records):
      train = record.get("train") or {}
      if name in train:
        value = np.asarray([np.nan if v is None else v for v in train[name]], np.float64)
        updates = np.asarray(train.get("updates", np.ones(self.num_seeds)), np.float64)
        values[i] = np.where(updates > 0, value, np.nan)
    return values

  def updated(self, seed: int) -> bool | None:
    """Whether a fine-tuning seed made an update in the run: some evaluation's `train.updates`
    (the count of the chunk before it) above 0. None where the run does not say: a pretraining
    (its count is of gradient steps, which every chunk makes) or a fine-tuning without an
    `updates` record (one stopped after its step-0 evaluation, or older than the count)."""
    if self.phase != "finetune":
      return None
    counts = [record["train"]["updates"][seed] for record in self.records
              if "updates" in (record.get("train") or {})]
    return any((count or 0) > 0 for count in counts) if counts else None

  @property
  def diverged_at(self) -> list[int | None]:
    """Per seed, the step of its first non-finite update (it stopped learning), or None."""
    return list(self.records[-1].get("diverged_at") or [None] * self.num_seeds)

  @property
  def total_steps(self) -> int | None:
    """The run's budget, None where no config was recorded."""
    if self.config is None:
      return None
    return self.config.get(TOTAL_FIELDS[self.phase])

  @property
  def finished(self) -> bool | None:
    """Whether the last evaluation is at the budget's end; None where the budget is unknown."""
    total = self.total_steps
    return None if total is None else int(self.steps[-1]) >= int(total)

  @property
  def wall_time(self) -> tuple[float, list[str]] | None:
    """(seconds, devices) of the run's sessions (`metrics_log.wall_time`), None without a
    record of them."""
    return metrics_log.wall_time(self.path)

  def warmup_steps(self, seed: int) -> int | None:
    """Seed's online warmup length (its grid point's or the config's), None offline/unknown."""
    if self.phase != "finetune":
      return None
    point = self.seed_points[seed]
    if "warmup_steps" in point:
      return int(point["warmup_steps"])
    return None if self.config is None else int(self.config["warmup_steps"])


PATH_FIELDS = ("pretrained", "dataset")   # config fields naming a file or folder


def resolved(value: str, base: str | os.PathLike = "") -> str:
  """A path, or comma-separated paths (Adroit's dataset files), made absolute from `base`
  (default: the current folder), links resolved."""
  return ",".join(os.path.realpath(os.path.join(base, part.strip())) for part in value.split(","))


def resolved_paths(config) -> dict[str, str]:
  """{field: absolute path with links resolved} of the config's non-empty `PATH_FIELDS`, for a
  run's description: a resume compares where its paths lead, not how they were written."""
  return {field: resolved(config[field]) for field in PATH_FIELDS
          if field in config and isinstance(config[field], str) and config[field]}


def finished_checkpoint_steps(run_dir: pathlib.Path) -> list[int]:
  """The steps of the run's finished checkpoints, ascending ([] without any). Orbax renames a
  checkpoint's folder to its step only once it is complete, so numeric folders are finished
  checkpoints (read without loading orbax)."""
  return sorted(int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit())


def latest_description(run_dir: pathlib.Path) -> tuple[dict[str, Any] | None, pathlib.Path | None]:
  """The description of the highest-numbered finished checkpoint (`finished_checkpoint_steps`)
  and its file, or (None, None)."""
  for step in reversed(finished_checkpoint_steps(run_dir)):
    path = run_dir / "checkpoints" / str(step) / "description" / "metadata"
    if path.is_file():
      try:
        return json.loads(path.read_text()), path
      except json.JSONDecodeError as error:
        raise RunError(f"{path}: not valid JSON ({error})") from None
  return None, None


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise RunError(f"{path}: not valid JSON ({error})") from None


def find(path: str | pathlib.Path) -> list[pathlib.Path]:
  """The run directories `path` stands for: itself where it holds `metrics.jsonl` (or is no
  folder at all: `read` then says so), else every folder nested in it that holds one (a sweep's
  folder, `launch.sweep`: `runs/<env>/<cell>/`), sorted, not looking inside a run directory;
  [path] where it holds none (`read` then names it)."""
  path = pathlib.Path(path)
  if not path.is_dir() or (path / METRICS_FILE).is_file():
    return [path]
  found = []
  for folder, subfolders, files in os.walk(path):
    if METRICS_FILE in files:
      found.append(pathlib.Path(folder))
      subfolders.clear()
    subfolders.sort()
  return sorted(found) or [path]


def read(run_dir: str | pathlib.Path) -> Run:
  """Reads a run directory. Raises RunError naming the directory or file where it has no
  `metrics.jsonl`, no evaluation in it, or a line that is not a metrics record (a last line cut
  short by a killed run is left out, as the run's resume drops it)."""
  name = str(run_dir)
  run_dir = pathlib.Path(run_dir).expanduser().absolute()
  if not run_dir.is_dir():
    raise RunError(f"{run_dir}: no such run directory")
  metrics = run_dir / METRICS_FILE
  if not metrics.is_file():
    cells = [d for d in find(run_dir) if d != run_dir]
    if cells:
      listed = ", ".join(str(d.relative_to(run_dir)) for d in cells[:3])
      raise RunError(f"{run_dir}: a folder of {len(cells)} run directories (e.g. a sweep's), not "
                     f"one run directory; name one of them: {listed}"
                     f"{', ...' if len(cells) > 3 else ''}")
    if (run_dir / "sweep.json").is_file():
      raise RunError(f"{run_dir}: a sweep folder none of whose cells has written an evaluation "
                     "yet (launch.sweep --status says where they stand)")
    raise RunError(f"{run_dir}: has no {METRICS_FILE}; not a wsrl-mjx run directory, or the run "
                   "stopped before its first evaluation")
  records = []
  try:
    lines = metrics_log.read_jsonl(metrics)   # a last line cut short is left out
  except metrics_log.MetricsFileError as error:
    raise RunError(str(error)) from None
  for number, record in lines:
    if not isinstance(record, dict) or "normalized_scores" not in record or \
       not any(unit in record for unit in STEP_UNITS):
      raise RunError(f"{metrics}: line {number} is not an evaluation record (it needs "
                     f"normalized_scores and one of {', '.join(STEP_UNITS)})")
    records.append(record)
  if not records:
    raise RunError(f"{metrics}: holds no evaluation yet")
  step_unit = next(unit for unit in STEP_UNITS if unit in records[0])
  description, description_file = latest_description(run_dir)
  config, config_source = None, None
  if (run_dir / CONFIG_FILE).is_file():
    config, config_source = _read_json(run_dir / CONFIG_FILE), CONFIG_FILE
  elif description is not None and description.get("config"):
    config, config_source = description["config"], str(description_file.relative_to(run_dir))
  return Run(path=run_dir, name=name, phase=STEP_UNITS[step_unit], step_unit=step_unit,
             records=records, config=config, config_source=config_source, description=description)

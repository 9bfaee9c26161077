"""The host loop both training phases share: resume or start, run chunks, evaluate, log, save.

A phase (online fine-tuning in `finetune.py`, offline pretraining in `pretrain.py`) describes
itself as a `Phase` of jitted, seed-vmapped callables; `run_phase` drives it between device calls
and owns everything a user sees: progress lines, `metrics.jsonl`, TensorBoard scalars, warnings
about diverged seeds and orbax checkpoints. It never steps an environment or a learner itself.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from envs import EnvSpec
from wsrl_mjx import checkpoint, metrics_log


@dataclasses.dataclass
class Phase:
  unit: str                         # what a step counts: "env_step" or "gradient_step"
  total_steps: int
  steps_per_chunk: int
  eval_interval: int
  checkpoint_interval: int
  keep_checkpoints: int
  num_seeds: int
  env_spec: EnvSpec
  description: dict[str, Any]       # the checkpoint's JSON description
  init: Callable[[], Any]           # -> a fresh state (all seeds)
  abstract_state: Callable[[], Any]  # -> shape/dtype/sharding of a state, for restoring
  run: Callable[[Any], tuple[Any, dict[str, np.ndarray]]]  # one chunk -> (state, per-seed summary)
  evaluate: Callable[[Any], np.ndarray]  # -> undiscounted returns [seeds, episodes]
  step_of: Callable[[Any], int]
  diverged_at: Callable[[Any], np.ndarray]  # per seed, -1 where it never diverged
  agent_params: Callable[[Any], Any]  # the checkpoint's `agent` item
  check_resumable: Callable[[dict[str, Any]], None]
  # The checkpoint's `optimizer` item (the Adam states the next phase continues), or None.
  optimizer_states: Callable[[Any], Any] | None = None
  progress: tuple[tuple[str, str], ...] = ()  # (label, summary key) shown in progress lines
  record_extras: dict[str, Any] = dataclasses.field(default_factory=dict)


def seed_mesh(num_seeds: int) -> Mesh:
  """A 1-D mesh over all devices; seeds are split evenly across it."""
  devices = jax.devices()
  if num_seeds % len(devices):
    raise ValueError(f"config.num_seeds ({num_seeds}) must be a multiple of the number of "
                     f"devices ({len(devices)}) so that seeds split evenly across them.")
  return Mesh(np.asarray(devices), ("seeds",))


def seed_sharding(num_seeds: int) -> NamedSharding:
  """Every array with a leading seed axis is laid out with this."""
  return NamedSharding(seed_mesh(num_seeds), PartitionSpec("seeds"))


def seed_keys(config) -> jax.Array:
  """Seed i's key depends only on (config.seed, i), not on how many seeds run beside it."""
  base = jax.random.PRNGKey(config.seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(config.num_seeds))


@dataclasses.dataclass
class SeedPrograms:
  """A loop's pure per-seed functions, jitted and vmapped over seeds (compiled on first use).

  `loop` has `init(key, ...)`, `run(state, *shared, num_steps)` and `evaluate(...)` for one
  seed (`online.Online`, `offline.Offline`). Every array the programs return has its seed axis
  laid over `sharding`, so a freshly initialised state and one restored from a checkpoint hit
  the same compiled `run`.
  """
  loop: Any
  sharding: NamedSharding
  init: Any
  run: Any
  evaluate: Any

  def abstract_state(self, *init_args):
    """Shape, dtype and sharding of the state `init(*init_args)` makes: a restore target."""
    abstract = jax.eval_shape(self.init, *init_args)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.sharding), abstract)


def compile_seed_programs(loop, num_seeds: int, *, num_shared_run_args: int = 0,
                          evaluate: Callable | None = None) -> SeedPrograms:
  """`jit(vmap(...))` of `loop.init`, `loop.run` and `evaluate` (default `loop.evaluate`).

  `run(state, *shared, num_steps)` takes `num_shared_run_args` arguments that every seed shares
  (the offline dataset) and a static `num_steps`; its state argument is donated.
  """
  sharding = seed_sharding(num_seeds)
  static = 1 + num_shared_run_args
  return SeedPrograms(
      loop=loop, sharding=sharding,
      init=jax.jit(jax.vmap(loop.init), out_shardings=sharding),
      run=jax.jit(jax.vmap(loop.run, in_axes=(0,) + (None,) * static), static_argnums=static,
                  donate_argnums=0, out_shardings=sharding),
      evaluate=jax.jit(jax.vmap(evaluate or loop.evaluate), out_shardings=sharding))


def check_schedule(config, total_field: str) -> None:
  chunk = config.steps_per_chunk
  for name in (total_field, "eval_interval", "checkpoint_interval"):
    value = config[name]
    if value <= 0 or value % chunk:
      raise ValueError(f"config.{name} ({value}) must be a positive multiple of "
                       f"config.steps_per_chunk ({chunk}): the host acts between chunks only.")


def check_same_fields(saved_config: dict, config, fields, workdir) -> None:
  """Refuses to resume a run whose shape-defining settings differ from `config`'s."""
  for field in fields:
    have, want = saved_config.get(field), config[field]
    if isinstance(want, (list, tuple)):
      have, want = list(have or []), list(want)
    if have != want:
      raise checkpoint.CheckpointError(
          f"{workdir}: holds a run with config.{field}={have!r}, this one asks for {want!r}. "
          "Resume with the same settings or choose a new --workdir.")


def nanmean(x) -> float:
  x = np.asarray(x, np.float64)
  return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_phase(phase: Phase, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Runs `phase` to its end in `workdir`, resuming there if it holds a checkpoint.

  Returns the last evaluation record.
  """
  workdir = pathlib.Path(workdir)
  checkpoints = checkpoint.RunCheckpoints(workdir, max_to_keep=phase.keep_checkpoints,
                                          step_unit=phase.unit)
  log = metrics_log.MetricsLog(workdir, step_key=phase.unit)
  unit = phase.unit.replace("_", " ")

  # The newest checkpoint that reads (a damaged one is set aside with a warning).
  resumed = checkpoints.restore_newest_readable(phase.abstract_state, phase.check_resumable)
  latest, state = resumed if resumed is not None else (None, None)
  if latest is not None:
    log.truncate_after(latest)
    logging.info("Resumed %s at %s %d", workdir, unit, latest)
  else:
    state = phase.init()

  step = phase.step_of(state)
  reported = set(np.flatnonzero(phase.diverged_at(state) >= 0).tolist())

  def evaluate_and_log(state, step, summary):
    results = phase.evaluate(state)
    returns = np.asarray(results.returns)                        # [seeds, episodes]
    successes = np.asarray(results.successes)
    scores = phase.env_spec.normalized_score(returns, successes)
    diverged_at = phase.diverged_at(state)
    record = {phase.unit: step, "returns": returns.mean(axis=1),
              "normalized_scores": scores.mean(axis=1), "episode_returns": returns,
              "success_rates": successes.mean(axis=1),
              "diverged_at": np.where(diverged_at >= 0, diverged_at, None).tolist(),
              **phase.record_extras}
    if summary:
      record["train"] = dict(summary)
    log.write_evaluation(record)
    scalars = {"eval/normalized_score_mean": nanmean(record["normalized_scores"]),
               "eval/normalized_score_min": float(np.min(record["normalized_scores"])),
               "eval/normalized_score_max": float(np.max(record["normalized_scores"])),
               "eval/return_mean": nanmean(record["returns"])}
    scalars.update({f"train/{k}": nanmean(v) for k, v in (summary or {}).items()})
    log.write_scalars(step, scalars)
    return record

  last_record = None
  if latest is None:
    last_record = evaluate_and_log(state, step, None)
    logging.info("%s %d: normalised score %.1f (mean of %d seeds; the starting policy)",
                 unit, step, nanmean(last_record["normalized_scores"]), phase.num_seeds)

  # The first chunk includes compilation: rates count from its end once there is a second one.
  started, started_step, first_chunk_end = time.time(), step, None
  while step < phase.total_steps:
    state, summary = phase.run(state)
    step += phase.steps_per_chunk
    now = time.time()
    if first_chunk_end is None:
      first_chunk_end = (now, step)
      rate = (step - started_step) / max(now - started, 1e-9)
    else:
      rate = (step - first_chunk_end[1]) / max(now - first_chunk_end[0], 1e-9)

    diverged_at = phase.diverged_at(state)
    for seed in sorted(set(np.flatnonzero(diverged_at >= 0).tolist()) - reported):
      logging.warning(
          "Seed %d stopped learning at %s %d: an update produced a non-finite loss or "
          "gradient. Its parameters stay at its last finite update; the other seeds go on.",
          seed, unit, int(diverged_at[seed]))
      reported.add(seed)

    if step % phase.eval_interval == 0 or step == phase.total_steps:
      last_record = evaluate_and_log(state, step, summary)
    else:
      log.write_scalars(step, {f"train/{k}": nanmean(v) for k, v in summary.items()})
    score = nanmean(last_record["normalized_scores"]) if last_record else float("nan")
    details = " | ".join(f"{label} {nanmean(summary[key]):.3g}" for label, key in phase.progress)
    logging.info(
        "%s %d/%d (%.1f%%) | %.0f %ss/s per seed, %.0f over %d seeds | ETA %s | "
        "last eval score %.1f%s", unit, step, phase.total_steps,
        100.0 * step / phase.total_steps, rate, unit, rate * phase.num_seeds, phase.num_seeds,
        format_duration((phase.total_steps - step) / max(rate, 1e-9)), score,
        f" | {details}" if details else "")
    if step % phase.checkpoint_interval == 0 or step == phase.total_steps:
      checkpoints.save(step, state, phase.agent_params(state), phase.description,
                       phase.optimizer_states(state) if phase.optimizer_states else None)

  checkpoints.close()
  log.close()
  if last_record is None:  # Resumed a run that had already finished.
    records = log.records()
    last_record = records[-1] if records else {}
  return last_record


def per_seed_summary(sums: dict[str, Any], count_key: str) -> dict[str, np.ndarray]:
  """Per-seed means of the `*_sum` entries of a chunk's statistics, divided by `count_key`."""
  sums = jax.tree.map(np.asarray, sums)
  counts = np.maximum(sums[count_key], 1)
  summary = {}
  for name, value in sums.items():
    if name.endswith("_sum"):
      summary[name[:-4]] = value / counts
    else:
      summary[name] = value
  return summary

"""The host loop both training phases share: resume or start, run chunks, evaluate, log, save.

A phase (online fine-tuning in `finetune.py`, offline pretraining in `pretrain.py`) describes
itself as a `Phase` of jitted, seed-vmapped callables; `run_phase` drives it between device calls
and owns everything a user sees: the run directory (`config.json`, a lock against a second run
in it), compile and progress lines, `metrics.jsonl`, TensorBoard scalars, warnings about
diverged seeds and orbax checkpoints. It never steps an environment or a learner itself.

Several processes (`jax.distributed`, launch/runtime.py starts it): the seed mesh spans every
process's devices (`seed_mesh`), every process runs the same host loop on its share of the
seeds, and whatever the host reads from a device (evaluation results, chunk statistics, steps)
is gathered from every process (`to_host`). Process 0 alone holds the run directory's lock and
writes `config.json`, `metrics.jsonl` and TensorBoard files; all processes take part in each
orbax checkpoint (each writes its own seeds' shards), and a checkpoint resumes only with the
layout (process and device counts) that wrote it (`check_layout`).

Chunks: the host acts between chunks only, so every evaluation, checkpoint and the end fall on a
chunk's end (`chunk_lengths`); each distinct chunk length is one compiled program.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import pathlib
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from envs import EnvSpec
from wsrl_mjx import checkpoint, metrics_log, runs
from wsrl_mjx.errors import ConfigError, WorkdirError
from wsrl_mjx.metrics_log import nanmean


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
  # (state, number of steps) -> (state, per-seed summary of that chunk)
  run: Callable[[Any, int], tuple[Any, dict[str, np.ndarray]]]
  evaluate: Callable[[Any], np.ndarray]  # -> undiscounted returns [seeds, episodes]
  step_of: Callable[[Any], int]
  diverged_at: Callable[[Any], np.ndarray]  # per seed, -1 where it never diverged
  agent_params: Callable[[Any], Any]  # the checkpoint's `agent` item
  check_resumable: Callable[[dict[str, Any]], None]
  # The checkpoint's `optimizer` item (the Adam states the next phase continues), or None.
  optimizer_states: Callable[[Any], Any] | None = None
  progress: tuple[tuple[str, str], ...] = ()  # (label, summary key) shown in progress lines
  record_extras: dict[str, Any] = dataclasses.field(default_factory=dict)
  # (state) -> (state, per-seed record fields): the phase's own step after each evaluation,
  # before any checkpoint, so that a resumed run continues from it (JSRL's curriculum,
  # finetune.py). None: nothing.
  after_evaluation: Callable[[Any], tuple[Any, dict[str, Any]]] | None = None
  # (state, number of steps) -> a future: starts compiling that chunk's program in the
  # background (`LoggedProgram.compile_ahead`), so that a fresh run compiles it while its first
  # evaluation compiles and runs. None: chunks compile when they first run.
  compile_ahead: Callable[[Any, int], concurrent.futures.Future] | None = None


def seed_mesh(num_seeds: int) -> Mesh:
  """A 1-D mesh over all devices of all processes (`jax.devices()`); seeds are split evenly
  across it, each seed on one device. Raises ConfigError unless `num_seeds` is a multiple of
  the global device count."""
  devices = jax.devices()
  if num_seeds % len(devices):
    where = (f": {jax.process_count()} processes x {jax.local_device_count()} each"
             if jax.process_count() > 1 else "")
    raise ConfigError(f"config.num_seeds ({num_seeds}) must be a multiple of the number of "
                      f"devices ({len(devices)}{where}) so that seeds split evenly across them.")
  return Mesh(np.asarray(devices), ("seeds",))


def seed_sharding(num_seeds: int) -> NamedSharding:
  """Every array with a leading seed axis is laid out with this."""
  return NamedSharding(seed_mesh(num_seeds), PartitionSpec("seeds"))


def is_primary() -> bool:
  """Whether this is process 0, the one that writes the run's files and logs its progress."""
  return jax.process_index() == 0


def to_host(tree):
  """Every array of `tree` as a numpy array holding all of it: an array spread over several
  processes' devices is gathered from them (`multihost_utils.process_allgather`; every process
  must call this with the same tree), any other one is copied from its device."""
  def whole(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(whole, tree)


def layout() -> dict[str, int]:
  """The processes and devices a run spans, as its checkpoints record it."""
  return {"processes": jax.process_count(), "devices": jax.device_count()}


def check_layout(description: dict[str, Any], workdir) -> None:
  """Refuses (CheckpointError) to resume a checkpoint written by another number of processes or
  devices than this run has; a checkpoint that records no layout (before multi-host runs) was
  written by one process."""
  saved = dict(description.get("layout") or {"processes": 1})
  here = layout()
  if any(saved[key] != here[key] for key in saved if key in here):
    def text(counts):
      return (f"{counts['processes']} process{'es' if counts['processes'] != 1 else ''}"
              + (f" with {counts['devices']} device{'s' if counts['devices'] != 1 else ''}"
                 if "devices" in counts else ""))
    raise checkpoint.CheckpointError(
        f"{workdir}: its checkpoint at {description.get('step_unit', 'step')} "
        f"{description.get('step', '?')} was written by {text(saved)}; this run has "
        f"{text(here)}. Resume it with the same layout, or choose a new --workdir.")


def check_kind(description: dict[str, Any], this: dict[str, Any], workdir) -> None:
  """Refuses (CheckpointError) to resume a checkpoint of another phase's run (`kind`, e.g. a
  pretraining run's folder given to launch.finetune as its --workdir)."""
  have, want = description.get("kind"), this.get("kind")
  if have is not None and want is not None and have != want:
    hint = (" To fine-tune from it, pass it as --config.pretrained." if "pretrain" in have
            and "finetune" in want else "")
    raise checkpoint.CheckpointError(
        f"{workdir}: holds a {have} run, and this is a {want} run; choose a new --workdir."
        f"{hint}")


def seed_keys(config) -> jax.Array:
  """Seed i's key depends only on (config.seed, i), not on how many seeds run beside it."""
  base = jax.random.PRNGKey(config.seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(config.num_seeds))


# jax.monitoring events: tracing to a jaxpr, lowering to MLIR, XLA's compile (or the persistent
# cache's read, which the compile event wraps) and a persistent cache hit (jax/_src/dispatch.py,
# compiler.py).
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
COMPILE_EVENTS = (TRACE_EVENT, LOWER_EVENT, COMPILE_EVENT)
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileClock:
  """Wall seconds JAX spends tracing, lowering and compiling while it is entered (any program,
  from jax.monitoring's time spans; nested spans, a jitted helper traced inside a program, count
  once), and how many compiles the persistent cache answered. `on_start()` is called when the
  first compile step of the entry begins. Only the entering thread's compiles count: a program
  compiled ahead in the background (`LoggedProgram.compile_ahead`) is not charged to the
  program running meanwhile."""

  def __init__(self, on_start: Callable[[], None] | None = None):
    self.cache_hits = 0
    self._spans: list[tuple[float, float]] = []
    self._on_start = on_start
    self._started = False
    self._thread = threading.get_ident()

  @property
  def seconds(self) -> float:
    total, end = 0.0, -math.inf
    for start, stop in sorted(self._spans):
      total += max(0.0, stop - max(start, end))
      end = max(end, stop)
    return total

  def _span(self, event, start_time, end_time, **kwargs):
    del kwargs
    if event in COMPILE_EVENTS and threading.get_ident() == self._thread:
      self._spans.append((start_time, end_time))

  def _scalar(self, event, value, **kwargs):
    del value, kwargs    # JAX records each compile step's start time as a scalar when it begins
    if (event in COMPILE_EVENTS and not self._started
        and threading.get_ident() == self._thread):
      self._started = True
      if self._on_start:
        self._on_start()

  def _event(self, event, **kwargs):
    del kwargs
    if event == CACHE_HIT_EVENT and threading.get_ident() == self._thread:
      self.cache_hits += 1

  def __enter__(self):
    self._thread = threading.get_ident()
    jax.monitoring.register_event_time_span_listener(self._span)
    jax.monitoring.register_scalar_listener(self._scalar)
    jax.monitoring.register_event_listener(self._event)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_time_span_listener(self._span)
    jax.monitoring.unregister_scalar_listener(self._scalar)
    jax.monitoring.unregister_event_listener(self._event)


class LoggedProgram:
  """A jitted program that says when a call compiles it: "compiling <name> ..." as the compile
  starts and "compiled <name> in <s> s" when it is done (MJX programs take minutes). Attributes
  (`lower`, ...) are the jitted function's; calls under a transformation (`jax.eval_shape`)
  compile nothing and log nothing.

  `compile_ahead(*args)` compiles the program for arguments like `args` in a background thread
  (XLA compiles without holding Python's lock, so it overlaps whatever the host does meanwhile);
  a later call whose arguments have the same static values, structure, shapes, dtypes and
  shardings runs that executable, anything else the jitted function."""

  def __init__(self, name: str, jitted, static_argnums: tuple[int, ...] = ()):
    self.name = name
    self.jitted = jitted
    self._static_argnums = static_argnums
    self._ahead: dict[Any, concurrent.futures.Future] = {}

  def __getattr__(self, attribute):
    return getattr(self.jitted, attribute)

  def _label(self, args) -> str:
    static = ", ".join(f"{args[i]}" for i in self._static_argnums if i < len(args))
    return f"{self.name}({static})" if static else self.name

  def _signature(self, args):
    """What a compiled executable fixes about a call: static values, structure, and each array
    leaf's shape, dtype and sharding."""
    static = tuple(args[i] for i in self._static_argnums if i < len(args))
    dynamic = [a for i, a in enumerate(args) if i not in self._static_argnums]
    leaves, treedef = jax.tree.flatten(dynamic)
    return static, treedef, tuple((tuple(x.shape), str(x.dtype), getattr(x, "sharding", None))
                                  for x in leaves)

  def compile_ahead(self, *args) -> concurrent.futures.Future:
    """Traces and lowers the program for `args` (arrays, or `jax.ShapeDtypeStruct`s with their
    shardings; static arguments as values) in this thread, then compiles it in the background
    -> a future of the executable, None where tracing or compiling failed (logged; the call
    then compiles as usual). Only shapes are read from `args`, here, so they may be donated or
    deleted afterwards.

    Why the trace is here: it is Python, under the GIL, so traced beside the caller's next
    program (the starting policy's evaluation) it took as long as both; traced first, XLA's
    compile (without the GIL) starts as soon as it can. The tiny kitchen `launch.finetune` run:
    79.6 and 84.8 s from empty caches with the trace in the background, 65.5 and 68.4 s with
    it here; hopper's cold start (`benchmarks/headline.py`, 2 seeds) 97.5 and 95.8 s against
    99.7 and 93.2 s (2-core CPU, 2026-12-01)."""
    abstract = tuple(
        a if i in self._static_argnums else jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), a)
        for i, a in enumerate(args))
    key = self._signature(abstract)
    if key not in self._ahead:
      label = self._label(args)

      future = concurrent.futures.Future()
      self._ahead[key] = future
      started = time.perf_counter()
      logging.info("Compiling %s ahead, in the background ...", label)

      def failed(error):
        logging.warning("Compiling %s ahead failed (%s: %s); it compiles when it first runs.",
                        label, type(error).__name__, error)
        future.set_result(None)

      # Tracing and lowering are Python, under the GIL: done here, before the caller traces its
      # next program, so that XLA's compile (which runs without the GIL) starts as early as it
      # can; two threads tracing at once would each take as long as both.
      try:
        lowered = self.jitted.lower(*abstract)
      except Exception as error:  # pylint: disable=broad-except
        failed(error)
        return future

      def compile_it():
        try:
          with CompileClock() as clock:
            compiled = lowered.compile()
        except Exception as error:  # pylint: disable=broad-except
          failed(error)
          return
        logging.info("Compiled %s in %.1f s, in the background%s", label,
                     time.perf_counter() - started,
                     " (from the persistent compilation cache)" if clock.cache_hits else "")
        future.set_result(compiled)

      # A daemon thread: a run stopped (Ctrl-C, an error) while it compiles exits at once.
      threading.Thread(target=compile_it, name=f"compile_ahead {label}", daemon=True).start()
    return self._ahead[key]

  def __call__(self, *args):
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):
      return self.jitted(*args)
    if self._ahead:
      ahead = self._ahead.get(self._signature(args))
      compiled = ahead.result() if ahead is not None else None
      if compiled is not None:
        try:
          return compiled(*[a for i, a in enumerate(args) if i not in self._static_argnums])
        except (TypeError, ValueError) as error:   # an argument the executable does not take
          logging.info("%s: the executable compiled ahead does not take these arguments "
                       "(%s); compiling for them.", self._label(args), error)
    name = self._label(args)
    clock = CompileClock(on_start=lambda: logging.info("Compiling %s ...", name))
    with clock:
      result = self.jitted(*args)
    if clock.seconds > 0.05:
      logging.info("Compiled %s in %.1f s%s", name, clock.seconds,
                   " (from the persistent compilation cache)" if clock.cache_hits else "")
    return result


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
    abstract = jax.eval_shape(self.init.jitted, *init_args)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.sharding), abstract)


# The name of the vmapped axis of one device's seeds in every seed program: a loop may reduce over
# it (`online.Online.any_seed`) to branch for all of a device's seeds at once rather than per
# seed. `run` is vmapped inside a `shard_map` over the seed mesh, so such a reduction never
# leaves its device: a device's program holds no collective, and is the same whether its
# neighbours are in this process or another (so a multi-host run equals a one-process run bit
# for bit, tests/test_multihost.py).
SEED_AXIS = "local_seeds"


def compile_seed_programs(loop, num_seeds: int, *, num_shared_run_args: int = 0,
                          evaluate: Callable | None = None) -> SeedPrograms:
  """`jit(vmap(...))` of `loop.init`, `loop.run` and `evaluate` (default `loop.evaluate`).

  `run(state, *shared, num_steps)` takes `num_shared_run_args` arguments that every seed shares
  (the offline dataset) and a static `num_steps`; its state argument is donated. Each program
  logs its compiles (`LoggedProgram`), named after the loop (`Online.run(500)`). The vmapped
  seed axis is named `SEED_AXIS`; `run` maps it per device (`shard_map`).
  """
  sharding = seed_sharding(num_seeds)
  static = 1 + num_shared_run_args
  prefix = type(loop).__name__
  per_device = jax.vmap(loop.run, in_axes=(0,) + (None,) * static, axis_name=SEED_AXIS)

  def run(state, *args):
    *shared, num_steps = args
    return jax.shard_map(
        lambda state, *shared: per_device(state, *shared, num_steps), mesh=sharding.mesh,
        in_specs=(sharding.spec,) + (PartitionSpec(),) * len(shared), out_specs=sharding.spec,
        check_vma=False)(state, *shared)

  return SeedPrograms(
      loop=loop, sharding=sharding,
      init=LoggedProgram(f"{prefix}.init",
                         jax.jit(jax.vmap(loop.init), out_shardings=sharding)),
      run=LoggedProgram(f"{prefix}.run",
                        jax.jit(run, static_argnums=static, donate_argnums=0,
                                out_shardings=sharding),
                        static_argnums=(static,)),
      evaluate=LoggedProgram(f"{prefix}.evaluate",
                             jax.jit(jax.vmap(evaluate or loop.evaluate),
                                     out_shardings=sharding)))


def fitted_chunk(steps_per_chunk: int, total: int, eval_interval: int,
                 checkpoint_interval: int) -> int:
  """The chunk length a phase runs, given its config's.

  Every evaluation (multiples of `eval_interval`), checkpoint (of `checkpoint_interval`) and the
  end (`total`) must fall on a chunk's end. A length that divides all three,
  g = gcd(total, eval_interval, checkpoint_interval), does so with one compiled program: the
  largest divisor of g not above `steps_per_chunk` is chosen when it is at least a quarter of
  `steps_per_chunk` (a few more host round trips cost far less than a compile). Otherwise
  `steps_per_chunk` stays, and `chunk_lengths` shortens the chunk before each such step it would
  overrun (one more compiled program per distinct shorter length).
  """
  common = math.gcd(total, eval_interval, checkpoint_interval)
  fitting = max(d for d in range(1, min(common, steps_per_chunk) + 1) if common % d == 0)
  return fitting if 4 * fitting >= steps_per_chunk else steps_per_chunk


def chunk_lengths(start: int, total: int, chunk: int, eval_interval: int,
                  checkpoint_interval: int) -> list[int]:
  """The chunks from step `start` to `total`: `chunk` steps each, cut short where the next
  evaluation, checkpoint or the end comes first, so every one of them is at a chunk's end.

  E.g. (0, 130, 50, 100, 50) -> [50, 50, 30]; (0, 400, 200, 1000, 1000) -> [200, 200].
  """
  lengths, step = [], start
  while step < total:
    stop = min(total, step + chunk, (step // eval_interval + 1) * eval_interval,
               (step // checkpoint_interval + 1) * checkpoint_interval)
    lengths.append(stop - step)
    step = stop
  return lengths


# Config fields a resume may change: schedules, retention and speed settings that leave what
# is learned and what a record means as they were. Any other field the run recorded must match
# (`resume_fields`): a changed eval_episodes or learning rate would mix two experiments in one
# run, which launch.report then cannot pool with its siblings.
MAY_CHANGE_ON_RESUME = ("online_steps", "offline_steps", "eval_interval", "checkpoint_interval",
                        "keep_checkpoints", "allow_transfer", "skip_idle_work",
                        "unroll_critic_steps")


def resume_fields(saved_config: dict, config, shape_fields) -> list[str]:
  """The fields a resume compares: `shape_fields` (always; a run that did not record one
  compares it as unset) and every other field the run recorded, but `MAY_CHANGE_ON_RESUME`."""
  recorded = [k for k in config.keys() if k in saved_config and k not in MAY_CHANGE_ON_RESUME]
  return list(dict.fromkeys([*shape_fields, *recorded]))


def check_same_fields(saved_config: dict, config, fields, workdir,
                      saved_paths: dict[str, str] | None = None) -> None:
  """Refuses to resume a run whose shape-defining settings differ from `config`'s, naming every
  field that differs. A path field (`runs.PATH_FIELDS`) is the same where it leads to the same
  place: `saved_paths` (the run's `runs.resolved_paths`) where the run recorded them, else the
  saved text resolved from the current folder; so `runs/x`, `runs/x/` and its absolute path all
  resume, and the same text leading elsewhere (another working folder) does not."""
  differences = []
  for field in fields:
    have, want = saved_config.get(field), config[field]
    if isinstance(want, (list, tuple)):
      have, want = list(have or []), list(want)
    if field in runs.PATH_FIELDS and isinstance(have, str) and isinstance(want, str) and have \
        and want:
      was = (saved_paths or {}).get(field) or runs.resolved(have)
      now = runs.resolved(want)
      if was != now:
        differences.append(f"config.{field}={have!r}, which was {was} (this one: {want!r}, "
                           f"which is {now})")
      continue
    if have != want:
      differences.append(f"config.{field}={have!r} (this one: {want!r})")
  if differences:
    raise checkpoint.CheckpointError(
        f"{workdir}: holds a run with {', '.join(differences)}. Resume with the same settings "
        "or choose a new --workdir.")


@contextlib.contextmanager
def claimed_workdir(workdir: pathlib.Path):
  """Creates `workdir` if needed and holds its lock (`.lock`, an flock the kernel drops when the
  process ends, however it ends) while the block runs. Raises WorkdirError naming the folder if
  it cannot be created or written, or if another run holds it."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    lock = open(workdir / ".lock", "a+")
  except OSError as error:
    raise WorkdirError(f"{workdir}: cannot be used as the run directory "
                       f"({error.strerror or error}); choose another --workdir.") from None
  with lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock.seek(0)
      holder = lock.read().strip() or "?"
      raise WorkdirError(f"{workdir}: another run (process {holder}) is using it; wait for it "
                         "to end or choose another --workdir.") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def write_config(workdir: pathlib.Path, config: dict[str, Any]) -> pathlib.Path:
  """The run's resolved config as `<workdir>/config.json` (written whole or not at all)."""
  path = workdir / "config.json"
  temporary = path.with_suffix(".json.tmp")
  temporary.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  os.replace(temporary, path)
  return path


def diverged_seeds(record: dict[str, Any]) -> list[int]:
  """Seeds of an evaluation record whose updates went non-finite (its `diverged_at`)."""
  return [seed for seed, at in enumerate(record.get("diverged_at") or []) if at is not None]


def final_summary(record: dict[str, Any], unit: str) -> str:
  """The run's last line: every seed's final normalised score and the seeds that diverged."""
  scores = [] if record.get("normalized_scores") is None else list(record["normalized_scores"])
  points = record.get("per_seed") or [{}] * len(scores)
  # Each seed's grid point where the run has a per-seed grid of more than one point.
  labels = ([" (" + " ".join(f"{k}={v}" for k, v in point.items()) + ")" for point in points]
            if len({json.dumps(p, sort_keys=True) for p in points}) > 1 else [""] * len(scores))
  line = "Done. Final normalised scores per seed: " + ", ".join(
      ("n/a" if s is None or not np.isfinite(s) else f"{s:.1f}") + label
      for s, label in zip(scores, labels))
  diverged = diverged_seeds(record)
  if diverged:
    at = record["diverged_at"]
    line += (". Diverged (stopped learning at a non-finite update; scored with their last "
             "finite parameters): " + ", ".join(
                 f"seed {seed} at {unit.replace('_', ' ')} {at[seed]}" for seed in diverged))
  return line


WARMUP_NO_UPDATES = "warmup: no updates yet"


def _no_update_reason(summary: dict[str, np.ndarray], diverged_at) -> str:
  """Why no seed updated in the chunk: "warmup: no updates yet" or "every seed diverged"; ""
  where some seed updated (or the phase counts no updates)."""
  if "updates" not in summary or np.any(np.asarray(summary["updates"]) > 0):
    return ""
  return "every seed diverged" if np.all(diverged_at >= 0) else WARMUP_NO_UPDATES


def _progress_details(phase: Phase, summary: dict[str, np.ndarray],
                      no_update_reason: str) -> str:
  """The progress line's training statistics: those with a finite value for some seed, then
  why there are no losses where no seed updated in the chunk (`_no_update_reason`)."""
  details = [f"{label} {nanmean(summary[key]):.3g}" for label, key in phase.progress
             if np.isfinite(nanmean(summary[key]))]
  if no_update_reason:
    details.append(no_update_reason)
  return " | ".join(details)


def run_phase(phase: Phase, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Runs `phase` to its end in `workdir`, resuming there if it holds a checkpoint.

  Holds the run directory's lock throughout (`claimed_workdir`), writes `config.json` (the
  description's resolved config) and logs it once the run may start or resume there, then runs
  chunks (`chunk_lengths`), evaluating,
  logging and checkpointing between them. Rates and the ETA count execution time only (compile
  time excluded). Returns the last evaluation record, with `diverged_seeds`.

  Of several processes, every one calls this with the same phase; process 0 holds the lock and
  writes the files (the module docstring says who does what). A run that stops (refused, failed
  or interrupted) before writing any result removes what it added (`remove_if_untouched`), and
  the folder too where it created it, so a refused command leaves nothing to clean up.
  """
  workdir = pathlib.Path(workdir)
  before = _entries(workdir) if is_primary() else None
  with claimed_workdir(workdir) if is_primary() else contextlib.nullcontext():
    try:
      checkpoints = checkpoint.RunCheckpoints(workdir, max_to_keep=phase.keep_checkpoints,
                                              step_unit=phase.unit)
      log = metrics_log.MetricsLog(workdir, step_key=phase.unit, write=is_primary(),
                                   device=f"{jax.device_count()} x {jax.devices()[0].device_kind}")
      try:
        return _run_chunks(phase, workdir, checkpoints, log)
      finally:
        checkpoints.close()
        log.close()
    except BaseException:
      if is_primary():
        remove_if_untouched(workdir, before)
      raise


def _entries(workdir: pathlib.Path) -> set[str] | None:
  """The names in `workdir`; None where it does not exist (or cannot be listed)."""
  try:
    return {entry.name for entry in workdir.iterdir()}
  except OSError:
    return None


# What a run writes before its first evaluation: nothing of value (its lock, its config, an empty
# checkpoints/ and an empty metrics.jsonl).
_BEFORE_ANY_RESULT = {".lock", "config.json", "config.json.tmp", checkpoint.CHECKPOINT_SUBDIR,
                      metrics_log.METRICS_FILE}


def remove_if_untouched(workdir: pathlib.Path, before: set[str] | None = None) -> bool:
  """Removes what a run added to `workdir` before writing any result (a refused start, e.g. a
  pretrained agent of other sizes, or Ctrl-C while compiling): of the names not in `before`
  (what was there when it started; None: the folder did not exist), its lock, `config.json`,
  an empty `checkpoints/` and an empty `metrics.jsonl`; then the folder itself where `before` is
  None. Where the directory holds a result (an evaluation in `metrics.jsonl`, a checkpoint) or
  the run added anything else, nothing is touched; names in `before` never are (a file of the
  user's, an earlier run's record). Returns whether it removed what the run added; never
  raises (the run's own error is what the user must see)."""
  try:
    entries = {entry.name: entry for entry in workdir.iterdir()}
    subdir = entries.get(checkpoint.CHECKPOINT_SUBDIR)
    metrics = entries.get(metrics_log.METRICS_FILE)
    added = set(entries) - (before or set())
    if (added - _BEFORE_ANY_RESULT
        or (subdir is not None and (not subdir.is_dir() or any(subdir.iterdir())))
        or (metrics is not None and (not metrics.is_file() or metrics.stat().st_size))):
      return False
    for name in sorted(added):
      if name == checkpoint.CHECKPOINT_SUBDIR:
        entries[name].rmdir()
      else:
        entries[name].unlink()
    if before is None:
      workdir.rmdir()    # fails, and keeps the folder, if something appeared there meanwhile
    return True
  except OSError:
    return False


def _run_chunks(phase: Phase, workdir: pathlib.Path, checkpoints: checkpoint.RunCheckpoints,
                log: metrics_log.MetricsLog) -> dict[str, Any]:
  unit = phase.unit.replace("_", " ")
  def check_resumable(description):
    check_kind(description, phase.description, workdir)
    check_layout(description, workdir)
    phase.check_resumable(description)

  # The newest checkpoint that reads (a damaged one is set aside with a warning).
  resumed = checkpoints.restore_newest_readable(phase.abstract_state, check_resumable)
  latest, state = resumed if resumed is not None else (None, None)
  description = dict(phase.description, layout=layout())
  # Written once the run may go on here (a refused resume leaves the run's record as it was).
  config = phase.description.get("config")
  if config is not None and is_primary():
    path = write_config(workdir, config)
    logging.info("Config (also in %s):\n%s", path, "\n".join(
        f"  {name} = {json.dumps(value)}" for name, value in sorted(config.items())))
  if latest is not None:
    logging.info("Resumed %s at %s %d", workdir, unit, latest)
  else:
    state = phase.init()
  dropped = log.restart_at(latest)
  multihost_utils.sync_global_devices("metrics.jsonl restarted")  # before others read it
  if dropped and latest is None:
    logging.info("%s: dropped %d evaluation record(s) written before the run stopped ahead of "
                 "its first checkpoint; it starts afresh and writes them again", log.path,
                 dropped)
  elif dropped:
    logging.info("%s: dropped %d evaluation record(s) past %s %d, written before the run "
                 "stopped; this run writes them again", log.path, dropped, unit, latest)

  step = phase.step_of(state)
  reported = set(np.flatnonzero(phase.diverged_at(state) >= 0).tolist())

  def evaluate_and_log(state, step, summary):
    results = to_host(phase.evaluate(state))
    returns = np.asarray(results.returns)                        # [seeds, episodes]
    successes = np.asarray(results.successes)
    scores = phase.env_spec.normalized_score(returns, successes)
    diverged_at = phase.diverged_at(state)
    record = {phase.unit: step, "returns": returns.mean(axis=1),
              "normalized_scores": scores.mean(axis=1), "episode_returns": returns,
              "success_rates": successes.mean(axis=1),
              "diverged_at": np.where(diverged_at >= 0, diverged_at, None).tolist(),
              **phase.record_extras}
    fields = {}
    if phase.after_evaluation is not None:
      state, fields = phase.after_evaluation(state)
      record.update(fields)
    record["diverged_seeds"] = diverged_seeds(record)
    if summary:
      record["train"] = dict(summary)
    log.write_evaluation(record)
    scalars = {"eval/normalized_score_mean": nanmean(record["normalized_scores"]),
               "eval/normalized_score_min": float(np.min(record["normalized_scores"])),
               "eval/normalized_score_max": float(np.max(record["normalized_scores"])),
               "eval/return_mean": nanmean(record["returns"]),
               "eval/diverged_seeds": float(len(record["diverged_seeds"]))}
    scalars.update({f"train/{k}": nanmean(v) for k, v in (summary or {}).items()})
    scalars.update({f"eval/{k}_mean": nanmean(v) for k, v in fields.items()})
    scalars.update(metrics_log.point_scalars(record))     # per per_seed grid point, if any
    log.write_scalars(step, scalars)
    return state, record

  records = log.records()
  last_record = records[-1] if records else None     # resumed: the checkpoint's evaluation
  chunk = fitted_chunk(phase.steps_per_chunk, phase.total_steps, phase.eval_interval,
                       phase.checkpoint_interval)
  lengths = chunk_lengths(step, phase.total_steps, chunk, phase.eval_interval,
                          phase.checkpoint_interval)
  ahead = None
  if latest is None:
    # The first chunk's program compiles in the background while the starting policy's
    # evaluation compiles and runs (a cold start's two longest compiles, side by side).
    if phase.compile_ahead is not None and lengths:
      ahead = phase.compile_ahead(state, lengths[0])
    state, last_record = evaluate_and_log(state, step, None)
    logging.info("%s %d: normalised score %.1f (mean of %d seeds; the starting policy)",
                 unit, step, nanmean(last_record["normalized_scores"]), phase.num_seeds)
  if ahead is not None:
    ahead.result()        # before the first chunk's clock starts: compiling is not its time
  if set(lengths) - {phase.steps_per_chunk}:
    logging.info(
        "Chunks of %s %ss (steps_per_chunk %d), so that every evaluation, checkpoint and the "
        "end fall on a chunk's end%s.", ", ".join(map(str, sorted(set(lengths), reverse=True))),
        unit, phase.steps_per_chunk,
        "" if len(set(lengths)) == 1 else "; each distinct length compiles once")

  # The rate shown is the last chunk's execution time only: compiles (logged with their own
  # times) are not what the remaining chunks will cost, and with WSRL's warmup the first chunks
  # skip the update and run many times faster than the rest, so an average since the start
  # would say little. The ETA adds the evaluations still to come at the last one's time; after
  # a warmup chunk it says it waits for the training chunks' rate.
  evaluation_seconds = 0.0
  for length in lengths:
    started = time.time()
    with CompileClock() as compiling:
      state, summary = phase.run(state, length)
      step += length
      diverged_at = phase.diverged_at(state)
    rate = length / max(time.time() - started - compiling.seconds, 1e-9)
    evaluating = step % phase.eval_interval == 0 or step == phase.total_steps
    if evaluating:
      started = time.time()
      with CompileClock() as compiling:
        state, last_record = evaluate_and_log(state, step, summary)
      evaluation_seconds = max(time.time() - started - compiling.seconds, 0.0)
    evaluations_left = (phase.total_steps // phase.eval_interval - step // phase.eval_interval
                        + int(phase.total_steps % phase.eval_interval != 0
                              and step < phase.total_steps))
    for seed in sorted(set(np.flatnonzero(diverged_at >= 0).tolist()) - reported):
      if is_primary():
        logging.warning(
            "Seed %d stopped learning at %s %d: an update produced a non-finite loss or "
            "gradient. Its parameters stay at its last finite update; the other seeds go on "
            "(its losses are logged as NaN from here).", seed, unit, int(diverged_at[seed]))
      reported.add(seed)
    if not evaluating:
      scalars = {f"train/{k}": nanmean(v) for k, v in summary.items()}
      scalars.update(metrics_log.point_scalars({"train": summary, **phase.record_extras}))
      log.write_scalars(step, scalars)
    score = nanmean(last_record["normalized_scores"]) if last_record else float("nan")
    no_update_reason = _no_update_reason(summary, diverged_at)
    details = _progress_details(phase, summary, no_update_reason)
    # A warmup chunk runs many times faster than the training chunks to come: an ETA at its
    # rate would say the run is nearly done.
    eta = ("once updates start" if no_update_reason == WARMUP_NO_UPDATES
           else metrics_log.format_duration((phase.total_steps - step) / max(rate, 1e-9)
                                            + evaluations_left * evaluation_seconds))
    logging.info(
        "%s %d/%d (%.1f%%) | %.0f %ss/s per seed, %.0f over %d seeds | ETA %s | "
        "last eval score %.1f%s", unit, step, phase.total_steps,
        100.0 * step / phase.total_steps, rate, unit, rate * phase.num_seeds, phase.num_seeds,
        eta, score, f" | {details}" if details else "")
    if step % phase.checkpoint_interval == 0 or step == phase.total_steps:
      checkpoints.save(step, state, phase.agent_params(state), description,
                       phase.optimizer_states(state) if phase.optimizer_states else None)

  last_record = last_record or {}
  if last_record:
    last_record.setdefault("diverged_seeds", diverged_seeds(last_record))
    summary_line = final_summary(last_record, phase.unit)
    if is_primary():
      (logging.warning if last_record["diverged_seeds"] else logging.info)(summary_line)
  return last_record


def per_seed_summary(sums: dict[str, Any], count_key: str) -> dict[str, np.ndarray]:
  """Per-seed means of the `*_sum` entries of a chunk's statistics, divided by `count_key`;
  NaN for a seed with a zero count (no update in the chunk: warmup, or a diverged seed), never
  a mean of nothing shown as 0."""
  sums = to_host(sums)
  counts = sums[count_key]
  summary = {}
  for name, value in sums.items():
    if name.endswith("_sum"):
      summary[name[:-4]] = np.where(counts > 0, value / np.maximum(counts, 1), np.nan)
    else:
      summary[name] = value
  return summary

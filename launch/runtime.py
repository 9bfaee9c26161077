"""What the launch entry points share: process-wide JAX settings, how a launcher runs and reports
user errors (`run`), and the training phases' main.

The training phases run as one process or as one of several (`start_distributed`): a process
started by SLURM (`srun`), Open MPI (`mpirun`), on a Cloud TPU pod slice or by Kubernetes, where
JAX's own cluster detection finds more than one process, or one given `--coordinator_address`,
`--num_processes` and `--process_id`, calls `jax.distributed.initialize()` before anything asks
JAX for a device; its seeds then span every process's devices (wsrl_mjx/host_loop.py).

A user error (`wsrl_mjx.errors.UserError`: a bad config value, dataset, checkpoint or run
directory; an unknown flag or one that does not parse; an `app.UsageError`) ends the launcher
with one line on stderr, `error: <message>`, and exit status 2, without a Python stack trace.
`--verbose` (or the environment variable WSRL_MJX_VERBOSE=1) lets it raise with its trace.
"""

import dataclasses
import logging as python_logging
import os
import pathlib
import re
import signal
import sys
import tempfile
import threading

import jax
from absl import app, flags, logging

import envs
from wsrl_mjx import compat
from wsrl_mjx.errors import UserError

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "wsrl_mjx", "jax")
VERBOSE_ENV = "WSRL_MJX_VERBOSE"
USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130   # what a shell reports for a process stopped by SIGINT (128 + 2)

_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Show the Python stack trace of a user error (bad config value, dataset, "
    f"checkpoint, run directory) instead of its one-line message; also {VERBOSE_ENV}=1.")

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_OUR_PACKAGES = ("wsrl_mjx", "launch", "envs", "benchmarks")


def _ours_or_a_warning(record: python_logging.LogRecord) -> bool:
  """Keeps our INFO lines and every library's warnings and errors; drops libraries' INFO chatter
  (orbax's line per save, JAX's "Unable to initialize backend 'tpu'", MJX's "Using JAX default
  device")."""
  if record.levelno >= python_logging.WARNING:
    return True
  try:
    parts = pathlib.Path(record.pathname).resolve().relative_to(_ROOT).parts
  except ValueError:
    return False
  return bool(parts) and parts[0] in _OUR_PACKAGES


def configure(distributed: "DistributedFlags | None" = None) -> None:
  """Sets XLA's CPU flag for jaxlib 0.10 (`compat.configure_xla_cpu`), turns on JAX's persistent
  compilation cache (MJX programs take minutes to compile) and keeps libraries' INFO lines out
  of the log. Call it first in `main`, before anything asks JAX for a device. With
  `distributed` (the training phases), joins the other processes of a multi-process run
  (`start_distributed`); a process other than the first then logs errors only.

  `JAX_COMPILATION_CACHE_DIR` chooses the folder; set it to an empty string to disable caching.
  """
  compat.configure_xla_cpu()
  logging.get_absl_handler().addFilter(_ours_or_a_warning)
  cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_CACHE)
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  if distributed is not None:
    start_distributed(distributed)
  if jax.process_index() > 0:
    logging.set_verbosity(logging.ERROR)
  where = (f" (process {jax.process_index()} of {jax.process_count()}; this one has "
           f"{', '.join(str(d) for d in jax.local_devices())})" if jax.process_count() > 1 else "")
  logging.info("JAX %s on %s%s; compilation cache: %s", jax.__version__,
               ", ".join(str(d) for d in jax.devices()), where, cache_dir or "off")


@dataclasses.dataclass(frozen=True)
class DistributedFlags:
  """The flags of a training launcher that place it among several processes."""
  coordinator_address: flags.FlagHolder
  num_processes: flags.FlagHolder
  process_id: flags.FlagHolder
  local_device_ids: flags.FlagHolder
  timeout: flags.FlagHolder


def define_distributed_flags() -> DistributedFlags:
  """Defines --coordinator_address, --num_processes, --process_id, --local_device_ids and
  --distributed_timeout
  (the training launchers call this once, through `phase_main`)."""
  return DistributedFlags(
      coordinator_address=flags.DEFINE_string(
          "coordinator_address", None, "host:port where process 0 of a multi-process run "
          "listens, with --num_processes and --process_id. Unset: JAX's cluster detection "
          "(SLURM, Open MPI, Cloud TPU, Kubernetes) decides whether this is one of several."),
      num_processes=flags.DEFINE_integer("num_processes", None, "Processes of a multi-process "
                                         "run (with --coordinator_address, --process_id)."),
      process_id=flags.DEFINE_integer("process_id", None, "This process's index, 0 to "
                                      "--num_processes - 1 (process 0 writes the run's files)."),
      local_device_ids=flags.DEFINE_list(
          "local_device_ids", None, "The devices (by local index) this process uses, e.g. "
          "0,1,2,3,4,5,6,7 for one process per 8-GPU node under SLURM, where JAX otherwise gives "
          "each process the one GPU of its SLURM_LOCALID."),
      timeout=flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for every "
                                   "process of a multi-process run to join."))


def cluster_process_count() -> int:
  """How many processes JAX's own cluster detection (`jax.distributed.initialize()` without
  arguments) would join this one with: 1 where it detects no cluster (SLURM's SLURM_NTASKS,
  Open MPI's OMPI_COMM_WORLD_SIZE, a Cloud TPU slice's workers, ...; jax/_src/clusters)."""
  from jax._src import clusters    # JAX's detection itself; there is no public way to ask it
  for cluster in clusters.ClusterEnv._cluster_types:   # noqa: SLF001
    if not cluster.opt_in_only_method and cluster.is_env_present():
      return int(cluster.get_process_count())
  return 1


def start_distributed(distributed: DistributedFlags) -> None:
  """Calls `jax.distributed.initialize` where this process is one of several: given the three
  flags (all or none), or detected by JAX (`cluster_process_count` > 1). Raises UsageError for
  flags that do not fit together. Must run before anything asks JAX for a device."""
  try:
    local = ([int(i) for i in distributed.local_device_ids.value]
             if distributed.local_device_ids.value else None)
  except ValueError:
    raise app.UsageError(f"--local_device_ids={','.join(distributed.local_device_ids.value)}: "
                         "whole numbers, comma-separated.") from None
  given = {"--coordinator_address": distributed.coordinator_address.value,
           "--num_processes": distributed.num_processes.value,
           "--process_id": distributed.process_id.value}
  if any(v is not None for v in given.values()):
    missing = [name for name, value in given.items() if value is None]
    if missing:
      raise app.UsageError(f"{', '.join(missing)}: missing; --coordinator_address, "
                           "--num_processes and --process_id must be given together.")
    count, index = given["--num_processes"], given["--process_id"]
    if count < 1 or not 0 <= index < count:
      raise app.UsageError(f"--process_id={index}: must be between 0 and --num_processes - 1 "
                           f"({count - 1}).")
    if count > 1:
      jax.distributed.initialize(given["--coordinator_address"], count, index,
                                 local_device_ids=local,
                                 initialization_timeout=distributed.timeout.value)
  elif cluster_process_count() > 1:
    jax.distributed.initialize(local_device_ids=local,
                               initialization_timeout=distributed.timeout.value)


def env_spec(name: str, flag: str = "--env") -> envs.EnvSpec:
  """`envs.spec(name)`; an unknown name is a UsageError naming `flag` (with envs' suggestions)."""
  try:
    return envs.spec(name)
  except ValueError as error:
    raise app.UsageError(f"{flag}={name}: {error}") from None


def _verbose(argv) -> bool:
  """--verbose, read from the command line itself where the flags did not parse."""
  if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
    return True
  if flags.FLAGS.is_parsed():
    return _VERBOSE.value
  return any(arg in ("--verbose", "--verbose=true", "--verbose=1") for arg in argv)


def _fail(message: str):
  """Prints `error: <message>` as one line on stderr and exits with status 2."""
  print("error: " + " ".join(message.split()), file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_EXIT_CODE)


def flag_error_message(error: Exception) -> str:
  """One line for a command line that does not parse. An exception inside a config file
  (ml_collections reports it with the traceback as text) becomes its flag and its last line."""
  text = str(error).strip()
  if "Traceback (most recent call last)" in text:
    flag = text.splitlines()[0].split(": Error whilst parsing config file")[0]
    last = re.sub(r"^[\w.]*(Error|Exception): ", "", text.splitlines()[-1].strip())
    return f"{flag}: {last}"
  if isinstance(error, (KeyError, AttributeError)):
    # ml_collections, for a --config.<name> it does not have: repr("'name'\nDid you mean ...?").
    field = re.search(r"\w+", text)
    hint = re.search(r"Did you mean .*?\?", text)
    return (f"--config.{field.group(0) if field else '?'}: no such config field."
            f"{' ' + hint.group(0) if hint else ''}")
  return text


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # noqa: BLE001 (anything failing here comes from the command line)
    if _verbose(argv):
      raise
    _fail(flag_error_message(error))


def check_new_file(path: str, overwrite: bool, flag: str = "--output") -> None:
  """Refuses (UserError) to write `path` where something is there already, unless `overwrite`
  (the launcher's --overwrite): e.g. a dataset that a pretraining was made from; and where it
  could not be written (`check_can_write`), before any work is done."""
  if not path.strip():
    raise UserError(f"{flag}=: names no file; give the file to write")
  if os.path.isdir(path):
    raise UserError(f"{flag}={path}: is a folder; give the file to write")
  if os.path.lexists(path) and not overwrite:
    raise UserError(f"{flag}={path}: exists; pass --overwrite to replace it, or choose "
                    "another file")
  check_can_write(os.path.dirname(os.path.abspath(path)), f"{flag}={path}")


def check_can_write(folder: str | os.PathLike, what: str) -> None:
  """Refuses (UserError, starting with `what`) where nothing could be written in `folder`
  (created later where missing): its nearest existing ancestor is not a folder, or a file
  cannot be made there (tried, then removed: root passes permission checks, not /proc).
  Nothing is left behind."""
  ancestor = pathlib.Path(folder).absolute()
  while not ancestor.exists() and ancestor != ancestor.parent:
    ancestor = ancestor.parent
  if not ancestor.is_dir():
    raise UserError(f"{what}: {ancestor} is a file, so no folder can be made under it")
  try:
    handle, probe = tempfile.mkstemp(prefix=".wsrl_mjx_write_check.", dir=ancestor)
  except OSError as error:
    raise UserError(f"{what}: cannot write in {ancestor} ({error.strerror or error})") from None
  os.close(handle)
  os.remove(probe)


def check_out_folder(out: str, what: str, example: str, flag: str = "--out") -> None:
  """Refuses (UserError, one line naming `flag`) an empty folder flag, which would be the
  current folder, a file, and a folder where nothing can be written (`check_can_write`: under
  /proc, read-only), before any work. `what`: what is written there ("the report");
  `example`: a folder to suggest."""
  if not out.strip():
    raise UserError(f"{flag}=: names no folder; give the folder to write {what} into "
                    f"(e.g. {flag}={example})")
  if os.path.isfile(out):
    raise UserError(f"{flag}={out}: is a file, not a folder; give the folder to write {what} "
                    "into")
  check_can_write(out, f"{flag}={out}")


def check_workdir_named(workdir: str | None, flag: str = "--workdir") -> None:
  """An empty run directory flag would run in the current folder (from the repository root:
  into the repository and its shipped checkpoints/): UsageError."""
  if workdir is not None and not workdir.strip():
    raise app.UsageError(f"{flag}=: names no folder; give the run directory "
                         f"(e.g. {flag}=runs/my-run)")


class Interrupted(KeyboardInterrupt):
  """Ctrl-C, with what the user can do next as its message."""


def handle_interrupts() -> None:
  """SIGINT (Ctrl-C) is never lost. Python's handler raises KeyboardInterrupt in whatever frame
  runs next, and while JAX traces a program that is often its garbage-collector callback
  (`jax._src.lib._xla_gc_callback`); Python prints an exception raised in a gc callback, a
  `__del__` or a weakref callback as "Exception ignored in ..." and drops it: a Ctrl-C 0.2-0.25 s
  after the config line was ignored in 5 of 5 tries (warm caches, 2-core CPU) and the run went on
  to its end. Here `sys.unraisablehook` takes such a dropped KeyboardInterrupt and sends SIGINT
  again 50 ms later, once the finalizer is over; other unraisable exceptions go to the hook
  there was. Python's SIGINT handler itself is left as it is, so a SIGINT the shell set to be
  ignored stays ignored."""
  if getattr(sys.unraisablehook, "resends_interrupts", False):
    return
  previous = sys.unraisablehook

  def resend_a_dropped_interrupt(unraisable):
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
      again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
      again.daemon = True
      again.start()
      return
    previous(unraisable)

  resend_a_dropped_interrupt.resends_interrupts = True
  sys.unraisablehook = resend_a_dropped_interrupt


def run(main) -> None:
  """`app.run(main)`, with user errors and command lines that do not parse reported as one line
  (`error: ...`, exit status 2), and Ctrl-C as one line (`interrupted`, with an `Interrupted`'s
  message; exit status 130; `handle_interrupts`), unless `--verbose`."""
  handle_interrupts()

  def guarded(argv):
    try:
      return main(argv)
    except (UserError, app.UsageError) as error:
      if _verbose(argv):
        raise
      _fail(str(error))
    except KeyboardInterrupt as interrupt:
      if _verbose(argv):
        raise
      print(f"interrupted{f': {interrupt}' if str(interrupt) else ''}", file=sys.stderr,
            flush=True)
      # Out at once, without finalising the interpreter: stopped while XLA compiles (the
      # interrupted compile, or one ahead in the background), its own threads still run, and
      # tearing Python down under them segfaulted (exit -11 after the line above, in 4 of 6
      # interrupts during the first compile on the 2-core CPU). The run's files were closed as
      # the interrupt left them (run_phase's and the writers' `finally` blocks).
      logging.flush()
      sys.stdout.flush()
      os._exit(INTERRUPTED_EXIT_CODE)
  app.run(guarded, flags_parser=_parse_flags)


def phase_main(train_and_evaluate, config_flag, workdir_flag, config_of=None):
  """The absl `main` of a training phase's launcher (launch/pretrain.py, launch/finetune.py):
  `configure()` (joining the other processes of a multi-process run: the flags
  `define_distributed_flags` adds), then `train_and_evaluate(config, workdir)` with the flags'
  values (which logs the final scores and the seeds that diverged). `config_of()`, where
  given, makes the config from the flags (default: the config flag's value)."""
  distributed = define_distributed_flags()

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
      config_flag.value.to_dict()   # ml_collections defers a file's load error to a use
    except OSError as error:
      raise app.UsageError(f"--config: {str(error).strip().splitlines()[-1].strip()}") from None
    check_workdir_named(workdir_flag.value)
    configure(distributed)
    config = config_of() if config_of else config_flag.value
    try:
      train_and_evaluate(config, workdir_flag.value)
    except KeyboardInterrupt:
      raise Interrupted(_after_interrupt(workdir_flag.value)) from None
  return main


def _after_interrupt(workdir: str) -> str:
  """What the same command does after Ctrl-C stopped a run in `workdir`."""
  from wsrl_mjx import metrics_log, runs
  path = pathlib.Path(workdir)
  steps = runs.finished_checkpoint_steps(path)
  if steps:
    return f"the same command resumes {workdir} from its last checkpoint (step {steps[-1]})"
  if not any((path / name).exists() for name in ("config.json", metrics_log.METRICS_FILE)):
    # Stopped before any result: run_phase removed what it had written.
    return f"nothing was written; the same command starts the run in {workdir} afresh"
  return f"no checkpoint yet; the same command starts the run in {workdir} afresh"

"""The cells of a sweep (`launch/sweep.py`): a grid file expanded into `launch.finetune` commands,
the sweep folder's files, one cell run and its status recorded, cells run by submitit's
LocalExecutor. No flags are defined here (the jobs and the tests import it).

A grid file (`.json`, or `.py` with `get_grid()` returning the same dict) names:

- `config`: the fine-tuning config file (`launch/configs/finetune.py`; `:<env>` is added);
- `envs`: env names, a list, or {family: [names]} (or {family: {"envs": [...], "flags": {...},
  "vars": {...}}} with flags and template values of that family);
- `methods`: {name: {"flags": {...}, "vars": {...}, "per_seed": {ablation: spec}}}: a cell per
  env and method, and one more per `per_seed` ablation (its spec goes to `--config.per_seed`:
  that many seeds per grid point in one program). An ablation may also be
  {"per_seed": spec, "flags": {...}}, flags of its cell only: e.g. its own `seed`, so that the
  point it shares with the method's plain cell (WSRL's warmup_steps=5000) draws other random
  numbers than the plain cell's seeds of the same index, rather than repeating them;
- `flags` (optional): `--config.<field>` values of every cell; `vars` (optional): template values.

A cell's flags are the grid's, its family's, its method's and its ablation's (`per_seed` and
its flags), in that order (later ones win). String values are templates: `{env}`, `{family}`,
`{method}`, `{ablation}` and any name of the `vars` of the grid, the family and the method (e.g.
`"pretrained": "runs/pretrain/{env}-{algo}"`). Names and values go to `launch.finetune` as they
are, after a check (`check_flags`, before anything is written or run, `--dry_run` too) that
the config file exists, that each name is a field of the config it gives the cell's env and each
value parses for that field's type (the parsing `launch.finetune` does) and lies in its range
(`configs.check_field_rules`), and that a `per_seed` spec parses; a cell that fails it refuses the grid in one line naming the grid file, the cell and
the field. Everything else `launch.finetune` checks when the cell runs (a
`pretrained` checkpoint, `num_seeds` against the devices and the per-seed grid's points):
`--config.method` and envs this checkout does not have fail their cell only, with its error line
in the status (a cell of an env this checkout does not have is not checked beforehand).

A grid may change between runs of one sweep folder, for cells that have not started: a cell
pending, or failed (or interrupted) without a run directory, takes the grid's new command
(launch.sweep lists such cells). A cell that has started (done, running, or failed or
interrupted with a run directory) keeps the command `sweep.json` records: a grid that gives it
another is refused (`check_unchanged`), naming the cell and the flags that differ, before
anything is written. `--resubmit_failed --grid=FIXED` is the exception: the failed and
interrupted cells it reruns take that grid's commands (the way to repair a failed cell), and the
cells done or running keep theirs.

The sweep folder (`--out`) holds `sweep.json` (every cell: name, env, method, ablation, run
directory, command), `runs/<env>/<method>[-<ablation>]/` (each cell's run directory: a cell run
again resumes from its checkpoint), `status/<cell>.json` (state `running`, `done`, `failed` or
`interrupted` (Ctrl-C: the same command resumes it), exit code, the error line), `failed.txt`
(the failed cells, one per line, with their error), `logs/<cell>.log` (each attempt's output),
`submitit/` and `slurm_array.sh`.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import importlib.util
import json
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from typing import Any

from wsrl_mjx import runs
from wsrl_mjx.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRID_KEYS = {"config", "envs", "methods", "flags", "vars"}
METHOD_KEYS = {"flags", "vars", "per_seed"}
ABLATION_KEYS = {"per_seed", "flags"}
FAMILY_KEYS = {"envs", "flags", "vars"}
DONE, FAILED, RUNNING, INTERRUPTED = "done", "failed", "running", "interrupted"
INTERRUPTED_EXIT_CODES = (130, -signal.SIGINT)   # launch/runtime.py's exit status after Ctrl-C
RESUME_NOTE = "stopped by Ctrl-C; the same launch.sweep command resumes it"


class GridError(UserError):
  """A grid file that cannot be expanded, naming the file and the field."""


@dataclasses.dataclass(frozen=True)
class Cell:
  name: str                 # <env>/<method>[-<ablation>], also its run directory under runs/
  env: str
  family: str
  method: str
  ablation: str             # "" without a per-seed ablation
  config: str               # the config file
  flags: dict[str, Any]     # --config.<field> values

  def workdir(self, sweep: pathlib.Path) -> pathlib.Path:
    return sweep / "runs" / self.name

  def command(self, sweep: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "launch.finetune", f"--config={self.config}:{self.env}",
            f"--workdir={self.workdir(sweep)}", *self.config_flags()]

  def config_flags(self) -> list[str]:
    """The cell's `--config.<field>=<value>` arguments."""
    return [f"--config.{field}={flag_value(value)}" for field, value in self.flags.items()]


def plural(count: int, noun: str = "cell") -> str:
  """`1 cell`, `2 cells`."""
  return f"{count} {noun}{'' if count == 1 else 's'}"


def flag_value(value) -> str:
  """A config value as ml_collections parses it from a command line."""
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (list, tuple)):
    return "(" + ",".join(map(str, value)) + ")"
  return str(value)


def load_grid(path: str | pathlib.Path) -> dict[str, Any]:
  """The grid dict of a .json file or of a .py file's `get_grid()`; GridError naming the file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise GridError(f"--grid={path}: no such file")
  if path.suffix == ".json":
    try:
      grid = json.loads(path.read_text())
    except json.JSONDecodeError as error:
      raise GridError(f"{path}: not valid JSON ({error})") from None
  elif path.suffix == ".py":
    spec = importlib.util.spec_from_file_location(f"_grid_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
      spec.loader.exec_module(module)
      if not hasattr(module, "get_grid"):
        raise GridError(f"{path}: defines no get_grid()")
      grid = module.get_grid()
    except GridError:
      raise
    except Exception as error:   # the user's code: its error, in one line, naming the file
      if isinstance(error, SyntaxError):
        raise GridError(f"{path}, line {error.lineno}: SyntaxError: {error.msg}") from None
      raise GridError(f"{path}: {type(error).__name__}: {error}") from None
  else:
    raise GridError(f"--grid={path}: a .json or .py file, please")
  if not isinstance(grid, dict):
    raise GridError(f"{path}: the grid must be a dict, got {type(grid).__name__}")
  return grid


def _mapping(value, where: str, keys: set[str] | None = None) -> dict:
  if value is None:
    return {}
  if not isinstance(value, dict):
    raise GridError(f"{where}: must be a dict, got {type(value).__name__}")
  unknown = set(value) - keys if keys is not None else set()
  if unknown:
    raise GridError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(keys)}")
  return value


def _families(envs, where: str) -> list[tuple[str, str, dict, dict]]:
  """`envs` -> [(env, family, family flags, family vars)] in order."""
  if isinstance(envs, list):
    return [(env, "", {}, {}) for env in envs]
  if not isinstance(envs, dict):
    raise GridError(f"{where}: envs: must be a list of env names or a dict {{family: [names]}}, "
                    f"got {type(envs).__name__}")
  rows = []
  for family, entry in _mapping(envs, f"{where}: envs").items():
    if isinstance(entry, list):
      entry = {"envs": entry}
    entry = _mapping(entry, f"{where}: envs.{family}", FAMILY_KEYS)
    if not isinstance(entry.get("envs"), list) or not entry["envs"]:
      raise GridError(f"{where}: envs.{family} must list env names")
    rows += [(env, family, _mapping(entry.get("flags"), f"{where}: envs.{family}.flags"),
              _mapping(entry.get("vars"), f"{where}: envs.{family}.vars"))
             for env in entry["envs"]]
  return rows


def _filled(value, names: dict[str, Any], where: str):
  if not isinstance(value, str):
    return value
  try:
    return value.format_map(names)
  except (KeyError, IndexError, ValueError) as error:
    raise GridError(f"{where}: {value!r} names {error} that no vars define; known: "
                    f"{', '.join(sorted(names))}") from None


def _ablation_flags(spec, where: str) -> dict[str, Any]:
  """A per-seed ablation's flags: {"per_seed": spec} for a spec string, else the entry's
  `per_seed` with its `flags` (which may not set `per_seed` again)."""
  if isinstance(spec, str):
    return {"per_seed": spec}
  if not isinstance(spec, dict):
    raise GridError(f"{where}: a grid spec string or {{\"per_seed\": spec, \"flags\": {{...}}}}"
                    f", got {type(spec).__name__}")
  entry = _mapping(spec, where, ABLATION_KEYS)
  if not isinstance(entry.get("per_seed"), str) or not entry["per_seed"]:
    raise GridError(f"{where}: 'per_seed' must be a grid spec such as \"warmup_steps=0,5000\"")
  flags = _mapping(entry.get("flags"), f"{where}.flags")
  if "per_seed" in flags:
    raise GridError(f"{where}.flags: set per_seed beside flags, not in them")
  return {**flags, "per_seed": entry["per_seed"]}


def expand(grid: dict[str, Any], where: str = "grid") -> list[Cell]:
  """Every cell of `grid` (envs x methods x (no ablation + the method's per-seed ablations)),
  in that order. Raises GridError naming `where` and the field of a grid that does not fit the
  format (the module docstring); cell names are checked to be unique."""
  _mapping(grid, where, GRID_KEYS)
  for key in ("config", "envs", "methods"):
    if not grid.get(key):
      raise GridError(f"{where}: '{key}' is missing")
  config = str(grid["config"])
  common = _mapping(grid.get("flags"), f"{where}: flags")
  common_vars = _mapping(grid.get("vars"), f"{where}: vars")
  methods = _mapping(grid["methods"], f"{where}: methods")
  cells, names = [], set()
  for env, family, family_flags, family_vars in _families(grid["envs"], where):
    for method, entry in methods.items():
      entry = _mapping(entry, f"{where}: methods.{method}", METHOD_KEYS)
      ablations = {"": None, **_mapping(entry.get("per_seed"), f"{where}: methods.{method}"
                                        ".per_seed")}
      for ablation, spec in ablations.items():
        names_here = {**common_vars, **family_vars,
                      **_mapping(entry.get("vars"), f"{where}: methods.{method}.vars"),
                      "env": env, "family": family, "method": method, "ablation": ablation}
        values = {**common, **family_flags,
                  **_mapping(entry.get("flags"), f"{where}: methods.{method}.flags")}
        if spec is not None:
          values.update(_ablation_flags(spec, f"{where}: methods.{method}.per_seed.{ablation}"))
        values = {field: _filled(value, names_here, f"{where}: {env} {method} {field}")
                  for field, value in values.items()}
        name = f"{env}/{method}" + (f"-{ablation}" if ablation else "")
        if name in names:
          raise GridError(f"{where}: two cells are named {name}")
        names.add(name)
        cells.append(Cell(name=name, env=env, family=family, method=method, ablation=ablation,
                          config=config, flags=values))
  return cells


def check_flags(cells: list[Cell], where: str = "grid") -> None:
  """Refuses (GridError naming `where`, the cell and the field) a cell whose config file does not
  exist, whose `--config.<field>` names no field of the config its file gives its env, whose
  value does not parse for the field's type, or whose `per_seed` spec does not parse
  (`per_seed.parse_grid`). The fields are parsed as `launch.finetune` parses them (ml_collections'
  config flag, `runtime.flag_error_message`), without JAX compiling anything. A cell of an env
  this checkout does not have is left to fail on its own when it runs."""
  import envs
  from absl import flags as absl_flags
  from ml_collections import config_flags

  from launch.runtime import flag_error_message
  from wsrl_mjx import configs, per_seed
  for config in dict.fromkeys(cell.config for cell in cells):
    if not (ROOT / config).is_file():
      raise GridError(f"{where}: config: {config}: no such file (a path from {ROOT})")
  for cell in cells:
    try:
      envs.spec(cell.env)
    except ValueError:
      continue               # fails its own cell when it runs (the module docstring)
    argv = ["launch.finetune", f"--config={ROOT / cell.config}:{cell.env}", *cell.config_flags()]
    values = absl_flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    try:
      with warnings.catch_warnings():   # ml_collections loads the file with load_module()
        warnings.simplefilter("ignore", DeprecationWarning)
        values(argv)
        config = values["config"].value
    except Exception as error:  # noqa: BLE001 (the cell's flags, or its config file, as parsed)
      message = flag_error_message(error)
      raise GridError(f"{where}: cell {cell.name}: {message.removeprefix('flag ')}") from None
    try:
      per_seed.parse_grid(config.get("per_seed", "") or "")
      configs.check_field_rules(config)      # value ranges, e.g. actor_hidden_sizes=("64x64",)
    except UserError as error:
      raise GridError(f"{where}: cell {cell.name}: {error}") from None


def _flag_values(command: list[str]) -> dict[str, str]:
  """A cell's command (after `python -m launch.finetune`) as {--name: value}."""
  return dict(argument.partition("=")[::2] for argument in command[3:])


_PATH_FLAGS = tuple(f"--config.{field}" for field in runs.PATH_FIELDS)


def command_differences(old: list[str], new: list[str]) -> list[str]:
  """`--name=old -> new` for each flag whose value the two commands of a cell differ in
  (`(unset)` for one that only one of them has). Neither the Python executable nor `--workdir`
  (the cell's name under the sweep folder, which may have moved) is compared; paths
  (`runs.PATH_FIELDS`) are compared by where they lead from the repository's root."""
  before, after = _flag_values(old), _flag_values(new)
  for values in (before, after):     # paths as where they lead (cells run from ROOT)
    for name in _PATH_FLAGS:
      if values.get(name):
        values[name] = runs.resolved(values[name], ROOT)
  names = [name for name in dict.fromkeys([*after, *before]) if name != "--workdir"]
  return [f"{name}={before.get(name, '(unset)')} -> {after.get(name, '(unset)')}"
          for name in names if before.get(name) != after.get(name)]


def has_started(entry: dict[str, Any], record: dict[str, Any]) -> bool:
  """Whether a cell (its `sweep.json` entry and status record) has started: done, running, or
  failed or interrupted with a run directory (a run stopped before writing any result removes
  the directory it made)."""
  return record["state"] in (DONE, RUNNING) or pathlib.Path(entry["workdir"]).is_dir()


def check_unchanged(sweep: pathlib.Path, cells: list[Cell], where: str = "grid",
                    may_change: set[str] | frozenset = frozenset()) -> list[str]:
  """Refuses (GridError, one line naming the sweep, the cell and the flags that differ) a grid
  that gives a cell of `sweep` that has started (`has_started`) another command than
  `sweep.json` records for it, unless the cell is in `may_change`. Returns the names of the
  cells whose command it changes that may take it (for launch.sweep to list). Writes nothing."""
  recorded = {c["name"]: c for c in read_manifest(sweep, missing_ok=True).get("cells", [])}
  if not any(cell.name in recorded for cell in cells):
    return []
  states = cell_states(sweep)
  changing, refused = [], []
  for cell in cells:
    entry = recorded.get(cell.name)
    differences = entry and command_differences(entry["command"], cell.command(sweep))
    if not differences:
      continue
    if cell.name not in may_change and has_started(entry, states[cell.name]):
      refused.append((cell.name, states[cell.name]["state"], differences))
    else:
      changing.append(cell.name)
  if refused:
    name, state, differences = refused[0]
    others = (f" (and {plural(len(refused) - 1, 'other started cell')}: "
              f"{', '.join(n for n, _, _ in refused[1:4])}{', ...' if len(refused) > 4 else ''})"
              if len(refused) > 1 else "")
    raise GridError(
        f"{where}: gives cell {name} of the sweep {sweep} another command than the one it "
        f"started with ({state}): {'; '.join(differences)}{others}. A started cell keeps its "
        f"settings: for the new grid give a new --out; to go on with {sweep}, put the grid "
        "back" + ("" if state in (DONE, RUNNING) else
                  " (--resubmit_failed --grid=FILE reruns the failed and interrupted cells with "
                  "that grid's commands)")
        + ". Nothing was written.")
  return changing


# --- the sweep folder -------------------------------------------------------------------------

def _file_name(cell_name: str) -> str:
  return cell_name.replace("/", "__")


def status_path(sweep: pathlib.Path, cell_name: str) -> pathlib.Path:
  return sweep / "status" / f"{_file_name(cell_name)}.json"


def write_json(path: pathlib.Path, value) -> None:
  """Written whole or not at all (a reader never sees half a file)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  temporary.write_text(json.dumps(value, indent=2) + "\n")
  os.replace(temporary, path)


def save_manifest(sweep: pathlib.Path, cells: list[Cell], grid: str | None) -> None:
  """`sweep.json`: the cells (merged by name with those already there) and their commands."""
  manifest = read_manifest(sweep, missing_ok=True)
  entries = {c["name"]: c for c in manifest.get("cells", [])}
  for cell in cells:
    entries[cell.name] = dict(dataclasses.asdict(cell), workdir=str(cell.workdir(sweep)),
                              command=cell.command(sweep))
  write_json(sweep / "sweep.json", {"grid": grid or manifest.get("grid"),
                                    "cells": list(entries.values())})


def read_manifest(sweep: pathlib.Path, missing_ok: bool = False) -> dict[str, Any]:
  path = sweep / "sweep.json"
  if not path.is_file():
    if missing_ok:
      return {}
    raise UserError(f"--out={sweep}: holds no sweep.json; start the sweep with --grid=FILE")
  return json.loads(path.read_text())


def _lock_held(workdir: pathlib.Path) -> bool:
  """Whether a run holds `workdir`'s lock now (host_loop.claimed_workdir)."""
  try:
    with open(workdir / ".lock", "a+") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
      fcntl.flock(lock, fcntl.LOCK_UN)
      return False
  except BlockingIOError:
    return True
  except OSError:
    return False


def cell_states(sweep: pathlib.Path) -> dict[str, dict[str, Any]]:
  """Every cell of `sweep.json` -> its status record ({"state": "pending"} before its first
  attempt). A cell recorded as running whose run directory nobody holds (killed before it could
  record its end) counts as failed."""
  states = {}
  for entry in read_manifest(sweep)["cells"]:
    path = status_path(sweep, entry["name"])
    record = json.loads(path.read_text()) if path.is_file() else {"state": "pending"}
    if record["state"] == RUNNING and not _lock_held(pathlib.Path(entry["workdir"])):
      record = dict(record, state=FAILED,
                    error=record.get("error") or "stopped without recording its end (killed?)")
    states[entry["name"]] = record
  return states


def report_states(sweep: pathlib.Path) -> list[str]:
  """Prints one line per cell (a failed cell's error; an interrupted cell's `RESUME_NOTE`) and
  writes `failed.txt`; returns the failed cells' names (launch.sweep --status then exits 1)."""
  states = cell_states(sweep)
  for name, record in states.items():
    note = {FAILED: record.get("error"), INTERRUPTED: RESUME_NOTE}.get(record["state"])
    print(f"{record['state']:>8}  {name}{f'  {note}' if note else ''}")
  failed = [name for name, record in states.items() if record["state"] == FAILED]
  (sweep / "failed.txt").write_text(
      "".join(f"{name}\t{states[name].get('error', '')}\n" for name in failed))
  done = sum(record["state"] == DONE for record in states.values())
  interrupted = sum(record["state"] == INTERRUPTED for record in states.values())
  print(f"{done} of {plural(len(states))} done, {len(failed)} failed (listed in "
        f"{sweep / 'failed.txt'})" + (f", {interrupted} interrupted (the same command resumes "
                                      f"{'it' if interrupted == 1 else 'them'})"
                                      if interrupted else "") + ".")
  return failed


def error_line(text: str) -> str:
  """The launcher's `error: ...` line, else the output's last line."""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error: ")]
  return (errors or lines or [""])[-1][:500]


def run_cell(sweep: str, name: str, cuda_visible_devices: str | None = None) -> int:
  """Runs cell `name` of `sweep` (its command from sweep.json) to its end, appending its output
  to `logs/<cell>.log` and recording `status/<cell>.json` (with this process's id while it
  runs); returns its exit status and raises CellFailed (a RuntimeError, which marks the submitit
  job failed) where it failed. Of a cell's several SLURM processes only the first records the status.
  `cuda_visible_devices`: the GPUs the sweep was started with (submitit's LocalExecutor hides
  them from its jobs).

  The cell's run has a process group of its own: a SIGINT (Ctrl-C in the sweep's terminal, or
  launch.sweep passing its own on) reaches it once, from here, also where it arrives before the
  run has started (then the run does not start). A run stopped so (exit status 130, as
  launch/runtime.py's `run` ends) is recorded `interrupted`, not failed: the same command resumes
  it. SIGTERM (SLURM's time limit, a cancelled job) is passed on as it comes."""
  sweep = pathlib.Path(sweep)
  entry = next((c for c in read_manifest(sweep)["cells"] if c["name"] == name), None)
  if entry is None:
    raise UserError(f"{sweep / 'sweep.json'}: has no cell {name}")
  environment = dict(os.environ)
  if os.environ.get("SUBMITIT_EXECUTOR") == "local":
    environment.pop("CUDA_VISIBLE_DEVICES", None)
    if cuda_visible_devices is not None:
      environment["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
  records = os.environ.get("SLURM_PROCID", "0") == "0"
  path = status_path(sweep, name)
  previous = json.loads(path.read_text()) if path.is_file() else {}
  record = {"cell": name, "state": RUNNING, "attempt": previous.get("attempt", 0) + 1,
            "host": socket.gethostname(), "pid": os.getpid(), "started": _now(),
            "command": entry["command"]}
  run = _StoppableRun()
  handlers = {signum: signal.signal(signum, run.stop) for signum in (signal.SIGINT,
                                                                    signal.SIGTERM)}
  # run_local's job controllers start with SIGINT blocked (and their jobs inherit that): a
  # SIGINT held back until now arrives here, and the run does not start.
  signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
  try:       # the handlers stay until the cell's end is recorded
    if records:
      write_json(path, record)
    log = sweep / "logs" / f"{_file_name(name)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as output:
      output.write(f"=== attempt {record['attempt']} on {record['host']} at "
                   f"{record['started']}: {shlex.join(entry['command'])}\n")
      output.flush()
      code = run.start(entry["command"], cwd=ROOT, env=environment, stdout=output,
                       stderr=subprocess.STDOUT)
    if code != 0 and (run.interrupted or code in INTERRUPTED_EXIT_CODES):
      state, error = INTERRUPTED, ""
    else:
      state = DONE if code == 0 else FAILED
      error = "" if code == 0 else (error_line(log.read_text().rsplit("=== attempt", 1)[-1])
                                    or f"exit status {code}")
    if records:
      write_json(path, dict(record, state=state, exit_code=code, ended=_now(), error=error))
  finally:
    for signum, handler in handlers.items():
      signal.signal(signum, handler)
  if state == FAILED:
    raise CellFailed(f"cell {name} failed (exit status {code}; its output: {log}): "
                     f"{error.removeprefix('error: ')}")
  return code


class CellFailed(RuntimeError):
  """A cell's run ended with a non-zero exit status other than an interruption's. A
  RuntimeError, so that submitit marks the job failed; `launch.sweep --run_cell` prints it as one
  line."""


class _StoppableRun:
  """A cell's run (`start`), and the signal handler (`stop`) that passes SIGTERM on to it and
  SIGINT once: the first SIGINT, also one that came before the run started (which then does
  not start; `start` returns 130)."""

  def __init__(self):
    self.process = None
    self.interrupted = False     # a SIGINT came
    self.passed_on = False       # and went to the run

  def stop(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      self.interrupted = True
      if self.process is None or self.passed_on:
        return
      self.passed_on = True
    if self.process is not None:
      self.process.send_signal(signum)

  def start(self, command, **popen) -> int:
    if self.interrupted:
      return INTERRUPTED_EXIT_CODES[0]
    self.process = subprocess.Popen(command, start_new_session=True, **popen)
    if self.interrupted and not self.passed_on:    # a SIGINT while it was being started
      self.passed_on = True
      self.process.send_signal(signal.SIGINT)
    return self.process.wait()


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- schedulers -------------------------------------------------------------------------------

def _read_record(sweep: pathlib.Path, name: str) -> dict[str, Any]:
  path = status_path(sweep, name)
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {"cell": name}


def run_local(sweep: pathlib.Path, names: list[str], max_parallel: int, timeout_min: int,
              stop_wait_s: float = 60.0) -> None:
  """Runs the cells through submitit's LocalExecutor, at most `max_parallel` at once.

  Ctrl-C (KeyboardInterrupt here) stops the running cells (`stop_running`, waiting up to
  `stop_wait_s` for them to record it) and raises KeyboardInterrupt saying which stopped and
  that the same command resumes them. submitit's job controllers never take SIGINT (its own
  handler would print a traceback and kill the cell's job before it records its end): they
  start with it blocked, a mask their jobs inherit and `run_cell` lifts, so each cell's job
  takes the SIGINT itself. Blocked rather than ignored here while a cell is handed over, a
  Ctrl-C in that moment is taken once the cell counts as running, not lost."""
  import submitit
  executor = submitit.LocalExecutor(folder=sweep / "submitit" / "%j")
  executor.update_parameters(timeout_min=timeout_min)
  # The jobs import this module: the repository must be on their path.
  os.environ["PYTHONPATH"] = os.pathsep.join(
      filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
  gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
  waiting, running = list(names), []
  try:
    while waiting or running:
      while waiting and len(running) < max(1, max_parallel):
        name = waiting.pop(0)
        print(f"started   {name}", flush=True)
        attempt = _read_record(sweep, name).get("attempt", 0)
        # While the cell is handed over, SIGINT is blocked in this thread (submitit's job
        # controller inherits the mask) and noted where another thread takes it; either way
        # the Ctrl-C is taken here once the cell counts as running.
        noted = []
        handler = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
          running.append((name, executor.submit(run_cell, str(sweep), name, gpus), attempt))
        finally:
          signal.signal(signal.SIGINT, handler)
          signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if noted and callable(handler):
          handler(signal.SIGINT, None)      # Python's: KeyboardInterrupt
      time.sleep(0.5)
      for name, job, attempt in [r for r in running if r[1].done()]:
        running.remove((name, job, attempt))
        record = _read_record(sweep, name)
        if record.get("state") not in (DONE, FAILED, INTERRUPTED):  # the job died first
          error = job.exception()
          reason = (str(error).strip().splitlines() or ["?"])[-1] if error else "?"
          record = dict(record, state=FAILED, ended=_now(),
                        error=f"its submitit job ended without recording the cell's end: "
                        f"{reason}")
          write_json(status_path(sweep, name), record)
        print(f"{record['state']:>8}  {name}", flush=True)
  except KeyboardInterrupt:
    raise KeyboardInterrupt(stop_running(sweep, running, stop_wait_s)) from None


def stop_running(sweep: pathlib.Path, running: list, wait_s: float) -> str:
  """After Ctrl-C: sends SIGINT once to each running cell's job (`run_cell` passes it on to the
  run; it may have had it from the terminal already, and takes one only), waits up to `wait_s`
  (a second Ctrl-C ends the wait) for the jobs to end, and says which cells stopped."""
  signalled, deadline = set(), time.monotonic() + wait_s
  try:
    while time.monotonic() < deadline and any(not job.done() for _, job, _ in running):
      for name, job, attempt in running:
        record = _read_record(sweep, name)
        if (name not in signalled and not job.done() and record.get("state") == RUNNING
            and record.get("attempt", 0) > attempt and record.get("pid")):
          signalled.add(name)
          try:
            os.kill(record["pid"], signal.SIGINT)
          except OSError:
            pass
      time.sleep(0.1)
  except KeyboardInterrupt:
    pass
  # A further Ctrl-C from here on would cut the cells' records short: ignored while they are made.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  if not running:
    return f"no cell was running; the same command runs the sweep's cells ({sweep})"
  parts = []
  for name, job, _ in running:
    record = _read_record(sweep, name)
    if job.done() and record.get("state") == RUNNING:   # its job ended before it could say
      record = dict(record, state=INTERRUPTED, ended=_now())
      write_json(status_path(sweep, name), record)
    parts.append(f"{name} {record.get('state') if job.done() else 'still stopping'}")
  return (f"{', '.join(parts)}; the same command resumes the sweep's unfinished cells "
          f"(--status shows each cell's state)")

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
its flags), in that order (later ones win). String values are templates: `{env}`, `{family}`, `{method}`,
`{ablation}` and any name of the `vars` of the grid, the family and the method (e.g.
`"pretrained": "runs/pretrain/{env}-{algo}"`). Names and values go to `launch.finetune` as they
are: `launch.finetune` checks them (`--config.method` and envs this checkout does not have
fail their cell, with its error line in the status).

The sweep folder (`--out`) holds `sweep.json` (every cell: name, env, method, ablation, run
directory, command), `runs/<env>/<method>[-<ablation>]/` (each cell's run directory: a cell run
again resumes from its checkpoint), `status/<cell>.json` (state `running`, `done` or `failed`,
exit code, the error line), `failed.txt` (the failed cells, one per line, with their error),
`logs/<cell>.log` (each attempt's output), `submitit/` and `slurm_array.sh`.
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
from typing import Any

from wsrl_mjx.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRID_KEYS = {"config", "envs", "methods", "flags", "vars"}
METHOD_KEYS = {"flags", "vars", "per_seed"}
ABLATION_KEYS = {"per_seed", "flags"}
FAMILY_KEYS = {"envs", "flags", "vars"}
DONE, FAILED, RUNNING = "done", "failed", "running"


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
            f"--workdir={self.workdir(sweep)}",
            *(f"--config.{field}={flag_value(value)}" for field, value in self.flags.items())]


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
  """Prints one line per cell and writes `failed.txt`; returns the failed cells' names."""
  states = cell_states(sweep)
  for name, record in states.items():
    error = f"  {record['error']}" if record.get("state") == FAILED and record.get("error") else ""
    print(f"{record['state']:>8}  {name}{error}")
  failed = [name for name, record in states.items() if record["state"] == FAILED]
  (sweep / "failed.txt").write_text(
      "".join(f"{name}\t{states[name].get('error', '')}\n" for name in failed))
  done = sum(record["state"] == DONE for record in states.values())
  print(f"{done} of {len(states)} cells done, {len(failed)} failed (listed in "
        f"{sweep / 'failed.txt'}).")
  return failed


def error_line(text: str) -> str:
  """The launcher's `error: ...` line, else the output's last line."""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error: ")]
  return (errors or lines or [""])[-1][:500]


def run_cell(sweep: str, name: str, cuda_visible_devices: str | None = None) -> int:
  """Runs cell `name` of `sweep` (its command from sweep.json) to its end, appending its output
  to `logs/<cell>.log` and recording `status/<cell>.json`; returns its exit status and raises
  RuntimeError (which marks the submitit job failed) where it is not 0. Of a cell's several
  SLURM processes only the first records the status. `cuda_visible_devices`: the GPUs the sweep
  was started with (submitit's LocalExecutor hides them from its jobs)."""
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
            "host": socket.gethostname(), "started": _now(), "command": entry["command"]}
  if records:
    write_json(path, record)
  log = sweep / "logs" / f"{_file_name(name)}.log"
  log.parent.mkdir(parents=True, exist_ok=True)
  with log.open("a") as output:
    output.write(f"=== attempt {record['attempt']} on {record['host']} at {record['started']}: "
                 f"{shlex.join(entry['command'])}\n")
    output.flush()
    process = subprocess.Popen(entry["command"], cwd=ROOT, env=environment, stdout=output,
                               stderr=subprocess.STDOUT)

    def stop(signum, frame):   # SLURM's time limit, a cancelled job: the cell's run stops too
      del frame
      process.send_signal(signum)
    signal.signal(signal.SIGTERM, stop)
    code = process.wait()
  error = "" if code == 0 else error_line(log.read_text().rsplit("=== attempt", 1)[-1])
  if records:
    write_json(path, dict(record, state=DONE if code == 0 else FAILED, exit_code=code,
                          ended=_now(), error=error or (f"exit status {code}" if code else "")))
  if code:
    raise RuntimeError(f"cell {name} failed (exit status {code}): {error}")
  return code


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- schedulers -------------------------------------------------------------------------------

def run_local(sweep: pathlib.Path, names: list[str], max_parallel: int, timeout_min: int) -> None:
  """Runs the cells through submitit's LocalExecutor, at most `max_parallel` at once."""
  import submitit
  executor = submitit.LocalExecutor(folder=sweep / "submitit" / "%j")
  executor.update_parameters(timeout_min=timeout_min)
  # The jobs import this module: the repository must be on their path.
  os.environ["PYTHONPATH"] = os.pathsep.join(
      filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
  gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
  waiting, running = list(names), []
  while waiting or running:
    while waiting and len(running) < max(1, max_parallel):
      name = waiting.pop(0)
      print(f"started   {name}", flush=True)
      running.append((name, executor.submit(run_cell, str(sweep), name, gpus)))
    time.sleep(0.5)
    for name, job in [r for r in running if r[1].done()]:
      running.remove((name, job))
      path = status_path(sweep, name)
      record = json.loads(path.read_text()) if path.is_file() else {"cell": name}
      if record.get("state") not in (DONE, FAILED):    # the job died before the cell could say
        error = job.exception()
        reason = (str(error).strip().splitlines() or ["?"])[-1] if error else "?"
        record = dict(record, state=FAILED, ended=_now(),
                      error=f"its submitit job ended without recording the cell's end: {reason}")
        write_json(path, record)
      print(f"{record['state']:>8}  {name}", flush=True)

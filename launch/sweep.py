r"""A grid of fine-tuning runs as one sweep: one `launch.finetune` command per cell, run by submitit
on this machine or as a SLURM job array (`launch/sweep_cells.py` has the grid format and the
sweep folder's files).

  python -m launch.sweep --grid=launch/grids/wsrl_paper.py --out=runs/paper            # local
  python -m launch.sweep --grid=launch/grids/wsrl_paper.py --out=runs/paper --scheduler=slurm
  python -m launch.sweep --out=runs/paper --status
  python -m launch.sweep --out=runs/paper --resubmit_failed [--grid=FILE]
  python -m launch.report runs/paper --out=runs/paper-report

Before anything is written or run (`--dry_run` too), the grid's cells are checked: their flags
against the fine-tuning config (`sweep_cells.check_flags`), and, in a sweep folder used before,
their commands against those of the cells that have started (`sweep_cells.check_unchanged`: a
started cell keeps its settings; `--resubmit_failed --grid=FIXED` gives the failed and
interrupted cells the fixed grid's). A grid that fails either is refused in one line
(`error: ...`, exit status 2).

Ctrl-C stops the running cells, records them `interrupted` and ends with one line
(`interrupted: ...`, exit status 130); the same command resumes them. `--resubmit_failed` reruns
the interrupted cells too. Exit status: 0; 1 where a cell failed (a run, or `--status` of a sweep
with a failed cell); 2 for a grid or flags that cannot work; 130 after Ctrl-C.
"""

from __future__ import annotations

import pathlib
import re
import shlex
import shutil
import subprocess
import sys

from absl import app, flags

from launch import runtime
from launch.sweep_cells import (DONE, FAILED, INTERRUPTED, ROOT, RUNNING, CellFailed,
                                cell_states, check_flags, check_unchanged, command_differences,
                                error_line, expand, load_grid, plural, read_manifest,
                                report_states, run_cell, run_local, save_manifest)
from wsrl_mjx.errors import UserError

_GRID = flags.DEFINE_string("grid", None, "Grid file (.json, or .py with get_grid()).")
_OUT = flags.DEFINE_string("out", None, "The sweep folder (created): run directories, status, "
                           "logs.")
_SCHEDULER = flags.DEFINE_enum("scheduler", "local", ["local", "slurm"], "local: submitit's "
                               "LocalExecutor on this machine; slurm: a SLURM job array script, "
                               "submitted with sbatch where it exists.")
_ONLY = flags.DEFINE_string("only", None, "Run only the cells whose name (<env>/<method>"
                            "[-<ablation>]) matches this regular expression.")
_RESUBMIT_FAILED = flags.DEFINE_bool("resubmit_failed", False, "Run only the sweep's failed and "
                                     "interrupted cells (each resumes from its checkpoint); with "
                                     "--grid, with the commands of that grid.")
_STATUS = flags.DEFINE_bool("status", False, "Print every cell's state, write failed.txt, run "
                            "nothing; exit status 1 where a cell failed.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Check the grid, write sweep.json (and the SLURM "
                             "script) and print the commands; run nothing.")
_MAX_PARALLEL = flags.DEFINE_integer("max_parallel", 1, "local: cells running at once (each one "
                                     "uses every device of the machine).")
_TIMEOUT = flags.DEFINE_integer("cell_timeout_min", 24 * 60, "Minutes a cell may run (local: "
                                "submitit's timeout; slurm: --time).")
_PARTITION = flags.DEFINE_string("slurm_partition", None, "slurm: the partition.")
_GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 1, "slurm: GPUs per node of a cell (every "
                             "process of the node sees them; JAX gives each process its own).")
_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", 8, "slurm: CPU cores per process of a cell.")
_NODES = flags.DEFINE_integer("slurm_nodes", 1, "slurm: nodes per cell (more than one: a "
                              "multi-host run, BUILD.md).")
_TASKS = flags.DEFINE_integer("slurm_tasks_per_node", 1, "slurm: processes per node of a cell "
                              "(e.g. one per GPU; JAX joins them, launch/runtime.py).")
_ARRAY_PARALLELISM = flags.DEFINE_integer("slurm_array_parallelism", 64, "slurm: cells running "
                                          "at once (the array's %N).")
_SETUP = flags.DEFINE_multi_string("slurm_setup", [], "slurm: a shell line run before each cell "
                                   "(e.g. 'module load cuda'); repeatable.")
_RUN_CELL = flags.DEFINE_string("run_cell", None, "Run one cell of --out in the foreground (what "
                                "each SLURM array task does).")


def _only_pattern() -> re.Pattern:
  """--only as a regular expression; UserError naming the flag if it is not one."""
  try:
    return re.compile(_ONLY.value)
  except re.error as error:
    raise UserError(f"--only={_ONLY.value!r}: not a regular expression ({error})") from None


def slurm_script(sweep: pathlib.Path, names: list[str]) -> str:
  """A SLURM job array running `names`, one array task per cell (`--run_cell`)."""
  lines = ["#!/bin/bash", "#SBATCH --job-name=wsrl-sweep",
           f"#SBATCH --array=0-{len(names) - 1}%{_ARRAY_PARALLELISM.value}",
           f"#SBATCH --output={sweep / 'logs' / 'slurm-%A_%a.out'}",
           f"#SBATCH --time={_TIMEOUT.value}",
           f"#SBATCH --nodes={_NODES.value}", f"#SBATCH --ntasks-per-node={_TASKS.value}",
           f"#SBATCH --cpus-per-task={_CPUS.value}"]
  if _GPUS.value:
    lines.append(f"#SBATCH --gpus-per-node={_GPUS.value}")
  if _PARTITION.value:
    lines.append(f"#SBATCH --partition={_PARTITION.value}")
  lines += ["", *_SETUP.value, "CELLS=(" + " ".join(shlex.quote(n) for n in names) + ")",
            f"cd {shlex.quote(str(ROOT))}",
            # One process per task; JAX joins a cell's processes (SLURM_NTASKS > 1).
            f"srun {shlex.quote(sys.executable)} -m launch.sweep "
            f"--out={shlex.quote(str(sweep))} --run_cell=\"${{CELLS[$SLURM_ARRAY_TASK_ID]}}\"", ""]
  return "\n".join(lines)


def submit_slurm(sweep: pathlib.Path, names: list[str], dry_run: bool) -> None:
  script = sweep / "slurm_array.sh"
  script.write_text(slurm_script(sweep, names))
  sbatch = shutil.which("sbatch")
  if dry_run or sbatch is None:
    print(f"SLURM job array of {plural(len(names))} written to {script}"
          + ("" if dry_run else "; sbatch is not on this machine: submit it where SLURM is, with "
             f"`sbatch {script}`") + ".")
    return
  result = subprocess.run([sbatch, str(script)], capture_output=True, text=True)
  if result.returncode:
    raise UserError(f"sbatch {script}: {error_line(result.stderr + result.stdout)}")
  print(f"{result.stdout.strip()}: {plural(len(names))}; `python -m launch.sweep --out={sweep} "
        "--status` shows their states.")


# --- main -------------------------------------------------------------------------------------

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _OUT.value:
    raise app.UsageError("--out: the sweep folder is required")
  sweep = pathlib.Path(_OUT.value).absolute()
  if _RUN_CELL.value:
    try:
      stopped = run_cell(str(sweep), _RUN_CELL.value)
    except CellFailed as failure:           # one line in the SLURM task's output, exit status 1
      print(f"error: {failure}", file=sys.stderr)
      sys.exit(1)
    if stopped:
      raise runtime.Interrupted(f"{_RUN_CELL.value} stopped; running it again resumes it")
    return
  if _STATUS.value:
    if report_states(sweep):
      sys.exit(1)
    return
  cells = expand(load_grid(_GRID.value), _GRID.value) if _GRID.value else None
  if cells is None and not _RESUBMIT_FAILED.value:
    raise app.UsageError("--grid: required (except with --status, --resubmit_failed)")
  if _ONLY.value and cells is not None:
    cells = [c for c in cells if re.search(_only_pattern(), c.name)]
    if not cells:
      raise UserError(f"--only={_ONLY.value}: matches no cell of {_GRID.value}")
  if _RESUBMIT_FAILED.value:
    rerun = {k for k, v in cell_states(sweep).items() if v["state"] in (FAILED, INTERRUPTED)}
    if cells is not None:
      fixed = [c for c in cells if c.name in rerun]
      check_flags(fixed, _GRID.value)
      recorded = {c["name"]: c["command"] for c in read_manifest(sweep)["cells"]}
      kept = [c.name for c in cells if c.name not in rerun and c.name in recorded
              and command_differences(recorded[c.name], c.command(sweep))]
      if kept:
        print(f"{_GRID.value} would change the commands of {plural(len(kept))} that "
              f"--resubmit_failed leaves as they are ({', '.join(kept[:3])}"
              f"{', ...' if len(kept) > 3 else ''}).")
      save_manifest(sweep, fixed, _GRID.value)
    names = [n for n in cell_states(sweep)
             if n in rerun and (not _ONLY.value or re.search(_only_pattern(), n))]
    if not names:
      print(f"{sweep}: no failed or interrupted cells to resubmit.")
      return
  else:
    check_flags(cells, _GRID.value)
    changing = check_unchanged(sweep, cells, _GRID.value)
    save_manifest(sweep, cells, _GRID.value)
    if changing:
      print(f"{plural(len(changing))} that had not started "
            f"{'takes' if len(changing) == 1 else 'take'} {_GRID.value}'s new commands: "
            f"{', '.join(changing)}.")
    states = cell_states(sweep)
    names = [c.name for c in cells if states[c.name]["state"] not in (DONE, RUNNING)]
    done = sum(states[c.name]["state"] == DONE for c in cells)
    running = [c.name for c in cells if states[c.name]["state"] == RUNNING]
    if done:
      print(f"{plural(done)} already done: left as {'it is' if done == 1 else 'they are'}.")
    if running:
      print(f"{plural(len(running))} still running ({', '.join(running[:3])}"
            f"{', ...' if len(running) > 3 else ''}: another launch.sweep's, or stopping after a "
            f"Ctrl-C): left as {'it is' if len(running) == 1 else 'they are'}; once "
            f"{'it has' if len(running) == 1 else 'they have'} stopped, the same command "
            f"resumes {'it' if len(running) == 1 else 'them'}.",
            file=sys.stderr)
  for entry in read_manifest(sweep)["cells"]:
    if entry["name"] in names:
      print(f"{entry['name']}: {shlex.join(entry['command'])}")
  if _SCHEDULER.value == "slurm":
    submit_slurm(sweep, names, _DRY_RUN.value)
    return
  if _DRY_RUN.value:
    print(f"{plural(len(names))} to run; nothing run (--dry_run). "
          f"{'Its command is' if len(names) == 1 else 'Their commands are'} above and in "
          f"{sweep / 'sweep.json'}.")
    return
  run_local(sweep, names, _MAX_PARALLEL.value, _TIMEOUT.value)
  failed = report_states(sweep)
  if failed:
    print(f"Rerun the failed cells with: python -m launch.sweep --out={sweep} "
          "--resubmit_failed", file=sys.stderr)
    sys.exit(1)
  # Cells stopped by a SIGINT that this process did not take (a shell that started it with
  # SIGINT ignored, a signal sent to a cell alone): the sweep is not done, as after Ctrl-C.
  stopped = [name for name, record in cell_states(sweep).items()
             if name in names and record["state"] == INTERRUPTED]
  if stopped:
    raise runtime.Interrupted(
        f"{', '.join(f'{n} interrupted' for n in stopped)}; the same command resumes the "
        "sweep's unfinished cells (--status shows each cell's state)")


if __name__ == "__main__":
  runtime.run(main)

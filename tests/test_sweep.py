"""launch.sweep: a grid expanded into cells (hand-written expectations), the paper's grid file, the
check of a grid's flags against the fine-tuning config, a changed grid against the cells that have
started, a two-cell sweep on submitit's LocalExecutor whose failed cell is listed, resubmitted
alone after the grid is fixed, and reported with the other as one study, and Ctrl-C on a sweep
whose cell's run is a stand-in script (no JAX)."""

import copy
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, SIGINT_AS_IN_A_TERMINAL, TINY_OVERRIDES, run_launch
from launch import sweep_cells as sweep
from wsrl_mjx import runs


def test_a_grid_expands_to_env_method_and_ablation_cells_with_templates_filled():
  grid = {"config": "launch/configs/finetune.py", "flags": {"num_seeds": 8, "utd": 4},
          "vars": {"root": "pre"},
          "envs": {"locomotion": {"envs": ["hopper-medium-v2", "walker2d-random-v2"],
                                  "vars": {"algo": "cql"}, "flags": {"utd": 2}}},
          "methods": {"wsrl": {"flags": {"pretrained": "{root}/{env}-{algo}"},
                               "per_seed": {"warmup": "warmup_steps=0,5000",
                                            "init": {"per_seed": "init_actor=true,false",
                                                     "flags": {"seed": 7, "utd": 1,
                                                               "pretrained": "{root}/{algo}"}}}},
                      "iql": {"flags": {"method": "iql", "pretrained": "{root}/{env}-{algo}",
                                        "critic_hidden_sizes": (32, 32), "layer_norm": False},
                              "vars": {"algo": "iql"}}}}
  cells = sweep.expand(grid)
  assert [c.name for c in cells] == [
      "hopper-medium-v2/wsrl", "hopper-medium-v2/wsrl-warmup", "hopper-medium-v2/wsrl-init",
      "hopper-medium-v2/iql", "walker2d-random-v2/wsrl", "walker2d-random-v2/wsrl-warmup",
      "walker2d-random-v2/wsrl-init", "walker2d-random-v2/iql"]
  warmup, init = cells[1:3]
  assert (warmup.env, warmup.family, warmup.method, warmup.ablation) == (
      "hopper-medium-v2", "locomotion", "wsrl", "warmup")
  assert warmup.flags == {"num_seeds": 8, "utd": 2, "pretrained": "pre/hopper-medium-v2-cql",
                          "per_seed": "warmup_steps=0,5000"}
  # An ablation's own flags win over the method's and are filled as templates too.
  assert init.flags == {"num_seeds": 8, "utd": 1, "pretrained": "pre/cql", "seed": 7,
                        "per_seed": "init_actor=true,false"}
  out = pathlib.Path("/sweeps/s")
  assert cells[7].command(out) == [
      sys.executable, "-m", "launch.finetune",
      "--config=launch/configs/finetune.py:walker2d-random-v2",
      "--workdir=/sweeps/s/runs/walker2d-random-v2/iql", "--config.num_seeds=8",
      "--config.utd=2", "--config.method=iql", "--config.pretrained=pre/walker2d-random-v2-iql",
      "--config.critic_hidden_sizes=(32,32)", "--config.layer_norm=false"]


@pytest.mark.parametrize("grid, message", [
    ({"config": "c", "envs": ["e"], "methods": {"m": {}}, "seeds": 3},
     "g.json: unknown key(s) ['seeds']"),
    ({"config": "c", "envs": ["e"]}, "g.json: 'methods' is missing"),
    ({"config": "c", "envs": ["e"], "methods": {"m": {"flag": {}}}},
     "g.json: methods.m: unknown key(s) ['flag']"),
    ({"config": "c", "envs": ["e"], "methods": {"m": {"flags": {"pretrained": "{root}/x"}}}},
     "g.json: e m pretrained: '{root}/x' names 'root' that no vars define"),
    ({"config": "c", "envs": ["e"], "methods": {"m": {"per_seed": {"w": 3}}}},
     "g.json: methods.m.per_seed.w: a grid spec string or {\"per_seed\": spec, \"flags\": "
     "{...}}, got int"),
    ({"config": "c", "envs": ["e"], "methods": {"m": {"per_seed": {"w": {"flags": {}}}}}},
     "g.json: methods.m.per_seed.w: 'per_seed' must be a grid spec"),
    ({"config": "c", "envs": ["e"], "methods": {"m": {"per_seed": {"w": {
        "per_seed": "utd=1,2", "seed": 1}}}}},
     "g.json: methods.m.per_seed.w: unknown key(s) ['seed']; known: ['flags', 'per_seed']"),
    ({"config": "c", "envs": ["e"], "methods": {"m": {"per_seed": {"w": {
        "per_seed": "utd=1,2", "flags": {"per_seed": "utd=3"}}}}}},
     "g.json: methods.m.per_seed.w.flags: set per_seed beside flags"),
    ({"config": "c", "envs": "e", "methods": {"m": {}}},
     "g.json: envs: must be a list of env names or a dict {family: [names]}, got str"),
])
def test_a_grid_that_does_not_fit_the_format_is_refused_naming_the_field(grid, message):
  with pytest.raises(sweep.GridError) as error:
    sweep.expand(grid, "g.json")
  assert str(error.value).startswith(message)


@pytest.mark.parametrize("source, message", [
    ("def get_grid(:\n", "grid.py, line 1: SyntaxError: "),
    ("def get_grid():\n  return 1 / 0\n", "grid.py: ZeroDivisionError: division by zero"),
    ("import no_such_module_here\n", "grid.py: ModuleNotFoundError: "),
    ("GRID = {}\n", "grid.py: defines no get_grid()"),
])
def test_a_grid_file_whose_code_fails_is_one_error_naming_the_file(tmp_path, source, message):
  path = tmp_path / "grid.py"
  path.write_text(source)
  with pytest.raises(sweep.GridError) as error:
    sweep.load_grid(path)
  assert str(error.value).startswith(f"{tmp_path}/{message}")


def test_the_paper_grid_holds_every_family_task_and_method():
  cells = sweep.expand(sweep.load_grid(ROOT / "launch/grids/wsrl_paper.py"))
  envs = list(dict.fromkeys(c.env for c in cells))
  assert len(envs) == 6 + 3 + 3 + 9 and "antmaze-large-diverse-v2" in envs
  assert {"kitchen-mixed-v0", "relocate-binary-v0", "walker2d-medium-replay-v2"} <= set(envs)
  methods = {(c.method, c.ablation) for c in cells}
  assert methods == {(m, "") for m in ("wsrl", "sac", "rlpd", "calql", "cql", "iql", "jsrl",
                                       "so2")} | {("wsrl", "warmup"), ("wsrl", "init")}
  assert len(cells) == len(envs) * len(methods)
  by_name = {c.name: c.flags for c in cells}
  assert by_name["hopper-medium-v2/wsrl-warmup"] == {
      "num_seeds": 64, "pretrained": "runs/pretrain/hopper-medium-v2-cql", "seed": 1,
      "per_seed": "warmup_steps=0,1000,5000,20000"}
  # The three WSRL programs draw independent seeds: the ablations' WSRL points (warmup 5k,
  # both inits) have the plain cell's settings and would otherwise repeat its seeds.
  wsrl = [by_name[f"hopper-medium-v2/wsrl{a}"].get("seed", 0) for a in ("", "-warmup", "-init")]
  assert len(set(wsrl)) == 3, wsrl
  assert by_name["pen-binary-v0/iql"]["pretrained"] == "runs/pretrain/pen-binary-v0-iql"
  assert by_name["antmaze-umaze-v2/so2"]["pretrained"] == "runs/pretrain/antmaze-umaze-v2-calql"
  assert by_name["kitchen-partial-v0/sac"] == {"num_seeds": 64, "method": "sac"}
  sweep.check_flags(cells, "wsrl_paper.py")     # every flag a field, every value of its type


def test_the_reproduction_grid_gives_every_claim_its_arms_with_8_seeds_each():
  """launch/grids/reproduction.py (issue 24): per task WSRL's 2 x 2 x 2 ablation grid in one
  program, SAC, RLPD and the offline learner without and with its data; 8 seeds per arm, the
  same env steps for all; every flag a field of the fine-tuning config."""
  from launch.configs import finetune as finetune_config
  from wsrl_mjx import per_seed
  cells = sweep.expand(sweep.load_grid(ROOT / "launch/grids/reproduction.py"))
  assert [c.name for c in cells] == [f"{env}/{method}" for env in (
      "hopper-medium-v2", "antmaze-umaze-diverse-v2", "door-binary-v0") for method in (
      "wsrl", "sac", "rlpd", "offline", "offline-data")]
  for cell in cells:
    fields = finetune_config.get_config(cell.env)
    assert set(cell.flags) <= set(fields.keys()), cell.name
    grid = per_seed.parse_grid(cell.flags.get("per_seed", ""))
    points = int(np.prod([len(values) for values in grid.values()]))
    assert cell.flags["num_seeds"] == 8 * points and cell.flags["online_steps"] == "100000"
  by_name = {c.name: c.flags for c in cells}
  assert per_seed.parse_grid(by_name["hopper-medium-v2/wsrl"]["per_seed"]) == {
      "warmup_steps": [5000, 0], "init_actor": [True, False], "init_critic": [True, False]}
  assert by_name["hopper-medium-v2/offline-data"]["method"] == "cql"
  assert by_name["door-binary-v0/offline"]["pretrained"] == "runs/pretrain/door-binary-v0-calql"
  assert by_name["antmaze-umaze-diverse-v2/rlpd"]["dataset"] == \
      "runs/data/antmaze-umaze-diverse-v2.hdf5"
  assert by_name["door-binary-v0/offline-data"]["dataset"] == "runs/data/door-binary-v0.npy"


_GRID = {"config": "launch/configs/finetune.py", "envs": ["point-mass", "no-such-env-here"],
         "flags": {"num_seeds": 2, "online_steps": 1000},
         "methods": {"sac": {"flags": {"method": "sac"},
                             "per_seed": {"warmup": "warmup_steps=0,500"}}}}


@pytest.mark.parametrize("change, message", [
    ({"flags": {"online_step": 3}},
     "g.json: cell point-mass/sac: --config.online_step: no such config field. Did you mean "
     "\"online_steps\""),
    ({"flags": {"seed": "x"}},
     "g.json: cell point-mass/sac: --config.seed=x: invalid literal for int()"),
    ({"flags": {"layer_norm": "maybe"}},
     "g.json: cell point-mass/sac: --config.layer_norm=maybe: ('Non-boolean argument"),
    ({"methods": {"sac": {"per_seed": {"warmup": "warmup_steps=0,x"}}}},
     "g.json: cell point-mass/sac-warmup: config.per_seed: warmup_steps takes numbers, got 'x'"),
    ({"methods": {"sac": {"per_seed": {"warmup": "warmup_step=0,1"}}}},
     "g.json: cell point-mass/sac-warmup: config.per_seed: 'warmup_step' cannot vary per seed"),
    ({"config": "launch/configs/finetun.py"},
     "g.json: config: launch/configs/finetun.py: no such file"),
    ({"flags": {"actor_hidden_sizes": "64x64"}},
     "g.json: cell point-mass/sac: config.actor_hidden_sizes=('64x64',): must be a non-empty "
     "list of layer widths"),
    ({"flags": {"num_seeds": 0}},
     "g.json: cell point-mass/sac: config.num_seeds=0: must be a whole number >= 1"),
    ({"methods": {"sac": {"per_seed": {"warmup": "warmup_steps=0,500,1000"}}}},
     "g.json: cell point-mass/sac-warmup: config.per_seed defines 3 grid points; "
     "config.num_seeds (2) must be a multiple of that."),
    ({"methods": {"sac": {"per_seed": {"warmup": "warmup_steps=0,0"}}}},
     "g.json: cell point-mass/sac-warmup: config.per_seed: warmup_steps gives 0 more than once"),
])
def test_flags_that_do_not_fit_the_config_refuse_the_grid_naming_the_cell_and_field(change,
                                                                                    message):
  with pytest.raises(sweep.GridError) as error:
    sweep.check_flags(sweep.expand(dict(_GRID, **change), "g.json"), "g.json")
  assert str(error.value).startswith(message), str(error.value)


def test_the_flag_check_passes_a_good_grid_and_leaves_unknown_envs_and_methods_to_their_cell():
  cells = sweep.expand(dict(_GRID, flags={"online_steps": "100000", "layer_norm": False,
                                          "actor_hidden_sizes": (32, 32)}))
  sweep.check_flags(cells)
  # An env this checkout does not have, or an unknown method, fails its own cell when it runs
  # (the module docstring); its flags are not checked beforehand.
  sweep.check_flags([c for c in sweep.expand(dict(_GRID, flags={"online_step": 3}))
                     if c.env == "no-such-env-here"])
  sweep.check_flags(sweep.expand(dict(_GRID, flags={"method": "no-such-method"})))


def _started_sweep(out):
  """A sweep of _GRID's four cells: point-mass/sac done, point-mass/sac-warmup failed after
  writing its run directory, no-such-env-here/sac failed before that (its run removed what it
  wrote), no-such-env-here/sac-warmup not started."""
  cells = sweep.expand(_GRID)
  sweep.save_manifest(out, cells, "g.json")
  for cell, state, workdir in zip(cells, ["done", "failed", "failed"], [True, True, False]):
    sweep.write_json(sweep.status_path(out, cell.name), {"cell": cell.name, "state": state,
                                                         "attempt": 1})
    if workdir:
      cell.workdir(out).mkdir(parents=True)
  return cells


def test_a_changed_grid_is_refused_where_a_started_cell_would_get_another_command(tmp_path):
  out = tmp_path / "sweep"
  _started_sweep(out)
  manifest = (out / "sweep.json").read_text()
  changed = copy.deepcopy(_GRID)
  changed["flags"]["online_steps"] = 1500
  with pytest.raises(sweep.GridError) as error:
    sweep.check_unchanged(out, sweep.expand(changed), "new.json")
  assert str(error.value).startswith(
      f"new.json: gives cell point-mass/sac of the sweep {out} another command than the one it "
      "started with (done): --config.online_steps=1000 -> 1500 (and 1 other started cell: "
      "point-mass/sac-warmup). A started cell keeps its settings: for the new grid give a new "
      f"--out; to go on with {out}, put the grid back. Nothing was written."), str(error.value)
  assert "\n" not in str(error.value)
  # A flag added or dropped is named too, the failed cell with a run directory counts as started.
  changed = copy.deepcopy(_GRID)
  changed["methods"]["sac"]["per_seed"]["warmup"] = {"per_seed": "warmup_steps=0,500",
                                                     "flags": {"seed": 3}}
  with pytest.raises(sweep.GridError) as error:
    sweep.check_unchanged(out, sweep.expand(changed), "new.json")
  assert ("cell point-mass/sac-warmup of the sweep" in str(error.value)
          and "(failed): --config.seed=(unset) -> 3." in str(error.value)), str(error.value)
  assert "--resubmit_failed --grid=FILE reruns the failed and interrupted cells" in str(
      error.value)
  assert (out / "sweep.json").read_text() == manifest
  # --resubmit_failed gives its failed cells the fixed grid's commands (`may_change`).
  assert sweep.check_unchanged(out, sweep.expand(changed), "new.json",
                               may_change={"point-mass/sac-warmup"}) == [
      "point-mass/sac-warmup", "no-such-env-here/sac-warmup"]


def test_a_changed_grid_may_change_the_cells_that_have_not_started(tmp_path):
  out = tmp_path / "sweep"
  cells = _started_sweep(out)
  changed = copy.deepcopy(_GRID)
  changed["envs"] = {"other": {"envs": ["no-such-env-here"], "flags": {"online_steps": 1500}},
                     "same": ["point-mass"]}
  new_cells = sweep.expand(changed)
  assert sweep.check_unchanged(out, new_cells, "new.json") == [
      "no-such-env-here/sac", "no-such-env-here/sac-warmup"]
  # The same grid, another Python executable: nothing changes.
  assert sweep.command_differences(["/other/python", *cells[0].command(out)[1:]],
                                   cells[0].command(out)) == []
  assert sweep.check_unchanged(out, cells, "g.json") == []
  assert sweep.check_unchanged(tmp_path / "new", new_cells, "new.json") == []
  # Paths compare by where they lead from the repository's root, where cells run.
  spelt = lambda text: [*cells[0].command(out), f"--config.pretrained={text}"]
  assert sweep.command_differences(spelt("runs/pre"), spelt(f"{ROOT}/runs/../runs/pre/")) == []
  assert sweep.command_differences(spelt("runs/pre"), spelt("runs/other")) == [
      f"--config.pretrained={ROOT}/runs/pre -> {ROOT}/runs/other"]
  # A sweep folder moved elsewhere: its cells' run directories moved with it.
  assert sweep.command_differences(cells[0].command(out), cells[0].command(tmp_path / "moved")) \
      == []
  assert sweep.command_differences(cells[0].command(out), new_cells[0].command(out)) != []


def test_a_rerun_says_which_cells_are_done_and_which_still_run(tmp_path):
  """Run again while a cell is still running (another sweep's, or stopping after a Ctrl-C: its
  run holds its folder's lock), the sweep leaves it and says the same command resumes it once it
  has stopped; done cells are named done, not "done or running"."""
  import fcntl
  out = tmp_path / "sweep"
  grid = dict(_GRID, envs=["point-mass"])
  grid_file = tmp_path / "grid.json"
  grid_file.write_text(json.dumps(grid))
  done, running = sweep.expand(grid)                 # point-mass/sac, point-mass/sac-warmup
  sweep.save_manifest(out, [done, running], str(grid_file))
  for cell, state in ((done, "done"), (running, "running")):
    sweep.write_json(sweep.status_path(out, cell.name), {"cell": cell.name, "state": state,
                                                         "attempt": 1})
    cell.workdir(out).mkdir(parents=True)
  with open(running.workdir(out) / ".lock", "a+") as lock:     # what its run holds
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    result = run_launch("launch.sweep", f"--grid={grid_file}", f"--out={out}", "--dry_run")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "1 cell already done: left as it is." in result.stdout
  assert ("1 cell still running (point-mass/sac-warmup: another launch.sweep's, or stopping "
          "after a Ctrl-C): left as it is; once it has stopped, the same command resumes it."
          ) in result.stderr
  assert "0 cells to run" in result.stdout


def test_status_names_interrupted_cells_and_says_the_same_command_resumes_them(tmp_path, capsys):
  out = tmp_path / "sweep"
  cells = sweep.expand(dict(_GRID, envs=["point-mass"]))
  sweep.save_manifest(out, cells, "g.json")
  sweep.write_json(sweep.status_path(out, cells[0].name), {"state": "interrupted"})
  assert sweep.report_states(out) == []          # nothing failed: --status exits 0
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
      "interrupted  point-mass/sac  stopped by Ctrl-C; the same launch.sweep command resumes it",
      " pending  point-mass/sac-warmup",
      f"0 of 2 cells done, 0 failed (listed in {out / 'failed.txt'}), 1 interrupted (the same "
      "command resumes it)."]
  sweep.save_manifest(out.parent / "one", cells[:1], "g.json")
  sweep.write_json(sweep.status_path(out.parent / "one", cells[0].name), {"state": "done"})
  sweep.report_states(out.parent / "one")
  assert capsys.readouterr().out.splitlines()[-1].startswith("1 of 1 cell done, 0 failed")


_STAND_IN = """
import signal, sys, time
hits = []
signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
print("ready", flush=True)
for _ in range(1200):
  if hits:
    break
  time.sleep(0.05)
else:
  sys.exit(0)
time.sleep(0.5)    # a second SIGINT would be counted
print(f"interrupted: {len(hits)} SIGINT", flush=True)
sys.exit(130)
"""


IGNORING_SIGINT = SIGINT_AS_IN_A_TERMINAL.replace("signal.default_int_handler", "signal.SIG_IGN")


@pytest.mark.parametrize("sweep_sigint", ["as in a terminal", "ignored"])
def test_ctrl_c_stops_a_sweep_in_one_line_and_records_its_cell_interrupted(tmp_path, capsys,
                                                                           sweep_sigint):
  """Ctrl-C in the terminal (SIGINT to launch.sweep's process group): one line, exit status 130,
  no traceback of submitit's job controller; the cell's run gets one SIGINT and the cell is
  recorded interrupted, which --status says the same command resumes. The same where the shell
  started launch.sweep with SIGINT ignored (a background job), so that only its cell stops."""
  out = tmp_path / "sweep"
  entry = {"name": "point-mass/stand-in", "env": "point-mass", "workdir": str(tmp_path / "run"),
           "command": [sys.executable, "-c", _STAND_IN]}
  sweep.write_json(out / "sweep.json", {"grid": None, "cells": [entry]})
  status = sweep.status_path(out, entry["name"])
  sweep.write_json(status, {"cell": entry["name"], "state": "failed", "attempt": 1})
  process = subprocess.Popen(
      [sys.executable, "-c", SIGINT_AS_IN_A_TERMINAL if sweep_sigint != "ignored" else
       IGNORING_SIGINT, "launch.sweep", f"--out={out}", "--resubmit_failed"], cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, start_new_session=True)
  log = out / "logs" / "point-mass__stand-in.log"
  try:
    deadline = time.monotonic() + 120
    while not (log.is_file() and "ready" in log.read_text().splitlines()):
      assert time.monotonic() < deadline and process.poll() is None, process.communicate()
      time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
  assert process.returncode == 130, stdout + stderr
  assert stderr.splitlines() == [
      "interrupted: point-mass/stand-in interrupted; the same command resumes the sweep's "
      "unfinished cells (--status shows each cell's state)"], stderr
  record = json.loads(status.read_text())
  assert (record["state"], record["attempt"], record["exit_code"]) == ("interrupted", 2, 130)
  assert "interrupted: 1 SIGINT" in log.read_text()
  capsys.readouterr()
  assert sweep.report_states(out) == []
  assert capsys.readouterr().out.splitlines()[0] == (
      "interrupted  point-mass/stand-in  stopped by Ctrl-C; the same launch.sweep command "
      "resumes it")


def test_a_ctrl_c_while_a_cell_is_handed_to_submitit_stops_the_sweep(tmp_path, monkeypatch):
  """The SIGINT comes while submitit starts the first cell's job controller (which must not get
  it): it is held back until the cell counts as running, then stops the sweep before the second
  cell is handed over, and the stop names the first cell."""
  import submitit
  submitted = []

  class Job:
    def __init__(self):
      self.started = time.monotonic()

    def done(self):            # ends on its own a second later (had the SIGINT been lost)
      return time.monotonic() > self.started + 1

    def exception(self):
      return None

  class Executor:
    def __init__(self, folder):
      del folder

    def update_parameters(self, **parameters):
      del parameters

    def submit(self, function, sweep_folder, name, gpus):
      del function, sweep_folder, gpus
      submitted.append((name, signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])))
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.05)
      return Job()

  monkeypatch.setattr(submitit, "LocalExecutor", Executor)
  out = tmp_path / "sweep"
  # Python's SIGINT handler, as in a terminal: CI runs the suite as a background job, whose
  # processes start with SIGINT ignored (and a sweep started so rightly goes on).
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt) as stopped:
      sweep.run_local(out, ["point-mass/a", "point-mass/b"], max_parallel=2, timeout_min=1,
                      stop_wait_s=0.2)
  finally:
    signal.signal(signal.SIGINT, previous)
  assert submitted == [("point-mass/a", True)]     # the controller would start with it blocked
  assert str(stopped.value) == (
      "point-mass/a still stopping; the same command resumes the sweep's unfinished cells "
      "(--status shows each cell's state)")
  assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_local_sweep_lists_its_failed_cell_and_resubmits_only_it(tmp_path):
  # init_critic=true,false for SAC from scratch: the flags parse and fit the config
  # (check_flags lets them through); launch.finetune refuses the arm when the cell runs.
  grid = {"config": "launch/configs/finetune.py",
          "flags": dict(TINY_OVERRIDES, method="sac"),
          "envs": ["point-mass"],
          "methods": {"scratch": {"per_seed": {"warmup": "init_critic=true,false"}}}}
  grid_file, out = tmp_path / "grid.json", tmp_path / "sweep"
  grid_file.write_text(json.dumps(grid))
  common = [f"--grid={grid_file}", f"--out={out}", "--max_parallel=2", "--cell_timeout_min=10"]
  first = run_launch("launch.sweep", *common, timeout=600)
  assert first.returncode == 1, first.stderr[-3000:]
  error = ("error: config.init_critic (or config.per_seed): config.method='sac' starts from "
           "scratch, so there is no pretrained part to leave out; the initialisation switches "
           "are WSRL's ablations (--config.method=wsrl with --config.pretrained=RUN_DIR).")
  failed_line = f"  failed  point-mass/scratch-warmup  {error}"
  assert failed_line in first.stdout.splitlines(), first.stdout
  assert "    done  point-mass/scratch" in first.stdout.splitlines()
  assert (out / "failed.txt").read_text() == f"point-mass/scratch-warmup\t{error}\n"
  done_status = json.loads((out / "status" / "point-mass__scratch.json").read_text())
  assert (done_status["state"], done_status["attempt"], done_status["exit_code"]) == ("done", 1, 0)
  status = run_launch("launch.sweep", f"--out={out}", "--status")
  assert status.returncode == 1 and failed_line in status.stdout.splitlines(), status

  # A SLURM array task (--run_cell) whose cell fails: one line, exit status 1, no traceback.
  log = out / "logs" / "point-mass__scratch-warmup.log"
  task = run_launch("launch.sweep", f"--out={out}", "--run_cell=point-mass/scratch-warmup")
  assert (task.returncode, task.stderr.splitlines()) == (1, [
      f"error: cell point-mass/scratch-warmup failed (exit status 2; its output: {log}): "
      + error.removeprefix("error: ")]), task
  assert log.read_text().count("=== attempt") == 2

  # The grid changed for the cell that is done: refused in one line, nothing written.
  manifest = (out / "sweep.json").read_text()
  changed = copy.deepcopy(grid)
  changed["flags"]["online_steps"] = 300
  (tmp_path / "changed.json").write_text(json.dumps(changed))
  refused = run_launch("launch.sweep", f"--grid={tmp_path / 'changed.json'}", f"--out={out}")
  assert refused.returncode == 2, refused.stdout + refused.stderr
  assert refused.stderr.splitlines() == [
      f"error: {tmp_path / 'changed.json'}: gives cell point-mass/scratch of the sweep {out} "
      "another command than the one it started with (done): --config.online_steps=200 -> 300. A "
      f"started cell keeps its settings: for the new grid give a new --out; to go on with {out}, "
      "put the grid back. Nothing was written."], refused.stderr
  assert (out / "sweep.json").read_text() == manifest

  # SLURM: a job array of the failed cell alone (no sbatch here: the script's path is named).
  slurm = run_launch("launch.sweep", f"--out={out}", "--resubmit_failed", "--scheduler=slurm")
  assert slurm.returncode == 0, slurm.stderr[-3000:]
  script = (out / "slurm_array.sh").read_text()
  assert "#SBATCH --array=0-0%64" in script
  assert "CELLS=(point-mass/scratch-warmup)" in script
  assert f"--out={out} --run_cell=\"${{CELLS[$SLURM_ARRAY_TASK_ID]}}\"" in script
  assert f"sbatch {out / 'slurm_array.sh'}" in slurm.stdout

  # Fixed, and resubmitted: only the failed cell runs again.
  grid["methods"]["scratch"]["per_seed"]["warmup"] = "warmup_steps=50,60"
  assert sweep.check_unchanged(out, sweep.expand(grid), "grid.json") == [
      "point-mass/scratch-warmup"]      # failed before writing its run directory
  grid_file.write_text(json.dumps(grid))
  second = run_launch("launch.sweep", *common, "--resubmit_failed", timeout=600)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  assert "2 of 2 cells done, 0 failed" in second.stdout
  assert json.loads((out / "status" / "point-mass__scratch.json").read_text()) == done_status
  warmup = json.loads((out / "status" / "point-mass__scratch-warmup.json").read_text())
  assert (warmup["state"], warmup["attempt"]) == ("done", 3)
  assert "--config.per_seed=warmup_steps=50,60" in warmup["command"]
  assert (out / "failed.txt").read_text() == ""
  assert (out / "logs" / "point-mass__scratch.log").read_text().count("=== attempt") == 1

  # The sweep's folder is one study: both cells' runs, found under it.
  assert runs.find(out) == [out / "runs/point-mass/scratch",
                            out / "runs/point-mass/scratch-warmup"]
  report = run_launch("launch.report", str(out), f"--out={tmp_path / 'report'}",
                      "--resamples=100")
  assert report.returncode == 0, report.stderr[-3000:]
  text = (tmp_path / "report" / "report.md").read_text()
  assert f"| {out}/runs/point-mass/scratch-warmup | finetune | point-mass |" in text
  assert "3 arms" in text       # scratch, and its warmup_steps=50 and =60 seeds

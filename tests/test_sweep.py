"""launch.sweep: a grid expanded into cells (hand-written expectations), the paper's grid file, and
a two-cell sweep on submitit's LocalExecutor whose failed cell is listed, resubmitted alone after
the grid is fixed, and reported with the other as one study."""

import json
import pathlib
import sys

import numpy as np
import pytest

from conftest import ROOT, TINY_OVERRIDES, run_launch
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


def test_a_local_sweep_lists_its_failed_cell_and_resubmits_only_it(tmp_path):
  grid = {"config": "launch/configs/finetune.py",
          "flags": dict(TINY_OVERRIDES, method="sac"),
          "envs": ["point-mass"],
          "methods": {"scratch": {"per_seed": {"warmup": "warmup_steps=50,x"}}}}
  grid_file, out = tmp_path / "grid.json", tmp_path / "sweep"
  grid_file.write_text(json.dumps(grid))
  common = [f"--grid={grid_file}", f"--out={out}", "--max_parallel=2", "--cell_timeout_min=10"]
  first = run_launch("launch.sweep", *common, timeout=600)
  assert first.returncode == 1, first.stderr[-3000:]
  failed_line = ("  failed  point-mass/scratch-warmup  error: config.per_seed: "
                 "warmup_steps takes numbers, got 'x'")
  assert failed_line in first.stdout.splitlines(), first.stdout
  assert "    done  point-mass/scratch" in first.stdout.splitlines()
  assert (out / "failed.txt").read_text() == (
      "point-mass/scratch-warmup\terror: config.per_seed: warmup_steps takes numbers, "
      "got 'x'\n")
  done_status = json.loads((out / "status" / "point-mass__scratch.json").read_text())
  assert (done_status["state"], done_status["attempt"], done_status["exit_code"]) == ("done", 1, 0)

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
  grid_file.write_text(json.dumps(grid))
  second = run_launch("launch.sweep", *common, "--resubmit_failed", timeout=600)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  assert "2 of 2 cells done, 0 failed" in second.stdout
  assert json.loads((out / "status" / "point-mass__scratch.json").read_text()) == done_status
  warmup = json.loads((out / "status" / "point-mass__scratch-warmup.json").read_text())
  assert (warmup["state"], warmup["attempt"]) == ("done", 2)
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

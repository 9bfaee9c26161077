"""The WSRL paper's grid (Zhou et al. 2024, arXiv 2412.07762): four families of tasks x WSRL and
its baselines, and WSRL's ablations, 64 seeds a cell. `python -m launch.sweep
--grid=launch/grids/wsrl_paper.py --out=runs/paper` (launch/sweep_cells.py says what a grid
holds).

Tasks as the paper evaluates them: AntMaze's six D4RL mazes, Franka Kitchen's three datasets,
Adroit's three binary tasks and D4RL locomotion's random, medium and medium-replay datasets of
halfcheetah, hopper and walker2d (the WSRL paper's task list; its hyperparameters per family are in
launch/configs/families.py).

Methods (`--config.method`, passed through as it is; README "Methods"): WSRL itself (the config's default method) and the
paper's baselines, SAC from scratch, RLPD, Cal-QL, CQL and IQL fine-tuned online, JSRL and SO2.
WSRL's ablations are per-seed grids in one program each (16 seeds per point): the warmup length
(0 = no warmup, 1k, 5k = WSRL, 20k) and the initialisation (no policy init: init_actor=false;
no Q init: init_critic=false). Each ablation runs with its own `--config.seed`, so its WSRL
point's 16 seeds are new draws, not repeats of the plain WSRL cell's.

Pretrained agents: WSRL, JSRL and SO2 start from the family's offline learner (Cal-QL; CQL for
locomotion), the offline methods from their own; the grid expects `launch.pretrain` runs in
`{pretrained_root}/{env}-{algo}` (set `vars.pretrained_root`, or edit the template).
"""

FAMILIES = {
    "antmaze": ("calql", ["antmaze-umaze-v2", "antmaze-umaze-diverse-v2",
                          "antmaze-medium-play-v2", "antmaze-medium-diverse-v2",
                          "antmaze-large-play-v2", "antmaze-large-diverse-v2"]),
    "kitchen": ("calql", ["kitchen-partial-v0", "kitchen-mixed-v0", "kitchen-complete-v0"]),
    "adroit": ("calql", ["pen-binary-v0", "door-binary-v0", "relocate-binary-v0"]),
    "locomotion": ("cql", [f"{robot}-{data}-v2" for robot in ("halfcheetah", "hopper", "walker2d")
                           for data in ("random", "medium", "medium-replay")]),
}
PRETRAINED = "{pretrained_root}/{env}-{algo}"
# Each ablation program's --config.seed: their WSRL points (warmup 5k; both inits) have the plain
# cell's settings, and with its seed (0) their seeds would repeat its seeds of the same index.
ABLATION_SEEDS = {"warmup": 1, "init": 2}


def get_grid():
  from_pretrained = {"pretrained": PRETRAINED}
  return {
      "config": "launch/configs/finetune.py",
      "flags": {"num_seeds": 64},
      "vars": {"pretrained_root": "runs/pretrain"},
      "envs": {family: {"envs": names, "vars": {"algo": algo}}
               for family, (algo, names) in FAMILIES.items()},
      "methods": {
          "wsrl": {"flags": from_pretrained, "per_seed": {
              "warmup": {"per_seed": "warmup_steps=0,1000,5000,20000",
                         "flags": {"seed": ABLATION_SEEDS["warmup"]}},
              "init": {"per_seed": "init_actor=true,false;init_critic=true,false",
                       "flags": {"seed": ABLATION_SEEDS["init"]}}}},
          "sac": {"flags": {"method": "sac"}},
          "rlpd": {"flags": {"method": "rlpd"}},
          "calql": {"flags": {"method": "calql", **from_pretrained}, "vars": {"algo": "calql"}},
          "cql": {"flags": {"method": "cql", **from_pretrained}, "vars": {"algo": "cql"}},
          "iql": {"flags": {"method": "iql", **from_pretrained}, "vars": {"algo": "iql"}},
          "jsrl": {"flags": {"method": "jsrl", **from_pretrained}},
          "so2": {"flags": {"method": "so2", **from_pretrained}},
      },
  }

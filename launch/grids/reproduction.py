"""Issue 24's reproduction grid: WSRL and the comparisons its claims need, on one task per family
with data made here, 8 seeds per arm. `docs/reproduction/README.md` gives the whole pipeline
(data, pretraining, this grid, the report) and what each stage costs.

  python -m launch.sweep --grid=launch/grids/reproduction.py --out=runs/reproduction
  python -m launch.report runs/reproduction --out=docs/reproduction/report

Cells per task (launch/sweep_cells.py says what a grid holds):

- `wsrl`: one program, 64 seeds, WSRL's 2 x 2 x 2 grid of warmup (5,000 or none) x policy init x
  Q init, 8 seeds per point (seed i takes point i mod 8): WSRL itself, without warmup, without
  policy init, without Q init, without both, and their crossings;
- `sac`: SAC from scratch with WSRL's settings (a reference curve; no claim compares it);
- `rlpd`: RLPD, half of each batch from the offline data;
- `offline`: the family's offline learner (Cal-QL; CQL for locomotion) fine-tuned without its
  data; `offline-data`: the same with its data kept.

Every arm runs `online_steps` env steps (in `vars`: 100,000, the issue's least; edit it to
500,000 where the time allows), with an evaluation of 20 episodes every 5,000.
Pretrained agents are looked up as `{pretrained_root}/{env}-{algo}` (the agents
`docs/reproduction/README.md` makes, or ships in `checkpoints/`); the kept-data arms read the
dataset the agent was pretrained on, `{data_root}/{env}.<ext>`; both relative to the
repository's root, where `launch.sweep` runs the cells. Pretrain 3 seeds (a number with no
factor in common with the WSRL grid's 8 points), so that every grid point starts from every
pretrained agent (launch.finetune warns otherwise).
"""

TASKS = {
    # family: (env, offline learner, the dataset file's extension)
    "locomotion": ("hopper-medium-v2", "cql", "hdf5"),
    "antmaze": ("antmaze-umaze-diverse-v2", "calql", "hdf5"),
    "adroit": ("door-binary-v0", "calql", "npy"),
}
SEEDS_PER_ARM = 8
WSRL_GRID = "warmup_steps=5000,0;init_actor=true,false;init_critic=true,false"


def get_grid():
  pretrained = "{pretrained_root}/{env}-{algo}"
  dataset = "{data_root}/{env}.{ext}"
  return {
      "config": "launch/configs/finetune.py",
      "flags": {"num_seeds": SEEDS_PER_ARM, "online_steps": "{online_steps}",
                "eval_interval": 5000, "eval_episodes": 20, "checkpoint_interval": 10000},
      "vars": {"pretrained_root": "runs/pretrain", "data_root": "runs/data",
               "online_steps": "100000"},
      "envs": {family: {"envs": [env], "vars": {"algo": algo, "ext": ext}}
               for family, (env, algo, ext) in TASKS.items()},
      "methods": {
          "wsrl": {"flags": {"pretrained": pretrained, "num_seeds": 8 * SEEDS_PER_ARM,
                             "per_seed": WSRL_GRID}},
          "sac": {"flags": {"method": "sac"}},
          "rlpd": {"flags": {"method": "rlpd", "dataset": dataset}},
          "offline": {"flags": {"method": "{algo}", "pretrained": pretrained}},
          "offline-data": {"flags": {"method": "{algo}", "pretrained": pretrained,
                                     "offline_data": "keep", "dataset": dataset}},
      },
  }

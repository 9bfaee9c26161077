"""Making offline data without downloads: the first stage of the pipeline (data -> offline ->
online -> host loop).

- `collect`: rolls a policy out in parallel MJX envs and writes D4RL-format hdf5 or WSRL's Adroit
  `.npy` (`launch/collect.py`).
- `scripted`: the scripted Adroit relocate demonstrator (`--policy=scripted`).
- `planner`: the Adroit door and pen demonstrator, MPPI in C MuJoCo acting in the MJX env
  (`--policy=planner`).
- `controller`: Brax PPO policies and their files (the AntMaze goal-reaching controller,
  `launch/train_ant_controller.py`; Adroit demonstrators, `launch/train_adroit_demonstrator.py`;
  `--policy=ppo:DIR`).
- `navigation`: D4RL's AntMaze waypoint navigation, steering the controller through a maze
  (`--policy=navigator:DIR`).

Training never imports this package; what it writes is read back by `wsrl_mjx.data`.
"""

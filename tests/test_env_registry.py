"""Every registered name resolves to one simulated task, and every task's env is made, reset and
stepped by its family's test file (tests/env_contract.py, mujoco_playground's registry test).

`envs.names()` lists each task by its bare name (`hopper`) and by every D4RL dataset name recorded
on it (`hopper-medium-v2`, ...): today 49 names for 13 tasks. A dataset name builds exactly its
task's env, so the simulation runs once per task, in the family's own file on the programs that
file compiles anyway (`CONTRACT_TASKS` in each): the locomotion tasks in test_envs.py, AntMaze's
in test_antmaze.py, Adroit's in test_adroit.py, the kitchen's in test_kitchen.py and the point
mass in test_point_mass.py. Here a cheap test checks that every name resolves to one of those
tasks with that task's sizes, and that every task is in one of those lists.
"""

import envs
import test_adroit
import test_antmaze
import test_envs
import test_kitchen
import test_point_mass

FAMILY_FILES = (test_envs, test_antmaze, test_adroit, test_kitchen, test_point_mass)


def tasks() -> list[str]:
  """One registered name per task: its bare name (the name with no dataset file)."""
  return sorted(name for name in envs.names() if envs.spec(name).task == name)


def test_every_registered_name_is_one_of_the_simulated_tasks():
  simulated = {name: envs.spec(name) for name in tasks()}
  assert {envs.spec(name).task for name in envs.names()} == set(simulated)
  for name in envs.names():
    env_spec = envs.spec(name)
    assert env_spec.name == name
    assert env_spec.task in simulated, name
    task_spec = simulated[env_spec.task]
    assert (env_spec.family, env_spec.observation_size, env_spec.action_size,
            env_spec.episode_length) == (task_spec.family, task_spec.observation_size,
                                         task_spec.action_size, task_spec.episode_length), name


def test_every_task_is_made_reset_and_stepped_by_its_familys_file():
  covered = [task for module in FAMILY_FILES for task in module.CONTRACT_TASKS]
  assert sorted(covered) == tasks()     # each task once, none missing
  for module in FAMILY_FILES:
    families = {envs.spec(task).family for task in module.CONTRACT_TASKS}
    assert len(families) == 1, (module.__name__, families)

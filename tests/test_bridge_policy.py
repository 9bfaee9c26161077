"""The bridge check on the states an exported policy visits (`launch.bridge_check
--actions=policy`): the trajectory's actions are the policy's on each recorded state (checked
against a numpy forward pass written here), the check passes on the point mass, and a policy
for another env is refused in one line naming the file."""

import hashlib
import json

import numpy as np
import pytest

import envs
from conftest import run_launch
from envs import bridge
from test_user_errors import assert_one_line_error
from wsrl_mjx import standalone_policy
from wsrl_mjx.errors import UserError

RNG = np.random.default_rng(5)
HIDDEN_KERNEL = RNG.normal(size=(4, 8))
HIDDEN_BIAS = RNG.normal(size=8) * 0.1
MEAN_KERNEL = RNG.normal(size=(8, 2))
MEAN_BIAS = np.array([0.3, -0.2])


def weights(observation_size=4):
  """A one-hidden-layer actor in launch.export's policy.npz layout (no LayerNorm, no clip of
  the observation, actions clipped to +-0.9)."""
  return {"num_hidden": np.array(1), "layer_norm": np.array(False),
          "layer_norm_epsilon": np.array(1e-6), "action_clip": np.array(0.9),
          "hidden_0_kernel": HIDDEN_KERNEL[:observation_size],
          "hidden_0_bias": HIDDEN_BIAS, "mean_kernel": MEAN_KERNEL, "mean_bias": MEAN_BIAS}


def by_hand(observation):
  """The same actor in plain float64 numpy: ReLU layer, mean head, tanh, clip."""
  hidden = np.maximum(observation @ HIDDEN_KERNEL + HIDDEN_BIAS, 0.0)
  return np.clip(np.tanh(hidden @ MEAN_KERNEL + MEAN_BIAS), -0.9, 0.9)


SOURCE = {"run": "runs/pm", "seed": 1, "step_unit": "env_step", "checkpoint_step": 2000}


def export_folder(path, observation_size=4, task="point-mass"):
  path.mkdir()
  np.savez(path / "policy.npz", **weights(observation_size))
  (path / "policy.json").write_text(json.dumps({"env": {"name": task, "task": task},
                                                "source": SOURCE}))
  return path


def test_the_policy_acts_at_every_step_on_the_recorded_state():
  env, _ = envs.make("point-mass")
  policy = standalone_policy.Policy(weights())
  trajectory = bridge.generate_trajectory(env, np.random.default_rng(0), 12, policy=policy)
  assert trajectory["qpos"].shape[0] == trajectory["actions"].shape[0] == 13
  observed = bridge.observations(env, trajectory["qpos"][:-1], trajectory["qvel"][:-1])
  np.testing.assert_allclose(trajectory["actions"][:-1], by_hand(observed), atol=1e-6)
  # Not held for 4 steps as random actions are: consecutive actions differ.
  assert np.all(np.abs(np.diff(trajectory["actions"][:4], axis=0)).sum(axis=1) > 0)
  assert np.all(trajectory["actions"][-1] == 0)


def test_bridge_check_passes_on_an_exported_policy_s_trajectories(tmp_path):
  folder = export_folder(tmp_path / "policy")
  report = tmp_path / "bridge.json"
  result = run_launch("launch.bridge_check", "--env=point-mass", "--actions=policy",
                      f"--policy={folder}", "--episodes=2", "--steps=30", "--starts=8",
                      "--horizon=4", "--cones=model", f"--json={report}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Replaying 8 windows of 4 steps through MJX (model cones; " in result.stderr
  (checked,) = json.loads(report.read_text())
  assert checked["starts"] == 8 and not checked["failures"]
  # Which policy was checked, so that the report can be tied to the files handed over.
  weights_file = folder / "policy.npz"
  digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
  assert checked["trajectories"] == {"actions": "policy", "episodes": 2, "seed": 0,
                                     "policy": str(weights_file), "sha256": digest,
                                     "source": SOURCE}
  assert (f"Trajectories: 2 episodes, actions: policy {weights_file} (sha256 {digest[:12]}; "
          "run runs/pm, seed 1, env_step 2000)") in result.stdout


@pytest.mark.parametrize("flags, expected", [
    (["--actions=policy"], ["--actions=policy and --policy go together"]),
    (["--actions=policy", "--policy=/nonexistent/policy.npz"],
     ["--policy: /nonexistent/policy.npz: no such file"]),
])
def test_bridge_check_refuses_a_missing_policy_in_one_line(flags, expected):
  assert_one_line_error(run_launch("launch.bridge_check", "--env=point-mass", *flags),
                        *expected)


def test_bridge_check_refuses_a_policy_for_another_env_naming_the_file(tmp_path):
  other_task = export_folder(tmp_path / "hopper", task="hopper")
  assert_one_line_error(
      run_launch("launch.bridge_check", "--env=point-mass", "--actions=policy",
                 f"--policy={other_task}"),
      f"{other_task / 'policy.json'}: env.task is 'hopper', but --env=point-mass is "
      "'point-mass'")


def test_a_policy_of_other_sizes_or_a_damaged_policy_json_is_refused_naming_the_file(tmp_path):
  from launch import bridge_check
  spec = envs.spec("point-mass")
  wrong_size = export_folder(tmp_path / "three", observation_size=3)
  (wrong_size / "policy.json").unlink()          # the sizes are checked without it too
  with pytest.raises(UserError) as refused:
    bridge_check.load_policy(str(wrong_size / "policy.npz"), spec)
  assert str(refused.value) == (
      f"{wrong_size / 'policy.npz'}: the policy's observations have 3 values, point-mass's "
      "have 4; pass the env the policy was trained on")
  cut = export_folder(tmp_path / "cut")
  (cut / "policy.json").write_text('{"env": ')
  with pytest.raises(UserError, match=r"policy.json: not valid JSON \("):
    bridge_check.load_policy(str(cut), spec)
  policy, identity = bridge_check.load_policy(str(export_folder(tmp_path / "good")), spec)
  assert policy.observation_size == 4 and identity["source"] == SOURCE

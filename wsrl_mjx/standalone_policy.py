"""A WSRL policy exported by `python -m launch.export`, run with numpy alone.

  import policy
  act = policy.load("policy.npz")
  action = act(observation)   # [obs_dim] -> [act_dim]; [batch, obs_dim] -> [batch, act_dim]

  python policy.py policy.npz 0.1 0.2 ...   # prints the action for one observation

The policy is deterministic: the actor's hidden layers (Dense, LayerNorm where the export says
so, ReLU), the Gaussian mean head, tanh, then the clip to +-action_clip. Actions are in [-1, 1];
`policy.json` says how the env maps them onto actuator controls. This file is copied verbatim
from wsrl-mjx's `wsrl_mjx/standalone_policy.py` and imports nothing but numpy.
"""

import sys

import numpy as np


class Policy:
  """The weights of `policy.npz` and the forward pass (float64 throughout)."""

  def __init__(self, weights):
    self.num_hidden = int(weights["num_hidden"])
    self.layer_norm = bool(weights["layer_norm"])
    self.epsilon = float(weights["layer_norm_epsilon"])
    self.action_clip = float(weights["action_clip"])
    self.weights = {k: np.asarray(v, np.float64) for k, v in weights.items()}

  @property
  def observation_size(self) -> int:
    return self.weights["hidden_0_kernel"].shape[0]

  def __call__(self, observation):
    x = np.asarray(observation, np.float64)
    if x.shape[-1:] != (self.observation_size,):
      raise ValueError(f"an observation has {self.observation_size} values (policy.json lists "
                       f"them); got shape {x.shape}")
    for i in range(self.num_hidden):
      x = x @ self.weights[f"hidden_{i}_kernel"] + self.weights[f"hidden_{i}_bias"]
      if self.layer_norm:
        mean = x.mean(axis=-1, keepdims=True)
        variance = np.square(x - mean).mean(axis=-1, keepdims=True)
        x = (x - mean) / np.sqrt(variance + self.epsilon)
        x = x * self.weights[f"hidden_{i}_norm_scale"] + self.weights[f"hidden_{i}_norm_bias"]
      x = np.maximum(x, 0.0)
    mean = x @ self.weights["mean_kernel"] + self.weights["mean_bias"]
    return np.clip(np.tanh(mean), -self.action_clip, self.action_clip)


def load(path="policy.npz"):
  with np.load(path) as weights:
    return Policy(dict(weights))


if __name__ == "__main__":
  if len(sys.argv) < 3:
    sys.exit("usage: python policy.py policy.npz OBSERVATION_VALUES...")
  try:
    action = load(sys.argv[1])([float(v) for v in sys.argv[2:]])
  except ValueError as error:
    sys.exit(f"error: {error}")
  print(" ".join(f"{a:.6f}" for a in action))

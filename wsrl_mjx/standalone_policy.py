"""A WSRL policy exported by `python -m launch.export`, run with numpy alone.

  import policy
  act = policy.load()         # policy.npz beside this file; or policy.load("path/policy.npz")
  action = act(observation)   # [obs_dim] -> [act_dim]; [..., obs_dim] -> [..., act_dim]

  python policy.py policy.npz 0.1 0.2 ...   # prints the action for one observation

The observation is the env's, value for value: `policy.json`'s `observation.layout` names each
field, its index range and the unit of each value (m, rad, m/s, rad/s or unitless, with a note
on frames, quaternion order and flags where one helps). The policy is deterministic: the
observation clipped to the env's bounds where the env clips it (`observation.layout[].clip`;
e.g. hopper's velocities to +-10), the actor's hidden layers (Dense, LayerNorm where the export
says so, ReLU), the Gaussian mean head, tanh, then the clip to +-action_clip. Actions are in
[-1, 1]; `policy.json` says how the env maps them onto actuator controls. Computed in float64
(`policy.onnx` computes the same in float32). This file is copied verbatim from wsrl-mjx's
`wsrl_mjx/standalone_policy.py` and imports nothing but numpy.
"""

import pathlib
import sys
import zipfile

import numpy as np


class Policy:
  """The weights of `policy.npz` and the forward pass (float64 throughout)."""

  def __init__(self, weights, source="policy.npz"):
    """`weights`: {name: array} as `launch.export` writes them; `source` names them in errors.
    Raises ValueError naming `source` where an array is missing."""
    try:
      self.num_hidden = int(weights["num_hidden"])
      self.layer_norm = bool(weights["layer_norm"])
      self.epsilon = float(weights["layer_norm_epsilon"])
      self.action_clip = float(weights["action_clip"])
      for name in ["mean_kernel", "mean_bias"] + [
          f"hidden_{i}_{part}" for i in range(self.num_hidden) for part in ("kernel", "bias")]:
        weights[name]   # noqa: B018 (checks that it is there)
    except KeyError as error:
      raise ValueError(f"{source}: has no {error.args[0]!r} array; not a policy.npz written by "
                       "launch.export") from None
    self.weights = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    # Exports from before observation bounds, and envs that do not clip, have none.
    self.observation_low = self.weights.get("observation_low")
    self.observation_high = self.weights.get("observation_high")

  @property
  def observation_size(self) -> int:
    return self.weights["hidden_0_kernel"].shape[0]

  @property
  def action_size(self) -> int:
    return self.weights["mean_bias"].shape[0]

  def __call__(self, observation):
    """Actions for `observation` ([..., observation_size] real numbers in the env's order and
    units: policy.json's `observation.layout` gives each field's index range [start, stop) and
    each value's unit in `units`: m, rad, m/s, rad/s or unitless) -> [..., action_size]
    float64 in [-action_clip, action_clip].

    Raises ValueError where the last axis is not observation_size, where the values are not
    real numbers (strings, complex, None), or where any is NaN or infinite: a policy fed a
    sensor's failure would return NaN actions, so it refuses instead (the error gives the
    indices)."""
    x = np.asarray(observation)
    if x.dtype.kind not in "biuf":
      raise ValueError(f"an observation holds real numbers; got an array of {x.dtype}")
    x = x.astype(np.float64)
    if x.shape[-1:] != (self.observation_size,):
      raise ValueError(f"an observation has {self.observation_size} values (policy.json lists "
                       f"them); got shape {x.shape}")
    if not np.isfinite(x).all():
      where = sorted({int(i) for i in np.argwhere(~np.isfinite(x))[:, -1]})
      raise ValueError(f"observation values at indices {where} are NaN or infinite; the policy "
                       "has no action for them")
    if self.observation_low is not None:
      x = np.clip(x, self.observation_low, self.observation_high)
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


def load(path=None):
  """The policy in `path` (default: policy.npz in this file's folder). Raises ValueError naming
  the file where it is missing or is not an export's policy.npz."""
  path = pathlib.Path(__file__).with_name("policy.npz") if path is None else pathlib.Path(path)
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise ValueError(f"{path}: holds one array, not the .npz of launch.export")
    with loaded:
      arrays = dict(loaded)
  except FileNotFoundError:
    raise ValueError(f"{path}: no such file") from None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
    if str(error).startswith(f"{path}: "):
      raise
    reason = "not a .npz file" if "pickle" in str(error) else str(error).splitlines()[0]
    raise ValueError(f"{path}: cannot be read as policy.npz ({reason})") from None
  return Policy(arrays, source=path)


if __name__ == "__main__":
  if len(sys.argv) < 3:
    sys.exit("usage: python policy.py policy.npz OBSERVATION_VALUES...")
  try:
    action = load(sys.argv[1])([float(v) for v in sys.argv[2:]])
  except ValueError as error:
    sys.exit(f"error: {error}")
  print(" ".join(f"{a:.6f}" for a in action))

"""One seed's deterministic policy, exported for a robot: ONNX, numpy weights, a numpy-only
runner and a JSON of everything needed to wire it to the env's actuators.

The policy is what evaluation runs (`sac.SAC.deterministic_action`, then the clip of
`evaluation.evaluate`): the actor's hidden layers (`networks.MLP`: Dense, LayerNorm with flax's
epsilon 1e-6 where the agent has `layer_norm`, ReLU), the Gaussian mean head, tanh, the clip to
+-`config.action_clip`. The std head is not exported. `export(run_dir, out, seed)` writes:

- `policy.onnx`: that graph in standard ONNX ops (Gemm, LayerNormalization, Relu, Tanh, Clip;
  opset 17), input `observation` [batch, obs_dim], output `action` [batch, act_dim];
- `policy.npz`: the weights, read by `policy.py` (a copy of `standalone_policy.py`);
- `policy.json`: env, observation layout, action scaling to controls, control period, network
  sizes, the source run, checkpoint and seed, and the seed's last evaluation.

What is refused (ExportError, one line naming the file or flag): a seed out of range, a seed
that diverged, a checkpoint without an `agent` item, an agent that is not a tanh-Gaussian.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from typing import Any

import jax
import numpy as np

import envs
from wsrl_mjx import checkpoint, configs, runs
from wsrl_mjx.agents import sac
from wsrl_mjx.errors import UserError

OPSET = 17
IR_VERSION = 8            # the ONNX IR of opset 17 (onnx 1.12), so older runtimes load it
LAYER_NORM_EPSILON = 1e-6  # flax.linen.LayerNorm's default, which networks.MLP uses
FILES = ("policy.onnx", "policy.npz", "policy.py", "policy.json")


class ExportError(UserError):
  """A policy that cannot be exported as asked, with the reason."""


@dataclasses.dataclass(frozen=True)
class ActorWeights:
  """One seed's deterministic actor, as float32 numpy arrays."""
  hidden: list[dict[str, np.ndarray]]   # per layer: kernel [in, out], bias [out], and with
                                        # layer norm norm_scale [out], norm_bias [out]
  mean_kernel: np.ndarray               # [hidden, act_dim]
  mean_bias: np.ndarray                 # [act_dim]
  layer_norm: bool
  action_clip: float

  def arrays(self) -> dict[str, np.ndarray]:
    """The `policy.npz` contents `standalone_policy.Policy` reads."""
    arrays = {"num_hidden": np.asarray(len(self.hidden)),
              "layer_norm": np.asarray(self.layer_norm),
              "layer_norm_epsilon": np.asarray(LAYER_NORM_EPSILON, np.float32),
              "action_clip": np.asarray(self.action_clip, np.float32),
              "mean_kernel": self.mean_kernel, "mean_bias": self.mean_bias}
    for i, layer in enumerate(self.hidden):
      arrays.update({f"hidden_{i}_{name}": value for name, value in layer.items()})
    return arrays


def actor_weights(actor_params, layer_norm: bool, action_clip: float) -> ActorWeights:
  """`GaussianActor` parameters of one seed (flax's {"params": {"MLP_0": ...}}) -> weights."""
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), actor_params)["params"]
  body = params["MLP_0"]
  hidden = []
  for i in range(sum(name.startswith("Dense_") for name in body)):
    layer = {"kernel": body[f"Dense_{i}"]["kernel"], "bias": body[f"Dense_{i}"]["bias"]}
    if layer_norm:
      layer.update(norm_scale=body[f"LayerNorm_{i}"]["scale"],
                   norm_bias=body[f"LayerNorm_{i}"]["bias"])
    hidden.append(layer)
  return ActorWeights(hidden=hidden, mean_kernel=params["mean"]["kernel"],
                      mean_bias=params["mean"]["bias"], layer_norm=layer_norm,
                      action_clip=float(action_clip))


def onnx_model(weights: ActorWeights, observation_size: int):
  """The deterministic policy as an ONNX ModelProto (checked by onnx.checker)."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper

  nodes, initializers = [], []

  def constant(name, value):
    initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name

  x = "observation"
  for i, layer in enumerate(weights.hidden):
    nodes.append(helper.make_node("Gemm", [x, constant(f"hidden_{i}_kernel", layer["kernel"]),
                                           constant(f"hidden_{i}_bias", layer["bias"])],
                                  [f"hidden_{i}_dense"]))
    x = f"hidden_{i}_dense"
    if weights.layer_norm:
      nodes.append(helper.make_node(
          "LayerNormalization", [x, constant(f"hidden_{i}_norm_scale", layer["norm_scale"]),
                                 constant(f"hidden_{i}_norm_bias", layer["norm_bias"])],
          [f"hidden_{i}_norm"], axis=-1, epsilon=LAYER_NORM_EPSILON))
      x = f"hidden_{i}_norm"
    nodes.append(helper.make_node("Relu", [x], [f"hidden_{i}"]))
    x = f"hidden_{i}"
  nodes += [
      helper.make_node("Gemm", [x, constant("mean_kernel", weights.mean_kernel),
                                constant("mean_bias", weights.mean_bias)], ["mean"]),
      helper.make_node("Tanh", ["mean"], ["squashed"]),
      helper.make_node("Clip", ["squashed", constant("action_low", -weights.action_clip),
                                constant("action_high", weights.action_clip)], ["action"])]
  action_size = weights.mean_bias.shape[0]
  graph = helper.make_graph(
      nodes, "wsrl_deterministic_policy",
      [helper.make_tensor_value_info("observation", TensorProto.FLOAT,
                                     ["batch", observation_size])],
      [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", action_size])],
      initializer=initializers)
  model = helper.make_model(graph, producer_name="wsrl-mjx",
                            opset_imports=[helper.make_opsetid("", OPSET)])
  model.ir_version = IR_VERSION
  onnx.checker.check_model(model, full_check=True)
  return model


def action_scaling(env) -> dict[str, Any]:
  """How the env turns a policy action into actuator controls, read off `env.action_to_ctrl`:
  ctrl = offset + scale * action for actions in [-1, 1] (every family maps affinely; checked
  at 0, +-1 and random points). Raises ExportError where the map is not affine."""
  size = env.action_size
  to_ctrl = lambda a: np.asarray(env.action_to_ctrl(jax.numpy.asarray(a, np.float32)),
                                 np.float64)
  offset = to_ctrl(np.zeros(size))
  scale = to_ctrl(np.ones(size)) - offset
  probes = np.concatenate([-np.ones((1, size)),
                           np.random.default_rng(0).uniform(-1, 1, (8, size))])
  if not np.allclose(to_ctrl(probes), offset + scale * probes, rtol=1e-5, atol=1e-5):
    raise ExportError(f"{type(env).__name__}.action_to_ctrl is not affine on [-1, 1]; "
                      "policy.json cannot describe it as offset + scale * action")
  model = env.mj_model
  import mujoco
  actuators = [{"name": mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i),
                "ctrlrange": [float(v) for v in model.actuator_ctrlrange[i]],
                "ctrllimited": bool(model.actuator_ctrllimited[i])} for i in range(size)]
  return {"ctrl_from_action": "ctrl = offset + scale * action",
          "offset": offset.tolist(), "scale": scale.tolist(), "actuators": actuators}


def observation_layout(env, observation_size: int) -> list[dict[str, Any]]:
  """The env's named observation fields as [start, stop) index ranges, in order."""
  layout = []
  for name, part in env.observation_fields().items():
    start, stop, _ = part.indices(observation_size)
    layout.append({"name": name, "start": start, "stop": stop})
  return sorted(layout, key=lambda field: field["start"])


def choose_seed(run: runs.Run, seed: int | None, best: bool) -> int:
  """`seed` checked, or with `best` the seed of the best last evaluation among those that did
  not diverge. Raises ExportError naming the flag."""
  diverged = run.diverged_at
  if best == (seed is not None):
    raise ExportError("give exactly one of --seed=I and --best")
  if best:
    scores = run.scores[-1]
    candidates = [i for i in range(run.num_seeds)
                  if diverged[i] is None and np.isfinite(scores[i])]
    if not candidates:
      raise ExportError(f"{run.path}: every seed diverged or has no finite last evaluation; "
                        "there is no best seed to export")
    return max(candidates, key=lambda i: scores[i])
  if not 0 <= seed < run.num_seeds:
    raise ExportError(f"--seed={seed}: {run.path} has seeds 0 to {run.num_seeds - 1}")
  if diverged[seed] is not None:
    raise ExportError(f"--seed={seed}: this seed of {run.path} diverged at "
                      f"{run.step_unit.replace('_', ' ')} {diverged[seed]} (a non-finite update "
                      "stopped its learning); export another seed")
  return seed


def load_actor(run_dir: pathlib.Path, seed: int):
  """(actor params of `seed`, description, checkpoint step folder) from the run's latest
  checkpoint. Raises ExportError for a checkpoint without an agent or with a non-SAC agent."""
  try:
    directory, step = checkpoint.resolve(run_dir)
    description = checkpoint.read_description(directory, step)
  except checkpoint.CheckpointError as error:
    raise ExportError(str(error)) from None
  step_dir = directory / str(step)
  if not (step_dir / "agent").is_dir():
    raise ExportError(f"{step_dir}: holds no agent item (checkpoints/<step>/agent); there is no "
                      "policy to export")
  agent = description.get("agent", {})
  if agent.get("policy") != "tanh_gaussian":
    raise ExportError(f"{step_dir / 'description' / 'metadata'}: agent.policy is "
                      f"{agent.get('policy')!r}; only SAC-shaped (tanh_gaussian) agents export")
  fields = {f.name for f in dataclasses.fields(sac.SACConfig)}
  learner = sac.SAC(sac.SACConfig(**{k: v for k, v in agent.items() if k in fields}))

  def abstract_params_for(num_seeds):
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    return jax.eval_shape(jax.vmap(learner.init_params), keys)

  try:
    params, _ = checkpoint.load_agent(step_dir, dict(agent, env_name=description.get("env_name")),
                                      abstract_params_for)
  except checkpoint.CheckpointError as error:
    raise ExportError(str(error)) from None
  return jax.tree.map(lambda x: np.asarray(x)[seed], params.actor), description, step_dir


def _finite_or_none(value) -> float | None:
  return float(value) if value is not None and np.isfinite(value) else None


def export(run_dir: str | pathlib.Path, out: str | pathlib.Path, seed: int | None = None,
           best: bool = False) -> dict[str, Any]:
  """Exports one seed's policy (see the module docstring) into `out`; returns `policy.json`'s
  contents. Raises runs.RunError or ExportError, before anything is written."""
  run = runs.read(run_dir)
  seed = choose_seed(run, seed, best)
  actor, description, step_dir = load_actor(run.path, seed)
  agent = description["agent"]
  config = run.config or description.get("config") or {}
  weights = actor_weights(actor, bool(agent["layer_norm"]), config["action_clip"])
  env_spec = envs.spec(description["env_name"])
  env, _ = envs.make(env_spec.name, **configs.env_options(config, env_spec))
  observation_size = int(agent["observation_size"])
  model = onnx_model(weights, observation_size)

  last = run.records[-1]
  info = {
      "format": "wsrl-mjx policy 1",
      "env": {"name": env_spec.name, "task": env_spec.task, "family": env_spec.family,
              "episode_length": config.get("episode_length") or env_spec.episode_length},
      "observation": {"size": observation_size,
                      "layout": observation_layout(env, observation_size)},
      "action": {"size": int(agent["action_size"]), "range": [-1.0, 1.0],
                 "clip": weights.action_clip, **action_scaling(env)},
      "control_period_s": env.dt,
      "physics": {"timestep_s": float(env.mj_model.opt.timestep),
                  "steps_per_action": int(env.frame_skip)},
      "network": {"hidden_sizes": [int(layer["bias"].shape[0]) for layer in weights.hidden],
                  "layer_norm": weights.layer_norm, "layer_norm_epsilon": LAYER_NORM_EPSILON,
                  "activation": "relu", "output": "clip(tanh(mean head), -clip, clip)"},
      "source": {"run": str(run.path), "checkpoint": str(step_dir),
                 "checkpoint_step": int(description["step"]),
                 "step_unit": description.get("step_unit", run.step_unit),
                 "seed": seed, "num_seeds": run.num_seeds, "method": run.method,
                 "per_seed": run.seed_points[seed]},
      "last_evaluation": {run.step_unit: int(last[run.step_unit]),
                          "normalized_score": _finite_or_none(run.scores[-1][seed]),
                          "return": (last.get("returns") or [None] * run.num_seeds)[seed]},
      "files": {"onnx": "policy.onnx", "weights": "policy.npz", "numpy_runner": "policy.py"},
  }

  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "policy.onnx").write_bytes(model.SerializeToString())
  np.savez(out / "policy.npz", **weights.arrays())
  shutil.copyfile(pathlib.Path(__file__).with_name("standalone_policy.py"), out / "policy.py")
  (out / "policy.json").write_text(json.dumps(info, indent=2) + "\n")
  return info

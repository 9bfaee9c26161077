"""One seed's deterministic policy, exported for a robot: ONNX, numpy weights, a numpy-only
runner and a JSON of everything needed to wire it to the env's actuators.

The policy is what evaluation runs (`sac.SAC.deterministic_action`, then the clip of
`evaluation.evaluate`): the actor's hidden layers (`networks.MLP`: Dense, LayerNorm with flax's
epsilon 1e-6 where the agent has `layer_norm`, ReLU), the Gaussian mean head, tanh, the clip to
+-`config.action_clip`. The std head is not exported. `export(run_dir, out, seed)` writes:

Where the env clips its observation (hopper's and walker2d's velocities to +-10: gym's
`_get_obs`), the exported policy clips its input the same way first (`MjxEnv.observation_bounds`),
so that raw sensor values mean what the env's observations meant; on the env's own observations
this changes nothing.

- `policy.onnx`: that graph in standard ONNX ops (Max and Min for the observation's bounds where
  it has any, Gemm, LayerNormalization, Relu, Tanh, Clip; opset 17), input `observation`
  [batch, obs_dim] float32, output `action` [batch, act_dim] float32;
- `policy.npz`: the weights, read by `policy.py` (a copy of `standalone_policy.py`);
- `policy.json`: env, observation layout (each field's index range, bounds, and the unit of
  each value: m, rad, m/s, rad/s or unitless, `observation_units`), action scaling to controls,
  control period, network sizes, the source run, checkpoint and seed, the seed's evaluation of
  that checkpoint, and the SHA-256 of the other three files.

The files are written into a folder beside `out` and moved into it once all are written, so a
failed export leaves an earlier export in `out` as it was.

What is refused (ExportError, one line naming the file or flag): a seed out of range, a seed
that diverged at or before the checkpoint, a step with no checkpoint, a checkpoint without an
`agent` item, an agent that is not a tanh-Gaussian (an IQL agent: `not_exportable_message`), a
checkpoint whose agent does not fit the env it names (or that names another env than the run's
config), an empty `out` or one that cannot be written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import shutil
from typing import Any

import jax
import numpy as np

import envs
from envs import adroit, antmaze, kitchen, locomotion, point_mass
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
  # [obs_dim] each: the env's observation bounds (-inf/inf where it does not clip); None: none
  observation_low: np.ndarray | None = None
  observation_high: np.ndarray | None = None

  @property
  def bounded(self) -> bool:
    """Whether the observation is clipped anywhere before the network."""
    return self.observation_low is not None and bool(
        np.isfinite(self.observation_low).any() or np.isfinite(self.observation_high).any())

  def arrays(self) -> dict[str, np.ndarray]:
    """The `policy.npz` contents `standalone_policy.Policy` reads."""
    arrays = {"num_hidden": np.asarray(len(self.hidden)),
              "layer_norm": np.asarray(self.layer_norm),
              "layer_norm_epsilon": np.asarray(LAYER_NORM_EPSILON, np.float32),
              "action_clip": np.asarray(self.action_clip, np.float32),
              "mean_kernel": self.mean_kernel, "mean_bias": self.mean_bias}
    if self.bounded:
      arrays.update(observation_low=np.asarray(self.observation_low, np.float32),
                    observation_high=np.asarray(self.observation_high, np.float32))
    for i, layer in enumerate(self.hidden):
      arrays.update({f"hidden_{i}_{name}": value for name, value in layer.items()})
    return arrays


def actor_weights(actor_params, layer_norm: bool, action_clip: float,
                  observation_bounds: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> ActorWeights:
  """`GaussianActor` parameters of one seed (flax's {"params": {"MLP_0": ...}}) -> weights;
  `observation_bounds`: the env's ([obs_dim], [obs_dim]) `MjxEnv.observation_bounds`."""
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), actor_params)["params"]
  body = params["MLP_0"]
  hidden = []
  for i in range(sum(name.startswith("Dense_") for name in body)):
    layer = {"kernel": body[f"Dense_{i}"]["kernel"], "bias": body[f"Dense_{i}"]["bias"]}
    if layer_norm:
      layer.update(norm_scale=body[f"LayerNorm_{i}"]["scale"],
                   norm_bias=body[f"LayerNorm_{i}"]["bias"])
    hidden.append(layer)
  low, high = observation_bounds if observation_bounds is not None else (None, None)
  return ActorWeights(hidden=hidden, mean_kernel=params["mean"]["kernel"],
                      mean_bias=params["mean"]["bias"], layer_norm=layer_norm,
                      action_clip=float(action_clip), observation_low=low, observation_high=high)


def onnx_model(weights: ActorWeights, observation_size: int):
  """The deterministic policy as an ONNX ModelProto (checked by onnx.checker)."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper

  nodes, initializers = [], []

  def constant(name, value):
    initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name

  x = "observation"
  if weights.bounded:
    nodes += [helper.make_node("Max", [x, constant("observation_low", weights.observation_low)],
                               ["observation_above_low"]),
              helper.make_node("Min", ["observation_above_low",
                                       constant("observation_high", weights.observation_high)],
                               ["observation_clipped"])]
    x = "observation_clipped"
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
                "ctrllimited": bool(model.actuator_ctrllimited[i]),
                "gear": float(model.actuator_gear[i][0])} for i in range(size)]
  return {"ctrl_from_action": "ctrl = offset + scale * action",
          "offset": offset.tolist(), "scale": scale.tolist(), "actuators": actuators}


# Units of observation values (`observation_units`), in the SI units MuJoCo's models use: a
# joint's position (qpos) is m for a slide joint and rad for a hinge (MuJoCo keeps hinge angles in
# rad whatever unit the XML writes them in), its velocity (qvel) m/s or rad/s; a free joint's qpos
# is a position (m) and a unit quaternion (w, x, y, z), its qvel a linear velocity (m/s, world
# frame) then an angular velocity (rad/s, the body's own frame); a site's or body's position is
# m in the world frame. UNITLESS: a direction, a quaternion or a flag.
M, RAD, M_S, RAD_S, UNITLESS = "m", "rad", "m/s", "rad/s", "unitless"
QUATERNION_NOTE = "unit quaternion (w, x, y, z), MuJoCo's order"


def observation_units(env) -> dict[str, tuple[list[str], str | None]]:
  """{field name: (the unit of each of its values, in order; a note or None)} for the fields of
  `env.observation_fields()`, as each env builds its observation (envs/locomotion.py,
  antmaze.py, adroit.py, kitchen.py, point_mass.py) from the joints of its model; a field name
  the table does not know is absent (`observation_layout` marks it "unknown"). The Kitchen's
  goal (values 30-59, not one of its named fields) is `observation_layout`'s."""
  if isinstance(env, locomotion.Locomotion):
    joints = int(env.mj_model.nq) - 3           # planar: rootx, rootz, rooty, then the joints
    return {"root height, angle": ([M, RAD], "the torso's z slide (rootz) and pitch hinge "
                                             "(rooty); x is not observed"),
            "joint angles": ([RAD] * joints, None),
            "root velocities": ([M_S, M_S, RAD_S], "of rootx, rootz (slides) and rooty "
                                                   "(hinge)"),
            "joint velocities": ([RAD_S] * joints, None)}
  if isinstance(env, point_mass.PointMass):
    return {"position": ([M, M], "x and y slides"), "velocity": ([M_S, M_S], None)}
  if isinstance(env, antmaze.AntMaze):
    return {"xy": ([M, M], "the torso's position, world frame"),
            "z": ([M], "the torso's height, world frame"),
            "orientation": ([UNITLESS] * 4, f"the torso's {QUATERNION_NOTE}"),
            "joint angles": ([RAD] * 8, "hip and ankle hinges"),
            "root linear velocity": ([M_S] * 3, "world frame (MuJoCo free joint)"),
            "root angular velocity": ([RAD_S] * 3, "the torso's own frame (MuJoCo free joint)"),
            "joint velocities": ([RAD_S] * 8, None)}
  if isinstance(env, adroit.Adroit):
    if env.task_name == "pen":
      axis = f"(top - bottom) / its length ({adroit.PEN_LENGTH} m), a unit vector"
      return {"hand joint angles": ([RAD] * 24, None),
              "pen position": ([M] * 3, "world frame"),
              "pen velocity": ([M_S] * 3 + [RAD_S] * 3, "of the pen's slides (OBJTx, OBJTy, "
                               "OBJTz), then of its hinges (OBJRx, OBJRy, OBJRz)"),
              "pen orientation": ([UNITLESS] * 3, f"the pen's axis: {axis}"),
              "goal orientation": ([UNITLESS] * 3, f"the goal's axis: {axis}"),
              "pen position error": ([M] * 3, "pen position minus the goal's (site eps_ball)"),
              "pen orientation error": ([UNITLESS] * 3, "pen orientation minus goal "
                                                        "orientation")}
    if env.task_name == "door":
      return {"arm and hand joint angles": ([RAD] * 27, "the arm's hinges (ARRx, ARRy, ARRz), "
                                                        "then the hand's; the arm's slide ARTz "
                                                        "is not observed"),
              "latch and door angles": ([RAD, RAD], "the latch, then the door hinge"),
              "palm and handle positions": ([M] * 9, "palm (site S_grasp), handle (site "
                                                     "S_handle), palm minus handle; world "
                                                     "frame"),
              "door open": ([UNITLESS], "1 where the door hinge is past 1.0 rad, else -1")}
    return {"arm and hand joint angles": ([M] * 3 + [RAD] * 27, "the arm's slides (ARTx, ARTy, "
                                          "ARTz) in m, then its hinges and the hand's in rad"),
            "palm-ball-target offsets": ([M] * 9, "palm minus ball, palm minus target, ball "
                                                  "minus target; world frame")}
  if isinstance(env, kitchen.Kitchen):
    return {"robot joints": ([RAD] * 7, "the arm's 7 hinges"),
            "fingers": ([M] * 2, "the two finger slides"),
            "burners and light": ([RAD, M] * 5, "per burner (4): its knob's hinge (rad), then its "
                                                "slide (m); then the light switch's hinge (rad) "
                                                "and the light's slide (m)"),
            "cabinets and microwave": ([M, RAD, RAD, RAD], "the slide cabinet (m), the hinge "
                                                           "cabinet's two doors and the "
                                                           "microwave door (rad)"),
            "kettle position": ([M] * 3, "world frame"),
            "kettle orientation": ([UNITLESS] * 4, f"the kettle's {QUATERNION_NOTE}")}
  return {}


def _kitchen_goal(env, observation_size: int, layout: list[dict[str, Any]]) -> dict[str, Any]:
  """The Kitchen's goal (its values 30-59): the task's goal positions for values 0-29, in their
  units, with the values the env appends (a constant of the task)."""
  positions = [unit for field in layout for unit in field["units"]]
  goal = kitchen.task_goal(env.task_name)
  return {"name": "goal", "start": len(positions), "stop": observation_size, "clip": None,
          "units": positions,
          "note": "the task's goal for values 0-29, in their units (0 except at the task's "
                  "elements); a constant of the task: feed `value`",
          "value": [float(v) for v in goal]}


def observation_layout(env, observation_size: int) -> list[dict[str, Any]]:
  """The env's named observation fields as [start, stop) index ranges, in order, each with the
  [low, high] the env clips it to (`MjxEnv.observation_bounds`), or None where it does not, the
  unit of each of its values (`observation_units`; "unknown" where the table has none) and,
  where one helps, a note on what the values are. The Kitchen's goal (30-59), which its named
  fields leave out, is a field of its own.

  Raises ExportError where a field's bounds differ within it."""
  low, high = env.observation_bounds()
  units = observation_units(env)
  layout = []
  for name, part in env.observation_fields().items():
    start, stop, _ = part.indices(observation_size)
    bounds = {(float(a), float(b)) for a, b in zip(low[start:stop], high[start:stop])}
    if len(bounds) > 1:
      raise ExportError(f"{type(env).__name__}: the observation field {name!r} has bounds that "
                        "differ within it; policy.json cannot give them as one [low, high]")
    clip = next(iter(bounds), (-np.inf, np.inf))
    field_units, note = units.get(name, (["unknown"] * (stop - start), None))
    if len(field_units) != stop - start:
      raise ExportError(f"{type(env).__name__}: the observation field {name!r} has "
                        f"{stop - start} values but export.observation_units gives "
                        f"{len(field_units)} units")
    field = {"name": name, "start": start, "stop": stop,
             "clip": ([v if np.isfinite(v) else None for v in clip]
                      if np.isfinite(clip).any() else None),
             "units": list(field_units)}
    if note:
      field["note"] = note
    layout.append(field)
  layout.sort(key=lambda field: field["start"])
  if isinstance(env, kitchen.Kitchen) and layout[-1]["stop"] < observation_size:
    layout.append(_kitchen_goal(env, observation_size, layout))
  return layout


def checkpoint_step(run: runs.Run, step: int | None) -> tuple[pathlib.Path, int]:
  """(checkpoints folder, step) of the run's checkpoint at `step`, or of its latest where
  `step` is None. Raises ExportError naming the flag or folder where there is none."""
  try:
    directory, latest = checkpoint.resolve(run.path)
  except checkpoint.CheckpointError as error:
    raise ExportError(str(error)) from None
  if step is None:
    return directory, latest
  available = runs.finished_checkpoint_steps(run.path)
  if step not in available:
    unit = run.step_unit.replace("_", " ")
    raise ExportError(f"--step={step}: {directory} has checkpoints at {unit}s "
                      f"{', '.join(map(str, available)) or '(none)'}")
  return directory, step


def evaluation_at(run: runs.Run, step: int) -> int | None:
  """Index in `run.records` of the evaluation of the weights checkpointed at `step`: the record at
  that step, else the newest before it (checkpoints and evaluations have their own intervals);
  None where every evaluation is later."""
  earlier = np.flatnonzero(run.steps <= step)
  return int(earlier[-1]) if len(earlier) else None


def choose_seed(run: runs.Run, seed: int | None, best: bool, step: int) -> int:
  """`seed` checked, or with `best` the seed whose evaluation of the checkpoint at `step`
  (`evaluation_at`) is best among those that had not diverged by then. Raises ExportError
  naming the flag."""
  unit = run.step_unit.replace("_", " ")
  diverged = [d is not None and d <= step for d in run.diverged_at]
  if best == (seed is not None):
    raise ExportError("give exactly one of --seed=I and --best")
  if best:
    index = evaluation_at(run, step)
    if index is None:
      raise ExportError(f"--best: {run.path} has no evaluation at or before the checkpoint at "
                        f"{unit} {step} to choose by")
    scores = run.scores[index]
    candidates = [i for i in range(run.num_seeds) if not diverged[i] and np.isfinite(scores[i])]
    if not candidates:
      raise ExportError(f"{run.path}: every seed diverged or has no finite evaluation at {unit} "
                        f"{int(run.steps[index])}; there is no best seed to export")
    return max(candidates, key=lambda i: scores[i])
  if not 0 <= seed < run.num_seeds:
    raise ExportError(f"--seed={seed}: {run.path} has seeds 0 to {run.num_seeds - 1}")
  if diverged[seed]:
    raise ExportError(f"--seed={seed}: this seed of {run.path} diverged at {unit} "
                      f"{run.diverged_at[seed]} (a non-finite update stopped its learning); "
                      "export another seed, or an earlier checkpoint (--step)")
  return seed


EXPORTABLE = ("launch.export exports runs of WSRL, SAC, RLPD, CQL and Cal-QL (pretraining or "
              "fine-tuning) and the other SAC-based methods, whose actor is a tanh-squashed "
              "Gaussian (agent.policy 'tanh_gaussian')")


def not_exportable_message(description_file: pathlib.Path, agent: dict[str, Any]) -> str:
  """Why the agent a checkpoint describes (its description's `agent` block, read from
  `description_file`) cannot be exported: which runs can, and that IQL agents cannot yet."""
  policy = agent.get("policy")
  if agent.get("algo") == "iql" or policy == "gaussian":
    what = ("an IQL agent, whose actor is a Gaussian without the tanh squashing; IQL agents "
            "cannot be exported yet")
  else:
    what = "not an actor launch.export knows"
  return f"{description_file}: agent.policy is {policy!r}: {what}. {EXPORTABLE}."


def load_actor(directory: pathlib.Path, step: int, description: dict[str, Any], seed: int, env,
               run_config: dict[str, Any], config_source: str | None):
  """(actor params of `seed`, checkpoint step folder) from `directory/<step>`.

  `description` is that checkpoint's, `env` the env it names; `run_config`, the run's config from
  `config_source` (a file of the run). Raises ExportError for a checkpoint without an agent, with
  a non-SAC agent, whose agent's sizes do not fit `env`, that names another env than the run's
  config, or that is damaged."""
  step_dir = directory / str(step)
  description_file = step_dir / "description" / "metadata"
  if not (step_dir / "agent").is_dir():
    raise ExportError(f"{step_dir}: holds no agent item (checkpoints/<step>/agent); there is no "
                      "policy to export")
  agent = description.get("agent", {})
  if agent.get("policy") != "tanh_gaussian":
    raise ExportError(not_exportable_message(description_file, agent))
  named = run_config.get("env_name")
  if named and named != description.get("env_name"):
    raise ExportError(f"{description_file}: env_name is {description.get('env_name')!r} but the "
                      f"run's {config_source} says {named!r}")
  for field, want in (("observation_size", env.observation_size),
                      ("action_size", env.action_size)):
    if agent.get(field) != want:
      raise ExportError(f"{description_file}: agent.{field} is {agent.get(field)!r} but "
                        f"{description.get('env_name')} has {want}; the description does not "
                        "belong to this agent")
  fields = {f.name for f in dataclasses.fields(sac.SACConfig)}
  learner = sac.SAC(sac.SACConfig(**{k: v for k, v in agent.items() if k in fields}))

  def abstract_params_for(num_seeds):
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    return jax.eval_shape(jax.vmap(learner.init_params), keys)

  try:
    params, _ = checkpoint.load_agent(step_dir, dict(agent, env_name=description.get("env_name")),
                                      abstract_params_for)
  except checkpoint.CheckpointError as error:
    raise ExportError(f"{error} (launch.export --step=N exports an older checkpoint)") from None
  return jax.tree.map(lambda x: np.asarray(x)[seed], params.actor), step_dir


def _finite_or_none(value) -> float | None:
  return float(value) if value is not None and np.isfinite(value) else None


def export(run_dir: str | pathlib.Path, out: str | pathlib.Path, seed: int | None = None,
           best: bool = False, step: int | None = None) -> dict[str, Any]:
  """Exports one seed's policy from the run's checkpoint at `step` (None: the latest) into
  `out` (see the module docstring); returns `policy.json`'s contents. Raises runs.RunError or
  ExportError (an empty `out` among them: it would be the current folder); where it raises,
  `out` is as it was."""
  if not str(out).strip():
    raise ExportError("--out=: names no folder; give the folder to write the policy into "
                      "(e.g. --out=runs/policy)")
  run = runs.read(run_dir)
  directory, step = checkpoint_step(run, step)
  seed = choose_seed(run, seed, best, step)
  try:
    description = checkpoint.read_description(directory, step)
  except checkpoint.CheckpointError as error:
    raise ExportError(str(error)) from None
  description_file = directory / str(step) / "description" / "metadata"
  try:
    env_spec = envs.spec(str(description.get("env_name")))
  except ValueError as error:
    raise ExportError(f"{description_file}: env_name: {error}") from None
  config = run.config or description.get("config") or {}
  env, _ = envs.make(env_spec.name, **configs.env_options(config, env_spec))
  actor, step_dir = load_actor(directory, step, description, seed, env, config,
                               run.config_source)
  agent = description["agent"]
  weights = actor_weights(actor, bool(agent["layer_norm"]), config["action_clip"],
                          env.observation_bounds())
  observation_size = int(agent["observation_size"])
  model = onnx_model(weights, observation_size)

  index = evaluation_at(run, step)
  evaluation = None
  if index is not None:
    record = run.records[index]
    evaluation = {run.step_unit: int(record[run.step_unit]),
                  "of_this_checkpoint": int(record[run.step_unit]) == step,
                  "normalized_score": _finite_or_none(run.scores[index][seed]),
                  "return": (record.get("returns") or [None] * run.num_seeds)[seed]}
  npz = io.BytesIO()
  np.savez(npz, **weights.arrays())
  files = {"policy.onnx": model.SerializeToString(), "policy.npz": npz.getvalue(),
           "policy.py": pathlib.Path(__file__).with_name("standalone_policy.py").read_bytes()}
  info = {
      "format": "wsrl-mjx policy 1",
      "env": {"name": env_spec.name, "task": env_spec.task, "family": env_spec.family,
              "episode_length": config.get("episode_length") or env_spec.episode_length},
      "observation": {"size": observation_size,
                      "layout": observation_layout(env, observation_size),
                      "clipped_by_the_policy": weights.bounded},
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
      # The evaluation of these weights where one was made at the checkpoint's step, else the
      # newest before it (`of_this_checkpoint` false), None where there is none.
      "last_evaluation": evaluation,
      "files": {"onnx": "policy.onnx", "weights": "policy.npz", "numpy_runner": "policy.py"},
      "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
  }
  files["policy.json"] = (json.dumps(info, indent=2) + "\n").encode()
  write_folder(pathlib.Path(out), files)
  return info


def exported_source(out: str | pathlib.Path) -> dict[str, Any] | None:
  """The `source` block of the policy.json an earlier export left in `out`; None where there is
  none or it cannot be read (the export then simply writes its own)."""
  try:
    source = json.loads((pathlib.Path(out) / "policy.json").read_text())["source"]
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return source if isinstance(source, dict) else None


def source_text(source: dict[str, Any]) -> str:
  """'seed 1 of /runs/x, checkpoint at env step 2000', from a policy.json's `source`."""
  unit = str(source.get("step_unit", "step")).replace("_", " ")
  return (f"seed {source.get('seed')} of {source.get('run')}, checkpoint at {unit} "
          f"{source.get('checkpoint_step')}")


def write_folder(out: pathlib.Path, files: dict[str, bytes]) -> None:
  """Writes `files` ({name: contents}) into the folder `out` (made, with its parents, where
  missing; other files in it are left alone). They are written into a new folder beside `out`
  first and moved in once all are, the last one last, so a failure leaves `out` as it was.
  Raises ExportError naming `out` where it cannot be written."""
  out = out.expanduser().absolute()
  staging = out.parent / f".{out.name}.export-{os.getpid()}"
  try:
    if out.exists() and not out.is_dir():
      raise ExportError(f"--out={out}: is a file, not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, data in files.items():
      (staging / name).write_bytes(data)
    if not out.exists():
      os.rename(staging, out)
    else:
      for name in files:             # policy.json, which describes the others, comes last
        os.replace(staging / name, out / name)
  except OSError as error:
    where = f": {error.filename}" if error.filename else ""
    raise ExportError(f"--out={out}: cannot write the policy there "
                      f"({error.strerror or error}{where})") from None
  finally:
    shutil.rmtree(staging, ignore_errors=True)

r"""Throughput of the fused WSRL loop against the ways it is usually structured (not a test).

Measured side by side in one process, after compilation, warmup off (every step trains):

- fused:        `jit(vmap(run))`: env step + buffer insert + one UTD update per step, `--chunk`
                steps per device call (what launch.finetune runs);
- update-only:  the same UTD update in a `lax.scan` on a filled buffer, no environment: the
                learner's ceiling;
- python-loop:  the same step called from a Python loop once per env step (how the reference
                implementation is structured), still vmapped over seeds;
- brax-sac:     Brax's own SAC trainer on the same MJX env, one seed per run, with the settings it
                shares (2x256 LayerNorm networks, 10 critics, batch 256, 4 gradient steps per
                env step; it backs up the min of all critics and updates the actor every
                gradient step, on 256 transitions).

Units: env steps/s counts all seeds; seed-updates/s counts gradient steps on a 256-transition
minibatch, summed over seeds (a WSRL env step has 4, plus one actor step on 1024).

  python -m benchmarks.throughput --seeds=1,8,64                          # GPU
  python -m benchmarks.throughput --seeds=1,4 --chunk=50 --loop_steps=20 --brax_steps=2000  # CPU
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import envs
from launch import runtime
from launch.configs import finetune as finetune_config
from wsrl_mjx import controller, finetune, per_seed, replay

_ENV = flags.DEFINE_string("env", "hopper-medium-v2", "Environment (paper's locomotion config).")
_SEEDS = flags.DEFINE_list("seeds", ["1", "8", "64"], "Seed counts to measure.")
_CHUNK = flags.DEFINE_integer("chunk", 1000, "Env steps per fused device call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (after compiling).")
_LOOP_STEPS = flags.DEFINE_integer("loop_steps", 300,
                                   "Env steps timed for the Python loop (0: skip it).")
_BRAX_STEPS = flags.DEFINE_integer("brax_steps", 20_000, "Env steps per Brax SAC epoch (0: skip).")
_PRECISIONS = flags.DEFINE_list("precisions", ["default", "bfloat16"],
                                "Matmul precisions for the fused loop (first one is the baseline).")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def _timed(fn, repeats, label):
  """Median seconds of `repeats` calls after a first one (compile + warm-up), which is printed:
  on a GPU the compile of a fused MJX + 10-critic program can take minutes."""
  print(f"  {label}: compiling ...", flush=True)
  start = time.perf_counter()
  jax.block_until_ready(fn())
  print(f"  {label}: first call (compile + run) {time.perf_counter() - start:.1f} s", flush=True)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _setup(num_seeds, precision):
  config = finetune_config.get_config(_ENV.value)
  config.num_seeds = num_seeds
  config.warmup_steps = 0
  config.matmul_precision = precision
  config.replay_capacity = 100_000
  env, env_spec = envs.make(config.env_name)
  programs = finetune.build_programs(config, env, env_spec)
  settings, _ = per_seed.seed_settings(config)
  state = programs.init(finetune.seed_keys(config), jax.tree.map(jnp.asarray, settings), None)
  return config, env, env_spec, programs, state


def measure_fused(num_seeds, precision):
  config, _, _, programs, state = _setup(num_seeds, precision)
  holder = {"state": state}

  def call():
    holder["state"], stats = programs.run(holder["state"], _CHUNK.value)
    return stats

  seconds = _timed(call, _REPEATS.value, f"fused[{precision}], {num_seeds} seeds")
  env_steps = num_seeds * _CHUNK.value / seconds
  return {"env_steps_per_s": env_steps, "seed_updates_per_s": env_steps * config.utd}


def measure_update_only(num_seeds, precision):
  config, _, _, programs, state = _setup(num_seeds, precision)
  agent = programs.online.agent
  # Fill the buffers with `chunk` real transitions first.
  state, _ = programs.run(state, _CHUNK.value)

  def updates(agent_state, buffer, key):
    def body(carry, step_key):
      sample_key, update_key = jax.random.split(step_key)
      batch = replay.sample(buffer, sample_key, agent.config.batch_size)
      new, _ = agent.update(carry, batch, update_key)
      return new, None
    return jax.lax.scan(body, agent_state, jax.random.split(key, _CHUNK.value))[0]

  run = jax.jit(jax.vmap(updates), donate_argnums=0)
  holder = {"agent": state.agent}
  keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)

  def call():
    holder["agent"] = run(holder["agent"], state.buffer, keys)
    return holder["agent"]

  seconds = _timed(call, _REPEATS.value, f"update-only[{precision}], {num_seeds} seeds")
  return {"seed_updates_per_s": num_seeds * _CHUNK.value * config.utd / seconds}


def measure_python_loop(num_seeds, precision):
  config, _, _, programs, state = _setup(num_seeds, precision)
  holder = {"state": state}

  def call():
    for _ in range(_LOOP_STEPS.value):
      holder["state"], stats = programs.run(holder["state"], 1)
    return stats

  seconds = _timed(call, 1, f"python-loop, {num_seeds} seeds")
  env_steps = num_seeds * _LOOP_STEPS.value / seconds
  return {"env_steps_per_s": env_steps, "seed_updates_per_s": env_steps * config.utd}


def measure_brax_sac():
  from brax.training import networks as brax_networks
  from brax.training.agents.sac import networks as sac_networks
  from brax.training.agents.sac import train as sac_train
  controller.patch_brax_for_this_jax()
  env, env_spec = envs.make(_ENV.value)
  rates = []

  def progress(step, metrics):
    if "training/sps" in metrics:
      rates.append(float(metrics["training/sps"]))

  def network_factory(observation_size, action_size, **kwargs):
    base = sac_networks.make_sac_networks(
        observation_size, action_size, **kwargs, hidden_layer_sizes=(256, 256),
        policy_network_layer_norm=True, state_dependent_std=True)
    # The same 10-critic LayerNorm ensemble as WSRL (Brax backs up the min over all of them).
    q_network = brax_networks.make_q_network(
        observation_size, action_size, hidden_layer_sizes=(256, 256), layer_norm=True,
        n_critics=10)
    return base.__class__(policy_network=base.policy_network, q_network=q_network,
                          parametric_action_distribution=base.parametric_action_distribution)
  steps = _BRAX_STEPS.value
  sac_train.train(environment=env, num_timesteps=3 * steps, episode_length=env_spec.episode_length,
                  num_envs=1, num_eval_envs=1, batch_size=256, grad_updates_per_step=4,
                  num_evals=4, discounting=0.99, learning_rate=3e-4, min_replay_size=256,
                  max_replay_size=100_000, network_factory=network_factory,
                  progress_fn=progress)
  # The first epoch includes compilation; report the fastest later one.
  env_steps = max(rates[1:]) if len(rates) > 1 else float("nan")
  return {"env_steps_per_s": env_steps, "seed_updates_per_s": 4 * env_steps}


def main(argv):
  del argv
  runtime.configure()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
  results = {"device": device.device_kind, "platform": device.platform, "env": _ENV.value,
             "chunk": _CHUNK.value, "rows": []}
  baseline = _PRECISIONS.value[0]

  def save():
    if _OUT.value:
      with open(_OUT.value, "w") as f:
        json.dump(results, f, indent=1)

  for seeds in map(int, _SEEDS.value):
    row = {"seeds": seeds}
    for precision in _PRECISIONS.value:
      row[f"fused[{precision}]"] = measure_fused(seeds, precision)
      row[f"update_only[{precision}]"] = measure_update_only(seeds, precision)
    if _LOOP_STEPS.value:
      row["python_loop"] = measure_python_loop(seeds, baseline)
    fused = row[f"fused[{baseline}]"]["env_steps_per_s"]
    row["ratios"] = {
        **({"fused / python_loop": fused / row["python_loop"]["env_steps_per_s"]}
           if "python_loop" in row else {}),
        **{f"fused[{p}] / fused[{baseline}]": row[f"fused[{p}]"]["env_steps_per_s"] / fused
           for p in _PRECISIONS.value[1:]},
    }
    results["rows"].append(row)
    _print_row(row)
    save()
  # Last, so that a slow or failing Brax run costs nothing above; one seed per program, so S
  # seeds take S runs: its rate is compared with each row's fused rate as it is.
  if _BRAX_STEPS.value:
    brax = measure_brax_sac()
    results["brax_sac"] = brax
    print(f"\n== Brax SAC (1 seed) ==\n  env_steps_per_s {brax['env_steps_per_s']:,.1f}")
    for row in results["rows"]:
      row["ratios"]["fused / brax_sac"] = (row[f"fused[{baseline}]"]["env_steps_per_s"]
                                          / brax["env_steps_per_s"])
      print(f"  {row['seeds']} seed(s): fused / brax_sac {row['ratios']['fused / brax_sac']:.2f}")
    save()


def _print_row(row):
  print(f"\n== {row['seeds']} seed(s) ==")
  for name, values in row.items():
    if name != "seeds":
      print(f"  {name:28s} " + ", ".join(f"{k} {v:,.1f}" for k, v in values.items()))


if __name__ == "__main__":
  app.run(main)

"""A newcomer's first command (README): the `,demo` configs, the pretrained agent shipped for them
and what the log says about where the agent came from and when updates start."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import serialization

import envs
from conftest import checkpointed_agent, tiny_config
from launch.configs import families
from launch.configs import finetune as finetune_config
from launch.configs import pretrain as pretrain_config
from wsrl_mjx import checkpoint, configs, finetune, per_seed
from wsrl_mjx.errors import ConfigError


def test_the_demo_fine_tunes_the_shipped_pretrained_agent_seed_by_seed():
  config = finetune_config.get_config("hopper-medium-v2,demo")
  shipped = families.DEMO_AGENTS["hopper-medium-v2"]
  assert config.pretrained == str(shipped) and shipped.is_dir()
  env, env_spec = envs.make(config.env_name)
  programs = finetune.build_programs(config, env, env_spec)     # traced lazily: nothing compiles
  params, optimizer, description = finetune.load_pretrained(config, programs, env_spec)
  assert description["env_name"] == "hopper-medium-v2"
  _, step = checkpoint.resolve(shipped)
  saved = checkpointed_agent(shipped, step)
  # Every run seed starts from the checkpoint's seed (i mod its seed count), Adam states included.
  saved_seeds = description["num_seeds"]
  for run_seed in range(config.num_seeds):
    source = run_seed % saved_seeds
    jax.tree.map(lambda have, want: np.testing.assert_array_equal(have[run_seed], want[source]),
                 serialization.to_state_dict(jax.device_get(params)), saved)
  # The Adam states too, leaf by leaf from the checkpoint's `optimizer` item: moments and the
  # counts of its 10,000 pretraining steps (checkpoints/README.md).
  raw = ocp.CheckpointManager(shipped / "checkpoints").restore(
      step, args=ocp.args.Composite(optimizer=ocp.args.StandardRestore())).optimizer
  handed = checkpoint.flatten_for_saving(jax.device_get(optimizer))
  assert sorted(handed) == sorted(raw) and any("count" in name for name in raw)
  for name, have in handed.items():
    for run_seed in range(config.num_seeds):
      np.testing.assert_array_equal(have[run_seed], np.asarray(raw[name])[run_seed % saved_seeds])
    if "count" in name:
      np.testing.assert_array_equal(have, 10_000)


def test_the_shipped_hopper_behaviour_policy_scores_a_third_of_expert():
  """checkpoints/hopper-behaviour (issue 24's data recipe): the policy launch.collect loads from
  it, run deterministically for one 1,000-step episode in the MJX hopper, returns what its
  README entry says (1,088-1,118 over its 10 evaluation episodes; D4RL's expert 3,234)."""
  from wsrl_mjx.datagen import collect
  policy, actor, description = collect.checkpoint_policy("checkpoints/hopper-behaviour", 0,
                                                         deterministic=True)
  assert description["env_name"] == "hopper-medium-v2" and description["num_seeds"] == 1
  env, env_spec = envs.make("hopper-medium-v2")
  # Stepped from Python on `jit(env.step)`: the program tests/test_envs.py compiles for the
  # hopper, so the persistent cache holds one hopper step for both files (an episode program of
  # its own took 25 s to compile on the 2-core CPU; these 1,000 calls take a few seconds).
  step, act = jax.jit(env.step), jax.jit(lambda observation: policy(actor, observation,
                                                                     jax.random.PRNGKey(0)))
  state, returns = jax.jit(env.reset)(jax.random.PRNGKey(3)), 0.0
  for _ in range(1000):
    state = step(state, act(state.obs))
    returns += float(state.reward)
    if state.done:
      break
  assert 1000 < returns < 1200, returns
  score = env_spec.normalized_score(np.array([returns]), np.array([0.0]))[0]
  assert 30 < score < 37, score


def test_both_demo_configs_build_the_same_networks_so_a_demo_pretraining_hands_over():
  online = finetune_config.get_config("hopper-medium-v2,demo")
  offline = pretrain_config.get_config("hopper-medium-v2,demo")
  for field in ("actor_hidden_sizes", "critic_hidden_sizes", "num_critics", "state_dependent_std",
                "layer_norm", "num_seeds", "steps_per_chunk", "iql_hidden_sizes"):
    assert online[field] == offline[field], field
  assert online.actor_hidden_sizes == (64, 64) and online.num_critics == 10
  assert online.iql_hidden_sizes == (64, 64)
  # Envs without a shipped agent run SAC from scratch, and the log says so
  # (tests/test_config.py, test_only_a_demo_that_falls_back_to_sac_warns).
  assert finetune_config.get_config("walker2d-medium-v2,demo").pretrained == ""


@pytest.mark.parametrize("method", ["cql", "calql", "iql"])
def test_an_offline_learner_demo_asks_for_its_own_pretraining(method):
  """The shipped demo agent keeps only its agent, not the learner state these arms continue:
  a `,demo,<method>` names no checkpoint and says which run to give; the shipped agent given
  by hand is refused, naming what it lacks."""
  config = finetune_config.get_config(f"hopper-medium-v2,demo,{method}")
  assert config.pretrained == ""
  with pytest.raises(ConfigError, match=(
      rf"^config.pretrained is empty but config.method='{method}' continues a pretraining: set "
      rf"--config.pretrained to the run directory of a `launch.pretrain --config.algo={method}` "
      r"run.$")):
    configs.validate(config)
  if method == "cql":         # the shipped agent is a CQL pretraining's
    config.pretrained = str(families.DEMO_AGENTS["hopper-medium-v2"])
    with pytest.raises(checkpoint.CheckpointError, match=(
        r"checkpoints/10000: holds the agent but not its learner's state \(train_state\), which "
        r"config.method='cql' continues; the shipped agents in checkpoints/ keep only the agent. "
        r"Give the run directory of a `launch.pretrain --config.algo=cql` run "
        r"\(config.pretrained\).$")):
      configs.validate(config)


def test_the_log_says_where_the_agent_comes_from_and_when_updates_start(caplog):
  caplog.set_level("INFO")
  config = tiny_config(per_seed="warmup_steps=0,100")           # batch_size 64, UTD 4
  settings, _ = per_seed.seed_settings(config)
  finetune.log_start(config, settings)
  # max(warmup, batch) + 2 transitions: the step with index k trains if k > max(warmup, batch).
  assert "updates (UTD 4) start once it holds 66 or 102 transitions" in caplog.text
  assert "the untrained agent collects" in caplog.text
  caplog.clear()
  config = tiny_config(pretrained="/some/run")
  finetune.log_start(config, per_seed.seed_settings(config)[0])
  assert "the pretrained agent, frozen, collects" in caplog.text
  assert "updates (UTD 4) start once it holds 66 transitions" in caplog.text
  assert "the untrained agent" not in caplog.text
  assert not [r for r in caplog.records if r.levelname == "WARNING"]
  # Seeds with init_actor=false collect with a fresh actor: the line says so.
  for grid, source in (("init_actor=true,false", "the pretrained agent (a fresh actor for the "
                        "1 seed with init_actor=false), frozen, collects"),
                       ("init_actor=false", "a fresh actor (init_actor=false), frozen, collects")):
    caplog.clear()
    config = tiny_config(pretrained="/some/run", per_seed=grid)
    finetune.log_start(config, per_seed.seed_settings(config)[0])
    assert source in caplog.text
  # 200 env steps, indices 0-199: a warmup of 198 trains at index 199; one of 199 never does.
  caplog.clear()
  config = tiny_config(pretrained="/some/run", num_seeds=4,
                       per_seed="warmup_steps=198,199,5000,0")
  finetune.log_start(config, per_seed.seed_settings(config)[0])
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert warnings == [
      "config.online_steps=200 ends before any update for warmup_steps=199,5000 (2 of 4 seeds): "
      "they only collect with the pretrained agent frozen, so their curves are the starting "
      "policy's. Give them more online_steps or a shorter warmup."]
  # Cal-QL waits for an episode (here 300 steps) whatever the warmup: the messages say so.
  caplog.clear()
  config = tiny_config(pretrained="/some/run", method="calql", utd=1, batch_size=32,
                       warmup_steps=0, online_steps=250, episode_length=300)
  finetune.log_start(config, per_seed.seed_settings(config)[0])
  assert ("updates (UTD 1) start once it holds 302 transitions (the reference's rule: the first "
          "step whose index exceeds max(warmup_steps, the batch's online rows, and for Cal-QL "
          "one episode: 300 steps))") in caplog.text
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert warnings == [
      "config.online_steps=250 ends before any update for warmup_steps=0 (2 of 2 seeds): they "
      "only collect with the pretrained agent frozen, so their curves are the starting policy's. "
      "Cal-QL's updates wait for one episode (300 steps: config.episode_length, else the env's). "
      "Give the run more than 301 online_steps."]

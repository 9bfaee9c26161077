"""SO2's perturbed value update: noise of the configured scale and clip on the TD target's next
actions, against float64 numpy; off by default, so WSRL's target is untouched. Then the arm:
its settings and one tiny run."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

import envs
from conftest import tiny_config, untrained_checkpoint
from numpy_reference import np_actor, np_ensemble, np_sample
from wsrl_mjx import configs, finetune
from wsrl_mjx.agents import sac
from wsrl_mjx.errors import ConfigError
from wsrl_mjx.replay import Transition

OBS, ACT, BATCH = 5, 2, 16
CONFIG = sac.SACConfig(observation_size=OBS, action_size=ACT, actor_hidden_sizes=(8, 8),
                       critic_hidden_sizes=(16, 16), num_critics=10, num_target_critics=2,
                       utd=1, minibatch_size=BATCH, reward_scale=2.0, reward_bias=-1.0,
                       target_action_noise=0.3, target_action_noise_clip=0.6)


def normal_cdf(x):
  return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def test_target_noise_has_the_configured_scale_and_clip():
  key = jax.random.PRNGKey(0)
  action = np.zeros((200_000, ACT), np.float32)
  noise = np.asarray(sac.perturb_target_actions(key, action, 0.3, 0.6), np.float64).ravel()
  # Exactly clip(0.3 eps, -0.6, 0.6) for the key's standard normal draws.
  eps = np.asarray(jax.random.normal(key, action.shape), np.float64).ravel()
  np.testing.assert_allclose(noise, np.clip(0.3 * eps, -0.6, 0.6), atol=1e-6)
  # Its distribution: N(0, 0.3^2) clipped at 2 standard deviations.
  assert np.abs(noise).max() == pytest.approx(0.6)
  at_clip = np.mean(np.abs(noise) >= 0.6 - 1e-7)
  assert at_clip == pytest.approx(2 * (1 - normal_cdf(2.0)), abs=0.003)       # 0.0455
  assert np.mean(np.abs(noise) < 0.3) == pytest.approx(2 * normal_cdf(1.0) - 1, abs=0.005)
  assert abs(noise.mean()) < 0.003


def test_perturbed_actions_stay_in_the_action_bounds():
  key = jax.random.PRNGKey(1)
  action = np.tile(np.asarray([[0.95, -0.95]], np.float32), (10_000, 1))
  got = np.asarray(sac.perturb_target_actions(key, action, 0.3, 0.6), np.float64)
  eps = np.asarray(jax.random.normal(key, action.shape), np.float64)
  expected = np.clip(action + np.clip(0.3 * eps, -0.6, 0.6), -1.0, 1.0)
  np.testing.assert_allclose(got, expected, atol=1e-6)
  assert got.max() == 1.0 and got.min() == -1.0             # the sum is clipped at the bounds
  assert np.mean(got[:, 0] == 1.0) == pytest.approx(1 - normal_cdf(0.05 / 0.3), abs=0.02)


def test_td_target_backs_up_the_perturbed_next_actions():
  rng = np.random.default_rng(0)
  batch = Transition(
      observation=rng.normal(size=(BATCH, OBS)).astype(np.float32),
      action=rng.uniform(-0.99, 0.99, size=(BATCH, ACT)).astype(np.float32),
      reward=rng.normal(size=(BATCH,)).astype(np.float32),
      next_observation=rng.normal(size=(BATCH, OBS)).astype(np.float32),
      terminal=rng.integers(0, 2, size=(BATCH,)).astype(np.float32))
  agent = sac.SAC(CONFIG)
  params = jax.jit(agent.init_params)(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(7)
  got = np.asarray(jax.jit(agent.td_target)(params, batch, key), np.float64)

  action_key, subset_key = jax.random.split(key)
  eps = np.asarray(jax.random.normal(action_key, (BATCH, ACT)), np.float64)
  mean, std = np_actor(params.actor, batch.next_observation.astype(np.float64))
  next_action, _ = np_sample(mean, std, eps)
  noise_eps = np.asarray(jax.random.normal(jax.random.fold_in(action_key, 1), (BATCH, ACT)),
                         np.float64)
  perturbed = np.clip(next_action + np.clip(0.3 * noise_eps, -0.6, 0.6), -1.0, 1.0)
  subset = np.asarray(jax.random.randint(subset_key, (2,), 0, 10))
  q = np_ensemble(params.target_critic, batch.next_observation.astype(np.float64), perturbed)
  expected = batch.reward * 2.0 - 1.0 + 0.99 * (1 - batch.terminal) * q[subset].min(0)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  # The noise matters: without it the target is that of the unperturbed actions (WSRL's).
  plain = sac.SAC(dataclasses.replace(CONFIG, target_action_noise=0.0))
  unperturbed = np.asarray(jax.jit(plain.td_target)(params, batch, key), np.float64)
  q_plain = np_ensemble(params.target_critic, batch.next_observation.astype(np.float64),
                        next_action)
  np.testing.assert_allclose(
      unperturbed, batch.reward * 2.0 - 1.0 + 0.99 * (1 - batch.terminal) * q_plain[subset].min(0),
      rtol=1e-4, atol=1e-4)
  assert np.abs(got - unperturbed).max() > 1e-3


@pytest.mark.parametrize("noise, clip", [(-0.1, 0.5), (0.3, 0.0), (float("nan"), 0.5),
                                         (0.3, -1.0)])
def test_bad_noise_settings_are_refused_naming_the_field(noise, clip):
  with pytest.raises(ConfigError, match="config.target_action_noise"):
    sac.SAC(dataclasses.replace(CONFIG, target_action_noise=noise,
                                target_action_noise_clip=clip))


# --- the arm: `--config.method=so2` -------------------------------------------------------------

@pytest.mark.parametrize("env_name", ["hopper-medium-v2", "antmaze-large-diverse-v2",
                                      "pen-binary-v0"])
def test_the_so2_option_sets_its_published_settings(env_name):
  from launch.configs import finetune as finetune_config
  config = finetune_config.get_config(f"{env_name},so2")
  assert (config.method, config.utd, config.batch_size, config.target_action_noise,
          config.target_action_noise_clip) == ("so2", 10, 2560, 0.3, 0.6)
  assert config.warmup_steps == 5_000 and config.offline_data == "none"
  # Without the option, WSRL's target is unperturbed.
  assert finetune_config.get_config(env_name).target_action_noise == 0.0


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("pretrained")
  untrained_checkpoint(workdir, tiny_config())
  return workdir


def test_so2_without_its_noise_is_refused_before_anything_is_built(pretrained):
  with pytest.raises(ConfigError, match=r"config.target_action_noise=0.0: config.method='so2' "
                                        r"perturbs the TD target's next actions.*,so2"):
    configs.validate(tiny_config(method="so2", pretrained=str(pretrained)))


def test_so2_fine_tunes_the_pretrained_agent_with_perturbed_targets(pretrained, tmp_path):
  # The tiny loop (utd 4, batch 64) with SO2's noise, 100 env steps.
  config = tiny_config(method="so2", pretrained=str(pretrained), target_action_noise=0.3,
                       target_action_noise_clip=0.6, online_steps=100, checkpoint_interval=100)
  env, spec = envs.make(config.env_name)
  programs = finetune.build_programs(config, env, spec)
  assert programs.loop.agent.config.target_action_noise == 0.3
  workdir = tmp_path
  last = finetune.train_and_evaluate(config, workdir, programs)
  assert last["env_step"] == 100      # updates from step index 65 (past max(warmup, batch 64))
  np.testing.assert_array_equal(last["train"]["updates"], [35, 35])
  assert np.all(np.isfinite(last["train"]["critic_loss"])) and last["diverged_seeds"] == []
  saved = json.loads((workdir / "checkpoints/100/description/metadata").read_text())
  assert saved["method"] == "so2"
  assert (saved["agent"]["target_action_noise"], saved["agent"]["target_action_noise_clip"]
          ) == (0.3, 0.6)

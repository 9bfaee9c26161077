"""JSRL: the guide acts on an episode's first h steps and the learner after; h moves down the
curriculum when an evaluation reaches the threshold. Hand-worked examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wsrl_mjx import jsrl
from wsrl_mjx.agents import sac


def test_guide_steps_go_from_the_horizon_to_zero_in_equal_stages():
  ten = jsrl.Curriculum(horizon=1000, num_stages=10)
  np.testing.assert_array_equal(jsrl.guide_steps(jnp.arange(11), ten),
                                [1000, 900, 800, 700, 600, 500, 400, 300, 200, 100, 0])
  # floor(7 (3 - k) / 3): 7, 4, 2, 0; stages past the last stay at 0.
  three = jsrl.Curriculum(horizon=7, num_stages=3)
  np.testing.assert_array_equal(jsrl.guide_steps(jnp.asarray([0, 1, 2, 3, 4]), three),
                                [7, 4, 2, 0, 0])


def test_the_acting_policy_switches_at_h():
  steps = jnp.arange(8)
  guide = jnp.full((8, 2), -1.0)
  learner = jnp.full((8, 2), 1.0)
  chosen = np.asarray(jsrl.choose(steps, 3, guide, learner))
  np.testing.assert_array_equal(chosen[:, 0], [-1, -1, -1, 1, 1, 1, 1, 1])   # steps 0..2: guide
  # h = 0: the learner alone; h = the episode length: the guide alone. Per-seed h broadcasts.
  assert np.all(np.asarray(jsrl.choose(steps, 0, guide, learner)) == 1)
  assert np.all(np.asarray(jsrl.choose(steps, 8, guide, learner)) == -1)
  per_seed = np.asarray(jsrl.choose(jnp.asarray([2, 2]), jnp.asarray([2, 3]), guide[:2],
                                    learner[:2]))
  np.testing.assert_array_equal(per_seed[:, 0], [1, -1])


def test_collected_actions_are_the_guides_samples_before_h_and_the_learners_after():
  config = sac.SACConfig(observation_size=3, action_size=2, actor_hidden_sizes=(8,))
  agent = sac.SAC(config)
  learner = agent.init_params(jax.random.PRNGKey(0)).actor
  guide = agent.init_params(jax.random.PRNGKey(1)).actor
  jump_start = jsrl.start(guide).replace(stage=jnp.asarray(2, jnp.int32))   # h = 10 - 4 = 6
  curriculum = jsrl.Curriculum(horizon=10, num_stages=5)
  observation = jnp.asarray([0.3, -0.2, 0.5])
  key = jax.random.PRNGKey(5)
  guide_key, learner_key = jax.random.split(key)
  from_guide = np.asarray(agent.sample_action(guide, observation, guide_key))
  from_learner = np.asarray(agent.sample_action(learner, observation, learner_key))
  assert not np.allclose(from_guide, from_learner)
  collect = jax.jit(jsrl.collect_action, static_argnums=(0, 6))
  for step in range(10):
    got = np.asarray(collect(agent, jump_start, learner, observation, jnp.asarray(step), key,
                             curriculum))
    np.testing.assert_array_equal(got, from_guide if step < 6 else from_learner)


def test_deterministic_evaluation_act_uses_the_guides_mean_before_h():
  config = sac.SACConfig(observation_size=3, action_size=2, actor_hidden_sizes=(8,))
  agent = sac.SAC(config)
  learner = agent.init_params(jax.random.PRNGKey(0)).actor
  guide = agent.init_params(jax.random.PRNGKey(1)).actor
  act = jax.jit(jsrl.deterministic_act(agent))
  policy = jsrl.GuidedPolicy(learner=learner, guide=guide, guide_steps=jnp.asarray(4))
  observation = jnp.asarray([0.3, -0.2, 0.5])
  for step, actor in [(0, guide), (3, guide), (4, learner), (9, learner)]:
    np.testing.assert_array_equal(act(policy, observation, jnp.asarray(step)),
                                  agent.deterministic_action(actor, observation))


def advance(stage, best, value, num_stages=10, tolerance=0.05):
  curriculum = jsrl.Curriculum(horizon=100, num_stages=num_stages, tolerance=tolerance)
  stage, best = jsrl.advance(jnp.asarray(stage), jnp.asarray(best, jnp.float32),
                             jnp.asarray(value, jnp.float32), curriculum)
  return int(stage), float(best)


def test_the_first_evaluation_sets_the_best_and_keeps_the_stage():
  assert advance(0, -np.inf, 80.0) == (0, 80.0)
  assert advance(0, -np.inf, -300.0) == (0, -300.0)


@pytest.mark.parametrize("stage, best, value, expected", [
    (0, 100.0, 94.9, (0, 100.0)),       # below 100 - 0.05 * 100 = 95: stays
    (0, 100.0, 95.0, (1, 100.0)),       # at the threshold: next stage, best kept
    (3, 100.0, 120.0, (4, 120.0)),      # better: next stage, new best
    (0, -50.0, -52.5, (1, -50.0)),      # negative returns: threshold -50 - 0.05 * 50 = -52.5
    (0, -50.0, -52.6, (0, -50.0)),
    (0, 0.0, 0.0, (1, 0.0)),            # a best of 0 needs a return >= 0
    (0, 0.0, -1e-3, (0, 0.0)),
    (10, 100.0, 150.0, (10, 150.0)),    # the last stage (the learner alone) is the end
    (2, 100.0, float("nan"), (2, 100.0)),   # a non-finite return changes nothing
])
def test_a_stage_advances_when_the_evaluation_reaches_the_threshold(stage, best, value, expected):
  assert advance(stage, best, value) == pytest.approx(expected)


def test_a_curriculum_runs_down_to_the_learner_alone():
  """A sequence of evaluations, worked by hand: horizon 100, 4 stages, tolerance 0.1."""
  curriculum = jsrl.Curriculum(horizon=100, num_stages=4, tolerance=0.1)
  stage, best = jnp.asarray(0), jnp.asarray(-jnp.inf)
  history = []
  for value in [50.0, 40.0, 46.0, 60.0, 55.0, 53.0, 70.0, 70.0]:
    stage, best = jsrl.advance(stage, best, jnp.asarray(value), curriculum)
    history.append((int(stage), float(best), int(jsrl.guide_steps(stage, curriculum))))
  assert history == [(0, 50.0, 100),    # sets the best
                     (0, 50.0, 100),    # 40 < 45
                     (1, 50.0, 75),     # 46 >= 45
                     (2, 60.0, 50),
                     (3, 60.0, 25),     # 55 >= 54
                     (3, 60.0, 25),     # 53 < 54
                     (4, 70.0, 0),      # the learner acts alone from here on
                     (4, 70.0, 0)]

"""JSRL: the guide acts on an episode's first h steps and the learner after; h moves down the
curriculum when an evaluation reaches the threshold. Hand-worked examples, then the arm end to
end (one compiled tiny loop shared by its tests)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from conftest import checkpointed_agent, killed_then_resumed, tiny_config, untrained_checkpoint
from wsrl_mjx import checkpoint, configs, finetune, jsrl, per_seed
from wsrl_mjx.agents import sac
from wsrl_mjx.errors import ConfigError


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
  init = jax.jit(agent.init_params)
  learner, guide = init(jax.random.PRNGKey(0)).actor, init(jax.random.PRNGKey(1)).actor
  jump_start = jsrl.start(guide).replace(stage=jnp.asarray(2, jnp.int32))   # h = 10 - 4 = 6
  curriculum = jsrl.Curriculum(horizon=10, num_stages=5)
  observation = jnp.asarray([0.3, -0.2, 0.5])
  key = jax.random.PRNGKey(5)
  guide_key, learner_key = jax.random.split(key)
  sample = jax.jit(agent.sample_action)
  from_guide = np.asarray(sample(guide, observation, guide_key))
  from_learner = np.asarray(sample(learner, observation, learner_key))
  assert not np.allclose(from_guide, from_learner)
  collect = jax.jit(jsrl.collect_action, static_argnums=(0, 6))
  for step in range(10):
    got = np.asarray(collect(agent, jump_start, learner, observation, jnp.asarray(step), key,
                             curriculum))
    # The same draw as `sample` alone, to float32 rounding (the two programs are compiled
    # apart); the guide's and the learner's actions differ far more than this.
    np.testing.assert_allclose(got, from_guide if step < 6 else from_learner, rtol=0, atol=1e-6)


def test_deterministic_evaluation_act_uses_the_guides_mean_before_h():
  config = sac.SACConfig(observation_size=3, action_size=2, actor_hidden_sizes=(8,))
  agent = sac.SAC(config)
  init = jax.jit(agent.init_params)
  learner, guide = init(jax.random.PRNGKey(0)).actor, init(jax.random.PRNGKey(1)).actor
  act = jax.jit(jsrl.deterministic_act(agent))
  policy = jsrl.GuidedPolicy(learner=learner, guide=guide, guide_steps=jnp.asarray(4))
  observation = jnp.asarray([0.3, -0.2, 0.5])
  mode = jax.jit(agent.deterministic_action)
  for step, actor in [(0, guide), (3, guide), (4, learner), (9, learner)]:
    np.testing.assert_array_equal(act(policy, observation, jnp.asarray(step)),
                                  mode(actor, observation))


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


# --- the arm end to end: `--config.method=jsrl` through finetune.train_and_evaluate ------------

def jsrl_config(pretrained, **overrides):
  # 4 stages of a 40-step episode: h = 40, 30, 20, 10, 0. A tolerance this large moves a stage
  # at every evaluation after the first (the threshold's cases are checked above).
  return tiny_config(**{"method": "jsrl", "pretrained": str(pretrained), "jsrl_num_stages": 4,
                        "jsrl_tolerance": 1000.0, **overrides})


@pytest.fixture(scope="module")
def jsrl_run(tmp_path_factory):
  """A tiny JSRL run (200 env steps, evaluations at 0, 100, 200): (programs, pretrained
  directory, its (parameters, Adam states), workdir)."""
  pretrained = tmp_path_factory.mktemp("pretrained")
  written = untrained_checkpoint(pretrained, tiny_config())
  config = jsrl_config(pretrained)
  env, spec = envs.make(config.env_name)
  programs = finetune.build_programs(config, env, spec)
  workdir = tmp_path_factory.mktemp("jsrl")
  finetune.train_and_evaluate(config, workdir, programs)
  return programs, pretrained, written, workdir


def read_records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_jsrl_moves_h_down_its_curriculum_at_each_evaluation(jsrl_run):
  _, _, _, workdir = jsrl_run
  records = read_records(workdir)
  assert [r["env_step"] for r in records] == [0, 100, 200]
  assert [r["jsrl_guide_steps"] for r in records] == [[40, 40], [30, 30], [20, 20]]
  assert [r["jsrl_stage"] for r in records] == [[0, 0], [1, 1], [2, 2]]
  # The rule, replayed on the logged returns of the combined policy: the first sets the best,
  # each later one within 1000 |best| of it moves a stage.
  best, stage = np.full(2, -np.inf), np.zeros(2, int)
  for record in records:
    value = np.asarray(record["jsrl_guided_return"], np.float64)
    moved = np.isfinite(best) & (value >= best - 1000.0 * np.abs(best))
    stage = np.where(moved, np.minimum(stage + 1, 4), stage)
    best = np.where(np.isfinite(best), np.maximum(best, value), value)
    np.testing.assert_array_equal(record["jsrl_stage"], stage)
  # At the start the learner is the pretrained actor, so the combined policy at h = 40 (the
  # guide alone) and the learner alone (every arm's score) play the same episodes alike.
  np.testing.assert_allclose(records[0]["jsrl_guided_return"], records[0]["returns"], rtol=1e-6)
  assert records[-1]["train"]["updates"] == [50, 50]
  saved = json.loads((workdir / "checkpoints/200/description/metadata").read_text())
  assert saved["method"] == "jsrl"


def test_a_killed_jsrl_run_resumes_with_its_curriculum(jsrl_run, tmp_path, monkeypatch):
  programs, pretrained, _, full_dir = jsrl_run
  killed_then_resumed(
      lambda: finetune.train_and_evaluate(jsrl_config(pretrained), tmp_path, programs),
      monkeypatch)
  assert read_records(tmp_path) == read_records(full_dir)
  jax.tree.map(np.testing.assert_array_equal, checkpointed_agent(tmp_path, 200),
               checkpointed_agent(full_dir, 200))


def test_resuming_with_another_curriculum_is_refused(jsrl_run):
  programs, pretrained, _, workdir = jsrl_run
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"config.jsrl_num_stages=4 \(this one: 5\)"):
    finetune.train_and_evaluate(jsrl_config(pretrained, jsrl_num_stages=5), workdir, programs)


def test_the_loop_collects_with_the_guide_for_the_first_h_steps(jsrl_run):
  """A guide whose every action is tanh(-3) = -0.995 (std 1e-5) and a fresh learner (std 1):
  the stored actions say who acted. At stage 3 (h = 10), 50 steps without updates."""
  programs, _, (params, optimizer), _ = jsrl_run
  config = jsrl_config("unused", init_actor=False, warmup_steps=1_000)
  actor = params.actor["params"]
  for head, bias in (("mean", -3.0), ("log_std", -20.0)):
    actor[head]["kernel"] = jnp.zeros_like(actor[head]["kernel"])
    actor[head]["bias"] = jnp.full_like(actor[head]["bias"], bias)
  settings, _ = per_seed.seed_settings(config)
  settings = jax.device_put(jax.tree.map(jnp.asarray, settings), programs.sharding)
  keys = jax.device_put(finetune.seed_keys(config), programs.sharding)
  state = programs.init(keys, settings,
                        *jax.device_put((params, optimizer), programs.sharding))
  stage = jax.device_put(jnp.full((2,), 3, jnp.int32), programs.sharding)
  state = state.replace(jump_start=state.jump_start.replace(stage=stage))
  state, _ = programs.run(state, 50)
  actions = np.asarray(state.buffer.data.action)              # [seeds, capacity, 3]
  terminal = np.asarray(state.buffer.data.terminal)
  assert np.all(np.asarray(state.buffer.size) == 50)
  for seed in range(2):
    step, guided = 0, []
    for row in range(50):
      guided.append((step < 10, bool(np.all(actions[seed, row] < -0.99))))
      step = 0 if terminal[seed, row] or step + 1 == 40 else step + 1
    assert step == int(np.asarray(state.episode.length)[seed])   # no row was left out
    assert [by_guide for _, by_guide in guided] == [first for first, _ in guided]
    assert sum(first for first, _ in guided) >= 10


def test_a_horizon_longer_than_an_episode_is_refused():
  from launch.configs import finetune as finetune_config
  config = finetune_config.get_config("hopper-medium-v2,demo,jsrl")
  configs.validate(config)                     # the shipped demo agent guides
  config.jsrl_horizon = 1001
  with pytest.raises(ConfigError, match=r"config.jsrl_horizon=1001 is longer than an episode "
                                        r"\(1000 steps\)"):
    configs.validate(config)

"""SAC learns: a toy task with a known optimum is solved past a stated bar, in seconds of training.

The task is a contextual bandit written in plain JAX (no MJX): the context s is uniform in
[-1, 1]^2, the action a in [-1, 1]^2, the reward -||a - target(s)||^2 with target(s) = 0.7 R s
(R a quarter turn), and every episode ends after its one step (terminal). The best policy earns
0; uniformly random actions earn about -1.0, and the constant action 0 about -0.33. The bar for
the deterministic policy (tanh of the mean) is a mean reward above -0.03 on fresh contexts.

Two learners are checked, each against the same bar:
- `sac.SAC.update` alone, trained from a replay buffer of random transitions (1,000 UTD updates);
- the fused online loop (`online.Online`: act, step, store, reset, update after the warmup),
  with the bandit standing in for the MJX env (1,000 env steps).
Both runs carry a second seed whose actor learning rate is 0 in the same program, which must
stay below the bar: the bar is out of reach without learning. Seeds are fixed, so the numbers
are the same on every run; compiling the two programs takes most of the time.
"""

import jax
import jax.numpy as jnp
import numpy as np

from envs import State
from wsrl_mjx import online, replay
from wsrl_mjx.agents import sac

OBSERVATION_SIZE = ACTION_SIZE = 2
BAR = -0.03                       # mean reward of the deterministic policy; the optimum is 0
LEARNING_RATE = 1e-3
AGENT_CONFIG = sac.SACConfig(
    observation_size=OBSERVATION_SIZE, action_size=ACTION_SIZE, actor_hidden_sizes=(32, 32),
    critic_hidden_sizes=(32, 32), utd=4, minibatch_size=16)
ACTOR_LEARNING_RATES = jnp.array([LEARNING_RATE, 0.0])   # per seed: learning, and not


def target(observation):
  """The best action for each context [..., 2]: 0.7 times the context turned a quarter."""
  return 0.7 * jnp.stack([observation[..., 1], -observation[..., 0]], axis=-1)


def reward(observation, action):
  return -jnp.sum(jnp.square(action - target(observation)), axis=-1)


def uniform(key, shape):
  return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)


class ContextualBandit:
  """One-step episodes: reset draws a context, step pays the reward and terminates. It has what
  the loop uses of an MJX env (`reset`, `step`, the two sizes, Brax's `State`)."""
  observation_size = OBSERVATION_SIZE
  action_size = ACTION_SIZE

  def reset(self, key):
    return State(pipeline_state=None, obs=uniform(key, (OBSERVATION_SIZE,)),
                 reward=jnp.zeros(()), done=jnp.zeros(()))

  def step(self, state, action):
    return state.replace(reward=reward(state.obs, action), done=jnp.ones(()))


def baselines(observations):
  """Mean rewards of uniformly random actions and of the constant action 0."""
  random_actions = uniform(jax.random.PRNGKey(99), observations.shape)
  return (float(jnp.mean(reward(observations, random_actions))),
          float(jnp.mean(reward(observations, jnp.zeros_like(observations)))))


def test_sac_update_learns_the_bandit_from_random_transitions():
  agent = sac.SAC(AGENT_CONFIG)
  data_key, test_key = jax.random.split(jax.random.PRNGKey(0))
  observation_key, action_key = jax.random.split(data_key)
  size = 4096
  observations = uniform(observation_key, (size, OBSERVATION_SIZE))
  actions = uniform(action_key, (size, ACTION_SIZE))
  buffer = replay.full(replay.Transition(
      observation=observations, action=actions, reward=reward(observations, actions),
      next_observation=observations, terminal=jnp.ones(size)))
  test_observations = uniform(test_key, (1000, OBSERVATION_SIZE))

  @jax.jit
  @jax.vmap
  def train(actor_learning_rate, key):
    """1,000 updates on batches from the buffer -> deterministic policy's mean reward."""
    init_key, key = jax.random.split(key)
    rates = sac.LearningRates(actor=actor_learning_rate, critic=LEARNING_RATE,
                              temperature=LEARNING_RATE)
    state = agent.init_state(agent.init_params(init_key), rates)

    def update(state, key):
      sample_key, update_key = jax.random.split(key)
      batch = replay.sample(buffer, sample_key, AGENT_CONFIG.batch_size)
      state, metrics = agent.update(state, batch, update_key)
      return state, metrics["finite"]

    state, finite = jax.lax.scan(update, state, jax.random.split(key, 1000))
    action = agent.deterministic_action(state.params.actor, test_observations)
    return jnp.mean(reward(test_observations, action)), jnp.all(finite)

  keys = jnp.stack([jax.random.PRNGKey(1)] * 2)
  (learned, frozen), finite = jax.device_get(train(ACTOR_LEARNING_RATES, keys))
  random_policy, zero_policy = baselines(test_observations)
  assert np.all(finite)
  assert random_policy < -0.9 and zero_policy < -0.3
  assert learned > BAR, (learned, random_policy, zero_policy)
  assert frozen < BAR, frozen


def test_the_fused_online_loop_learns_the_bandit():
  steps, warmup = 1000, 100
  loop = online.LoopConfig(replay_capacity=steps, episode_length=1, eval_episodes=1000,
                           action_clip=0.99999)
  fused = online.Online(env=ContextualBandit(), agent=sac.SAC(AGENT_CONFIG), loop=loop)
  num_seeds = len(ACTOR_LEARNING_RATES)
  constant = lambda value, dtype=jnp.float32: jnp.full(num_seeds, value, dtype)
  settings = online.SeedSettings(
      warmup_steps=constant(warmup, jnp.int32), actor_learning_rate=ACTOR_LEARNING_RATES,
      critic_learning_rate=constant(LEARNING_RATE),
      temperature_learning_rate=constant(LEARNING_RATE),
      init_actor=constant(False, bool), init_critic=constant(False, bool),
      init_temperature=constant(False, bool), init_optimizer=constant(False, bool))

  @jax.jit
  @jax.vmap
  def train(key, settings):
    """`steps` env steps of the loop -> (mean evaluation reward before, after; chunk stats)."""
    state = fused.init(key, settings, None)
    before = fused.evaluate(state.agent.params.actor, state.eval_key)
    state, stats = fused.run(state, steps)
    after = fused.evaluate(state.agent.params.actor, state.eval_key)
    return before.returns.mean(), after.returns.mean(), stats, state.diverged_at

  keys = jnp.stack([jax.random.PRNGKey(0)] * num_seeds)   # the same start for both seeds
  before, after, stats, diverged_at = jax.device_get(train(keys, settings))
  # Every step after the floor max(warmup, batch size) trained; none diverged.
  np.testing.assert_array_equal(stats.updates, steps - 1 - max(warmup, AGENT_CONFIG.batch_size))
  np.testing.assert_array_equal(diverged_at, -1)
  np.testing.assert_array_equal(stats.completed_episodes, steps)
  random_policy, zero_policy = baselines(uniform(jax.random.PRNGKey(7), (1000, 2)))
  assert before[0] == before[1] < BAR
  assert after[0] > BAR, (before[0], after[0], random_policy, zero_policy)
  # Without actor learning the evaluation is the initial policy's, below the bar.
  assert after[1] == before[1] and after[1] < BAR, (before[1], after[1])

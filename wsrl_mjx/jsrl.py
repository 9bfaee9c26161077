"""JSRL, one of WSRL's baselines: a frozen guide policy acts for the first h steps of every
episode and the learner after them; h shrinks over a curriculum as the learner catches up.

Jump-Start RL (Uchendu et al. 2023, ICML, arXiv 2204.02372, Algorithm 1): the policy that
collects data is pi = guide for the episode's steps 0..h-1, the learner (exploration policy)
from step h on. The guide-step h starts at the horizon H and moves down over `num_stages` equal
stages, h_k = floor(H (n - k) / n) for stage k = 0..n (stage n: the learner acts alone). The
curriculum moves to the next stage when an evaluation of that combined policy reaches a
threshold relative to the best evaluation so far (JSRL: "performance threshold"; its practical
rule compares to the best return with a tolerance).

What WSRL's comparison runs (arXiv 2412.07762): the pretrained policy is the guide and no
offline data is kept. Its reference code does not include JSRL; its author describes it as the
fine-tuning agent unchanged plus the roll-in logic in the loop (github zhouzypaul/wsrl issue
#2). So here the learner is the fine-tuning agent initialised as WSRL's is (the whole
checkpoint; the `init_*` switches apply), and the guide is the checkpoint's actor, frozen. The
roll-in code that author points to (facebookresearch/ExPLORe, `train_finetuning.py`,
`bc_pretrain_rollin`) is a randomised variant (an episode starts with the guide with some
probability, which keeps acting each step with probability gamma); the hyperparameters of
WSRL's JSRL runs are in its appendix, which could not be read from here. This module follows
JSRL's own curriculum, as issue 20 asks.

Choices this module makes that could not be checked against the papers' text from here (the
JSRL appendix and WSRL's baseline appendix were not readable), each a config field:
- H: the episode length (`jsrl_horizon` sets another, e.g. the guide's typical episode length);
  n = 10 stages and tolerance 0.05, as public JSRL re-implementations set them (a JSRL port to
  CORL's IQL, `JsrlTrainConfig`: 10 stages, tolerance 0.05 in one version and 0.01 in another,
  compared with a rolling mean of 5 evaluations; a JSRL agent in a fork of WSRL's code: 10
  stages, advancing at >= 0.95 x the best return).
- Threshold: the first evaluation (step 0, the guide alone at h = H) sets the best return; each
  later one advances a stage if its return >= best - tolerance |best| (|best|: rewards may be
  negative), and the best becomes max(best, return), as that fork does. No rolling mean.
- The combined policy's evaluation is deterministic (tanh of the mean) for both policies, like
  every evaluation here; while collecting, the guide samples from its stochastic policy as
  WSRL's warmup does.

Everything here is a pure function of arrays; `online.py` calls `collect_action` in its step and
the host loop calls `advance` after each evaluation (`finetune.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct


@dataclasses.dataclass(frozen=True)
class Curriculum:
  """Static settings of JSRL's curriculum."""
  horizon: int            # H: guide steps at stage 0, >= 1 (the episode length by default)
  num_stages: int = 10    # n: stages from h = H down to h = 0, >= 1
  tolerance: float = 0.05  # an evaluation within tolerance x |best| of the best advances


@struct.dataclass
class JumpStart:
  """One seed's JSRL state, kept in the train state (and so checkpointed)."""
  guide: dict               # the guide's actor parameters (the pretrained actor), never trained
  stage: jax.Array          # int32 in [0, num_stages]
  best_return: jax.Array    # float32: the best evaluation return so far; -inf before the first


@struct.dataclass
class GuidedPolicy:
  """What the combined policy's deterministic evaluation acts with (one seed)."""
  learner: dict             # actor parameters
  guide: dict
  guide_steps: jax.Array    # int32 h: the guide acts on an episode's steps 0..h-1


def start(guide_actor: dict) -> JumpStart:
  """Stage 0 (h = H) with no evaluation yet."""
  return JumpStart(guide=guide_actor, stage=jnp.zeros((), jnp.int32),
                   best_return=jnp.full((), -jnp.inf, jnp.float32))


def guide_steps(stage: jax.Array, curriculum: Curriculum) -> jax.Array:
  """h at `stage` (any shape, int): floor(H (n - stage) / n), from H at stage 0 to 0 at n."""
  stage = jnp.clip(jnp.asarray(stage, jnp.int32), 0, curriculum.num_stages)
  return (curriculum.horizon * (curriculum.num_stages - stage)) // curriculum.num_stages


def choose(episode_step: jax.Array, guide_steps_: jax.Array, guide_action: jax.Array,
           learner_action: jax.Array) -> jax.Array:
  """The guide's action on an episode's steps 0..h-1 (`episode_step` counts the steps already
  taken in the episode), the learner's from step h on. Actions [..., A]; steps and h [...]."""
  use_guide = jnp.asarray(episode_step) < jnp.asarray(guide_steps_)
  return jnp.where(use_guide[..., None], guide_action, learner_action)


def advance(stage: jax.Array, best_return: jax.Array, evaluation_return: jax.Array,
            curriculum: Curriculum) -> tuple[jax.Array, jax.Array]:
  """The curriculum after an evaluation of the combined policy -> (stage, best_return).

  Per seed (any shape): the first evaluation (best -inf) only sets the best. Later, a return
  >= best - tolerance |best| moves to the next stage (at most n); the best becomes the larger of
  the two. A non-finite return (never produced by `evaluation.evaluate`) changes nothing.
  """
  stage = jnp.asarray(stage, jnp.int32)
  best = jnp.asarray(best_return, jnp.float32)
  value = jnp.asarray(evaluation_return, jnp.float32)
  valid = jnp.isfinite(value)
  first = jnp.isneginf(best)
  reached = ~first & (value >= best - curriculum.tolerance * jnp.abs(best))
  stage = jnp.where(valid & reached, jnp.minimum(stage + 1, curriculum.num_stages), stage)
  best = jnp.where(valid, jnp.where(first, value, jnp.maximum(best, value)), best)
  return stage, best


def collect_action(agent, jump_start: JumpStart, learner_actor: dict, observation: jax.Array,
                   episode_step: jax.Array, key: jax.Array, curriculum: Curriculum):
  """The collecting action of one seed: a sample of the guide's policy on the episode's first h
  steps, of the learner's after (`agent`: `sac.SAC`, whose actor both are)."""
  guide_key, learner_key = jax.random.split(key)
  guide_action = agent.sample_action(jump_start.guide, observation, guide_key)
  learner_action = agent.sample_action(learner_actor, observation, learner_key)
  return choose(episode_step, guide_steps(jump_start.stage, curriculum), guide_action,
                learner_action)


def deterministic_act(agent):
  """`act(policy: GuidedPolicy, observation, episode_step)` for `evaluation.evaluate`: tanh of
  the mean of the guide's actor on steps 0..h-1, of the learner's after."""

  def act(policy: GuidedPolicy, observation, episode_step):
    return choose(episode_step, policy.guide_steps,
                  agent.deterministic_action(policy.guide, observation),
                  agent.deterministic_action(policy.learner, observation))

  return act

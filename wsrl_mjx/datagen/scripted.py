"""Scripted demonstrators for Adroit: offline data with successes, made without downloads.

WSRL pretrains on Adroit from demonstrations (D4RL's human teleoperation plus policy rollouts).
A random policy never succeeds at these tasks, so a dataset collected with one teaches Cal-QL
nothing. These controllers play the demonstrator's part: feedback laws on the observation alone
(no hidden state, so they run inside `launch.collect`'s vmapped rollout like any policy), with
Gaussian action noise from the step's key for variety, as human demonstrations vary.

Relocate, in four phases read off the observation:
1. hover: arm level, palm moved 0.1 m above a grasp point just behind the ball;
2. descend: arm tilted down (the hand hangs at the end of a 0.4 m forearm, so only a tilt brings
   the fingers to a ball on the table), palm to the grasp point;
3. close: every finger flexes; once the index finger has started closing it keeps closing;
4. carry: with the index finger closed, the palm moves so the ball goes to the target, the tilt
   easing off as the ball rises.

The arm's six actuators are position servos with gain 500 and bias -200 (D4RL's model), so
they hold joint q at 2.5 x ctrl: a joint target t needs ctrl 0.4 t. Its three slide joints sit
before its rotations in the kinematic chain, so a palm displacement (dx, dy, dz) is the joint
displacement (-dx, dz, dy) at any tilt (measured from the model in the tests).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Joint displacement per palm displacement (x, y, z) for the slide joints ARTx, ARTy, ARTz.
_PALM_TO_SLIDES = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], np.float32)
_GRASP_OFFSET = np.array([0.0, -0.03, 0.03], np.float32)  # palm - ball when grasping
_HOVER = 0.1            # m above the grasp point while aligning
_ALIGNED = 0.015        # m: xy error below which the hand descends
_DESCENDED = 0.01       # m: z error below which the fingers close
_TILT = 0.3             # rad of arm tilt (ARRx) while grasping
_MIN_TILT = -0.1        # rad while carrying a ball up to a high target
_TILT_PER_HEIGHT = 2.0  # rad of tilt eased per m the ball is below its target
_CLOSING, _CLOSED = 0.2, 0.8   # mean index finger flexion (rad): closing, closed
_LIFT_GAIN = 3.0        # the carry's vertical gain (the servos sag under the hand's weight)


def relocate_policy(env, noise_scale: float = 0.05):
  """policy(params, observation, key) -> action for `relocate-binary-v0` (params unused)."""
  model = env.mj_model
  # ctrl per unit of joint target: -bias / gain of each position servo.
  ctrl_per_target = jnp.asarray(-model.actuator_biasprm[:, 1] / model.actuator_gainprm[:, 0],
                                jnp.float32)
  palm_to_slides = jnp.asarray(_PALM_TO_SLIDES)
  offset = jnp.asarray(_GRASP_OFFSET)

  def policy(params, observation, key):
    del params
    joints, palm_ball, ball_target = observation[:30], observation[30:33], observation[36:39]
    error = palm_ball - offset
    flexion = jnp.mean(joints[9:12])
    closing = flexion > _CLOSING        # closed (carry) implies closing: _CLOSED > _CLOSING
    closed = flexion > _CLOSED
    aligned = jnp.linalg.norm(error[:2]) < _ALIGNED
    descended = jnp.abs(error[2]) < _DESCENDED
    hover = ~closing & ~aligned
    palm_move = jnp.where(hover, -(error - jnp.array([0.0, 0.0, _HOVER])), -error)
    palm_move = jnp.where(closed, -ball_target * jnp.array([1.0, 1.0, _LIFT_GAIN]), palm_move)
    fingers = jnp.where(closing | (aligned & descended), 1.0, -1.0)
    tilt = jnp.where(hover, 0.0, _TILT)
    tilt = jnp.where(closed, jnp.clip(_TILT + _TILT_PER_HEIGHT * ball_target[2], _MIN_TILT, _TILT),
                     tilt)
    targets = jnp.zeros(30).at[:3].set(joints[:3] + palm_to_slides @ palm_move).at[3].set(tilt)
    action = env.ctrl_to_action(ctrl_per_target * targets).at[8:].set(fingers)
    action = action + noise_scale * jax.random.normal(key, action.shape)
    return jnp.clip(action, -1.0, 1.0)

  return policy


POLICIES = {"relocate": relocate_policy}


def policy_for(env, noise_scale: float = 0.05):
  """The scripted demonstrator of an Adroit env, or a clear error for a task without one."""
  task = getattr(env, "task_name", None)
  if task not in POLICIES:
    raise ValueError(f"No scripted demonstrator for {task or type(env).__name__}; "
                     f"scripted ones exist for: {', '.join(sorted(POLICIES))}")
  return POLICIES[task](env, noise_scale)

"""The fine-tuning arms `launch.finetune --config.method=<name>` runs, one `Method` each.

Every arm runs the same way (one seed-vmapped program, the same env ports, evaluation and
checkpoints); what differs is said here, once, and read by `configs.validate` (what the arm
needs: a checkpoint, offline data) and `finetune` (which learner, which data). Each entry
names the paper the arm comes from and the WSRL paper's comparison it belongs to; README's
"Methods" table is this registry in prose.

| name | learner online | checkpoint | offline data |
| --- | --- | --- | --- |
| wsrl | SAC (10-critic ensemble, UTD) | required: calql, cql or a SAC fine-tuning | none |
| sac | SAC | none (random init) | none |
| rlpd | SAC | none | keep: symmetric sampling, half of each batch |
| calql, cql | the offline learner's own loss | required: of that algorithm | keep or none |
| iql | IQL's own losses | required: iql | keep or none |
| jsrl, so2 | SAC (with the arm's changes) | required | none |

`reference` holds the settings the WSRL reference's script for that arm passes
(`zhouzypaul/wsrl`, `experiments/scripts/<family>/launch_*.sh`, and `finetune.py`'s flag
defaults where a script passes none); the `,<method>` option of `launch/configs/finetune.py`
applies them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from wsrl_mjx.errors import ConfigError

# What the `algo` of a checkpoint is: a pretraining's description records it ("calql", "cql",
# "iql"); a fine-tuning's records its method, whose learner (`Method.learner`) is the algorithm.
OFFLINE_DATA = ("none", "keep")
SAMPLING = ("mixed", "append")


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  summary: str                       # what the arm is, one line
  paper: str                         # where the arm comes from
  figure: str                        # which comparison of the WSRL paper it belongs to
  learner: str                       # the online update: "sac", "calql", "cql" or "iql"
  needs_checkpoint: bool             # --config.pretrained must name one
  checkpoint_algos: tuple[str, ...]  # the checkpoint algorithms it starts from (empty: none)
  offline_data: tuple[str, ...]      # the values --config.offline_data may take
  reference: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Only the learner's whole state continues (the offline learners): WSRL's per-part
  # initialisation switches (init_actor, ...) do not apply.
  init_switches: bool = True

  @property
  def offline_learner(self) -> bool:
    return self.learner in ("calql", "cql", "iql")


# Checkpoints a SAC-shaped arm starts from: CQL and Cal-QL pretrainings hand over WSRL's shapes
# (configs.make_learner), and a SAC fine-tuning (any SAC-learner arm) can be fine-tuned again.
_SAC_SHAPED = ("calql", "cql", "sac")

# The reference's offline learners continued online: `finetune.py` flag defaults (utd 1,
# batch 256, warmup 0: `finetune.py:58-65`) with the scripts' `--warmup_steps 0`.
_OFFLINE_LEARNER_REFERENCE = {"utd": 1, "batch_size": 256, "warmup_steps": 0,
                              "offline_data": "none"}


def _offline_method(name: str, summary: str, paper: str) -> Method:
  """An offline learner (`name` is its algorithm) continued online from its own pretraining,
  with or without its offline data."""
  return Method(name=name, summary=summary, paper=paper,
                figure="offline-RL fine-tuning with (keep) and without (none) the offline data",
                learner=name, needs_checkpoint=True, checkpoint_algos=(name,),
                offline_data=OFFLINE_DATA, reference=_OFFLINE_LEARNER_REFERENCE,
                init_switches=False)


def _no_retention_arm(name: str, summary: str, paper: str, **fields) -> Method:
  """A baseline of the no-retention comparison on a pretrained SAC-shaped agent, no offline
  data; `fields` (e.g. `reference`) as `Method`'s."""
  return Method(name=name, summary=summary, paper=paper, figure="no-retention comparison",
                learner="sac", needs_checkpoint=True, checkpoint_algos=_SAC_SHAPED,
                offline_data=("none",), **fields)


# SO2's published settings (github opendilab/SO2, `train.py` at commit 36f8274, the script for
# its D4RL locomotion runs; the only family it publishes, so every family takes them): target
# noise std 0.3 clipped to +-0.6 (`noise_sigma`, `noise_range`), 10 critic updates per env step
# with one actor update (`update_per_collect` 10, `actor_update_freq` 10) on minibatches of
# 256: here utd 10, batch 2,560 (the actor step takes the whole batch, as WSRL's UTD does).
# SO2's own 10-critic (hopper: 50) EDAC ensemble and its offline-data mixing (90% of each
# batch, `concat_online_ratio` 0.1) are not taken: the arm is SO2's update on WSRL's agent with
# no offline data, WSRL's 5,000-step warmup kept (SO2's script also collects
# `random_collect_size` 5,000 steps with its collect policy before its online updates).
_SO2_SETTINGS = {"utd": 10, "batch_size": 2560, "target_action_noise": 0.3,
                 "target_action_noise_clip": 0.6}

METHODS: dict[str, Method] = {m.name: m for m in (
    Method(
        name="wsrl",
        summary="Warm-start RL: the whole pretrained agent, a warmup of the frozen policy into "
                "an empty buffer, then SAC with a 10-critic ensemble at UTD 4; no offline data",
        paper="Zhou et al. 2024, arXiv 2412.07762",
        figure="the method in every comparison",
        learner="sac", needs_checkpoint=True, checkpoint_algos=_SAC_SHAPED,
        offline_data=("none",),
        reference={"utd": 4, "batch_size": 1024, "warmup_steps": 5000}),
    Method(
        name="sac",
        summary="SAC from scratch with WSRL's settings (random initialisation, no offline data)",
        paper="Haarnoja et al. 2018; WSRL's settings",
        figure="no-retention comparison (online RL from scratch)",
        learner="sac", needs_checkpoint=False, checkpoint_algos=(),
        offline_data=("none",),
        reference={"utd": 4, "batch_size": 1024, "warmup_steps": 5000}),
    Method(
        name="rlpd",
        summary="RLPD: SAC with WSRL's ensemble and UTD from scratch, every batch half offline "
                "data and half online replay (symmetric sampling); AntMaze targets from 1 critic",
        paper="Ball et al. 2023, arXiv 2302.02948",
        figure="comparison with methods that retain the offline data",
        learner="sac", needs_checkpoint=False, checkpoint_algos=(),
        offline_data=("keep",),
        # experiments/scripts/*/launch_rlpd.sh: --offline_data_ratio 0.5 --utd 4
        # --batch_size 1024 --warmup_steps 5000 (AntMaze: critic_subsample_size 1).
        reference={"utd": 4, "batch_size": 1024, "warmup_steps": 5000, "offline_data": "keep",
                   "offline_data_ratio": 0.5, "offline_sampling": "mixed"}),
    _offline_method(
        "calql", "Cal-QL continued online from its pretraining with its own loss (CQL penalty, "
                 "Monte-Carlo lower bound from online episodes' returns)",
        "Nakamoto et al. 2023, arXiv 2303.05479"),
    _offline_method(
        "cql", "CQL continued online from its pretraining with its own loss (CQL penalty)",
        "Kumar et al. 2020, arXiv 2006.04779"),
    _offline_method(
        "iql", "IQL continued online from its pretraining with its own losses (expectile "
               "value, advantage-weighted actor)",
        "Kostrikov et al. 2021, arXiv 2110.06169"),
    _no_retention_arm(
        "jsrl", "Jump-start RL: the pretrained policy guides the first h steps of each episode, "
                "the SAC learner acts after; h shrinks by JSRL's curriculum; no offline data",
        "Uchendu et al. 2023, arXiv 2204.02372",
        # JSRL has no warmup of its own: its first stage (the guide on whole episodes) is one.
        reference={"warmup_steps": 0}),
    _no_retention_arm(
        "so2", "SO2: the pretrained agent fine-tuned with perturbed value updates (clipped noise "
               "on the target's next actions) and a higher update frequency",
        "Zhang et al. 2024, arXiv 2312.07685", reference=_SO2_SETTINGS),
)}

NAMES = tuple(METHODS)


def get(name: str) -> Method:
  """The method `name`; ConfigError naming config.method and the choices if there is none."""
  try:
    return METHODS[name]
  except KeyError:
    raise ConfigError(f"config.method={name!r}; choose one of {', '.join(NAMES)}.") from None


def checkpoint_algo(description: Mapping[str, Any]) -> str:
  """The algorithm whose agent a checkpoint description holds: a pretraining's `algo`, a
  fine-tuning's method's learner (runs made before methods existed are SAC)."""
  if description.get("kind") == "wsrl-mjx pretrain" or "algo" in description:
    return str(description.get("algo", "?"))
  method = METHODS.get(description.get("method", "sac"))
  return method.learner if method is not None else "?"


def reference_settings(name: str, family: str) -> dict[str, Any]:
  """The config fields the reference's script for `name` sets on `family` (see `Method`)."""
  settings = dict(get(name).reference)
  if name == "rlpd" and family == "antmaze":
    settings["num_target_critics"] = 1   # launch_rlpd.sh (antmaze): critic_subsample_size 1
  return settings

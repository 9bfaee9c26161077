"""Configs, per-seed grids and the checks that turn bad settings into clear errors."""

import pathlib

import numpy as np
import pytest

import envs
from conftest import tiny_config
from launch.configs import finetune as finetune_config
from wsrl_mjx import checkpoint, configs, finetune, per_seed, replay
from wsrl_mjx.data import DatasetError
from wsrl_mjx.agents import sac
from wsrl_mjx.errors import ConfigError, UserError


def test_default_config_follows_the_wsrl_sheet_for_locomotion():
  config = finetune_config.get_config("walker2d-medium-v2")
  assert config.num_critics == 10 and config.num_target_critics == 2
  assert config.utd == 4 and config.batch_size == 1024
  assert (config.actor_hidden_sizes, config.critic_hidden_sizes) == ((256, 256), (256, 256))
  assert config.warmup_steps == 5_000 and config.online_steps == 500_000
  assert (config.actor_learning_rate, config.critic_learning_rate,
          config.temperature_learning_rate) == (1e-4, 3e-4, 1e-4)
  assert config.replay_capacity == 2_000_000 and config.eval_interval == 20_000
  assert config.eval_episodes == 20 and config.action_clip == 0.99999
  sac_config = configs.sac_config(config, envs.spec(config.env_name))
  assert sac_config.minibatch_size == 256 and sac_config.target_entropy is None
  assert (sac_config.discount, sac_config.tau) == (0.99, 0.005)


def test_antmaze_configs_follow_the_wsrl_sheet():
  from launch.configs import pretrain as pretrain_config
  config = finetune_config.get_config("antmaze-large-diverse-v2")
  assert (config.actor_hidden_sizes, config.critic_hidden_sizes) == ((256, 256), (256,) * 4)
  assert config.state_dependent_std is False and config.online_steps == 500_000
  offline = pretrain_config.get_config("antmaze-umaze-v2")
  assert offline.algo == "calql" and offline.offline_steps == 1_000_000
  assert offline.cql_autotune_alpha and offline.cql_target_action_gap == 0.8
  assert offline.cql_max_target_backup and offline.negative_sparse_reward == 0.0
  assert (offline.iql_expectile, offline.iql_beta) == (0.9, 10.0)
  spec = envs.spec(config.env_name)
  assert (spec.reward_scale, spec.reward_bias, spec.episode_length) == (10.0, -5.0, 1000)


def test_config_rejects_unknown_names_and_options():
  with pytest.raises(ValueError, match="Unknown environment"):
    finetune_config.get_config("hopper-medium-v9")
  with pytest.raises(ValueError, match=r"Unknown config option\(s\) \['fast'\]"):
    finetune_config.get_config("hopper-medium-v2,fast")
  demo = finetune_config.get_config("hopper-medium-v2,demo")
  assert configs.validate(demo).name == "hopper-medium-v2"
  assert demo.num_seeds == 2 and demo.online_steps < 10_000


def test_per_seed_grid_is_laid_over_the_seeds():
  config = tiny_config(num_seeds=4, per_seed="warmup_steps=0,5000; init_critic=false")
  settings, overrides = per_seed.seed_settings(config)
  np.testing.assert_array_equal(settings.warmup_steps, [0, 5000, 0, 5000])
  np.testing.assert_array_equal(settings.init_critic, [False] * 4)
  np.testing.assert_array_equal(settings.init_actor, [True] * 4)
  assert settings.warmup_steps.dtype == np.int32
  assert overrides[1] == {"warmup_steps": 5000, "init_critic": False}


@pytest.mark.parametrize("spec, message", [
    ("utd=2", r"'utd' cannot vary per seed"),
    ("warmup_steps", r"expected name=v1,v2"),
    ("warmup_steps=1.5", r"whole numbers"),
    ("init_actor=maybe", r"true/false"),
    ("actor_learning_rate=fast", r"takes numbers"),
    ("warmup_steps=1;warmup_steps=2", r"given twice"),
    ("warmup_steps=0,1,2", r"3 grid points; config.num_seeds \(2\) must be a multiple"),
])
def test_per_seed_errors_say_what_is_wrong(spec, message):
  with pytest.raises(ValueError, match=message):
    per_seed.seed_settings(tiny_config(per_seed=spec))


def test_settings_that_cannot_work_are_refused_with_the_field_named():
  spec = envs.spec("hopper-medium-v2")
  with pytest.raises(ValueError, match=r"config.batch_size \(100\) must split into config.utd"):
    configs.sac_config(tiny_config(batch_size=100, utd=3), spec)
  with pytest.raises(ValueError, match=r"config.num_target_critics \(12\)"):
    configs.sac_config(tiny_config(num_target_critics=12), spec)
  with pytest.raises(ValueError, match=r"matmul_precision='fp8'"):
    configs.sac_config(tiny_config(matmul_precision="fp8"), spec)
  with pytest.raises(ConfigError, match=r"config.eval_interval=0: must be a whole number >= 1"):
    configs.validate(tiny_config(eval_interval=0))
  # The faithfulness options: checked when the agent is built (before anything compiles).
  with pytest.raises(ConfigError, match=r"temperature_entropy='s'; choose one of next_obs"):
    sac.SAC(configs.sac_config(tiny_config(temperature_entropy="s"), spec))
  with pytest.raises(ValueError, match=r"num_next_actions=0 must be at least 1"):
    sac.SAC(configs.sac_config(tiny_config(num_next_actions=0), spec))


def test_extending_a_run_beyond_its_buffer_is_refused(tmp_path):
  saved = tiny_config().to_dict()                  # buffer min(120, 200) = 120 rows
  finetune._check_resumable(tiny_config(online_steps=400), {"config": saved}, tmp_path)
  saved["replay_capacity"] = 500
  saved["online_steps"] = 200                      # 200 rows; extending to 400 needs 400
  with pytest.raises(checkpoint.CheckpointError, match="replay buffers hold 200 transitions"):
    finetune._check_resumable(tiny_config(online_steps=400, replay_capacity=500),
                              {"config": saved}, tmp_path)


def test_a_resume_refuses_changed_settings_and_takes_changed_schedules(tmp_path):
  """What a record means (eval_episodes) and what is learned (a learning rate) cannot change on
  resume; schedules, retention and speed settings can. A field the run did not record (made by
  an older version) is not compared."""
  saved = tiny_config().to_dict()
  finetune._check_resumable(
      tiny_config(eval_interval=50, checkpoint_interval=100, keep_checkpoints=5,
                  skip_idle_work=not saved["skip_idle_work"]), {"config": saved}, tmp_path)
  with pytest.raises(checkpoint.CheckpointError) as error:
    finetune._check_resumable(tiny_config(eval_episodes=7, actor_learning_rate=1e-3),
                              {"config": saved}, tmp_path)
  assert str(error.value) == (
      f"{tmp_path}: holds a run with config.actor_learning_rate=0.0001 (this one: 0.001), "
      f"config.eval_episodes={saved['eval_episodes']} (this one: 7). Resume with the same "
      "settings or choose a new --workdir.")
  del saved["eval_episodes"]
  finetune._check_resumable(tiny_config(eval_episodes=7), {"config": saved}, tmp_path)


def test_init_switches_and_repeated_grid_values_are_refused_where_they_mean_nothing():
  """SAC from scratch has no pretrained part to leave out; a value given twice makes two grid
  points of one setting (one arm whose seeds the log and report would split in two)."""
  config = tiny_config(method="sac", num_seeds=2, per_seed="init_critic=true,false")
  with pytest.raises(ConfigError, match=r"^config.init_critic \(or config.per_seed\): "
                     r"config.method='sac' starts from scratch, so there is no pretrained part"):
    configs.validate(config)
  with pytest.raises(ConfigError, match=r"^config.init_actor \(or config.per_seed\)"):
    configs.validate(tiny_config(method="sac", init_actor=False))
  with pytest.raises(ConfigError, match=r"^config.per_seed: warmup_steps gives 0 more than "
                     r"once; give each value once \(more seeds per point: raise "):
    configs.check_field_rules(tiny_config(num_seeds=4, per_seed="warmup_steps=0,5,0.0"))
  with pytest.raises(ConfigError, match=r"^config.per_seed defines 3 grid points; "
                     r"config.num_seeds \(2\) must be a multiple of that.$"):
    configs.check_field_rules(tiny_config(num_seeds=2, per_seed="warmup_steps=0,5,10"))


def test_a_resume_compares_where_paths_lead_not_how_they_are_written(tmp_path, monkeypatch):
  """`runs/offline`, `runs/offline/`, its absolute path and a link to it resume the run made
  with `runs/offline`; the same text from another working folder (another agent) does not, nor
  does another folder. A run recorded before `resolved_paths` existed compares its text
  resolved from here. Pretraining's comma-separated dataset files are compared file by file."""
  from wsrl_mjx import host_loop, pretrain, runs
  for name in ("a/runs/offline", "b/runs/offline", "a/data"):
    (tmp_path / name).mkdir(parents=True)
  (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "runs" / "offline")
  monkeypatch.chdir(tmp_path / "a")
  made = tiny_config(pretrained="runs/offline")
  description = finetune.run_description(made, envs.spec(made.env_name), {}, [])
  assert description["resolved_paths"] == {"pretrained": str(tmp_path / "a/runs/offline")}
  for written in ("runs/offline", "runs/offline/", str(tmp_path / "a/runs/offline"), "link",
                  "./runs/../runs/offline"):
    finetune._check_resumable(tiny_config(pretrained=written), description, tmp_path)
    finetune._check_resumable(tiny_config(pretrained=written), {"config": made.to_dict()},
                              tmp_path)
  with pytest.raises(checkpoint.CheckpointError) as error:
    finetune._check_resumable(tiny_config(pretrained="runs/other"), description, tmp_path)
  assert (f"holds a run with config.pretrained='runs/offline', which was {tmp_path}/a/runs/"
          f"offline (this one: 'runs/other', which is {tmp_path}/a/runs/other)") in str(error.value)
  monkeypatch.chdir(tmp_path / "b")       # the same text, another agent
  with pytest.raises(checkpoint.CheckpointError, match="which is .*/b/runs/offline"):
    finetune._check_resumable(tiny_config(pretrained="runs/offline"), description, tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match="config.pretrained='runs/offline'"):
    finetune._check_resumable(tiny_config(pretrained=""), description, tmp_path)
  # Adroit's datasets: several files, comma-separated.
  monkeypatch.chdir(tmp_path / "a")
  files = "data/x.npy,data/y.npy"
  saved = {"dataset": files}
  paths = runs.resolved_paths(saved)
  assert paths == {"dataset": f"{tmp_path}/a/data/x.npy,{tmp_path}/a/data/y.npy"}
  host_loop.check_same_fields(saved, {"dataset": "data/x.npy, ./data/y.npy"}, ["dataset"],
                              tmp_path, paths)
  with pytest.raises(checkpoint.CheckpointError, match="config.dataset="):
    host_loop.check_same_fields(saved, {"dataset": "data/y.npy,data/x.npy"}, ["dataset"],
                                tmp_path, paths)
  from launch.configs import pretrain as pretrain_config
  offline = pretrain_config.get_config("point-mass")
  offline.dataset = files
  description = pretrain.run_description(offline, envs.spec("point-mass"), {}, files, 10)
  assert description["resolved_paths"] == paths


# One bad value per rule of configs._FIELD_RULES, for the phase whose config has the field.
# Each passed a range check before (or none existed) and failed later, inside a compiled program
# or as an IndexError (num_seeds=0), or never (a negative learning rate trained upwards).
BAD_VALUES = [
    ("finetune", "num_seeds", 0), ("finetune", "online_steps", -5),
    ("finetune", "steps_per_chunk", 0), ("finetune", "eval_episodes", 0),
    ("finetune", "keep_checkpoints", 0), ("finetune", "replay_capacity", 0),
    ("finetune", "warmup_steps", -1), ("finetune", "episode_length", -1),
    ("finetune", "actor_learning_rate", -1e-4), ("finetune", "initial_temperature", 0.0),
    ("finetune", "discount", 1.0), ("finetune", "tau", 0.0), ("finetune", "action_clip", 1.5),
    ("finetune", "reward_scale", float("nan")), ("finetune", "critic_hidden_sizes", ()),
    ("finetune", "actor_hidden_sizes", (256, 0)), ("finetune", "goal_offset", "centre"),
    ("finetune", "jsrl_num_stages", 0), ("finetune", "jsrl_horizon", -1),
    ("finetune", "jsrl_tolerance", float("nan")), ("finetune", "target_action_noise", -0.3),
    ("finetune", "target_action_noise_clip", float("nan")), ("finetune", "seed", 2**32),
    ("finetune", "seed", -1), ("pretrain", "seed", 2**32 + 3),
    ("pretrain", "offline_steps", 0), ("pretrain", "cql_num_sampled_actions", 0),
    ("pretrain", "cql_temperature", 0.0), ("pretrain", "iql_expectile", 1.0),
    ("pretrain", "iql_actor_dropout", 1.0), ("pretrain", "iql_hidden_sizes", (32, -1)),
]


@pytest.mark.parametrize("phase, field, value", BAD_VALUES)
def test_a_config_value_out_of_its_range_is_a_config_error_naming_the_field(phase, field, value):
  from launch.configs import pretrain as pretrain_config
  module = finetune_config if phase == "finetune" else pretrain_config
  config = module.get_config("hopper-medium-v2,demo")
  config[field] = value
  with pytest.raises(ConfigError, match=rf"^config\.{field}="):
    configs.validate(config)


def test_config_checks_of_other_modules_are_user_errors_too():
  spec = envs.spec("hopper-medium-v2")
  config = tiny_config()
  config.env_name = "hopper-medium-v9"
  with pytest.raises(ConfigError, match=r"config.env_name: Unknown environment 'hopper-medium-v9'"):
    configs.validate(config)
  with pytest.raises(ConfigError, match="config.per_seed"):
    configs.validate(tiny_config(per_seed="utd=1,2"))
  with pytest.raises(ConfigError, match=r"config.num_next_actions=0"):
    configs.validate(tiny_config(num_next_actions=0))
  with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint directory"):
    configs.validate(tiny_config(pretrained="/nonexistent/run"))
  readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
  with pytest.raises(checkpoint.CheckpointError) as refused:
    configs.validate(tiny_config(pretrained=str(readme)))
  assert str(refused.value) == f"{readme}: is a file, not a run or checkpoint directory"
  with pytest.raises(ConfigError, match=r"config.algo='sac'"):
    from launch.configs import pretrain as pretrain_config
    offline = pretrain_config.get_config("hopper-medium-v2,demo")
    offline.algo = "sac"
    configs.validate(offline)
  with pytest.raises(MemoryError, match="replay_capacity"):
    replay.check_fits(10**9, spec.observation_size, spec.action_size, 64, 2**30)
  for error in (ConfigError, checkpoint.CheckpointError, DatasetError, replay.BufferTooLargeError):
    assert issubclass(error, UserError) and issubclass(error, ValueError)


def test_per_seed_values_and_the_buffer_obey_the_field_rules():
  """A per-seed grid value meets its field's rule, as the same value given alone must (a negative
  warmup and a NaN learning rate ran before); a buffer holds at least one batch."""
  for grid, message in (
      ("warmup_steps=-5,0", "warmup_steps=-5: must be a whole number >= 0 (0: no warmup)."),
      ("actor_learning_rate=1e-4,nan", "actor_learning_rate=nan: must be a finite number >= 0.")):
    with pytest.raises(ConfigError) as refused:
      configs.validate(tiny_config(per_seed=grid))
    assert str(refused.value) == f"config.per_seed: {message}"
  configs.validate(tiny_config(per_seed="warmup_steps=0,50"))
  with pytest.raises(ConfigError) as refused:
    configs.validate(tiny_config(replay_capacity=63))
  assert str(refused.value) == ("config.replay_capacity=63: must hold at least one batch "
                                "(config.batch_size=64).")
  configs.validate(tiny_config(replay_capacity=64))


def test_a_fine_tuning_run_that_ends_before_its_first_update_is_warned_about(caplog):
  """Once, by finetune.log_start (configs.validate said it too, in other words)."""
  caplog.set_level("WARNING")
  demo = finetune_config.get_config("hopper-medium-v2,demo")   # warmup 500, batch 256
  demo.online_steps = 400
  configs.validate(demo)
  finetune.log_start(demo, per_seed.seed_settings(demo)[0])
  assert [r.getMessage()[:75] for r in caplog.records] == [
      "config.online_steps=400 ends before any update for warmup_steps=500 (2 of 2"]
  caplog.clear()
  demo.online_steps = 502                                      # index 501 is its last step
  configs.validate(demo)
  finetune.log_start(demo, per_seed.seed_settings(demo)[0])
  assert not caplog.records


def _flags(*arguments, config="hopper-medium-v2"):
  """The flags `launch.finetune` parses, in a FlagValues of their own."""
  from absl import flags
  from ml_collections import config_flags
  argv = ["finetune", f"--config={finetune_config.__file__}:{config}", *arguments]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values


def test_a_method_flag_means_what_the_method_option_means_with_other_flags_over_it():
  # `--config.method=calql` as `:hopper-medium-v2,calql`: the reference's utd 1, batch 256 and
  # no warmup (methods.py), under what the command line sets itself.
  config = finetune_config.from_flags(_flags("--config.method=calql", "--config.batch_size=512"))
  assert (config.method, config.utd, config.batch_size, config.warmup_steps) == \
      ("calql", 1, 512, 0)
  assert config.to_dict() == dict(
      finetune_config.get_config("hopper-medium-v2,calql").to_dict(), batch_size=512)
  # With `,demo` the arm runs at demo scale: so2's batch of 2,560 (10 minibatches of 256) is a
  # quarter, 640, its warmup a tenth, so its updates start within the demo's 2,000 steps; from
  # the shipped demo agent. An arm from scratch takes no checkpoint.
  config = finetune_config.from_flags(_flags("--config.method=so2", config="hopper-medium-v2,demo"))
  assert (config.utd, config.batch_size, config.warmup_steps, config.online_steps) == \
      (10, 640, 500, 2000)
  assert config.target_action_noise == 0.3 and config.pretrained.endswith("hopper-medium-v2-demo")
  demo = finetune_config.get_config("hopper-medium-v2,demo")
  assert (demo.method, demo.batch_size, demo.warmup_steps) == ("wsrl", 256, 500)
  config = finetune_config.from_flags(_flags("--config.method=sac", config="hopper-medium-v2,demo"))
  assert (config.method, config.pretrained, config.batch_size) == ("sac", "", 256)
  # Without --config.method the file's values stand, whatever else is set.
  config = finetune_config.from_flags(_flags("--config.utd=2"))
  assert (config.method, config.utd, config.batch_size) == ("wsrl", 2, 1024)
  with pytest.raises(ConfigError, match="config.method='nope'"):
    finetune_config.from_flags(_flags("--config.method=nope"))
  with pytest.raises(ConfigError, match="names the method calql and --config.method=so2"):
    finetune_config.from_flags(_flags("--config.method=so2", config="hopper-medium-v2,calql"))


def test_a_demo_given_a_checkpoint_runs_wsrl_where_no_demo_agent_ships(caplog, tmp_path):
  """`:<env>,demo --config.pretrained=RUN` (a demo pretraining handing over to a demo
  fine-tuning) is WSRL from that run, also where no agent ships (the fallback to SAC is for a
  demo with no checkpoint at all); an arm named otherwise stays that arm. The info line names
  the run only where its folder exists (a missing one is refused later, in one line)."""
  caplog.set_level("INFO")
  offline = tmp_path / "offline"
  offline.mkdir()
  for config_arg in ("point-mass,demo", "walker2d-medium-v2,demo,wsrl"):
    for pretrained, logged in ((offline, True), (tmp_path / "absent", False)):
      caplog.clear()
      config = finetune_config.from_flags(_flags(f"--config.pretrained={pretrained}",
                                                 config=config_arg))
      assert (config.method, config.pretrained) == ("wsrl", str(pretrained)), config_arg
      demo = finetune_config.get_config(config_arg)
      assert (config.batch_size, config.warmup_steps, config.online_steps) == (
          demo.batch_size, demo.warmup_steps, 2000)
      messages = [r.getMessage() for r in caplog.records]
      assert (f"WSRL from {pretrained} (no demo agent ships for this env; the command line "
              "gave one)" in messages) == logged, messages
      assert not [r for r in caplog.records if r.levelname == "WARNING"]
  config = finetune_config.from_flags(_flags("--config.pretrained=runs/offline",
                                             config="point-mass,demo,cql"))
  assert config.method == "cql"
  # SAC named on the command line keeps SAC (and its validation refuses the checkpoint).
  config = finetune_config.from_flags(_flags("--config.pretrained=runs/offline",
                                             "--config.method=sac", config="point-mass,demo"))
  assert config.method == "sac"


def test_only_a_demo_that_falls_back_to_sac_warns(caplog):
  """`,demo` (or `,demo,wsrl`) of an env with no shipped demo agent runs SAC in place of WSRL:
  the one case where the arm that runs is not the one asked for, so the only one that warns.
  SAC chosen by name, or a demo with its agent, says nothing at WARNING."""
  caplog.set_level("WARNING")
  for config_arg in ("walker2d-medium-v2,demo", "walker2d-medium-v2,demo,wsrl"):
    caplog.clear()
    config = finetune_config.from_flags(_flags(config=config_arg))
    assert (config.method, config.pretrained) == ("sac", "")
    assert [r.getMessage() for r in caplog.records] == [
        "No demo agent ships for walker2d-medium-v2 (checkpoints/): this demo runs SAC from "
        "scratch (WSRL's baseline), not WSRL. For WSRL, pretrain one with launch.pretrain and "
        "pass --config.method=wsrl --config.pretrained=RUN_DIR."], config_arg
  for arguments, config_arg in ((("--config.method=sac",), "walker2d-medium-v2,demo"),
                                ((), "walker2d-medium-v2,demo,sac"),
                                (("--config.method=sac",), "walker2d-medium-v2"),
                                ((), "hopper-medium-v2,demo")):
    caplog.clear()
    config = finetune_config.from_flags(_flags(*arguments, config=config_arg))
    assert config.method == ("wsrl" if config_arg == "hopper-medium-v2,demo" else "sac")
    assert not caplog.records, (arguments, config_arg)

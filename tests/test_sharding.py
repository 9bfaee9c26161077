"""Seeds split across devices (two CPU devices faked with XLA's host-platform flag)."""

import os
import subprocess
import sys
import textwrap

from conftest import ROOT

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    import envs
    from conftest import tiny_config
    from wsrl_mjx import finetune, per_seed
    assert len(jax.devices()) == 2, jax.devices()
    config = tiny_config(num_seeds=4)
    env, spec = envs.make(config.env_name)
    programs = finetune.build_programs(config, env, spec)
    settings = jax.tree.map(jnp.asarray, per_seed.seed_settings(config)[0])
    state = programs.init(finetune.seed_keys(config), settings, None)
    for leaf in jax.tree.leaves(state):
      shards = leaf.addressable_shards
      assert len({s.device for s in shards}) == 2, leaf.sharding
      assert all(s.data.shape[0] == 2 for s in shards)          # two seeds per device
    # Placement does not change the numbers: seed 3 equals an init of its key alone.
    params = jax.tree.map(np.asarray, state.agent.params)
    key = finetune.seed_keys(config)[3]
    alone = jax.jit(programs.loop.init)(key, jax.tree.map(lambda x: x[3], settings), None)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[3], b), params,
                 jax.tree.map(np.asarray, alone.agent.params))
    try:
      finetune.seed_mesh(3)
    except ValueError as error:
      assert "multiple of the number of devices (2)" in str(error)
    else:
      raise AssertionError("3 seeds on 2 devices should be refused")
    print("sharded ok")
""")


def test_seeds_split_evenly_across_devices():
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                        + " --xla_force_host_platform_device_count=2").strip())
  result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "sharded ok" in result.stdout

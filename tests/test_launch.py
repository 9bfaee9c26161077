"""The launchers' command lines where no end-to-end test reaches them: the collector's policy
kinds (one table lists them for --help and for the error) and the PPO trainers' --help."""

import pytest

from conftest import run_launch

KIND_USAGES = ["random", "scripted", "planner", "ppo:DIR", "navigator:DIR", "DIR"]


def test_collector_refuses_an_unknown_policy_kind_and_names_every_kind(tmp_path):
  output = tmp_path / "x.hdf5"
  result = run_launch("launch.collect", "--env=hopper-medium-v2", "--policy=nonsense:x",
                      f"--output={output}")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: --policy=nonsense:x: no such policy kind or checkpoint directory. One of: ")
  for usage in KIND_USAGES:
    assert f"{usage}: " in result.stderr
  assert not output.exists()


@pytest.mark.parametrize("module", ["launch.train_ant_controller",
                                    "launch.train_adroit_demonstrator"])
def test_ppo_trainers_start(module):
  result = run_launch(module, "--help")
  assert "--output" in result.stdout, result.stderr[-3000:]


def test_every_launchers_help_shows_its_docstring_as_written():
  """absl's --help formats the module docstring with `%` (`doc %= (argv[0],) * n`), so a bare
  "95% stratified" printed the program's path in place of "% s"."""
  import ast
  import pathlib
  launchers = sorted((pathlib.Path(__file__).resolve().parents[1] / "launch").glob("*.py"))
  assert len(launchers) > 8
  for path in launchers:
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    assert doc.count("%") == 2 * doc.count("%%"), path

"""Per-seed hyperparameters: one program can run an ablation grid, a few seeds per grid point.

`config.per_seed` is a string such as `"warmup_steps=0,5000,20000;init_critic=true,false"`. Its
grid (here 3 x 2 = 6 points) is laid over the seeds cyclically, seed i taking point i mod 6, so
`num_seeds` must be a multiple of the grid size. Only settings that change no array shapes may
vary: `TUNABLE` lists them; everything else is one value for the whole program.
"""

from __future__ import annotations

import itertools

import numpy as np

from wsrl_mjx.errors import ConfigError
from wsrl_mjx.online import SeedSettings

# name -> (parser, numpy dtype)
TUNABLE = {
    "warmup_steps": (int, np.int32),
    "actor_learning_rate": (float, np.float32),
    "critic_learning_rate": (float, np.float32),
    "temperature_learning_rate": (float, np.float32),
    "init_actor": ("bool", np.bool_),
    "init_critic": ("bool", np.bool_),
    "init_temperature": ("bool", np.bool_),
    "init_optimizer": ("bool", np.bool_),
}


def _parse_value(name: str, text: str):
  parser, _ = TUNABLE[name]
  text = text.strip()
  if parser == "bool":
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise ConfigError(f"config.per_seed: {name} takes true/false, got {text!r}")
  try:
    value = parser(float(text)) if parser is int else parser(text)
  except ValueError:
    raise ConfigError(f"config.per_seed: {name} takes numbers, got {text!r}") from None
  if parser is int and float(text) != value:
    raise ConfigError(f"config.per_seed: {name} takes whole numbers, got {text!r}")
  return value


def parse_grid(spec: str) -> dict[str, list]:
  """`"a=1,2;b=x"` -> {"a": [1, 2], "b": [x]}, checking names and values."""
  grid = {}
  for part in filter(None, (p.strip() for p in spec.split(";"))):
    if "=" not in part:
      raise ConfigError(f"config.per_seed: expected name=v1,v2,... but got {part!r}")
    name, values = (s.strip() for s in part.split("=", 1))
    if name not in TUNABLE:
      raise ConfigError(f"config.per_seed: {name!r} cannot vary per seed; those that can: "
                        f"{', '.join(TUNABLE)}")
    if name in grid:
      raise ConfigError(f"config.per_seed: {name!r} is given twice")
    grid[name] = [_parse_value(name, v) for v in values.split(",") if v.strip()]
    if not grid[name]:
      raise ConfigError(f"config.per_seed: {name!r} has no values")
    repeated = sorted({repr(v) for v in grid[name] if grid[name].count(v) > 1})
    if repeated:       # two grid points of the same settings: one arm, its seeds split in two
      raise ConfigError(f"config.per_seed: {name} gives {', '.join(repeated)} more than once; "
                        "give each value once (more seeds per point: raise config.num_seeds)")
  return grid


def seed_settings(config) -> tuple[SeedSettings, list[dict]]:
  """The settings of every seed (arrays with a leading [num_seeds] axis) and, per seed, the
  values that differ from the config (for the metrics log)."""
  grid = parse_grid(config.per_seed)
  points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]
  if config.num_seeds % len(points):
    raise ConfigError(f"config.per_seed defines {len(points)} grid points; config.num_seeds "
                      f"({config.num_seeds}) must be a multiple of that.")
  per_seed = [points[i % len(points)] for i in range(config.num_seeds)]
  columns = {}
  for name, (_, dtype) in TUNABLE.items():
    columns[name] = np.asarray([point.get(name, config[name]) for point in per_seed], dtype)
  return SeedSettings(**columns), per_seed

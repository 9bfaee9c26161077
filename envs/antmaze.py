"""AntMaze as D4RL's `antmaze-*-v2` tasks define it, on MJX.

| maze   | grid   | start cell | goal cell (evaluation)  | episode | D4RL datasets        |
| ------ | ------ | ---------- | ----------------------- | ------- | -------------------- |
| umaze  | 5 x 5  | (1, 1)     | (3, 1), centre (0, 8)   | 700     | umaze, umaze-diverse |
| medium | 8 x 8  | (1, 1)     | (6, 6), centre (20, 20) | 1000    | medium-play/diverse  |
| large  | 9 x 12 | (1, 1)     | (7, 9), centre (32, 24) | 1000    | large-play/diverse   |

| `goal_offset`                  | goal per axis (m), then floored at 0 | from                   |
| ------------------------------ | ------------------------------------ | ---------------------- |
| "wsrl" (default: task env)     | centre + U(-1, 0) + U(0, 0.5)        | WSRL's fork of D4RL    |
| "d4rl" (default: data variant) | centre + U(0, 1) + U(0, 0.5)         | upstream D4RL          |

Cells are 4 m; walls are 4 x 4 x 2 m boxes; the start cell's centre is the origin, so cell
(row, col) is centred at (4 (col - 1), 4 (row - 1)). The ant (envs/assets/antmaze_ant.xml) is
stepped 5 x 0.02 s RK4 per action; actions in [-1, 1] are scaled to the motors' +-30 as D4RL's
NormalizedBoxEnv does. Observation (29) = qpos[:15] + qvel[:14]. Reward is 1 within 0.5 m of the
goal, else 0; the episode ends there (D4RL's evaluation envs and WSRL's fine-tuning env both do).
A goal is drawn per episode (D4RL's v2 resets). The ant starts at the origin with qpos noise
U(-0.1, 0.1) and qvel noise N(0, 0.1^2).

The goal offsets, with s = 4 m the cell size (`maze_size_scaling`), from `goal_sampler` and
`_rowcol_to_xy` in `d4rl/locomotion/maze_env.py`: upstream D4RL adds U(0, s/4) and then
U(0, 0.5) * s/4 to the cell centre and floors each coordinate at 0. The fork WSRL's README
installs (zhouzypaul/D4RL @d005dca, maze_env.py:260-267 and 286-289, changed in its commit
d3a2d37) shifts `_rowcol_to_xy` by -s/8 twice, so the first term becomes U(-s/4, 0); the
second term and the floor are unchanged. In the U-maze the floor matters for "wsrl": the goal
cell's centre has x = 0, so 3/4 of the goals get x = 0 exactly. The fork's shift also moves its
multi-start resets and navigation waypoints, but WSRL never generates data: it trains on D4RL's
published files, which upstream D4RL's code made; so the data-collection variant
(`data_character`) keeps upstream's goals (`goal_offset` default "d4rl" there).

Data-collection variant: D4RL's v2 AntMaze files mark terminal = 1 on every step whose reward is
1 (D4RL issue 199) while the episode goes on to its time limit; `data_terminal_at_goal` tells the
collector (wsrl_mjx/datagen/collect.py) to write the same.

Speed without changing the dynamics (`build_model`, benchmarks/antmaze_speed.py): walls that share
no side with a free cell are left out, MJX collides the ant only with the walls nearest to it (a
bounding-sphere cull to `max_wall_pairs` pairs per geom type) instead of every geom with every
wall, and only the `max_contacts` deepest contacts reach the solver (an ant touches the floor
and walls at far fewer points). `reference_mj_model()` is the unsimplified model the MuJoCo
bridge checks against.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from envs import mjx_env

CELL = 4.0                    # maze_size_scaling
WALL_HEIGHT = 0.5             # maze_height, in cells: walls are 2 m tall
GOAL_RADIUS = 0.5
ACTION_SCALE = 30.0           # motors' ctrlrange
FRAME_SKIP = 5
# MJX line-search steps per Newton iteration (mjx_env's default is 8). Under `vmap` MJX runs every
# step of its line search, 20 times per env step here (RK4 x 5). The Newton step is nearly exact
# on these states: at 2 steps the bridge check's one-step errors equal those at 8 (U-maze and
# large maze, both cones, to 4-5 digits) and an env step is 1.5x faster on an H200 (RESULTS.md).
LS_ITERATIONS = 2

# '#' wall, '.' free, 'S' start, 'G' goal (the evaluation goal of the v2 tasks), 'P' a free cell
# that D4RL's "play" datasets use as a hand-picked goal (besides 'G').
LAYOUTS = {
    "umaze": (
        "#####",
        "#S..#",
        "###.#",
        "#G..#",
        "#####",
    ),
    "medium": (
        "########",
        "#S.##..#",
        "#..#..P#",
        "##...###",
        "#..#...#",
        "#P#..#.#",
        "#...#PG#",
        "########",
    ),
    "large": (
        "############",
        "#S...#P....#",
        "#.##.#.#.#.#",
        "#....P.#..P#",
        "#.####.###.#",
        "#.P#.#.....#",
        "##.#.#.#.###",
        "#..#P.P#.G.#",
        "############",
    ),
}
EPISODE_LENGTHS = {"umaze": 700, "medium": 1000, "large": 1000}
DATA_EPISODE_LENGTH = 1000    # D4RL's data collection: 1000-step episodes in every maze
DATA_CHARACTERS = ("fixed", "play", "diverse")
# Where the evaluation goal falls around its cell's centre (see the module docstring).
GOAL_OFFSETS = ("wsrl", "d4rl")


@dataclasses.dataclass(frozen=True)
class Maze:
  """A layout and the geometry derived from it (cells as (row, col))."""
  name: str
  rows: tuple[str, ...]

  @property
  def shape(self) -> tuple[int, int]:
    return len(self.rows), len(self.rows[0])

  def cells(self, kinds: str) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(self.rows) for c, ch in enumerate(row) if ch in kinds]

  @property
  def start_cell(self) -> tuple[int, int]:
    return self.cells("S")[0]

  @property
  def goal_cell(self) -> tuple[int, int]:
    return self.cells("G")[0]

  @property
  def free_cells(self) -> list[tuple[int, int]]:
    return self.cells(".SGP")

  def cell_center(self, cell) -> np.ndarray:
    start_row, start_col = self.start_cell
    row, col = cell
    return np.array([CELL * (col - start_col), CELL * (row - start_row)], np.float32)

  def xy_to_cell(self, xy) -> tuple[int, int]:
    """The cell a point lies in (cells are centred on their coordinates)."""
    start_row, start_col = self.start_cell
    col = int(np.floor(xy[0] / CELL + 0.5)) + start_col
    row = int(np.floor(xy[1] / CELL + 0.5)) + start_row
    return row, col

  def walls(self, touchable_only: bool) -> list[tuple[int, int]]:
    """Wall cells; with `touchable_only`, those sharing a side with a free cell.

    A wall touching free cells only at a corner (an outer corner of the maze, say) meets them
    at the point where two side-sharing walls also meet, so the ant cannot touch it without
    touching those: leaving it out removes a duplicate contact, not a surface.
    """
    free = set(self.free_cells)
    walls = self.cells("#")
    if not touchable_only:
      return walls
    return [(r, c) for r, c in walls
            if any((r + dr, c + dc) in free for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)))]

  def is_free(self, xy) -> bool:
    row, col = self.xy_to_cell(xy)
    n_rows, n_cols = self.shape
    return 0 <= row < n_rows and 0 <= col < n_cols and self.rows[row][col] != "#"


MAZES = {name: Maze(name, rows) for name, rows in LAYOUTS.items()}


GEOM_MARGIN = 0.01            # every geom's, from the ant file's defaults


def build_model(maze: Maze, touchable_walls_only: bool = True,
                max_wall_pairs: int | None = None, for_mjx: bool = False,
                max_contacts: int | None = None) -> mujoco.MjModel:
  """The ant in `maze`: D4RL's model, optionally with the speed-ups (which keep the dynamics).

  `for_mjx` works around MJX 3.17's box collisions, which report a contact only once the
  shapes overlap, ignoring the margin: MuJoCo makes a wall contact (and starts pushing) when an
  ant geom is within both geoms' margins (0.02 m) of a wall. So MJX's walls are 0.02 m larger
  on every side with a margin of -0.01 (pair margin 0): it then sees the same contact at the
  same distance, with the same constraint violation (distance - margin), as MuJoCo does.
  """
  tree = ET.parse(mjx_env.ASSETS / "antmaze_ant.xml")
  root = tree.getroot()
  worldbody = root.find("worldbody")
  grow = 2 * GEOM_MARGIN if for_mjx else 0.0
  half = 0.5 * CELL + grow
  half_height = 0.5 * WALL_HEIGHT * CELL
  for row, col in maze.walls(touchable_walls_only):
    x, y = maze.cell_center((row, col))
    ET.SubElement(worldbody, "geom", name=f"wall_{row}_{col}", type="box",
                  pos=f"{x} {y} {half_height}",
                  size=f"{half} {half} {half_height + grow}",
                  margin=f"{GEOM_MARGIN - grow}", contype="1", conaffinity="1",
                  rgba="0.7 0.5 0.3 1")
  custom = ET.SubElement(root, "custom")
  if max_wall_pairs is not None:
    # MJX reads this: per geom-type pair (sphere-box, capsule-box), only the `max_wall_pairs`
    # pairs whose bounding spheres are closest are collided each step. C MuJoCo ignores it.
    ET.SubElement(custom, "numeric", name="max_geom_pairs", data=str(int(max_wall_pairs)))
  if max_contacts is not None:
    # MJX reads this too: of all contacts found, only the `max_contacts` deepest go to the
    # constraint solver (the rest are farther apart than these).
    ET.SubElement(custom, "numeric", name="max_contact_points", data=str(int(max_contacts)))
  return mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode"))


class AntMaze(mjx_env.MjxEnv):
  """The D4RL AntMaze task in one maze (see the module docstring for the facts)."""

  def __init__(self, maze_name: str, solver_iterations: int | None = None,
               solver_ls_iterations: int | None = None, touchable_walls_only: bool = True,
               max_wall_pairs: int | None = 8, data_character: str | None = None,
               max_contacts: int | None = 24, goal_offset: str | None = None):
    """`data_character` makes the env D4RL's data-collection env instead of the evaluation one:
    "fixed" (start S, goal G), "play" (any start, goals from the hand-picked cells G and P) or
    "diverse" (any start, any goal); episodes do not end at the goal, and the observation
    gets the goal's direction (goal - xy) appended, for the navigating policy (the collector
    stores the first 29 numbers, as D4RL did).

    `goal_offset` is where a goal falls around its cell's centre: "wsrl" (the D4RL fork WSRL
    evaluates in: + U(-1, 0) + U(0, 0.5) m per axis) or "d4rl" (upstream D4RL: + U(0, 1) +
    U(0, 0.5) m); both floored at 0. None: "wsrl" for the task env, "d4rl" for the
    data-collection env (D4RL's files were made with upstream's). Raises ValueError for any
    other value, naming the field and the allowed values.
    """
    if maze_name not in MAZES:
      raise ValueError(f"Unknown maze {maze_name!r}; known: {sorted(MAZES)}")
    if data_character not in (None,) + DATA_CHARACTERS:
      raise ValueError(f"data_character must be one of {DATA_CHARACTERS} or None, "
                       f"not {data_character!r}")
    if goal_offset not in (None,) + GOAL_OFFSETS:
      raise ValueError(f"goal_offset must be one of {GOAL_OFFSETS} (or None: 'wsrl' for the task "
                       f"env, 'd4rl' for data collection), not {goal_offset!r}")
    self.maze = MAZES[maze_name]
    self.data_character = data_character
    if goal_offset is None:
      goal_offset = "wsrl" if data_character is None else "d4rl"
    self.goal_offset = goal_offset
    free = self.maze.free_cells
    goal_cells = {"fixed": [self.maze.goal_cell], "play": self.maze.cells("GP"),
                  "diverse": free, None: [self.maze.goal_cell]}[data_character]
    start_cells = [self.maze.start_cell] if data_character in (None, "fixed") else free
    self._goal_cells = jnp.asarray(np.stack([self.maze.cell_center(c) for c in goal_cells]))
    self._start_cells = jnp.asarray(np.stack([self.maze.cell_center(c) for c in start_cells]))
    self.max_wall_pairs = max_wall_pairs
    self.touchable_walls_only = touchable_walls_only
    super().__init__(build_model(self.maze, touchable_walls_only, max_wall_pairs, for_mjx=True,
                                 max_contacts=max_contacts),
                     FRAME_SKIP,
                     solver_iterations, solver_ls_iterations or LS_ITERATIONS)

  @property
  def observation_size(self) -> int:
    return 29 if self.data_character is None else 31

  def observation_fields(self) -> dict[str, slice]:
    return {"xy": slice(0, 2), "z": slice(2, 3), "orientation": slice(3, 7),
            "joint angles": slice(7, 15), "root linear velocity": slice(15, 18),
            "root angular velocity": slice(18, 21), "joint velocities": slice(21, 29)}

  def reference_mj_model(self) -> mujoco.MjModel:
    """D4RL's model: every wall, every pair collided, the model's own solver settings."""
    return build_model(self.maze, touchable_walls_only=False, max_wall_pairs=None)

  def bridge_start_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A start for the bridge check that makes the ant hit a wall: next to one side of a free
    cell that is walled (torso 0.8-1.1 m from it; the legs reach ~0.85 m along an axis), moving
    towards it at 1-3 m/s, with D4RL's joint noise."""
    sides = [(cell, (dr, dc)) for cell in self.maze.free_cells
             for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
             if self.maze.rows[cell[0] + dr][cell[1] + dc] == "#"]
    (row, col), (dr, dc) = sides[rng.integers(len(sides))]
    toward = np.array([dc, dr], np.float64)              # (x, y) points along (col, row)
    along = np.array([-toward[1], toward[0]])
    qpos = np.array(self.mj_model.qpos0, np.float64)
    qpos[:2] = (self.maze.cell_center((row, col))
                + toward * (0.5 * CELL - rng.uniform(0.8, 1.1)) + along * rng.uniform(-1, 1))
    qpos[2:] += rng.uniform(-0.1, 0.1, qpos.shape[0] - 2)
    qvel = rng.normal(0.0, 0.1, self.mj_model.nv)
    qvel[:2] = toward * rng.uniform(1.0, 3.0)
    return qpos, qvel

  def observation(self, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    """The task's 29 numbers (the data-collection variant appends the goal in `step`)."""
    return jnp.concatenate([qpos[:15], qvel[:14]])

  def _observe(self, data, goal: jax.Array) -> jax.Array:
    observation = self.observation(data.qpos, data.qvel)
    if self.data_character is None:
      return observation
    return jnp.concatenate([observation, goal - data.qpos[:2]])

  @property
  def data_terminal_at_goal(self) -> bool:
    """Whether a recorded step whose reward is 1 is written as terminal (the collector reads
    this). True: D4RL's v2 AntMaze files set terminal = reward, also where the data-collection
    episode goes on past the goal; in the task env the episode ends there anyway."""
    return True

  def sample_goal(self, rng: jax.Array) -> jax.Array:
    """A goal [2] (m): a goal cell's centre + U(lo, lo + s/4) + U(0, 0.5) * s/4 per axis, floored
    at 0, with s = 4 m and lo = -s/4 for `goal_offset` "wsrl", 0 for "d4rl" (module docstring;
    the evaluation env has one goal cell)."""
    cell_key, cell_noise_key, extra_noise_key = jax.random.split(rng, 3)
    center = self._goal_cells[jax.random.randint(cell_key, (), 0, len(self._goal_cells))]
    low = -0.25 * CELL if self.goal_offset == "wsrl" else 0.0
    goal = (center + jax.random.uniform(cell_noise_key, (2,), minval=low, maxval=low + 0.25 * CELL)
            + jax.random.uniform(extra_noise_key, (2,), maxval=0.5) * 0.25 * CELL)
    return jnp.maximum(goal, 0.0)

  def sample_start(self, rng: jax.Array) -> jax.Array:
    """The start's xy: the origin, or for "play"/"diverse" data D4RL's multi-start: a free
    cell's centre + U(0, 1) per axis."""
    if len(self._start_cells) == 1:
      return self._start_cells[0]
    cell_key, noise_key = jax.random.split(rng)
    center = self._start_cells[jax.random.randint(cell_key, (), 0, len(self._start_cells))]
    return center + jax.random.uniform(noise_key, (2,), maxval=0.5) * 0.5 * CELL

  def reset(self, rng: jax.Array) -> mjx_env.State:
    goal_key, start_key, qpos_key, qvel_key = jax.random.split(rng, 4)
    qpos0, qvel0 = self.initial_qpos_qvel()
    qpos = qpos0 + jax.random.uniform(qpos_key, qpos0.shape, minval=-0.1, maxval=0.1)
    qpos = qpos.at[:2].add(self.sample_start(start_key))
    qvel = qvel0 + 0.1 * jax.random.normal(qvel_key, qvel0.shape)
    return self.reset_to(qpos, qvel, self.sample_goal(goal_key))

  def reset_to(self, qpos: jax.Array, qvel: jax.Array, goal: jax.Array) -> mjx_env.State:
    """An episode from a given state and goal (scripted tests, the collector's starts)."""
    data = self.physics_init(qpos, qvel)
    zero = jnp.zeros((), jnp.float32)
    distance = jnp.linalg.norm(data.qpos[:2] - goal)
    metrics = {"distance_to_goal": distance, "success": zero}
    return mjx_env.State(pipeline_state=data, obs=self._observe(data, goal),
                         reward=zero, done=zero, metrics=metrics, info={"goal": goal})

  def action_to_ctrl(self, action: jax.Array) -> jax.Array:
    """D4RL's NormalizedBoxEnv: [-1, 1] to the motors' [-30, 30], clipped."""
    return jnp.clip(ACTION_SCALE * action, -ACTION_SCALE, ACTION_SCALE)

  def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
    data = self.physics_step(state.pipeline_state, self.action_to_ctrl(action))
    goal = state.info["goal"]
    distance = jnp.linalg.norm(data.qpos[:2] - goal)
    success = (distance <= GOAL_RADIUS).astype(jnp.float32)
    metrics = {**state.metrics, "distance_to_goal": distance, "success": success}
    # D4RL's data-collection env never ends an episode at the goal.
    done = success if self.data_character is None else jnp.zeros_like(success)
    return state.replace(pipeline_state=data, obs=self._observe(data, goal),
                         reward=success, done=done, metrics=metrics)

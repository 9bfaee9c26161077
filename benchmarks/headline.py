r"""The headline speed figures of issue 17, measured through the user's own command (not a test).

Starts `python -m launch.finetune` on a task's paper config (every default, except the seed
count and the chunk length given here), from scratch (`,sac`: WSRL's settings without a
checkpoint), reads its progress lines as they come, and stops it once `--train_chunks` chunks
have trained after the warmup. From the times at which the lines arrived:

- `cold_start_s`: from starting the process to the end of the first chunk that trained (the
  compiles, the warmup chunks and that chunk itself);
- `env_steps_per_s`: all seeds' env steps per second over the trained chunks after that one
  (no compile, no evaluation and no checkpoint falls in them with the defaults: the first
  evaluation is at 20,000 steps).

The entry `{task, num_seeds, device, env_steps_per_s, cold_start_s, date, command}` is appended
to `--out` (a JSON list; benchmarks/headline.json keeps the figures to compare run to run).

  python -m benchmarks.headline --task=hopper-medium-v2 --seeds=64 --out=/tmp/headline.json
  python -m benchmarks.headline --task=hopper-medium-v2 --seeds=2 --chunk=100 --train_chunks=1 \
      --out=/tmp/headline.json    # CPU smoke: updates start past the batch (1,024 steps)
                                  # unless --extra=--config.batch_size=... makes it smaller
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

_TASK = flags.DEFINE_string("task", "hopper-medium-v2", "Task (its paper config).")
_SEEDS = flags.DEFINE_integer("seeds", 64, "Seeds in the one program.")
_CHUNK = flags.DEFINE_integer("chunk", 1000, "--config.steps_per_chunk.")
_TRAIN_CHUNKS = flags.DEFINE_integer("train_chunks", 3, "Trained chunks to wait for.")
_TIMEOUT = flags.DEFINE_integer("timeout", 600, "Seconds after which the run is stopped.")
_EXTRA = flags.DEFINE_list("extra", [], "More launch.finetune flags (comma-separated).")
_OUT = flags.DEFINE_string("out", "", "Append the entry to this JSON list.")

_PROGRESS = re.compile(r"env step (\d+)/(\d+) .*?\| [\d.]+ env steps/s per seed, ([\d.]+) over")


def command(workdir: str) -> list[str]:
  return [sys.executable, "-m", "launch.finetune",
          f"--config=launch/configs/finetune.py:{_TASK.value},sac", f"--workdir={workdir}",
          f"--config.num_seeds={_SEEDS.value}", f"--config.steps_per_chunk={_CHUNK.value}",
          *_EXTRA.value]


def measure() -> dict:
  workdir = tempfile.mkdtemp(prefix="wsrl_headline_")
  argv = command(workdir)
  print("$", shlex.join(argv), flush=True)
  started = time.perf_counter()
  process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
  watchdog = threading.Timer(_TIMEOUT.value, process.kill)   # also while it compiles
  watchdog.start()
  lines = []            # (seconds since start, env step) of each progress line
  warmup, floor = None, None
  try:
    for line in process.stdout:
      now = time.perf_counter() - started
      sys.stdout.write(line)
      match = _PROGRESS.search(line)
      if match is None:
        continue
      lines.append((now, int(match.group(1))))
      if floor is None:
        warmup, floor = _update_floor(workdir)
      trained = [t for t, step in lines if step > floor + 1]
      if len(trained) >= _TRAIN_CHUNKS.value + 1:
        break
  finally:
    watchdog.cancel()
    process.kill()
    process.wait()
    shutil.rmtree(workdir, ignore_errors=True)
  trained = [(t, step) for t, step in lines if step > (floor or 0) + 1]
  if len(trained) < 2:
    raise SystemExit(f"{_TASK.value}: only {len(trained)} trained chunk(s) within "
                     f"{_TIMEOUT.value} s; no rate (progress lines: {lines})")
  (t0, s0), (t1, s1) = trained[0], trained[-1]
  import jax
  device = jax.devices()[0]
  return {"task": _TASK.value, "num_seeds": _SEEDS.value,
          "device": f"{device.device_kind} ({device.platform}), jax {jax.__version__}",
          "env_steps_per_s": _SEEDS.value * (s1 - s0) / (t1 - t0),
          "cold_start_s": t0, "date": time.strftime("%Y-%m-%d"),
          "command": shlex.join(["python", "-m", "launch.finetune", *argv[3:]]).replace(
              workdir, "<workdir>"),
          "chunks_timed": len(trained) - 1, "steps_per_chunk": _CHUNK.value,
          "warmup_steps": warmup, "update_floor": floor, "progress": lines}


def _update_floor(workdir: str) -> tuple[int, int]:
  """(warmup steps, the step index past which every step trains) of the run, from the
  `config.json` it wrote before its first chunk: max(warmup, batch size), the SAC arms' floor
  (wsrl_mjx/online.py)."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  return config["warmup_steps"], max(config["warmup_steps"], config["batch_size"])


def main(argv):
  del argv
  entry = measure()
  print(json.dumps({k: v for k, v in entry.items() if k != "progress"}, indent=1))
  if _OUT.value:
    entries = []
    if os.path.exists(_OUT.value):
      with open(_OUT.value) as f:
        entries = json.load(f)
    entries.append(entry)
    with open(_OUT.value + ".part", "w") as f:
      json.dump(entries, f, indent=1)
    os.replace(_OUT.value + ".part", _OUT.value)


if __name__ == "__main__":
  app.run(main)

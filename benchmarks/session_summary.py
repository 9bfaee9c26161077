r"""Tables from a `benchmarks/gpu_session.sh` results folder (not a test).

  python -m benchmarks.session_summary /tmp/wsrl_session/results

Reads whatever the session's processes wrote (a process stopped at its time limit leaves its
last complete file or none) and prints, in order: the fused loop's throughput with its ratios to
the Python loop and Brax SAC, env steps/s per task and batch, and the training curves
(normalised score per evaluation, mean over seeds, with the spread).
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import numpy as np


def _load(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def throughput(results: pathlib.Path) -> list[str]:
  rows, brax = {}, None
  for path in sorted(results.glob("thr_*.json")):
    data = _load(path)
    if not data:
      continue
    brax = data.get("brax_sac", brax)
    for row in data["rows"]:
      merged = rows.setdefault(row["seeds"], {})
      merged.update({k: v for k, v in row.items() if k not in ("seeds", "ratios")})
  lines = ["## throughput (hopper-medium-v2, paper's locomotion config)",
           "| seeds | fused env steps/s | fused seed-updates/s | update-only seed-updates/s "
           "| fused bf16 seed-updates/s | Python loop env steps/s | fused / Python loop "
           "| fused / Brax SAC | compile s (fused) |", "|" + " --- |" * 9]
  brax_rate = brax["env_steps_per_s"] if brax else None
  for seeds in sorted(rows):
    row = rows[seeds]
    fused = row.get("fused[default]", {})
    loop = row.get("python_loop", {})

    def cell(value, digits=0):
      return "n/a" if value is None else f"{value:,.{digits}f}"

    def ratio(a, b):
      return "n/a" if a is None or not b else f"{a / b:.1f}x"

    lines.append(
        f"| {seeds} | {cell(fused.get('env_steps_per_s'))} | "
        f"{cell(fused.get('seed_updates_per_s'))} | "
        f"{cell(row.get('update_only[default]', {}).get('seed_updates_per_s'))} | "
        f"{cell(row.get('fused[bfloat16]', {}).get('seed_updates_per_s'))} | "
        f"{cell(loop.get('env_steps_per_s'), 1)} | "
        f"{ratio(fused.get('env_steps_per_s'), loop.get('env_steps_per_s'))} | "
        f"{ratio(fused.get('env_steps_per_s'), brax_rate)} | {cell(fused.get('compile_s'), 1)} |")
  lines.append(f"Brax SAC (1 seed, 10 critics): "
               f"{'n/a' if brax_rate is None else f'{brax_rate:,.1f}'} env steps/s")
  return lines


def learner(results: pathlib.Path) -> list[str]:
  """Phase U: the UTD update against the plain vmapped one, same process, same seeds."""
  data = _load(results / "thr_update_vs_naive.json")
  if not data:
    return []
  lines = ["## learner: seed-updates/s (one 256-transition gradient step per seed)"]
  for row in data["rows"]:
    lines.append(f"{row['seeds']} seeds: " + ", ".join(
        f"{name} {values['seed_updates_per_s']:,.0f}" for name, values in row.items()
        if isinstance(values, dict) and "seed_updates_per_s" in values))
    lines.extend(f"  {name}: {value:.2f}x" for name, value in row.get("ratios", {}).items())
  return lines


def env_speeds(results: pathlib.Path) -> list[str]:
  lines = ["## env steps/s", "| env | batch | env steps/s | compile s | contacts |",
           "|" + " --- |" * 5]
  bare = {}
  for path in sorted(results.glob("env_*.json")):
    for row in _load(path) or []:
      lines.append(f"| {row['env']} | {row['batch']} | {row['steps_per_second']:,.0f} | "
                   f"{row['compile_seconds']:.1f} | {row['contacts']} |")
  for path in sorted(results.glob("antmaze_*.json")):
    data = _load(path)
    if not data:
      continue
    bare.update(data.get("bare_ant", {}))
    for row in data["rows"]:
      label = row["variant"] + "".join(
          f", {tag}" for tag, on in (("Newton loop fixed", data.get("newton_loop") == "fixed"),
                                     (f"ls {data.get('ls_iterations')}",
                                      data.get("ls_iterations"))) if on)
      lines.append(f"| {path.stem} {row['maze']} ({label}) | {row['batch']} | "
                   f"{row['env_steps_per_s']:,.0f} | {row['compile_s']:.1f} | "
                   f"{row['contacts']} |")
  for batch, rate in sorted(bare.items(), key=lambda item: int(item[0])):
    lines.append(f"| brax bare ant | {batch} | {rate:,.0f} | | |")
  return lines


def curves(results: pathlib.Path) -> list[str]:
  lines = ["## training curves (normalised score: mean over seeds [min, max])"]
  for name in ("behaviour", "pretrain", "finetune"):
    path = results / f"{name}_metrics.jsonl"
    if not path.exists():
      lines.append(f"{name}: no metrics")
      continue
    points = []
    for line in path.read_text().splitlines():
      record = json.loads(line)
      step = record.get("env_step", record.get("gradient_step"))
      scores = np.array([np.nan if s is None else s for s in record["normalized_scores"]])
      points.append(f"{step}: {np.nanmean(scores):.1f} [{np.nanmin(scores):.1f}, "
                    f"{np.nanmax(scores):.1f}]")
    lines.append(f"{name}: " + "; ".join(points))
  for log in ("collect_hopper.log", "collect_antmaze.log", "controller.log"):
    path = results / log
    if path.exists():
      wanted = [l.strip() for l in path.read_text().splitlines()
                if re.search(r"Wrote|reached their goal|eval episode reward|Error|error", l)]
      lines.extend(f"{log}: {l[-200:]}" for l in wanted[-4:])
  return lines


def main(folder: str) -> None:
  results = pathlib.Path(folder)
  for section in (learner, throughput, env_speeds, curves):
    print("\n".join(section(results)) + "\n")


if __name__ == "__main__":
  main(sys.argv[1])

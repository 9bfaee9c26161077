#!/usr/bin/env bash
# The short device call: the fused loop's throughput (64 and 1 seeds) and AntMaze's step speed,
# each under its own time limit, results under $OUT as they come.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
python3 -c 'import jax; print(jax.devices()[0].device_kind, jax.__version__)' | tee "$OUT/session.log"
timeout "${BENCH_TIMEOUT:-170}" python3 -m benchmarks.throughput --seeds="${BENCH_SEEDS:-64,1}" \
  --chunk="${BENCH_CHUNK:-500}" --repeats=2 --loop_steps="${BENCH_LOOP_STEPS:-50}" --brax_steps=0 \
  --precisions=default --out="$OUT/throughput.json" 2>&1 | grep -v "io.py:159" | tee -a "$OUT/session.log"
timeout "${ANTMAZE_TIMEOUT:-130}" python3 -m benchmarks.antmaze_speed --check_starts=0 \
  --steps="${ANTMAZE_STEPS:-100}" --repeats=2 \
  --plan="${ANTMAZE_PLAN:-large:contacts24:64,large:contacts24:1024,umaze:contacts24:64,medium:contacts24:64,large:contacts24:1,umaze:contacts24:1024,medium:contacts24:1024}" \
  --out="$OUT/antmaze_speed.json" 2>&1 | grep -v "io.py:159" | tee -a "$OUT/session.log"

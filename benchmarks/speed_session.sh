#!/usr/bin/env bash
# Issue 17's device calls: the headline through the user's command (phase H), then the step
# profiles and variants side by side (phase P). Device time is short (15 minutes a lease, the
# machine's start included), so everything is prepared and smoke-tested on the CPU first.
#
# Phase H (alone on the machine, its own empty compilation cache): benchmarks.headline on
#   hopper, 64 seeds (cold start to the first trained chunk, steady env steps/s), as a user's
#   run would see it. Stopped at H_SECONDS or DEADLINE, whichever comes first.
# Phase P: one process per measurement, all compiling at once; timing starts once every live
#   process has compiled (or at GO_AT) and every timed call holds one lock (benchmarks/timing.py):
#   benchmarks.profile_step for hopper (before / after / unrolled / bf16 at 64 seeds, after at
#   128 and 256, after with CUDA-graph while loops and with Triton GEMMs), AntMaze-large and
#   door (before / after); and (issue 22) kitchen-complete's env steps/s at batch 1, 64, 1,024.
# Phase C (only when PHASES names it; the host's CPU, no GPU): whether jaxlib 0.11's XLA:CPU still
#   runs the kitchen's batched kinematics 100x slower (BUILD.md, "XLA:CPU's fusion emitters"):
#   benchmarks.physics_breakdown at batch 2 on the CPU; about 7 ms a physics step is fixed, over
#   100 ms is not. About a minute on the image's 16 cores (e.g. PHASES=PC in the second call).
# Phase W (only when PHASES names it): benchmarks.physics_backend, MJX's JAX against its MuJoCo
#   Warp backend (issue 17, lever 4); Warp reaches the machine in two parts
#   (benchmarks/warp_transport.sh says how, in three calls back to back).
#
# Plan for one lease: two calls back to back (the machine stays warm 30 s after a call, so the
# second needs no start): first PHASES=H DEADLINE=270 with timeout_s 300, then PHASES=P
# DEADLINE=420 with timeout_s 450. About 12 minutes of device time with the start. Each call
# returns results.tgz (every log and JSON; a summary is printed last).
#
# Before the lease, once, here in the repository root (both folders are git-ignored and travel
# with `carry`; BUILD.md "GPU hosts" says the same):
#   ../shared/gpu/fetch-wheels.sh          # the wheels the GPU image lacks, into .whl/ (41 MB)
#   mkdir -p .gpu_extra && echo /.gpu_extra/ >> .git/info/exclude
#   tar -C .venv/lib/python3.11/site-packages -cJf .gpu_extra/adroit_hand.tar.xz \
#       gymnasium_robotics/envs/assets/adroit_hand          # door's model files (10 MB)
# Device command (carry [".whl", ".gpu_extra"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
#     .whl/*.whl && tar -C /tmp/site -xJf .gpu_extra/adroit_hand.tar.xz \
#     && touch /tmp/site/gymnasium_robotics/__init__.py && export PYTHONPATH=/tmp/site:$PWD || exit;
#   PHASES=H DEADLINE=270 bash benchmarks/speed_session.sh     (then PHASES=P DEADLINE=420)
# CPU smoke test (tiny sizes, ~10 minutes on 2 cores; python3 must be the project's venv):
#   PATH=$PWD/.venv/bin:$PATH OUT=/tmp/out SEEDS=2 BIG="" KITCHEN_BATCHES="" CHUNK=5 REPEATS=1 \
#     CAPACITY=2000 TASKS_P="hopper-medium-v2" GO_AT=600 DEADLINE=900 \
#     H_FLAGS="--seeds=2 --chunk=100 --train_chunks=1" PYTHONPATH=$PWD \
#     bash benchmarks/speed_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:?set OUT}
WORK=${WORK:-/tmp/wsrl_speed}
R="$WORK/results"
rm -rf "$WORK"; mkdir -p "$R"
START=$(date +%s)
DEADLINE=${DEADLINE:-420}          # seconds after START by which everything has stopped
H_SECONDS=${H_SECONDS:-270}        # phase H's limit
GO_AT=${GO_AT:-180}                # seconds after phase P starts: timing starts even if some
                                   # still compile
SEEDS=${SEEDS:-64}
BIG=${BIG-"128 256"}
CHUNK=${CHUNK:-50}
REPEATS=${REPEATS:-3}
CAPACITY=${CAPACITY:-0}
TASKS_P=${TASKS_P:-"hopper-medium-v2 antmaze-large-diverse-v2 door-binary-v0"}
source "$(dirname "$0")/session_common.sh"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv >> "$R/session.log" 2>&1

# ---- Phase H: the user's command, alone, cold cache -------------------------------------------
if [[ ${PHASES:-HP} == *H* ]]; then
  log "phase H: launch.finetune hopper, cold cache"
  h_limit=$(( H_SECONDS < $(left "$DEADLINE") ? H_SECONDS : $(left "$DEADLINE") ))
  JAX_COMPILATION_CACHE_DIR="$WORK/cache_h" timeout "$h_limit" \
    python3 -m benchmarks.headline --task=hopper-medium-v2 --timeout="$((h_limit - 10))" \
    ${H_FLAGS:---seeds=64 --chunk=1000 --train_chunks=2} --out="$R/headline.json" \
    > "$R/headline_hopper.log" 2>&1
  log "phase H done (rc $?): $(tail -c 600 "$R/headline.json" 2>/dev/null | tr '\n' ' ')"
fi

# ---- Phase P: profiles and variants ------------------------------------------------------------
if [[ ${PHASES:-HP} == *P* ]]; then
P_START=$(date +%s)
export WSRL_BENCH_LOCK="$WORK/device.lock" WSRL_BENCH_READY_DIR="$WORK/ready"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0"   # parallel compiles: no autotuning
mkdir -p "$WSRL_BENCH_READY_DIR"
PIDS=(); N=0
p_job() {  # p_job NAME ARGS...: one profile_step process, stopped at the deadline
  local name=$1; shift
  timeout "$(left "$DEADLINE")" python3 -m benchmarks.profile_step --chunk="$CHUNK" \
    --repeats="$REPEATS" --replay_capacity="$CAPACITY" --out="$R/$name.json" "$@" \
    > "$R/$name.log" 2>&1 &
  PIDS+=($!); N=$((N + 1))
}
for task in $TASKS_P; do
  short=${task%%-*}
  p_job "${short}_before" --env="$task" --seeds="$SEEDS" --variant=before
  p_job "${short}_after" --env="$task" --seeds="$SEEDS" --variant=after
done
if [[ $TASKS_P == *hopper* ]]; then
  p_job hopper_parts --seeds="$SEEDS" --variant=after --parts --noprofile
  p_job hopper_unrolled --seeds="$SEEDS" --variant=unrolled --noprofile
  p_job hopper_bf16 --seeds="$SEEDS" --variant=bf16
  for seeds in $BIG; do
    p_job "hopper_after_$seeds" --seeds="$seeds" --variant=after --noprofile
  done
  # CUDA graphs for the while loops and conditionals too (XLA's command buffers).
  XLA_FLAGS="$XLA_FLAGS --xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE,CONDITIONAL" \
    p_job hopper_after_graphs --seeds="$SEEDS" --variant=after --noprofile
  # Triton for every matmul (MJX's documentation recommends it for simulation).
  XLA_FLAGS="$XLA_FLAGS --xla_gpu_triton_gemm_any=true" \
    p_job hopper_after_triton --seeds="$SEEDS" --variant=after --noprofile
fi
# Issue 22's kitchen speed: env steps/s at each batch, one process (one compile) per batch.
for batch in ${KITCHEN_BATCHES-"1 64 1024"}; do
  timeout "$(left "$DEADLINE")" python3 -m benchmarks.env_speed --envs=kitchen-complete-v0 \
    --batches="$batch" --steps=50 --repeats="$REPEATS" > "$R/kitchen_batch$batch.log" 2>&1 &
  PIDS+=($!); N=$((N + 1))
done
log "phase P: $N processes compiling"
while (( $(date +%s) - P_START < GO_AT )); do   # until every live process has compiled
  alive=0; for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
  (( $(ls "$WSRL_BENCH_READY_DIR" | grep -c '^ready') >= alive )) && break
  sleep 2
done
log "go: $(ls "$WSRL_BENCH_READY_DIR" | grep -c '^ready') of $N compiled"
touch "$WSRL_BENCH_READY_DIR/go"
for pid in "${PIDS[@]}"; do wait "$pid"; done
log "phase P done"
fi

if [[ ${PHASES:-HP} == *C* ]] && (( $(left "$DEADLINE") > 30 )); then
  log "phase C: the kitchen's physics step at batch 2 on the host CPU"
  JAX_PLATFORMS=cpu timeout "$(left "$DEADLINE")" python3 -m benchmarks.physics_breakdown \
    --env=kitchen-complete-v0 --batch=2 --nobare_ant --repeats_in_scan=2 \
    --out="$R/kitchen_cpu_breakdown.json" > "$R/kitchen_cpu_breakdown.log" 2>&1
  log "phase C done (rc $?): $(grep 'one physics step' "$R/kitchen_cpu_breakdown.log")"
fi

# Phase W (only when PHASES names it; needs Warp in /tmp/site: benchmarks/warp_transport.sh):
# MJX's JAX and Warp physics backends side by side, AntMaze-large and door at batch 64, 256 and
# 1,024 (issue 17, lever 4). W_FLAGS adds benchmarks.physics_backend flags.
if [[ ${PHASES:-HP} == *W* ]] && (( $(left "$DEADLINE") > 30 )); then
  log "phase W: MJX's JAX and Warp physics backends"
  timeout "$(left "$DEADLINE")" python3 -m benchmarks.physics_backend ${W_FLAGS:-} \
    --out="$R/physics_backend.json" > "$R/physics_backend.log" 2>&1
  log "phase W done (rc $?)"
fi

python3 - "$R" <<'EOF' | tee -a "$R/session.log"
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
  data = json.loads(path.read_text())
  if isinstance(data, list) and path.stem == "physics_backend":
    for e in data:
      if "backend" in e:
        print(f"{path.stem}: {e['env']} {e['backend']} batch {e['batch']}: "
              f"{e['env_steps_per_s']:,.0f} env steps/s, compile {e['compile_s']:.0f} s")
      else:
        print(f"{path.stem}: {e['env']} warp vs jax, max |qpos difference| after "
              f"{len(e['max_qpos_difference_per_step'])} env steps: "
              f"{e['max_qpos_difference_per_step'][-1]:.1e}")
    continue
  if isinstance(data, list):
    for e in data:
      print(f"{path.stem}: {e['task']} {e['num_seeds']} seeds: {e['env_steps_per_s']:,.0f} env "
            f"steps/s, cold start {e['cold_start_s']:.0f} s")
    continue
  for row in data.get("rows", []):
    p = row.get("profile", {})
    print(f"{path.stem}: {row['env']} {row['seeds']} seeds {row['variant']}: train "
          f"{row['train_env_steps_per_s']:,.0f} env steps/s ({row['train_ms_per_step']:.2f} ms), "
          f"warmup {row['warmup_env_steps_per_s']:,.0f}, compile {row['compile_s']:.0f} s"
          + (f"; kernels {p['kernel_ms_per_step']:.2f} ms, gaps {p['gaps_ms_per_step']:.2f} ms"
             if p.get("kernels") else ""))
EOF

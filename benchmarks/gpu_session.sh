#!/usr/bin/env bash
# One prepared device call (see ../shared/gpu/README.md): the throughput benchmark, then the
# whole pipeline at a small but real size on hopper:
#   SAC from scratch (a behaviour policy) -> collect a D4RL-format dataset with it ->
#   Cal-QL pretraining -> WSRL fine-tuning from that checkpoint,
# then AntMaze's step speed.
# Every stage has its own time limit and writes what it has under $OUT as it goes, so a stage
# that runs long costs only itself. Sizes come from the environment so the same script can be
# smoke-tested on a CPU with tiny values:
#   OUT=/tmp/out BENCH_SEEDS=1 BENCH_CHUNK=20 ... benchmarks/gpu_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
WORK=${WORK:-/tmp/wsrl_session}
ENV=${ENV_NAME:-hopper-medium-v2}
rm -rf "$WORK"; mkdir -p "$WORK"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/session.log"; }

log "device: $(python3 -c 'import jax; print(jax.devices()[0].device_kind, jax.__version__)')"
log "versions: $(python3 -m pip list 2>/dev/null | grep -i -E "^(jax|flax|optax|orbax-checkpoint|mujoco|brax|h5py|numpy) " | tr -s " " | tr "\n" ";")"

# 1. Throughput: fused loop vs Python loop vs Brax SAC (64 seeds first: the figure that matters).
log "throughput"
timeout "${BENCH_TIMEOUT:-150}" python3 -m benchmarks.throughput --env="$ENV" \
  --seeds="${BENCH_SEEDS:-64,8,1}" --chunk="${BENCH_CHUNK:-1000}" --repeats="${BENCH_REPEATS:-2}" \
  --loop_steps="${BENCH_LOOP_STEPS:-100}" --brax_steps="${BENCH_BRAX_STEPS:-3000}" \
  --precisions="${BENCH_PRECISIONS:-default}" --out="$OUT/throughput.json" 2>&1 | tee -a "$OUT/session.log"

# 2. Behaviour policy: SAC from scratch (UTD 1, batch 256: cheap, a "medium"-like policy).
log "behaviour SAC"
timeout "${SAC_TIMEOUT:-70}" python3 -m launch.finetune \
  --config="launch/configs/finetune.py:$ENV" --workdir="$WORK/behaviour" \
  --config.num_seeds="${SAC_SEEDS:-4}" --config.online_steps="${SAC_STEPS:-30000}" \
  --config.warmup_steps="${SAC_WARMUP:-5000}" --config.utd=1 --config.batch_size=256 \
  --config.steps_per_chunk="${SAC_CHUNK:-5000}" --config.eval_interval="${SAC_EVAL:-10000}" \
  --config.eval_episodes=5 --config.checkpoint_interval="${SAC_STEPS:-30000}" \
  2>&1 | tee -a "$OUT/session.log"
cp "$WORK/behaviour/metrics.jsonl" "$OUT/behaviour_metrics.jsonl" 2>/dev/null

# 3. Collect a D4RL-format dataset with the best behaviour seed.
best=$(python3 - "$WORK/behaviour/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
scores = [s if s is not None else -1e9 for s in rows[-1]["normalized_scores"]]
print(max(range(len(scores)), key=scores.__getitem__))
EOF
)
log "collect with behaviour seed ${best:-0}"
timeout "${COLLECT_TIMEOUT:-30}" python3 -m launch.collect --env="$ENV" \
  --policy="$WORK/behaviour" --checkpoint_seed="${best:-0}" --num_envs="${COLLECT_ENVS:-100}" \
  --steps="${COLLECT_STEPS:-100000}" --output="$WORK/data.hdf5" 2>&1 | tee -a "$OUT/session.log"

# 4. Cal-QL pretraining on it.
log "Cal-QL pretraining"
timeout "${PRETRAIN_TIMEOUT:-50}" python3 -m launch.pretrain \
  --config="launch/configs/pretrain.py:$ENV" --workdir="$WORK/pretrain" \
  --config.algo=calql --config.dataset="$WORK/data.hdf5" \
  --config.num_seeds="${SEEDS:-4}" --config.offline_steps="${PRETRAIN_STEPS:-10000}" \
  --config.steps_per_chunk="${PRETRAIN_CHUNK:-2500}" \
  --config.eval_interval="${PRETRAIN_EVAL:-5000}" --config.eval_episodes=10 \
  --config.checkpoint_interval="${PRETRAIN_STEPS:-10000}" 2>&1 | tee -a "$OUT/session.log"
cp "$WORK/pretrain/metrics.jsonl" "$OUT/pretrain_metrics.jsonl" 2>/dev/null

# 5. WSRL fine-tuning from the Cal-QL checkpoint: evaluation at 0 is the pretrained policy, the
#    one right after the warmup is where methods that drop the offline data usually collapse.
log "WSRL fine-tuning"
timeout "${FINETUNE_TIMEOUT:-70}" python3 -m launch.finetune \
  --config="launch/configs/finetune.py:$ENV" --workdir="$WORK/finetune" \
  --config.pretrained="$WORK/pretrain" --config.num_seeds="${SEEDS:-4}" \
  --config.online_steps="${FINETUNE_STEPS:-20000}" --config.warmup_steps="${WARMUP:-5000}" \
  --config.steps_per_chunk="${FINETUNE_CHUNK:-2500}" \
  --config.eval_interval="${FINETUNE_EVAL:-5000}" --config.eval_episodes=10 \
  --config.checkpoint_interval="${FINETUNE_STEPS:-20000}" 2>&1 | tee -a "$OUT/session.log"
cp "$WORK/finetune/metrics.jsonl" "$OUT/finetune_metrics.jsonl" 2>/dev/null

# 6. AntMaze step speed: the large maze (our default) at batch 64 (the yardstick: Brax's
#    bare ant at 64), 1024 and 1, the naive model at 64, then the other mazes.
log "AntMaze speed"
timeout "${ANTMAZE_TIMEOUT:-150}" python3 -m benchmarks.antmaze_speed --check_starts=0 \
  --steps="${ANTMAZE_STEPS:-100}" --repeats=2 \
  --plan="${ANTMAZE_PLAN:-large:contacts24:64,large:contacts24:1024,large:contacts24:1,large:naive:64,umaze:contacts24:64,medium:contacts24:64,umaze:contacts24:1024,medium:contacts24:1024}" \
  --out="$OUT/antmaze_speed.json" 2>&1 | tee -a "$OUT/session.log"
log "done"

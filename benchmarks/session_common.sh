# Sourced by the device-call scripts (gpu_session.sh, speed_session.sh) once $WORK, $R (results
# folder), $OUT and $START are set: time left before a deadline, a timestamped log, and the
# results packed into $OUT/results.tgz every 15 s and at exit (the device returns at most 8
# files, so one archive carries every log and JSON).
left() { echo $(( $1 - ($(date +%s) - START) )); }
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$R/session.log"; }
pack() { tar -C "$WORK" -czf "$OUT/results.tgz.part" results 2>/dev/null \
           && mv "$OUT/results.tgz.part" "$OUT/results.tgz"; }
( while sleep 15; do pack; done ) & PACKER=$!
trap 'kill $PACKER 2>/dev/null; pack' EXIT

log "device: $(python3 -c 'import jax; d = jax.devices()[0]; print(d.device_kind, d.platform, jax.__version__)')"

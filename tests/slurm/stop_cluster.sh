#!/usr/bin/env bash
# Stop the cluster tests/slurm/start_cluster.sh STATE_DIR started: cancel its jobs, then
# stop exactly the daemons whose PIDs are in STATE_DIR/pids (SIGTERM, then SIGKILL
# after 10 s), nothing else.
set -uo pipefail

STATE=${1:?usage: stop_cluster.sh STATE_DIR}
[ -f "$STATE/pids" ] || exit 0
# cancel this cluster's jobs first, so that slurmd ends their slurmstepd processes
if [ -f "$STATE/slurm.conf" ] && command -v scancel >/dev/null; then
    export SLURM_CONF="$STATE/slurm.conf"
    scancel --quiet --user="$(id -un)" 2>/dev/null
    for _ in $(seq 60); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
fi
mapfile -t PIDS < <(tac "$STATE/pids")   # slurmd, slurmctld, then munged
for pid in "${PIDS[@]}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
done
for _ in $(seq 100); do
    alive=0
    for pid in "${PIDS[@]}"; do
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
done
for pid in "${PIDS[@]}"; do
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
done
# job step daemons our slurmd forked and left behind (they carry this cluster's SLURM_CONF)
for proc in /proc/[0-9]*; do
    [ "$(cat "$proc/comm" 2>/dev/null)" = slurmstepd ] || continue
    if tr '\0' '\n' < "$proc/environ" 2>/dev/null | grep -qx "SLURM_CONF=$STATE/slurm.conf"; then
        kill -KILL "${proc#/proc/}" 2>/dev/null
    fi
done
: > "$STATE/pids"
echo "slurm cluster stopped"

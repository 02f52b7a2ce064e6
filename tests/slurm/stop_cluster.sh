#!/usr/bin/env bash
# Stop the daemons tests/slurm/start_cluster.sh STATE_DIR started: exactly the PIDs in
# STATE_DIR/pids (SIGTERM, then SIGKILL after 10 s), nothing else.
set -uo pipefail

STATE=${1:?usage: stop_cluster.sh STATE_DIR}
[ -f "$STATE/pids" ] || exit 0
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
: > "$STATE/pids"
echo "slurm cluster stopped"

#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the SLURM executor test.
#
#   tests/slurm/start_cluster.sh STATE_DIR      (as root)
#
# Installs slurm-wlm + munge with apt when missing, then starts a private munged,
# slurmctld and slurmd in the background, all configured under STATE_DIR (nothing
# is written to /etc: the client commands find the cluster through SLURM_CONF, so
# other Snakemake calls on the machine never wait for a controller). Everything
# talks over 127.0.0.1. The daemons' PIDs go to STATE_DIR/pids, one per line;
# tests/slurm/stop_cluster.sh STATE_DIR stops exactly those.
#
# Afterwards: export PATH=STATE_DIR/bin:$PATH (client wrappers that set SLURM_CONF, also
# inside jobs) or SLURM_CONF=STATE_DIR/slurm.conf; partition "main".
set -euo pipefail

STATE=${1:?usage: start_cluster.sh STATE_DIR}
CTLD_PORT=${TILECAT_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${TILECAT_SLURMD_PORT:-6818}

if [ "$(id -u)" != 0 ]; then
    echo "start_cluster.sh: needs root (apt, daemons)" >&2
    exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null; then
    echo "installing slurm-wlm and munge with apt ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
chmod 755 "$STATE"
: > "$STATE/pids"

# --- munge: own key, socket and state, run as the munge user -------------------------
MUNGE="$STATE/munge"
mkdir -p "$MUNGE"
if [ ! -f "$MUNGE/munge.key" ]; then
    dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
fi
chown -R munge:munge "$MUNGE"
chmod 711 "$MUNGE"   # munged wants its socket directory searchable by all
chmod 400 "$MUNGE/munge.key"
setpriv --reuid=munge --regid=munge --init-groups \
    munged --foreground --key-file="$MUNGE/munge.key" --socket="$MUNGE/munge.socket" \
    --pid-file="$MUNGE/munged.pid" --seed-file="$MUNGE/munged.seed" \
    --log-file="$MUNGE/munged.log" >"$STATE/munged.out" 2>&1 &
echo $! >> "$STATE/pids"
for _ in $(seq 100); do
    [ -S "$MUNGE/munge.socket" ] && break
    sleep 0.1
done
if ! munge --socket="$MUNGE/munge.socket" -n | unmunge --socket="$MUNGE/munge.socket" \
        | grep -q "STATUS: *Success"; then
    echo "start_cluster.sh: munge does not work (see $MUNGE/munged.log)" >&2
    exit 1
fi

# --- slurm.conf ------------------------------------------------------------------------
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
mkdir -p "$STATE/ctld" "$STATE/slurmd"
cat > "$STATE/slurm.conf" <<CONF
ClusterName=tilecat
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SchedulerParameters=sched_interval=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF="$STATE/slurm.conf"

# Client wrappers that name this cluster's config: snakemake-executor-plugin-slurm-jobstep
# drops every SLURM_* variable (SLURM_CONF too) before its srun inside a job.
mkdir -p "$STATE/bin"
for cmd in srun sbatch squeue scontrol scancel sinfo sacct; do
    real=$(command -v "$cmd" || true)
    [ -n "$real" ] || continue
    printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$real" > "$STATE/bin/$cmd"
    chmod 755 "$STATE/bin/$cmd"
done

slurmctld -D -i -f "$SLURM_CONF" >"$STATE/slurmctld.out" 2>&1 &
echo $! >> "$STATE/pids"
slurmd -D -N localhost -f "$SLURM_CONF" >"$STATE/slurmd.out" 2>&1 &
echo $! >> "$STATE/pids"

for _ in $(seq 120); do
    if sinfo -h -N -o "%t" 2>/dev/null | grep -q -E "^idle"; then
        echo "slurm cluster up: PATH=$STATE/bin:\$PATH or SLURM_CONF=$SLURM_CONF" \
            "(pids $(tr '\n' ' ' < "$STATE/pids"))"
        exit 0
    fi
    sleep 0.5
done
echo "start_cluster.sh: node not idle after 60 s; see $STATE/slurmctld.log, slurmd.log" >&2
sinfo -N -l >&2 || true
exit 1

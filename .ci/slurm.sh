#!/usr/bin/env bash
# A single-node SLURM cluster on loopback for CI, started and stopped by PID.
#   .ci/slurm.sh up DIR     install (as root) and start munged, slurmctld, slurmd; writes DIR/slurm.conf
#   .ci/slurm.sh down DIR   stop exactly the daemons that `up` started (PIDs in DIR/*.pid)
# Clients need SLURM_CONF=DIR/slurm.conf. Settings that work without cgroups or an accounting
# database: proctrack/linuxproc, task/none, jobacct_gather/none, accounting_storage/none
# (so Snakemake must poll with --slurm-status-command squeue: sacct would fail and it would hang).
set -euo pipefail
cmd=${1:?up|down}; dir=$(realpath -m "${2:?state directory}")

if [ "$cmd" = down ]; then
    for d in slurmd slurmctld munged; do
        if [ -f "$dir/$d.pid" ]; then kill "$(cat "$dir/$d.pid")" 2>/dev/null || true; rm -f "$dir/$d.pid"; fi
    done
    [ "$(readlink /etc/slurm/slurm.conf || true)" = "$dir/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
    exit 0
fi

[ "$(id -u)" = 0 ] || { echo "slurm.sh: needs root (apt-get, munge user)" >&2; exit 1; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
fi
mkdir -p "$dir/state" "$dir/spool" "$dir/log"
host=$(hostname -s)
# the node as slurmd sees it (sockets/cores/threads, so CR_Core counts cores right), with the
# memory a little below what it measures, or the node drains
node=$(slurmd -C | head -n 1)
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
mem=$(( mem > 2048 ? mem - 1024 : mem ))
node=$(sed -e "s/RealMemory=[0-9]*/RealMemory=$mem/" -e "s/^NodeName=[^ ]*/NodeName=$host/" <<<"$node")

# munge: key mode 0400 owned by munge, /run/munge owned by munge, munged run as munge
[ -f /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/voxflow-ci.pid
    for _ in $(seq 50); do [ -s /run/munge/voxflow-ci.pid ] && break; sleep 0.1; done
    cp /run/munge/voxflow-ci.pid "$dir/munged.pid"
fi

cat > "$dir/slurm.conf" <<CONF
ClusterName=voxflow-ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=300
${node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# The job-step side of the Snakemake plugin drops every SLURM_* variable (SLURM_CONF too) before
# its inner srun, so the config must also be at the default path: a link, refused over a real one.
if [ -e /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf || true)" != "$dir/slurm.conf" ]; then
    case "$(readlink /etc/slurm/slurm.conf || true)" in
        */slurm.conf) [ -e "$(readlink /etc/slurm/slurm.conf)" ] && { echo "slurm.sh: /etc/slurm/slurm.conf belongs to another test cluster" >&2; exit 1; } ;;
        *) echo "slurm.sh: /etc/slurm/slurm.conf exists (a real cluster?); not touching it" >&2; exit 1 ;;
    esac
fi
mkdir -p /etc/slurm && ln -sfn "$dir/slurm.conf" /etc/slurm/slurm.conf
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then echo "slurm up: $(sinfo -h -o '%P %D %t %c CPUs %m MB')"; exit 0; fi
    sleep 0.2
done
echo "slurm.sh: node did not become idle; logs in $dir/log" >&2
sinfo >&2 || true; tail -n 20 "$dir/log/"*.log >&2 || true
exit 1

#!/usr/bin/env bash
# Start a real single-node SLURM on this machine for the SLURM tests (tests/test_slurm_real.py).
#
# Idempotent: installs Debian's slurmctld, slurmd, slurm-client and munge only when missing, writes a
# slurm.conf for this one node (its real hostname, CPU count and memory) unless a configuration that this
# script did not write is already there, creates the munge key, and starts munged, slurmctld and slurmd
# unless they already answer. Works as root without systemd: the daemons are started directly.
# Exit 0 once `sinfo` shows the node idle; otherwise print what went wrong (daemon logs included) and exit 1.
set -uo pipefail

PARTITION="${VIDBENCH_SLURM_PARTITION:-debug}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARK="# written by vidbench .ci/setup_slurm.sh"
LOG_DIR=/var/log/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
WAIT_S="${VIDBENCH_SLURM_WAIT_S:-60}"

say() { echo "setup_slurm: $*"; }
fail() {
    say "FAILED: $*"
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        if [ -f "$f" ]; then
            echo "---- last lines of $f"
            tail -n 25 "$f"
        fi
    done
    command -v sinfo >/dev/null && { echo "---- sinfo"; sinfo -N -l 2>&1; }
    exit 1
}

node_idle() {
    command -v sinfo >/dev/null || return 1
    local state
    state="$(sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n 1)"
    [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs packages and starts daemons)"
NODE="$(hostname -s)"

# 1. Packages.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || fail "apt-get update failed"
    # The packages' maintainer scripts try to start services; without systemd that may fail, so a
    # policy-rc.d forbids it for the duration of the install (we start the daemons ourselves below).
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    [ -e "$policy" ] && had_policy=1
    [ "$had_policy" -eq 1 ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
    rc=$?
    [ "$had_policy" -eq 1 ] || rm -f "$policy"
    [ "$rc" -eq 0 ] || fail "apt-get install slurmctld slurmd slurm-client munge failed (rc=$rc)"
fi

# 2. Already running and healthy? Then there is nothing to do.
if scontrol ping 2>/dev/null | grep -q "UP" && node_idle; then
    say "SLURM already up; node $NODE is $(sinfo -h -N -n "$NODE" -o '%t')"
    exit 0
fi

# 3. Configuration for this one node (never overwrite a configuration someone else wrote).
mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
if [ -f "$CONF" ] && ! head -n 1 "$CONF" | grep -qF "$MARK"; then
    say "keeping the existing $CONF (not written by this script)"
else
    CPUS="$(nproc --all)"
    MEM_MB="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
    say "writing $CONF: node $NODE, $CPUS CPUs, ${MEM_MB} MB, partition $PARTITION"
    cat >"$CONF" <<EOF
$MARK
ClusterName=vidbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
# No cgroups in a container: track processes by parent id, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Jobs may be requeued (Lightning's auto-requeue calls scontrol requeue on SIGUSR1).
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=600
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # Only read when a cgroup plugin is configured; written so no default path is searched.
    printf '%s\nCgroupPlugin=autodetect\n' "$MARK" >"$CONF_DIR/cgroup.conf"
fi

# 4. Munge: a key, then the daemon.
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --force --keyfile=/etc/munge/munge.key || fail "mungekey --create failed"
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
MUNGE_USER=root
id munge >/dev/null 2>&1 && MUNGE_USER=munge
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown "$MUNGE_USER" /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged (as $MUNGE_USER)"
    if [ "$MUNGE_USER" = root ]; then
        munged --force || fail "munged did not start"
    else
        runuser -u munge -- munged || fail "munged did not start"
    fi
    for _ in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
    munge -n | unmunge >/dev/null || fail "munge credentials do not round-trip"
fi

# 5. SLURM daemons (a stale pid file from a previous container is harmless: we check the process).
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! running /run/slurmctld.pid; then
    say "starting slurmctld"
    slurmctld || fail "slurmctld did not start"
fi
for _ in $(seq 1 30); do
    scontrol ping 2>/dev/null | grep -q "UP" && break
    sleep 0.5
done
scontrol ping 2>/dev/null | grep -q "UP" || fail "slurmctld does not answer scontrol ping"
if ! running /run/slurmd.pid; then
    say "starting slurmd"
    slurmd || fail "slurmd did not start"
fi

# 6. Wait for the node to register as idle (resume it if an earlier run left it down or drained).
deadline=$((SECONDS + WAIT_S))
while [ "$SECONDS" -lt "$deadline" ]; do
    node_idle && break
    state="$(sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n 1)"
    case "$state" in
        down* | drain* | drng*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 ;;
    esac
    sleep 1
done
node_idle || fail "node $NODE did not become idle within ${WAIT_S}s"
say "SLURM is up: $(sinfo -h -o '%P %a %D %t %N' | tr '\n' ' ')"

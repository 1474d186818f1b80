#!/usr/bin/env bash
# A SLURM cluster of two compute hosts on this one machine, for tests/test_multinode.py.
#
#   bash .ci/slurm_two_nodes.sh up      # start it (idempotent); prints the SLURM_CONF to use
#   bash .ci/slurm_two_nodes.sh down    # stop every daemon it started, remove namespaces, links, files
#   bash .ci/slurm_two_nodes.sh status  # sinfo of the cluster
#
# Each compute host is a network namespace (vbn1, vbn2) with its own address on a private bridge
# (10.231.45.0/24, reachable from nowhere else), its own hostname (a UTS namespace: vbnode1, vbnode2) and its
# own slurmd (`slurmd -N vbnodeK`). One slurmctld runs in the root namespace on the bridge address. munge is
# shared: its unix socket lives in the filesystem, which the namespaces share. Everything (conf, state,
# spool, logs, pid files) lives under $VB2N_DIR, and the controller and node ports (6917/6918) differ from
# SLURM's defaults, so a single-node SLURM started by .ci/setup_slurm.sh keeps running beside it.
# Names resolve inside each namespace through /etc/netns/<ns>/hosts (ip netns exec bind-mounts it).
set -uo pipefail

DIR="${VB2N_DIR:-/tmp/vidbench-2nodes}"
NET=10.231.45
BR=vbbr0
CTL_PORT=6917
NODE_PORT=6918
CONF="$DIR/slurm.conf"
WAIT_S="${VB2N_WAIT_S:-90}"
NODES=(1 2)

say() { echo "slurm_two_nodes: $*"; }
fail() {
    say "FAILED: $*"
    for f in "$DIR"/log/*.log; do
        [ -f "$f" ] && { echo "---- last lines of $f"; tail -n 20 "$f"; }
    done
    exit 1
}

export SLURM_CONF="$CONF"

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_slurmd_pid() { echo "$DIR/run/slurmd-vbnode$1.pid"; }

down() {
    # daemons first (their pid files), then every process still inside a namespace, then the network
    for k in "${NODES[@]}"; do
        local pf
        pf="$(node_slurmd_pid "$k")"
        pid_alive "$pf" && kill "$(cat "$pf")" 2>/dev/null
    done
    pid_alive "$DIR/run/slurmctld.pid" && kill "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null
    sleep 1
    for k in "${NODES[@]}"; do
        if ip netns list 2>/dev/null | grep -qw "vbn$k"; then
            for p in $(ip netns pids "vbn$k" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        fi
    done
    pid_alive "$DIR/run/slurmctld.pid" && kill -9 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null
    for k in "${NODES[@]}"; do
        ip link del "vbv${k}h" 2>/dev/null
        ip netns del "vbn$k" 2>/dev/null
        rm -rf "/etc/netns/vbn$k"
    done
    ip link del "$BR" 2>/dev/null
    rm -rf "$DIR/run" "$DIR/state" "$DIR/spool"
    say "down"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    say "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || fail "apt-get update failed"
    local policy=/usr/sbin/policy-rc.d had=0
    [ -e "$policy" ] && had=1
    [ "$had" -eq 1 ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
    local rc=$?
    [ "$had" -eq 1 ] || rm -f "$policy"
    [ "$rc" -eq 0 ] || fail "apt-get install failed (rc=$rc)"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --force --keyfile=/etc/munge/munge.key || fail "mungekey failed"
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    local user=root
    id munge >/dev/null 2>&1 && user=munge
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown "$user" /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    say "starting munged"
    if [ "$user" = root ]; then munged --force; else runuser -u munge -- munged; fi || fail "munged did not start"
    for _ in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    fail "munge credentials do not round-trip"
}

network() {
    ip link show "$BR" >/dev/null 2>&1 || {
        ip link add "$BR" type bridge || fail "cannot create bridge $BR (needs root and CAP_NET_ADMIN)"
        ip addr add "$NET.1/24" dev "$BR"
    }
    ip link set "$BR" up
    for k in "${NODES[@]}"; do
        local ns="vbn$k" addr="$NET.1$k"
        if ! ip netns list | grep -qw "$ns"; then
            ip netns add "$ns" || fail "ip netns add $ns failed"
        fi
        if ! ip link show "vbv${k}h" >/dev/null 2>&1; then
            ip link add "vbv${k}h" type veth peer name "vbv${k}n" || fail "cannot create veth vbv${k}h"
            ip link set "vbv${k}n" netns "$ns"
            ip link set "vbv${k}h" master "$BR"
            ip netns exec "$ns" ip addr add "$addr/24" dev "vbv${k}n"
        fi
        ip link set "vbv${k}h" up
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip link set "vbv${k}n" up
        mkdir -p "/etc/netns/$ns"
        {
            echo "127.0.0.1 localhost"
            echo "$addr vbnode$k"
            for j in "${NODES[@]}"; do [ "$j" = "$k" ] || echo "$NET.1$j vbnode$j"; done
            echo "$NET.1 vbctl"
        } >"/etc/netns/$ns/hosts"
    done
}

write_conf() {
    local ctl
    ctl="$(hostname -s)"
    mkdir -p "$DIR/log" "$DIR/run" "$DIR/state" "$DIR/spool"
    cat >"$CONF" <<EOF
# written by vidbench .ci/slurm_two_nodes.sh: two compute hosts in network namespaces
ClusterName=vidbench2n
SlurmctldHost=$ctl($NET.1)
SlurmctldPort=$CTL_PORT
SlurmdPort=$NODE_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=600
SlurmdTimeout=20
MessageTimeout=10
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
NodeName=vbnode1 NodeAddr=$NET.11 NodeHostname=vbnode1 CPUs=2 RealMemory=4000 State=UNKNOWN
NodeName=vbnode2 NodeAddr=$NET.12 NodeHostname=vbnode2 CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=vb2n Nodes=vbnode1,vbnode2 Default=YES MaxTime=INFINITE State=UP
EOF
    printf '# written by vidbench .ci/slurm_two_nodes.sh\nCgroupPlugin=autodetect\n' >"$DIR/cgroup.conf"
}

start_node() {
    local k="$1"
    pid_alive "$(node_slurmd_pid "$k")" && return 0
    mkdir -p "$DIR/spool/vbnode$k"
    # Its own hostname (UTS namespace) and /etc/hosts (a private mount namespace) inside its own network
    # namespace. Not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup, which slurmd needs.
    nsenter --net="/run/netns/vbn$k" unshare --mount --uts sh -c \
        "mount --bind /etc/netns/vbn$k/hosts /etc/hosts && hostname vbnode$k && exec slurmd -f '$CONF' -N vbnode$k" \
        || fail "slurmd vbnode$k did not start"
}

up() {
    [ "$(id -u)" -eq 0 ] || fail "must run as root (network namespaces, daemons)"
    command -v ip >/dev/null || fail "iproute2 (ip) is not installed"
    install_packages
    start_munge
    network
    write_conf
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        say "starting slurmctld on $NET.1:$CTL_PORT"
        slurmctld -f "$CONF" || fail "slurmctld did not start"
    fi
    for _ in $(seq 1 40); do
        scontrol ping 2>/dev/null | grep -q "UP" && break
        sleep 0.5
    done
    scontrol ping 2>/dev/null | grep -q "UP" || fail "slurmctld does not answer"
    for k in "${NODES[@]}"; do start_node "$k"; done
    local deadline=$((SECONDS + WAIT_S)) idle=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        idle=0
        for k in "${NODES[@]}"; do
            local state
            state="$(sinfo -h -N -n "vbnode$k" -o '%t' 2>/dev/null | head -n 1)"
            case "$state" in
                idle* | mix* | alloc*) idle=$((idle + 1)) ;;
                down* | drain* | drng*) scontrol update NodeName="vbnode$k" State=RESUME >/dev/null 2>&1 ;;
            esac
        done
        [ "$idle" -eq "${#NODES[@]}" ] && break
        sleep 1
    done
    [ "$idle" -eq "${#NODES[@]}" ] || fail "nodes did not become idle within ${WAIT_S}s: $(sinfo -N 2>&1)"
    say "up: SLURM_CONF=$CONF $(sinfo -h -N -o '%N=%t' | tr '\n' ' ')"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) sinfo -N -l ;;
    restart-node) start_node "$2" ;;
    *)
        echo "usage: $0 up|down|status|restart-node K" >&2
        exit 2
        ;;
esac

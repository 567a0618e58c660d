#!/usr/bin/env bash
# Start a real single-node SLURM cluster (munged + slurmctld + slurmd) on
# this machine, for tests and for .ci/run.
#
# Idempotent: installs Debian's packages only when missing, reuses a running
# munged/slurmctld/slurmd instead of starting duplicates, and exits 0 as soon
# as the node is schedulable. No systemd is assumed (PID 1 on the CI machines
# is not an init system), so the daemons are started directly.
#
# Environment knobs:
#   SLURM_CI_STATE_DIR   spool/state/log/pid dir   (default /var/spool/slurm-ci)
#   SLURM_CI_CLUSTER     ClusterName               (default ci)
#   SLURM_CI_MEM_HEADROOM_MB  RAM kept away from jobs (default 2048)
#   SLURM_CI_TIMEOUT     seconds to wait for an idle node (default 60)
set -euo pipefail

STATE_DIR="${SLURM_CI_STATE_DIR:-/var/spool/slurm-ci}"
CLUSTER="${SLURM_CI_CLUSTER:-ci}"
HEADROOM_MB="${SLURM_CI_MEM_HEADROOM_MB:-2048}"
TIMEOUT="${SLURM_CI_TIMEOUT:-60}"
CONF_DIR=/etc/slurm            # where Debian's slurm looks for slurm.conf
CONF="$CONF_DIR/slurm.conf"
MUNGE_KEY=/etc/munge/munge.key
# Marker: stop.sh only stops munged if this script started it.
MUNGE_MARKER="$STATE_DIR/munged.started-by-ci"

log() { printf 'slurm-ci: %s\n' "$*" >&2; }

die() {
    log "ERROR: $*"
    # Show the daemon logs: that is where the actual reason usually is.
    for f in "$STATE_DIR/log/slurmctld.log" "$STATE_DIR/log/slurmd.log" \
             /var/log/munge/munged.log; do
        if [ -f "$f" ]; then
            printf -- '----- tail %s -----\n' "$f" >&2
            tail -n 25 "$f" >&2 || true
        fi
    done
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, starts daemons)"

t0=$(date +%s)

# --------------------------------------------------------------------------
# 1. Packages. `apt-get update` only when a package is missing, because it
#    costs network time and the lists are usually present on these machines.
# --------------------------------------------------------------------------
need=()
for p in slurm-wlm munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]} (apt)"
    # Keep the packages' maintainer scripts from starting daemons through
    # init.d while installing: they would start with no slurm.conf yet (and
    # slurmctld would then fail, or munged would race ours). 101 = "action
    # not allowed" per invoke-rc.d's policy-rc.d protocol. Only install our
    # own policy file if none exists, and remove it again afterwards.
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${need[@]}" >/tmp/slurm-ci-apt.log 2>&1; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >>/tmp/slurm-ci-apt.log 2>&1 || true
        apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/slurm-ci-apt.log 2>&1 || {
            [ "$policy_added" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
            tail -n 30 /tmp/slurm-ci-apt.log >&2
            die "apt-get install ${need[*]} failed (log: /tmp/slurm-ci-apt.log)"
        }
    fi
    [ "$policy_added" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    log "packages installed in $(( $(date +%s) - t0 ))s"
fi

for b in munged slurmctld slurmd sinfo scontrol; do
    command -v "$b" >/dev/null || die "$b not found after install"
done

# is_running NAME PIDFILE: true if the pid in PIDFILE is alive and is NAME.
# Checking /proc/PID/comm guards against a stale pidfile whose pid was reused.
is_running() {
    local pid
    [ -s "$2" ] || return 1
    pid=$(cat "$2" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ]
}

# wait_started NAME PIDFILE: the daemons write their pid file just after
# forking, so give them up to 10 s before calling a missing one a failure.
wait_started() {
    for _ in $(seq 1 50); do
        is_running "$1" "$2" && return 0
        sleep 0.2
    done
    die "$1 did not start (no live pid in $2)"
}

mkdir -p "$STATE_DIR"/{ctld,d,log,run}
chmod 755 "$STATE_DIR"

# --------------------------------------------------------------------------
# 2. munge: SLURM authenticates every RPC with it (auth/munge is the only
#    auth plugin Debian builds by default).
# --------------------------------------------------------------------------
# The Debian package normally creates the key in its postinst; create it here
# if that did not happen (or it was removed), with the ownership munged wants.
if [ ! -s "$MUNGE_KEY" ]; then
    log "creating munge key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$MUNGE_KEY" --force
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
fi
MUNGE_USER=root
getent passwd munge >/dev/null && MUNGE_USER=munge
# munged refuses keys/dirs that are group/world accessible or owned by another
# user than the one it runs as.
chown "$MUNGE_USER": "$MUNGE_KEY" /etc/munge
chmod 700 /etc/munge
chmod 400 "$MUNGE_KEY"
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown "$MUNGE_USER": /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge   # clients (any user) must reach the socket

MUNGE_PID=/run/munge/munged.pid
if is_running munged "$MUNGE_PID" && munge -n </dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    log "starting munged as $MUNGE_USER"
    # Run as the munge user (what Debian does); --force lets munged start
    # over a stale socket left behind by a killed instance.
    if [ "$MUNGE_USER" = root ]; then
        munged --force
    else
        runuser -u munge -- munged --force
    fi
    touch "$MUNGE_MARKER"
    for _ in $(seq 1 50); do
        munge -n </dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munged did not come up"
fi

# --------------------------------------------------------------------------
# 3. slurm.conf for one node. The node's shape is read from `slurmd -C`, so
#    the config always matches the hardware (a mismatch would drain the node).
# --------------------------------------------------------------------------
HOST=$(hostname -s)
hw=$(slurmd -C | head -n 1)
hwval() { printf '%s\n' "$hw" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
CPUS=$(hwval CPUs);                 CPUS=${CPUS:-$(nproc)}
SOCKETS=$(hwval SocketsPerBoard);   SOCKETS=${SOCKETS:-1}
CORES=$(hwval CoresPerSocket);      CORES=${CORES:-$CPUS}
THREADS=$(hwval ThreadsPerCore);    THREADS=${THREADS:-1}
MEM=$(hwval RealMemory)
[ -n "$MEM" ] || MEM=$(( $(awk '/^MemTotal:/{print $2}' /proc/meminfo) / 1024 ))
# Leave headroom for the OS, the daemons and the test process itself; never
# go below 512 MB so tiny machines still get a schedulable node.
MEM=$(( MEM - HEADROOM_MB )); [ "$MEM" -ge 512 ] || MEM=512

mkdir -p "$CONF_DIR"
new_conf=$(cat <<EOF
# Written by ci/slurm/start.sh -- single-node CI cluster. See ci/slurm/README.md.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: works without systemd and inside containers/VMs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: sacct has nothing to read; status comes from slurmctld (squeue).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Schedule cores and memory as consumable resources (so -c/--mem are enforced
# for placement and several small jobs share the node).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Keep finished jobs in slurmctld for a day so 'squeue -t all' and
# 'scontrol show job' still report COMPLETED/FAILED (no accounting DB).
MinJobAge=86400
# A node that went DOWN (e.g. slurmd restarted) comes back by itself.
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF"
    conf_changed=1
fi
# cgroup.conf is only read by cgroup plugins, which this config does not use;
# it is written anyway because some slurmd builds look for it at start-up.
if [ ! -f "$CONF_DIR/cgroup.conf" ]; then
    printf '# Written by ci/slurm/start.sh (cgroup plugins unused)\nCgroupPlugin=autodetect\n' \
        >"$CONF_DIR/cgroup.conf"
fi

# --------------------------------------------------------------------------
# 4. Daemons. If the config changed under running daemons, restart them so
#    they do not run with a stale node definition.
# --------------------------------------------------------------------------
CTLD_PID="$STATE_DIR/run/slurmctld.pid"
SLURMD_PID="$STATE_DIR/run/slurmd.pid"
if [ "$conf_changed" -eq 1 ] && { is_running slurmctld "$CTLD_PID" || is_running slurmd "$SLURMD_PID"; }; then
    log "slurm.conf changed; restarting running daemons"
    "$(dirname "$0")/stop.sh" --keep-munge
fi

# Daemons not started by us (e.g. by a package's init script) would fight
# ours for the ports; refuse rather than start duplicates.
for d in slurmctld slurmd; do
    pf=$CTLD_PID; [ "$d" = slurmd ] && pf=$SLURMD_PID
    if ! is_running "$d" "$pf" && pgrep -x "$d" >/dev/null; then
        die "a $d not started by this script is running (pid $(pgrep -x "$d" | tr '\n' ' ')); stop it first"
    fi
done

if is_running slurmctld "$CTLD_PID"; then
    log "slurmctld already running"
else
    log "starting slurmctld"
    slurmctld || die "slurmctld failed to start"
    wait_started slurmctld "$CTLD_PID"
fi
# slurmd registers with slurmctld, so give the controller a moment first
# (bounded: each `scontrol ping` can itself block for seconds when the
# controller is down, hence `timeout` and a wall-clock deadline).
ping_deadline=$(( $(date +%s) + 15 ))
until timeout 5 scontrol ping 2>/dev/null | grep -q UP; do
    is_running slurmctld "$CTLD_PID" || die "slurmctld exited during start-up"
    [ "$(date +%s)" -lt "$ping_deadline" ] || die "slurmctld does not answer 'scontrol ping' after 15s"
    sleep 0.5
done
if is_running slurmd "$SLURMD_PID"; then
    log "slurmd already running"
else
    log "starting slurmd"
    slurmd || die "slurmd failed to start"
    wait_started slurmd "$SLURMD_PID"
fi

# --------------------------------------------------------------------------
# 5. Wait (bounded) until the node is schedulable.
# --------------------------------------------------------------------------
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
while :; do
    # Fail fast instead of waiting out the timeout if a daemon has died.
    is_running slurmctld "$CTLD_PID" || die "slurmctld exited"
    is_running slurmd "$SLURMD_PID" || die "slurmd exited"
    state=$(timeout 10 sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null | head -n 1 || true)
    case "$state" in
        idle|mix|alloc|comp) break ;;
        # A node remembered as down/drained from a previous run: resume it.
        down*|drain*|drng*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] || die "node $HOST not idle after ${TIMEOUT}s (state: '${state:-no answer}')"
    sleep 1
done

log "OK: SLURM cluster '$CLUSTER' up on $HOST ($CPUS CPUs, ${MEM} MB), partition 'debug', state '$state' (${SECONDS}s; conf $CONF, state $STATE_DIR)"

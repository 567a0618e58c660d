#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by ci/slurm/start.sh.
#
# Idempotent: exits 0 when nothing is running. Cancels all jobs first so no
# job processes outlive the daemons, then stops slurmd, slurmctld and (only if
# start.sh started it) munged, each with a bounded wait and a SIGKILL fallback.
#
#   --keep-munge   leave munged running and slurm.conf in place (used by
#                  start.sh when it restarts slurm after a config change)
#
# Without --keep-munge it also removes the slurm.conf and cgroup.conf that
# start.sh wrote: with a slurm.conf naming a controller that is down, every
# `scontrol` call waits 9 s for it, and the Snakemake SLURM plugin runs
# `scontrol show config` when it is imported, i.e. at the start of every
# snakemake command, SLURM or not (2 s became 11 s).
#
# Environment: SLURM_CI_STATE_DIR (default /var/spool/slurm-ci), as start.sh.
set -euo pipefail

STATE_DIR="${SLURM_CI_STATE_DIR:-/var/spool/slurm-ci}"
KEEP_MUNGE=0
[ "${1:-}" = "--keep-munge" ] && KEEP_MUNGE=1

log() { printf 'slurm-ci: %s\n' "$*" >&2; }

# pid_of NAME PIDFILE: print the pid if it is alive and really is NAME
# (a stale pidfile whose pid was reused must not get us to kill a stranger).
pid_of() {
    local pid
    [ -s "$2" ] || return 1
    pid=$(cat "$2" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ] || return 1
    printf '%s\n' "$pid"
}

# stop_daemon NAME PIDFILE: SIGTERM, wait up to 15 s, then SIGKILL.
stop_daemon() {
    local pid
    pid=$(pid_of "$1" "$2") || { log "$1 not running"; return 0; }
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do
        [ -d "/proc/$pid" ] || { rm -f "$2"; return 0; }
        sleep 0.2
    done
    log "$1 (pid $pid) ignored SIGTERM for 15s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
    rm -f "$2"
}

CTLD_PID="$STATE_DIR/run/slurmctld.pid"
SLURMD_PID="$STATE_DIR/run/slurmd.pid"

# Cancel every job while slurmctld can still act on it (all users: the
# cluster is ours alone). Bounded, and ignored when slurmctld is down.
if pid_of slurmctld "$CTLD_PID" >/dev/null && command -v scancel >/dev/null; then
    ids=$(timeout 10 squeue -h -o '%i' -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING 2>/dev/null || true)
    if [ -n "$ids" ]; then
        log "cancelling jobs: $(echo "$ids" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        timeout 20 scancel $ids 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(timeout 10 squeue -h -o '%i' -t RUNNING,COMPLETING 2>/dev/null || true)" ] && break
            sleep 0.5
        done
    fi
fi

# slurmd first (it owns the job steps), then the controller.
stop_daemon slurmd "$SLURMD_PID"
stop_daemon slurmctld "$CTLD_PID"

if [ "$KEEP_MUNGE" -eq 0 ] && [ -e "$STATE_DIR/munged.started-by-ci" ]; then
    stop_daemon munged /run/munge/munged.pid
    rm -f "$STATE_DIR/munged.started-by-ci"
fi

# Only files start.sh wrote (its header line): a site's own config stays.
if [ "$KEEP_MUNGE" -eq 0 ]; then
    for f in /etc/slurm/slurm.conf /etc/slurm/cgroup.conf; do
        if [ -f "$f" ] && head -n 1 "$f" | grep -q '^# Written by ci/slurm/start.sh'; then
            rm -f "$f"
            log "removed $f"
        fi
    done
fi

log "OK: SLURM cluster stopped"

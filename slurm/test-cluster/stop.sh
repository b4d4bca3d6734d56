#!/usr/bin/env bash
# Stop the one-node test cluster started by start.sh: cancel its jobs, stop slurmd and slurmctld.
# munge is left running (cheap, and other tools may use it).
set -uo pipefail
if [[ $(id -u) -ne 0 ]]; then
    echo "stop.sh: must run as root" >&2
    exit 1
fi
command -v scancel >/dev/null && scancel --full --quiet --user=root 2>/dev/null
for daemon in slurmd slurmctld; do
    if [[ -f /run/$daemon.pid ]]; then
        kill "$(cat /run/$daemon.pid)" 2>/dev/null
    fi
done
for _ in $(seq 1 20); do
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
    sleep 0.25
done
# A daemon whose pid file is gone (a crashed or half-stopped earlier run) is stopped by name, so
# that the next start.sh gets a node that answers.
for daemon in slurmd slurmctld; do
    pkill -x "$daemon" 2>/dev/null && sleep 1
done
exit 0

#!/usr/bin/env bash
# Start a one-node SLURM cluster (munge, slurmctld, slurmd) on this machine, as root.
# Idempotent: daemons already running are left alone. Exit code 0 once `sinfo` shows the node idle.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ $(id -u) -ne 0 ]]; then
    echo "start.sh: must run as root (it writes /etc/slurm and starts daemons)" >&2
    exit 1
fi
for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "start.sh: $tool not installed (run install.sh)" >&2; exit 1; }
done

host="$(hostname -s)"
read -r cpus memory_mb < <(slurmd -C | awk -F'[= ]' '/^NodeName/ {
    for (i = 1; i <= NF; i++) { if ($i == "CPUs") c = $(i + 1); if ($i == "RealMemory") m = $(i + 1) }
    print c, m }')
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
sed -e "s/@HOST@/$host/g" -e "s/@CPUS@/$cpus/g" -e "s/@MEMORY_MB@/$memory_mb/g" \
    "$here/slurm.conf.in" > /etc/slurm/slurm.conf

if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c munged
    else
        munged --force
    fi
fi
if pgrep -x slurmctld >/dev/null; then
    scontrol reconfigure >/dev/null 2>&1 || true  # a running cluster takes the regenerated conf
else
    slurmctld
fi
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 1 60); do
    state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
    case "$state" in
        idle*|mix*|alloc*) echo "slurm test cluster up: node $host ($cpus CPUs, ${memory_mb} MB)"; exit 0 ;;
        down*|drain*)
            # A slurmd that was still shutting down when checked above has exited by now.
            pgrep -x slurmd >/dev/null || slurmd
            scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
echo "start.sh: the node did not become idle; see /var/log/slurm/" >&2
exit 1

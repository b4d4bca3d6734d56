#!/usr/bin/env bash
# Install Debian's slurm-wlm and munge for the test cluster, when missing. Idempotent: does
# nothing if they are there; exits 0 with a note (tests then skip SLURM) where it cannot install.
set -uo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "note: slurm-wlm/munge missing and not installable here (needs root and apt-get);" \
         "the SLURM tests will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
    || echo "note: apt-get could not install slurm-wlm/munge; the SLURM tests will be skipped" >&2
exit 0

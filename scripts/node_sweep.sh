#!/usr/bin/env bash
# A whole sweep on one node with several GPUs, the way a user runs one, with a worker killed on
# purpose. Needs the full install (torch with CUDA, ray, mlflow) and at least two GPUs.
#
#   scripts/node_sweep.sh [OUT_DIR]     (default reports/node-sweep-run)
#
# 1. `d2bench run node-sweep --backend ray`: 3 Table 1 rows × 2 seeds at full size, one GPU a
#    cell. Once a D²Conv3D (IV) cell has trained for KILL_AFTER_S seconds (default 120), its
#    worker is killed with SIGKILL by the PID `d2bench status --json` names: Ray retries the
#    trial and the cell resumes from its newest checkpoint.
# 2. `d2bench run node-sweep-ddp`: the IV row trained data-parallel on two GPUs.
# 3. `d2bench measure node-sweep --device cuda:0`, then `d2bench report node-sweep`.
# OUT_DIR gets each command's log, the kill record and the final status; the report itself
# goes where `d2bench report` puts it (reports/node-sweep/) and is copied into OUT_DIR.
set -euo pipefail
out=${1:-reports/node-sweep-run}
kill_after=${KILL_AFTER_S:-120}
mkdir -p "$out"
nvidia-smi --query-gpu=index,name,memory.total --format=csv > "$out/gpus.txt"

d2bench run node-sweep --backend ray > "$out/run.log" 2>&1 &
driver=$!

# The kill: poll the study until a running IV cell on this host has run for kill_after seconds.
python3 - "$kill_after" > "$out/kill.txt" 2>&1 <<'PY' || true
import json, os, signal, socket, subprocess, sys, time
kill_after, seen = float(sys.argv[1]), {}
deadline = time.monotonic() + 3600
while time.monotonic() < deadline:
    status = subprocess.run(["d2bench", "status", "node-sweep", "--json"],
                            capture_output=True, text=True)
    cells = json.loads(status.stdout)["cells"] if status.stdout.strip() else []
    for cell in cells:
        host, _, pid = (cell.get("worker") or "").rpartition(":")
        if cell["row"] != "d2conv3d_iv" or cell["state"] != "running" or host != socket.gethostname():
            continue
        first = seen.setdefault(cell["key"], time.monotonic())
        if time.monotonic() - first >= kill_after and pid.isdigit():
            os.kill(int(pid), signal.SIGKILL)
            print(f"killed pid {pid} of cell {cell['key']} ({cell['label']}) after "
                  f"{time.monotonic() - first:.0f} s running; {time.strftime('%H:%M:%S')}")
            sys.exit(0)
    if cells and all(cell["state"] in ("done", "failed") for cell in cells):
        break
    time.sleep(10)
print("no running D²Conv3D (IV) cell was killed")
PY

status=0
wait "$driver" || status=$?
echo "run exit $status" >> "$out/kill.txt"
d2bench status node-sweep --json > "$out/status.json" || true
d2bench run node-sweep-ddp --backend ray > "$out/run-ddp.log" 2>&1 || echo "ddp run failed" >> "$out/kill.txt"
d2bench measure node-sweep --device cuda:0 > "$out/measure.log" 2>&1
d2bench report node-sweep > "$out/report.log" 2>&1
cp -r reports/node-sweep/. "$out/report" 2>/dev/null || true
echo "logs, status and the report in $out"

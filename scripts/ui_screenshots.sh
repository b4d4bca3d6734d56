#!/usr/bin/env bash
# Screenshots of the MLflow UI for the README (docs/ui/*.png): runs the small study
# docs/ui/ui-demo.yaml with the local backend in WORK (default: a new temporary folder; a folder
# that already holds it only reruns what is missing), writes its report, starts `d2bench ui`,
# and photographs the experiment's runs, the runs table and the study's parent run with
# headless Chromium (Debian: apt-get install chromium).
# Usage: scripts/ui_screenshots.sh [WORK]   (D2BENCH=path/to/d2bench, PORT=5077, OUT=docs/ui)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d -t d2bench-ui-XXXX)}
d2bench=${D2BENCH:-d2bench}
port=${PORT:-5077}
out=$(cd "$here" && mkdir -p "${OUT:-docs/ui}" && cd "${OUT:-docs/ui}" && pwd)
chromium=$(command -v chromium || command -v chromium-browser || command -v google-chrome)
python=$(dirname "$(command -v "$d2bench")")/python

mkdir -p "$work" && cd "$work"
cp "$here/docs/ui/ui-demo.yaml" .
"$d2bench" run ui-demo.yaml --backend local
"$d2bench" report ui-demo.yaml
"$d2bench" ui --port "$port" > ui.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
url=http://127.0.0.1:$port
for _ in $(seq 300); do curl -sf "$url/health" > /dev/null && break; sleep 1; done

# the experiment and the study's parent run, through the REST API
ids=$("$python" - "$url" <<'PY'
import json, sys, urllib.request
url = sys.argv[1] + "/api/2.0/mlflow/"
with urllib.request.urlopen(url + "experiments/get-by-name?experiment_name=ui-demo") as r:
    experiment = json.load(r)["experiment"]["experiment_id"]
body = json.dumps({"experiment_ids": [experiment],
                   "filter": "tags.`d2bench.kind` = 'study'"}).encode()
request = urllib.request.Request(url + "runs/search", body, {"Content-Type": "application/json"})
with urllib.request.urlopen(request) as r:
    print(experiment, json.load(r)["runs"][0]["info"]["run_id"])
PY
)
read -r experiment parent <<< "$ids"

shoot() {  # NAME URL WIDTHxHEIGHT
    "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --user-data-dir="$work/chromium" --window-size="$3" --virtual-time-budget=30000 \
        --screenshot="$work/$1.png" "$2" 2> /dev/null
    "$python" - "$work/$1.png" "$out/$1.png" <<'PY'
import sys
from PIL import Image
image = Image.open(sys.argv[1]).convert("RGB")
if sys.argv[2].endswith("parent-artifacts.png"):  # the artifact's path on this machine
    from PIL import ImageDraw
    ImageDraw.Draw(image).rectangle([425, 168, 1010, 192], fill=(255, 255, 255))
image.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(sys.argv[2], optimize=True)
PY
    echo "$out/$1.png"
}
# MLflow 3.17 picks GenAI or model-training pages from a per-browser switch; set it in the address
ml=workflowType=machine_learning
cells=$("$python" -c 'import urllib.parse; print(urllib.parse.quote("tags.`d2bench.kind` = '"'cell'"'"))')
sort='orderByKey=metrics.%60JF%60&orderByAsc=false'
shoot runs "$url/#/experiments/$experiment/runs?$ml&searchFilter=$cells&$sort" 1400,760
shoot parent "$url/#/experiments/$experiment/runs/$parent?$ml" 1400,1500
shoot parent-artifacts "$url/#/experiments/$experiment/runs/$parent/artifacts/report/table1.md?$ml" 1400,900

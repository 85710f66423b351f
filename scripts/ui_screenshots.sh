#!/usr/bin/env bash
# Run a digits comparison against a local Prefect server, screenshot every artifact page in headless Chromium
# (1400 px window) and print what a reader gets: the terminal table's width and each embedded figure's pixel size.
#
# Usage: scripts/ui_screenshots.sh [OUT_DIR] [VARIANTS]
#   env: PORT (default 4217), EPOCHS (default 2), LR (default auto), CHROMIUM (default chromium), KEEP_SERVER=1 leaves the server running
# Needs: chromium (apt-get install -y chromium), the project's .venv. Everything stays on 127.0.0.1.
set -euo pipefail

OUT=$(realpath -m "${1:-ui-screenshots}")
VARIANTS=${2:-lenet1,cnn2_3,cnn2_5,cnn2_7,generic_0,generic_1,generic_2,generic_3,lenet5,lenet5_dropout}
PORT=${PORT:-4217}
EPOCHS=${EPOCHS:-2}
LR=${LR:-auto}
CHROMIUM=${CHROMIUM:-chromium}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY="$ROOT/.venv/bin/python"

mkdir -p "$OUT"
WORK=$(mktemp -d)
export PREFECT_HOME="$WORK/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false OMP_NUM_THREADS=1
export PREFECT_API_URL="http://127.0.0.1:$PORT/api" PREFECT_UI_API_URL="http://127.0.0.1:$PORT/api"

"$ROOT/.venv/bin/prefect" server start --host 127.0.0.1 --port "$PORT" >"$OUT/server.log" 2>&1 &
SERVER=$!
if [ -z "${KEEP_SERVER:-}" ]; then trap 'kill $SERVER 2>/dev/null || true' EXIT; fi
for _ in $(seq 120); do curl -sf "$PREFECT_API_URL/health" >/dev/null && break; sleep 1; done

"$ROOT/.venv/bin/cnn-lab" compare --dataset digits --variants "$VARIANTS" --epochs "$EPOCHS" --lr "$LR" \
  --storage "$WORK/results" --quiet >"$OUT/terminal.txt" 2>"$OUT/terminal-stderr.txt"
"$PY" -c 'import sys; lines = open(sys.argv[1], encoding="utf-8").read().splitlines(); print(f"terminal: widest line {max(map(len, lines))} characters ({sys.argv[1]})")' "$OUT/terminal.txt"

"$PY" - "$OUT" "$CHROMIUM" <<'EOF'
"""Screenshot each artifact's page and print the natural size of every image embedded in its markdown."""
import base64
import io
import re
import subprocess
import sys

import httpx
from PIL import Image

out, chromium = sys.argv[1], sys.argv[2]
api = __import__("os").environ["PREFECT_API_URL"]
ui = api.removesuffix("/api")
artifacts = httpx.post(f"{api}/artifacts/latest/filter", json={}).json()
for art in sorted(artifacts, key=lambda a: a["key"] or ""):
    key, kind = art["key"], art["type"]
    png = f"{out}/{key}.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=15000",
                    f"--screenshot={png}", "--window-size=1400,3000", f"{ui}/artifacts/artifact/{art['latest_id']}"],
                   check=True, capture_output=True, timeout=120)
    sizes = []
    if kind == "markdown":
        for uri in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", art["data"] or ""):
            raw = base64.b64decode(uri)
            w, h = Image.open(io.BytesIO(raw)).size
            sizes.append(f"{w}x{h} ({len(raw) // 1024} KB)")
    print(f"{key:<32} {kind:<9} {', '.join(sizes) or '-'}; description: {art['description']!r}")
EOF

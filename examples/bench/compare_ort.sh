#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vitmae against ONNX Runtime, in one session, on the same vit-mae-base weights (the library's random
# init, seed 0), with 1 and 2 threads: pretrain_b1, features_b1, pretrain_b8.
#   examples/bench/compare_ort.sh [BUILD_DIR] (default build; WORK=/tmp/vitmae-ort, RUNS=5)
# Installs what it needs: Debian's python3-torch (the export), nodejs and npm, and the npm package
# onnxruntime-node (with --ignore-scripts: its install script only fetches GPU libraries).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
WORK=${WORK:-/tmp/vitmae-ort}
RUNS=${RUNS:-5}
need=()
/usr/bin/python3 -c "import torch, numpy" 2>/dev/null || need+=(python3-torch python3-numpy)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then apt-get update && apt-get install -y --no-install-recommends "${need[@]}"; fi
[ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD" -j2 --target vitmae-bench
mkdir -p "$WORK"
[ -f "$WORK/model/model.safetensors" ] || "$BUILD/examples/vitmae-bench" --save-model "$WORK/model"
[ -f "$WORK/onnx/features_b1.onnx" ] || /usr/bin/python3 examples/bench/export_onnx.py "$WORK/model" "$WORK/onnx"
[ -d "$WORK/node_modules/onnxruntime-node" ] ||
  npm install --prefix "$WORK" --ignore-scripts --no-audit --no-fund onnxruntime-node >/dev/null
: > "$WORK/results.jsonl"
for t in 1 2; do
  NODE_PATH="$WORK/node_modules" node examples/bench/ort_bench.js "$WORK/onnx" --threads "$t" --runs "$RUNS" | tee -a "$WORK/results.jsonl"
  "$BUILD/examples/vitmae-bench" --model "$WORK/model" --threads "$t" --runs "$RUNS" --no-train --no-load --json |
    grep -E '"(fma_peak|pretrain_b1|features_b1|pretrain_b8)"' | tee -a "$WORK/results.jsonl"
done
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
const peak = rows.find((r) => r.workload === "fma_peak");
console.log(`# ${peak.cpu}; vitmae products: ${peak.backend}`);
console.log("| workload | threads | FMA peak GFLOP/s | vitmae ms | ONNX Runtime ms | vitmae / ORT |");
console.log("| --- | --- | --- | --- | --- | --- |");
for (const t of [1, 2]) {
  const p = rows.find((r) => r.workload === "fma_peak" && r.threads === t);
  for (const w of ["pretrain_b1", "features_b1", "pretrain_b8"]) {
    const v = rows.find((r) => r.workload === w && r.threads === t && !r.runtime);
    const o = rows.find((r) => r.workload === w && r.threads === t && r.runtime);
    console.log(`| ${w} | ${t} | ${p.GFLOPs} | ${v.median_ms.toFixed(1)} (efficiency ${v.efficiency.toFixed(2)}) | ${o.median_ms.toFixed(1)} | ${(v.median_ms / o.median_ms).toFixed(2)} |`);
  }
}' "$WORK/results.jsonl"

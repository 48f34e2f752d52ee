#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vitmae against ONNX Runtime, in one session, on the same vit-mae-base weights (the library's random
# init, seed 0), with 1 and 2 threads: pretrain_b1, features_b1, pretrain_b8, each in float32 and in
# int8 (vitmae's *_int8 rows; ORT's int8 model made by quantize_onnx.py as quantize_dynamic(
# per_channel=True) makes it), with each engine's int8 cosine to its own float32 on the same inputs.
#   examples/bench/compare_ort.sh [BUILD_DIR] (default build; WORK=/tmp/vitmae-ort, RUNS=5)
# Installs what it needs: Debian's python3-torch and python3-onnx (the export and the int8 model),
# nodejs and npm, and the npm package onnxruntime-node (with --ignore-scripts: its install script
# only fetches GPU libraries).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
WORK=${WORK:-/tmp/vitmae-ort}
RUNS=${RUNS:-5}
need=()
/usr/bin/python3 -c "import torch, numpy" 2>/dev/null || need+=(python3-torch python3-numpy)
/usr/bin/python3 -c "import onnx" 2>/dev/null || need+=(python3-onnx)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then apt-get update && apt-get install -y --no-install-recommends "${need[@]}"; fi
[ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD" -j2 --target vitmae-bench
mkdir -p "$WORK"
[ -f "$WORK/model/model.safetensors" ] || "$BUILD/examples/vitmae-bench" --save-model "$WORK/model"
[ -f "$WORK/onnx/features_b1.onnx" ] || /usr/bin/python3 examples/bench/export_onnx.py "$WORK/model" "$WORK/onnx"
for w in pretrain_b1 features_b1 pretrain_b8; do
  [ -f "$WORK/onnx/${w}_int8.onnx" ] ||
    /usr/bin/python3 examples/bench/quantize_onnx.py "$WORK/onnx/$w.onnx" "$WORK/onnx/${w}_int8.onnx"
done
[ -d "$WORK/node_modules/onnxruntime-node" ] ||
  npm install --prefix "$WORK" --ignore-scripts --no-audit --no-fund onnxruntime-node >/dev/null
: > "$WORK/results.jsonl"
for t in 1 2; do
  NODE_PATH="$WORK/node_modules" node examples/bench/ort_bench.js "$WORK/onnx" --threads "$t" --runs "$RUNS" |
    tee -a "$WORK/results.jsonl"
  "$BUILD/examples/vitmae-bench" --model "$WORK/model" --threads "$t" --runs "$RUNS" --no-train --no-load --json |
    grep -E '"(fma_peak|bf16_peak|int8_peak|(pretrain_b1|features_b1|pretrain_b8)(_int8|_bf16)?)"' | tee -a "$WORK/results.jsonl"
done
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
const peak = rows.find((r) => r.workload === "fma_peak");
const ort = rows.find((r) => r.runtime);
// A column group a precision beyond float32: the rows both engines print as WORKLOAD + suffix.
// bf16 is for vitmae alone (ONNX Runtime has no bf16 MatMul on its CPU provider): its time, its
// ratio to the float32 of vitmae and its cosine, when vitmae printed *_bf16 rows (a CPU with bf16).
const lower = [{ suffix: "_int8", label: "int8" }];
const bf16 = rows.some((r) => r.workload === "features_b1_bf16");
const head = ["workload", "threads", "peaks fp32 / bf16 / int8", "vitmae fp32 ms (efficiency)", "ORT fp32 ms",
              "vitmae / ORT fp32"];
if (bf16) head.push("vitmae bf16 ms (efficiency)", "bf16 / fp32", "vitmae bf16 cosine");
for (const p of lower)
  head.push(`vitmae ${p.label} ms (efficiency)`, `ORT ${p.label} ms`, `vitmae / ORT ${p.label}`,
            `vitmae ${p.label} cosine`, `ORT ${p.label} cosine`);
console.log(`# ${peak.cpu}; vitmae products: ${peak.backend}; ONNX Runtime ${ort.version}`);
console.log(`| ${head.join(" | ")} |`);
console.log(`|${" --- |".repeat(head.length)}`);
const get = (w, t, runtime) => {
  const r = rows.find((x) => x.workload === w && x.threads === t && !x.runtime === !runtime);
  if (!r) throw new Error(`no ${runtime ? "ONNX Runtime" : "vitmae"} row ${w} with ${t} threads`);
  return r;
};
for (const t of [1, 2]) {
  const p = rows.find((r) => r.workload === "fma_peak" && r.threads === t);
  const pb = rows.find((r) => r.workload === "bf16_peak" && r.threads === t);
  const pi = rows.find((r) => r.workload === "int8_peak" && r.threads === t);
  const peaks = [p.GFLOPs, pb ? pb.GFLOPs : "-", pi ? pi.GOPs : "-"].join(" / ");
  for (const w of ["pretrain_b1", "features_b1", "pretrain_b8"]) {
    const v = get(w, t, false), o = get(w, t, true);
    const cells = [w, t, peaks, `${v.median_ms.toFixed(1)} (${v.efficiency.toFixed(2)})`, o.median_ms.toFixed(1),
                   (v.median_ms / o.median_ms).toFixed(2)];
    if (bf16) {
      const vb = get(w + "_bf16", t, false);
      cells.push(`${vb.median_ms.toFixed(1)} (${vb.efficiency.toFixed(2)})`, (vb.median_ms / v.median_ms).toFixed(2),
                 vb.cosine_to_float32.toFixed(6));
    }
    for (const q of lower) {
      const vq = get(w + q.suffix, t, false), oq = get(w + q.suffix, t, true);
      cells.push(`${vq.median_ms.toFixed(1)} (${vq.efficiency.toFixed(2)})`, oq.median_ms.toFixed(1),
                 (vq.median_ms / oq.median_ms).toFixed(2),
                 vq.cosine_to_float32.toFixed(6), oq.cosine_to_float32.toFixed(6));
    }
    console.log(`| ${cells.join(" | ")} |`);
  }
}' "$WORK/results.jsonl"

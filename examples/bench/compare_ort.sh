#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vitmae against ONNX Runtime, in one session, on the same vit-mae-base weights (the library's random
# init, seed 0), with 1 and 2 threads: pretrain_b1, features_b1, pretrain_b8, each in float32 and in
# int8 (vitmae's *_int8 rows; ORT's int8 model made by quantize_onnx.py as quantize_dynamic(
# per_channel=True) makes it), with each engine's int8 cosine to its own float32 on the same inputs.
#   examples/bench/compare_ort.sh [BUILD_DIR] (default build; WORK=/tmp/vitmae-ort, RUNS=5, ROUNDS=1)
# ROUNDS=N runs the whole comparison N times over, the engines alternated, and reports the median
# of each time over the rounds, each ratio the median of the rounds' ratios.
# Installs what it needs: Debian's python3-torch and python3-onnx (the export and the int8 model),
# nodejs and npm, and the npm package onnxruntime-node (with --ignore-scripts: its install script
# only fetches GPU libraries).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
WORK=${WORK:-/tmp/vitmae-ort}
RUNS=${RUNS:-5}
ROUNDS=${ROUNDS:-1}
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$ROUNDS" =~ ^[1-9][0-9]*$ ]] ||
  { echo "compare_ort.sh: RUNS and ROUNDS must be whole numbers of at least 1 (got RUNS=$RUNS ROUNDS=$ROUNDS)" >&2; exit 2; }
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
# Each round times ONNX Runtime, then vitmae, with 1 thread, then both with 2; every line is
# tagged with its round, so that a ratio compares the two engines timed minutes apart, not a host
# that drifted between rounds.
for r in $(seq 1 "$ROUNDS"); do
  for t in 1 2; do
    NODE_PATH="$WORK/node_modules" node examples/bench/ort_bench.js "$WORK/onnx" --threads "$t" --runs "$RUNS" |
      sed "s/^{/{\"round\": $r, /" | tee -a "$WORK/results.jsonl"
    "$BUILD/examples/vitmae-bench" --model "$WORK/model" --threads "$t" --runs "$RUNS" --no-train --no-load --json |
      grep -E '"(fma_peak|bf16_peak|int8_peak|(pretrain_b1|features_b1|pretrain_b8)(_int8|_bf16)?)"' |
      sed "s/^{/{\"round\": $r, /" | tee -a "$WORK/results.jsonl"
  done
done
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
const rounds = Math.max(...rows.map((r) => r.round));
const peak = rows.find((r) => r.workload === "fma_peak");
const ort = rows.find((r) => r.runtime);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b), n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
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
console.log(`# ${peak.cpu}; vitmae products: ${peak.backend}; ONNX Runtime ${ort.version}; ` +
            (rounds > 1 ? `${rounds} rounds: the medians of the rounds, each ratio the median of the ` +
                          `rounds\x27 ratios (their range in brackets)` : "one round"));
console.log(`| ${head.join(" | ")} |`);
console.log(`|${" --- |".repeat(head.length)}`);
// The rows of workload w at t threads, one a round, in round order.
const get = (w, t, runtime) => {
  const found = [];
  for (let r = 1; r <= rounds; ++r) {
    const x = rows.find((x) => x.round === r && x.workload === w && x.threads === t && !x.runtime === !runtime);
    if (!x) throw new Error(`no ${runtime ? "ONNX Runtime" : "vitmae"} row ${w} with ${t} threads in round ${r}`);
    found.push(x);
  }
  return found;
};
const ms = (rs) => median(rs.map((r) => r.median_ms));
const timed = (rs) => `${ms(rs).toFixed(1)} (${median(rs.map((r) => r.efficiency)).toFixed(2)})`;
const ratio = (num, den) => {
  const q = num.map((r, i) => r.median_ms / den[i].median_ms);
  const range = rounds > 1 ? ` (${Math.min(...q).toFixed(2)}-${Math.max(...q).toFixed(2)})` : "";
  return median(q).toFixed(2) + range;
};
for (const t of [1, 2]) {
  const yard = (w, key) => {
    const rs = rows.filter((r) => r.workload === w && r.threads === t);
    return rs.length ? median(rs.map((r) => r[key])).toFixed(1) : "-";
  };
  const peaks = [yard("fma_peak", "GFLOPs"), yard("bf16_peak", "GFLOPs"), yard("int8_peak", "GOPs")].join(" / ");
  for (const w of ["pretrain_b1", "features_b1", "pretrain_b8"]) {
    const v = get(w, t, false), o = get(w, t, true);
    const cells = [w, t, peaks, timed(v), ms(o).toFixed(1), ratio(v, o)];
    if (bf16) {
      const vb = get(w + "_bf16", t, false);
      cells.push(timed(vb), ratio(vb, v), vb[0].cosine_to_float32.toFixed(6));
    }
    for (const q of lower) {
      const vq = get(w + q.suffix, t, false), oq = get(w + q.suffix, t, true);
      cells.push(timed(vq), ms(oq).toFixed(1), ratio(vq, oq), vq[0].cosine_to_float32.toFixed(6),
                 oq[0].cosine_to_float32.toFixed(6));
    }
    console.log(`| ${cells.join(" | ")} |`);
  }
}' "$WORK/results.jsonl"

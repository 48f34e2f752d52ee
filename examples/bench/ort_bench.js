// SPDX-License-Identifier: Apache-2.0
// Times the ONNX exports of examples/bench/export_onnx.py with ONNX Runtime (npm onnxruntime-node),
// the way vitmae-bench times vitmae: a warm-up, then the median of --runs N runs, at --threads N
// intra-op threads. Each workload runs in float32 (NAME.onnx), then in the other precisions
// beside it (NAME_int8.onnx, from quantize_onnx.py; --dtype all: those present) on the same
// inputs; their rows carry the cosine of their output (pretrain: logits; features:
// last_hidden_state) to float32's.
// Prints one JSON line a row, named as vitmae-bench names them (pretrain_b1, pretrain_b1_int8, ...).
//
// usage: node ort_bench.js ONNX_DIR [--threads N] [--runs N] [--dtype float32|int8|all]
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

// The precisions, float32 first (the reference of the others' cosines). A bf16 model would be one
// more entry, { suffix: '_bf16', dtype: 'bfloat16' }, once something writes NAME_bf16.onnx.
const PRECISIONS = [
  { suffix: '', dtype: 'float32' },
  { suffix: '_int8', dtype: 'int8' },
];
const WORKLOADS = { pretrain_b1: 'logits', features_b1: 'last_hidden_state', pretrain_b8: 'logits' };

function parse(argv) {
  const a = { dir: null, threads: 2, runs: 5, dtype: 'all' };
  for (let i = 2; i < argv.length; ++i) {
    if (argv[i] === '--threads') a.threads = parseInt(argv[++i], 10);
    else if (argv[i] === '--runs') a.runs = parseInt(argv[++i], 10);
    else if (argv[i] === '--dtype') a.dtype = argv[++i];
    else if (!a.dir) a.dir = argv[i];
    else throw new Error(`unknown argument '${argv[i]}'`);
  }
  const dtypes = ['all', ...PRECISIONS.map((p) => p.dtype)];
  if (!a.dir || !(a.threads >= 1) || !(a.runs >= 1) || !dtypes.includes(a.dtype))
    throw new Error(`usage: node ort_bench.js ONNX_DIR [--threads N] [--runs N] [--dtype ${dtypes.join('|')}]`);
  return a;
}

function gaussian(n, seed) {  // deterministic inputs (their values do not change the time)
  let s = seed >>> 0;
  const u = () => ((s = (s * 1664525 + 1013904223) >>> 0) + 0.5) / 4294967296;
  const out = new Float32Array(n);
  for (let i = 0; i < n; ++i) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

function cosine(x, y) {
  if (x.length !== y.length) throw new Error(`cosine of ${x.length} and ${y.length} values`);
  let xy = 0, xx = 0, yy = 0;
  for (let i = 0; i < x.length; ++i) {
    xy += x[i] * y[i];
    xx += x[i] * x[i];
    yy += y[i] * y[i];
  }
  return xy / Math.sqrt(xx * yy);
}

async function main() {
  const a = parse(process.argv);
  const shapes = JSON.parse(fs.readFileSync(path.join(a.dir, 'shapes.json'), 'utf8'));
  for (const [name, compared] of Object.entries(WORKLOADS)) {
    // Shapes as export_onnx.py wrote them in shapes.json: pixel_values (B, C, H, W), noise (B, L).
    const feeds = {};
    for (const [input, dims] of Object.entries(shapes[name] || {})) {
      const n = dims.reduce((x, y) => x * y, 1);
      const data = input === 'noise' ? Float32Array.from(gaussian(n, 7), (x) => 0.5 + 0.1 * x) : gaussian(n, 3);
      feeds[input] = new ort.Tensor('float32', data, dims);
    }
    let reference = null;  // float32's output
    for (const p of PRECISIONS) {
      const file = path.join(a.dir, name + p.suffix + '.onnx');
      const wanted = a.dtype === 'all' || a.dtype === p.dtype;  // timed and printed
      if (!wanted && p.dtype !== 'float32') continue;            // float32 runs anyway: the reference
      if (!fs.existsSync(file)) {
        if (a.dtype === 'all' && p.dtype !== 'float32') continue;  // --dtype all: the precisions written
        throw new Error(`${file}: no such file (run export_onnx.py${p.suffix ? ', then quantize_onnx.py,' : ''} first)`);
      }
      const session = await ort.InferenceSession.create(file, {
        intraOpNumThreads: a.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
      });
      for (const input of session.inputNames)
        if (!feeds[input]) throw new Error(`${path.join(a.dir, 'shapes.json')}: no shape for ${name} input ${input}`);
      const warm = await session.run(feeds);  // warm-up; its output is the one compared
      const out = warm[compared];
      if (!out) throw new Error(`${file}: no output named ${compared}`);
      const ms = [];
      if (wanted) {
        for (let r = 0; r < a.runs; ++r) {
          const t = process.hrtime.bigint();
          await session.run(feeds);
          ms.push(Number(process.hrtime.bigint() - t) / 1e6);
        }
      }
      await session.release();
      if (p.dtype === 'float32') reference = out.data;
      if (!wanted) continue;  // float32 run only as the reference of another precision's cosine
      ms.sort((x, y) => x - y);
      const row = {
        workload: name + p.suffix, dtype: p.dtype, runtime: 'onnxruntime',
        version: ort.env.versions ? ort.env.versions.common : undefined, threads: a.threads,
        median_ms: +ms[Math.floor(ms.length / 2)].toFixed(3), min_ms: +ms[0].toFixed(3),
      };
      if (p.dtype !== 'float32') row.cosine_to_float32 = +cosine(out.data, reference).toFixed(7);
      console.log(JSON.stringify(row));
    }
  }
}

main().catch((e) => {
  console.error(`ort_bench.js: ${e.message}`);
  process.exit(1);
});

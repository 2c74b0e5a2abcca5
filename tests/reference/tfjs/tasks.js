// Decoded results of the task nodes (plugins/graph_model/src/tasks/), computed with TF.js's
// pure-JavaScript CPU backend following @vladmandic/human's src/ line for line (file names
// cited per function); written to tests/fixtures/tfjs/task-<name>.json for
// plugins/graph_model/tests/tasks_reference.rs.
//
//   cd tests/reference/tfjs && npm install && node tasks.js
//   TASKS=facemesh node tasks.js                 # only some (model names, comma-separated)
//   node tasks.js --bench [runs]                 # time blazeface and facemesh (the task)
//
// Deliberate differences from human, the same in the Rust nodes (docs/GRAPH_MODELS.md):
// no rounding of positions and scores (human rounds for display), no frame-to-frame caches,
// BlazeFace landmarks decoded to image pixels (offset + anchor), Meet's softmax over its two
// channels, COCO category ids for CenterNet classes.
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
const photos = ['astronaut.png', 'chelsea.png', 'coffee.png', 'camera.png'];

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
      return {
        modelTopology: json.modelTopology, format: json.format, signature: json.signature,
        userDefinedMetadata: json.userDefinedMetadata, weightSpecs,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  };
}
const load = (name) => tfconv.loadGraphModel(fileHandler(path.join(modelsDir, `${name}.json`)));

// [1, H, W, 3] int32 like human's input tensor (a decoded image).
function loadPhoto(name) {
  const png = PNG.sync.read(fs.readFileSync(path.join(root, 'assets', name)));
  const rgb = new Int32Array(png.width * png.height * 3);
  for (let i = 0; i < png.width * png.height; i++) for (let c = 0; c < 3; c++) rgb[i * 3 + c] = png.data[i * 4 + c];
  return tf.tensor4d(rgb, [1, png.height, png.width, 3], 'int32');
}

// ---- src/body/movenet.ts (predict, parseSinglePose) + src/body/movenetfix.ts (padInput,
// rescaleBody, bodyParts) + src/body/movenetcoords.ts (kpt, vertical) + src/util/box.ts (calc)
const vertical = [[13, 5], [14, 6], [15, 13], [16, 14]]; // leftKnee/leftShoulder, ...
async function movenet(model, input, minConfidence = 0.3) {
  const inputSize = model.inputs[0].shape[2];
  const [h, w] = [input.shape[1], input.shape[2]];
  const padding = [[0, 0], [w > h ? Math.trunc((w - h) / 2) : 0, w > h ? Math.trunc((w - h) / 2) : 0],
    [h > w ? Math.trunc((h - w) / 2) : 0, h > w ? Math.trunc((h - w) / 2) : 0], [0, 0]];
  const pad = tf.pad(input, padding);
  const resize = tf.image.resizeBilinear(pad, [inputSize, inputSize]);
  const x = tf.cast(resize, 'int32');
  const res = model.execute(x);
  const kpt = (await res.array())[0][0];
  tf.dispose([pad, resize, x, res]);
  const [hp, wp] = [h + padding[1][0] + padding[1][1], w + padding[2][0] + padding[2][1]];
  const keypoints = kpt.map(([y, xx, score]) => ({
    // parseSinglePose: position = image size * raw; rescaleBody: * (size + pads) / size - pad
    position: [xx * wp - padding[2][0], y * hp - padding[1][0]], score, kept: score > minConfidence,
  }));
  for (const [lower, higher] of vertical) { // bodyParts: remove improbable vertical positions
    if (keypoints[lower].kept && keypoints[higher].kept && keypoints[lower].position[1] < keypoints[higher].position[1]) keypoints[lower].kept = false;
  }
  const kept = keypoints.filter((k) => k.kept);
  if (kept.length === 0) return [];
  const xs = kept.map((k) => k.position[0]);
  const ys = kept.map((k) => k.position[1]);
  const score = kept.reduce((m, k) => (k.score > m ? k.score : m), 0);
  return [{
    class: 1, score, box: [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)],
    keypoints: keypoints.map((k) => [k.position[0], k.position[1], k.kept ? k.score : 0]),
  }];
}

// ---- src/object/centernet.ts (predict, process) + src/object/labels.ts
const cocoIds = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90];
async function centernet(model, input, cfg = { maxDetected: 10, iouThreshold: 0.4, minConfidence: 0.2 }) {
  const inputSize = model.inputs[0].shape[2];
  const outputShape = [input.shape[2], input.shape[1]];
  const resize = tf.image.resizeBilinear(input, [inputSize, inputSize]);
  const res = model.execute(resize, ['tower_0/detections']);
  const detections = await res.array();
  const squeeze = tf.squeeze(res);
  const arr = tf.split(squeeze, 6, 1);
  const stack = tf.stack([arr[1], arr[0], arr[3], arr[2]], 1);
  const boxes = tf.squeeze(stack);
  const scores = tf.squeeze(arr[4]);
  const nmsT = await tf.image.nonMaxSuppressionAsync(boxes, scores, cfg.maxDetected, cfg.iouThreshold, cfg.minConfidence);
  const nms = await nmsT.data();
  tf.dispose([resize, res, squeeze, ...arr, stack, boxes, scores, nmsT]);
  const out = [];
  for (const id of Array.from(nms)) {
    const d = detections[0][id];
    const [x, y] = [d[0] / inputSize, d[1] / inputSize];
    const boxRaw = [x, y, d[2] / inputSize - x, d[3] / inputSize - y];
    const bx = boxRaw[0] * outputShape[0];
    const by = boxRaw[1] * outputShape[1];
    out.push({ class: cocoIds[d[5]], score: d[4], box: [bx, by, bx + boxRaw[2] * outputShape[0], by + boxRaw[3] * outputShape[1]] });
  }
  return out;
}

// ---- src/face/blazeface.ts (getBoxes, decodeBounds) + src/face/facemeshutil.ts
// (generateAnchors, scaleBoxCoordinates)
function generateAnchors(inputSize) {
  const spec = { strides: [inputSize / 16, inputSize / 8], anchors: [2, 6] };
  const anchors = [];
  for (let i = 0; i < spec.strides.length; i++) {
    const stride = spec.strides[i];
    const gridRows = Math.floor((inputSize + stride - 1) / stride);
    const gridCols = Math.floor((inputSize + stride - 1) / stride);
    for (let gridY = 0; gridY < gridRows; gridY++) {
      const anchorY = stride * (gridY + 0.5);
      for (let gridX = 0; gridX < gridCols; gridX++) {
        const anchorX = stride * (gridX + 0.5);
        for (let n = 0; n < spec.anchors[i]; n++) anchors.push([anchorX, anchorY]);
      }
    }
  }
  return anchors;
}
async function blazeface(model, input, cfg = { maxDetected: 10, iouThreshold: 0.1, minConfidence: 0.2 }) {
  const inputSize = model.inputs[0].shape[2];
  const anchorsData = generateAnchors(inputSize);
  const anchors = tf.tensor2d(anchorsData);
  const inputSizeT = tf.scalar(inputSize, 'int32');
  const t = {};
  t.resized = tf.image.resizeBilinear(input, [inputSize, inputSize]);
  t.div = tf.div(t.resized, tf.scalar(127.5));
  t.normalized = tf.sub(t.div, tf.scalar(1)); // constants.tf1 (human <= 3.2.1: tf05, a bug)
  const res = model.execute(t.normalized);
  const sorted = res.sort((a, b) => a.size - b.size);
  t.concat384 = tf.concat([sorted[0], sorted[2]], 2);
  t.concat512 = tf.concat([sorted[1], sorted[3]], 2);
  t.concat = tf.concat([t.concat512, t.concat384], 1);
  t.batch = tf.squeeze(t.concat, 0);
  tf.dispose(res);
  // decodeBounds
  t.boxStarts = tf.slice(t.batch, [0, 1], [-1, 2]);
  t.centers = tf.add(t.boxStarts, anchors);
  t.boxSizes = tf.slice(t.batch, [0, 3], [-1, 2]);
  t.boxSizesNormalized = tf.div(t.boxSizes, inputSizeT);
  t.centersNormalized = tf.div(t.centers, inputSizeT);
  t.halfBoxSize = tf.div(t.boxSizesNormalized, tf.scalar(2));
  t.starts = tf.sub(t.centersNormalized, t.halfBoxSize);
  t.ends = tf.add(t.centersNormalized, t.halfBoxSize);
  t.startNormalized = tf.mul(t.starts, inputSizeT);
  t.endNormalized = tf.mul(t.ends, inputSizeT);
  t.boxes = tf.concat2d([t.startNormalized, t.endNormalized], 1);
  t.logits = tf.slice(t.batch, [0, 0], [-1, 1]);
  t.sigmoid = tf.sigmoid(t.logits);
  t.scores = tf.squeeze(t.sigmoid);
  t.nms = await tf.image.nonMaxSuppressionAsync(t.boxes, t.scores, cfg.maxDetected, cfg.iouThreshold, cfg.minConfidence);
  const nms = await t.nms.array();
  const scores = await t.scores.data();
  const boxesData = await t.boxes.array();
  const batch = await t.batch.array();
  Object.keys(t).forEach((k) => tf.dispose(t[k]));
  tf.dispose([anchors, inputSizeT]);
  const factor = [input.shape[2] / inputSize, input.shape[1] / inputSize];
  const out = [];
  for (let i = 0; i < nms.length; i++) {
    const confidence = scores[nms[i]];
    if (confidence > cfg.minConfidence) {
      const p = boxesData[nms[i]];
      const a = anchorsData[nms[i]];
      const lm = batch[nms[i]].slice(5); // tf.slice(batch, [nms[i], keypointsCount - 1], ...)
      const landmarks = [];
      for (let k = 0; k < 6; k++) landmarks.push([(lm[2 * k] + a[0]) * factor[0], (lm[2 * k + 1] + a[1]) * factor[1]]);
      // scaleBoxCoordinates
      out.push({ class: 91, score: confidence, box: [p[0] * factor[0], p[1] * factor[1], p[2] * factor[0], p[3] * factor[1]], landmarks });
    }
  }
  return out;
}

// ---- src/segmentation/selfie.ts and meet.ts (predict)
async function segmentation(model, input, threshold = 0.5) {
  const t = {};
  t.resize = tf.image.resizeBilinear(input, [model.inputs[0].shape[1], model.inputs[0].shape[2]], false);
  t.norm = tf.div(t.resize, tf.scalar(255));
  t.res = model.execute(t.norm);
  t.squeeze = tf.squeeze(t.res, [0]);
  if (t.squeeze.shape[2] === 2) { // meet: softmax over (background, person)
    t.softmax = tf.softmax(t.squeeze, -1);
    [t.bg, t.fg] = tf.unstack(t.softmax, 2);
    t.prob = tf.expandDims(t.fg, 2);
  } else {
    t.prob = t.squeeze;
  }
  t.alpha = tf.image.resizeBilinear(t.prob, [input.shape[1], input.shape[2]]);
  const prob = await t.alpha.data();
  Object.keys(t).forEach((k) => tf.dispose(t[k]));
  const [h, w] = [input.shape[1], input.shape[2]];
  let count = 0; let sum = 0; let x1 = Infinity; let y1 = Infinity; let x2 = -Infinity; let y2 = -Infinity;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = prob[y * w + x];
      if (p > threshold) {
        count++; sum += p;
        x1 = Math.min(x1, x); y1 = Math.min(y1, y); x2 = Math.max(x2, x + 1); y2 = Math.max(y2, y + 1);
      }
    }
  }
  const k = 256;
  const indices = [];
  for (let i = 0; i < k; i++) indices.push(Math.floor((i * h * w) / k));
  return {
    height: h, width: w, person_pixels: count,
    instances: count ? [{ class: 1, score: sum / count, box: [x1, y1, x2, y2] }] : [],
    indices, probabilities: indices.map((i) => prob[i]),
  };
}

// ---- src/face/facemesh.ts (predict) + src/face/facemeshutil.ts (getBoxSize, getBoxCenter,
// enlargeBox, squarifyBox, cutAndResize, transformRawCoords, findFaceCenter,
// calculateFaceBox, clampBox), on the faces of blazeface() above, with the tail of
// src/face/blazeface.ts getBoxes (enlargeBox by config.face.detector.scale = 1.4, squarifyBox,
// the minSize check). human's defaults: rotation correction off (face.detector.rotation =
// false), no iris or attention refinement, minConfidence 0.2 for the mesh's face score.
// Deliberate differences (as in the Rust node): no Math.trunc of the mesh and no rounding of
// the face score to 2 decimals; the box is clamped to the image but not truncated.
const getBoxSize = (box) => [Math.abs(box.endPoint[0] - box.startPoint[0]), Math.abs(box.endPoint[1] - box.startPoint[1])];
const getBoxCenter = (box) => [box.startPoint[0] + (box.endPoint[0] - box.startPoint[0]) / 2, box.startPoint[1] + (box.endPoint[1] - box.startPoint[1]) / 2, 1];
function enlargeBox(box, factor) {
  const center = getBoxCenter(box);
  const size = getBoxSize(box);
  const halfSize = [factor * size[0] / 2, factor * size[1] / 2];
  return { startPoint: [center[0] - halfSize[0], center[1] - halfSize[1]], endPoint: [center[0] + halfSize[0], center[1] + halfSize[1]], size };
}
function squarifyBox(box) {
  const centers = getBoxCenter(box);
  const size = getBoxSize(box);
  const halfSize = Math.max(...size) / 2;
  return {
    startPoint: [Math.round(centers[0] - halfSize), Math.round(centers[1] - halfSize)],
    endPoint: [Math.round(centers[0] + halfSize), Math.round(centers[1] + halfSize)],
    size: [Math.round(size[0]), Math.round(size[1])],
  };
}
function cutAndResize(box, image, cropSize) {
  const h = image.shape[1];
  const w = image.shape[2];
  const cutBox = [box.startPoint[1] / h, box.startPoint[0] / w, box.endPoint[1] / h, box.endPoint[0] / w];
  const crop = tf.image.cropAndResize(image, [cutBox], [0], cropSize);
  const norm = tf.div(crop, tf.scalar(255));
  tf.dispose(crop);
  return norm;
}
function transformRawCoords(coordsRaw, box, inputSize) { // angle 0: the fixed rotation matrix
  const boxSize = getBoxSize(box);
  const boxCenter = getBoxCenter(box);
  return coordsRaw.map((coord) => [
    (boxSize[0] / inputSize) * (coord[0] - (inputSize / 2)) + boxCenter[0],
    (boxSize[1] / inputSize) * (coord[1] - (inputSize / 2)) + boxCenter[1],
    coord[2] || 0,
  ]);
}
function calculateFaceBox(mesh, previousBox) {
  const x = mesh.map((m) => m[0]);
  const y = mesh.map((m) => m[1]);
  const center = [Math.min(...x) + (Math.max(...x) - Math.min(...x)) / 2, Math.min(...y) + (Math.max(...y) - Math.min(...y)) / 2];
  const boxSize = getBoxSize(previousBox);
  return { startPoint: [center[0] - boxSize[0] / 2, center[1] - boxSize[1] / 2], endPoint: [center[0] + boxSize[0] / 2, center[1] + boxSize[1] / 2] };
}
const round4 = (v) => Math.round(v * 1e4) / 1e4;
async function facemesh(models, input) {
  return meshFaces(models.facemesh, input, await blazeface(models.blazeface, input));
}
async function meshFaces(model, input, detections, cfg = { scale: 1.4, minConfidence: 0.2, minSize: 0 }) {
  const inputSize = model.inputs[0].shape[2];
  const image = tf.cast(input, 'float32'); // human's input tensor is float32
  const [h, w] = [input.shape[1], input.shape[2]];
  const faces = [];
  const instances = [];
  for (const d of detections) {
    const scaled = { startPoint: [d.box[0], d.box[1]], endPoint: [d.box[2], d.box[3]] };
    const box = squarifyBox(enlargeBox(scaled, cfg.scale));
    const face = { detection: { box: d.box, score: d.score }, square: [...box.startPoint, ...box.endPoint] };
    faces.push(face);
    if (!(box.size[0] > cfg.minSize && box.size[1] > cfg.minSize)) continue;
    const crop = cutAndResize(box, image, [inputSize, inputSize]);
    const results = model.execute(crop);
    const confidenceT = results.find((t) => t.shape[t.shape.length - 1] === 1);
    const meshT = results.find((t) => t.shape[t.shape.length - 1] === 1404);
    face.crop = summary(crop);
    face.mesh_raw = summary(meshT);
    const confidence = (await confidenceT.data())[0];
    face.confidence = confidence;
    const rawCoords = await tf.reshape(meshT, [-1, 3]).array();
    tf.dispose([crop, ...results]);
    if (!(confidence > cfg.minConfidence)) continue;
    const mesh = transformRawCoords(rawCoords, box, inputSize);
    const fb = calculateFaceBox(mesh, box);
    instances.push({
      class: 91, score: confidence,
      box: [Math.max(0, fb.startPoint[0]), Math.max(0, fb.startPoint[1]), Math.min(w, fb.endPoint[0]), Math.min(h, fb.endPoint[1])],
      mesh: mesh.map((p) => p.map(round4)),
    });
  }
  tf.dispose(image);
  return { faces, instances };
}

// The same summary as reference.js: shape, min, max, mean and 256 values at fixed indices.
function summary(t) {
  const v = t.dataSync();
  const n = v.length;
  let min = Infinity; let max = -Infinity; let sum = 0;
  for (let i = 0; i < n; i++) { const x = v[i]; if (x < min) min = x; if (x > max) max = x; sum += x; }
  const k = Math.min(n, 256);
  const indices = [];
  for (let i = 0; i < k; i++) indices.push(Math.floor((i * n) / k));
  return { dtype: t.dtype, shape: t.shape, n, min, max, mean: sum / n, indices, values: indices.map((i) => v[i]) };
}

const tasks = [
  { task: 'movenet', model: 'movenet-lightning', run: movenet },
  { task: 'movenet', model: 'movenet-thunder', run: movenet },
  { task: 'centernet', model: 'centernet', run: centernet },
  { task: 'blazeface', model: 'blazeface', run: blazeface },
  { task: 'person_segmentation', model: 'selfie', run: segmentation },
  { task: 'person_segmentation', model: 'meet', run: segmentation },
  { task: 'facemesh', model: 'facemesh', models: ['blazeface', 'facemesh'], run: facemesh },
];

// `node tasks.js --bench [runs]`: median ms of the face pipeline on the first photo
// (blazeface, then facemesh on its faces: crop + model + decode), one JSON line per stage;
// scripts/bench-graph-models.sh compares them with the Rust nodes (examples/bench_tasks.rs).
async function bench(runs) {
  const input = loadPhoto(photos[0]);
  const models = { blazeface: await load('blazeface'), facemesh: await load('facemesh') };
  const time = async (f) => {
    await f(); // warm-up
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t0 = process.hrtime.bigint();
      await f();
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((a, b) => a - b);
    return { median_ms: times[Math.floor(runs / 2)], min_ms: times[0] };
  };
  const detections = await blazeface(models.blazeface, input);
  const faces = (await meshFaces(models.facemesh, input, detections)).faces.length;
  console.log(JSON.stringify({ task: 'blazeface', photo: photos[0], runs, ...await time(() => blazeface(models.blazeface, input)) }));
  console.log(JSON.stringify({ task: 'facemesh', photo: photos[0], faces, runs, ...await time(() => meshFaces(models.facemesh, input, detections)) }));
}

async function main() {
  await tf.setBackend('cpu');
  await tf.ready();
  if (process.argv.includes('--bench')) {
    await bench(Number(process.argv[process.argv.indexOf('--bench') + 1]) || 5);
    return;
  }
  fs.mkdirSync(outDir, { recursive: true });
  const images = photos.map((p) => ({ name: p, t: loadPhoto(p) }));
  const only = process.env.TASKS ? process.env.TASKS.split(',') : null; // e.g. TASKS=facemesh
  for (const { task, model: name, models: names, run } of tasks) {
    if (only && !only.includes(name)) continue;
    let model;
    if (names) { // several models: { name: model }
      model = {};
      for (const n of names) model[n] = await load(n);
      model.dispose = () => Object.values(model).forEach((m) => m.dispose && m.dispose());
    } else {
      model = await load(name);
    }
    const record = { task, model: name, photos: [] };
    for (const img of images) {
      const r = await run(model, img.t);
      record.photos.push(Array.isArray(r) ? { photo: img.name, instances: r } : { photo: img.name, ...r });
    }
    fs.writeFileSync(path.join(outDir, `task-${name}.json`), JSON.stringify(record));
    console.log(`${task} (${name}): ${record.photos.map((p) => `${p.photo} ${p.instances.length}`).join(', ')}`);
    model.dispose();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });

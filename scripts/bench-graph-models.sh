#!/usr/bin/env bash
# Per-model latency of the graph_model CPU executor against the TF.js CPU backend (pure JS)
# and the TF.js WASM backend (XNNPACK, SIMD), same models, same photo (assets/astronaut.png),
# same pre-processing, in one run; ours with the default thread pool (all cores) and with
# RAYON_NUM_THREADS=1, since TF.js WASM runs single-threaded in Node (it reports no
# multi-threading there; WASM_THREADS sets what it is asked for). Then the face pipeline's task
# nodes (blazeface, facemesh on its faces) against tasks.js's port.
#   scripts/bench-graph-models.sh [runs]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${1:-5}"
cd "$ROOT"
scripts/fetch-models.sh >/dev/null
command -v node >/dev/null || { echo "bench-graph-models: node is required for the TF.js side" >&2; exit 1; }
(cd tests/reference/tfjs && { [ -d node_modules/@tensorflow/tfjs-backend-wasm ] || npm install --no-audit --no-fund >/dev/null; })
cargo build --release -q -p plugin-graph-model --example bench --example bench_tasks
ours="$(target/release/examples/bench "$RUNS")"
ours1="$(RAYON_NUM_THREADS=1 target/release/examples/bench "$RUNS")"
tfjs="$(cd tests/reference/tfjs && node reference.js --bench "$RUNS" 2>/dev/null | grep '^{')"
wasm_err="$(mktemp)"; trap 'rm -f "$wasm_err"' EXIT
wasm="$(cd tests/reference/tfjs && node reference.js --backend wasm --threads "${WASM_THREADS:-$(nproc)}" --bench "$RUNS" 2>"$wasm_err" | grep '^{' || true)"
echo "threads: graph_model $(nproc) (rayon default) and 1; TF.js WASM $(grep -o '{.*}' "$wasm_err" | head -1)"
echo
OURS="$ours" OURS1="$ours1" TFJS="$tfjs" WASM="$wasm" node -e '
const parse = (s) => Object.fromEntries(s.trim().split("\n").filter((l) => l).map((l) => JSON.parse(l)).map((r) => [r.model, r]));
const o = parse(process.env.OURS), o1 = parse(process.env.OURS1), t = parse(process.env.TFJS), w = parse(process.env.WASM);
const ms = (r) => (r && r.median_ms !== undefined ? r.median_ms : NaN);
const f = (x) => (Number.isNaN(x) ? "n/a" : x.toFixed(1));
console.log("| model | graph_model (ms) | graph_model 1 thread (ms) | TF.js CPU (ms) | TF.js WASM (ms) | speed-up vs CPU | speed-up vs WASM | vs WASM, 1 thread both |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const m of Object.keys(o)) {
  const a = ms(o[m]), a1 = ms(o1[m]), b = ms(t[m]), c = ms(w[m]);
  console.log(`| ${m} | ${f(a)} | ${f(a1)} | ${f(b)} | ${f(c)} | ${f(b / a)}x | ${f(c / a)}x | ${f(c / a1)}x |`);
}
for (const m of Object.keys(w)) if (w[m].error) console.log(`\nTF.js WASM failed on ${m}: ${w[m].error}`);'

ours="$(target/release/examples/bench_tasks "$RUNS")"
tfjs="$(cd tests/reference/tfjs && node tasks.js --bench "$RUNS" 2>/dev/null | grep '^{')"
echo
OURS="$ours" TFJS="$tfjs" node -e '
const parse = (s) => Object.fromEntries(s.trim().split("\n").map((l) => JSON.parse(l)).map((r) => [r.task, r]));
const o = parse(process.env.OURS), t = parse(process.env.TFJS);
console.log("| task node (astronaut.png) | ours (ms, median) | TF.js CPU port (ms, median) | speed-up |");
console.log("|---|---:|---:|---:|");
for (const m of Object.keys(o)) {
  const a = o[m].median_ms, b = t[m] ? t[m].median_ms : NaN;
  const what = o[m].faces === undefined ? m : `${m} (${o[m].faces} face)`;
  console.log(`| ${what} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(b / a).toFixed(1)}x |`);
}'

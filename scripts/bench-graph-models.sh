#!/usr/bin/env bash
# Per-model latency of the graph_model CPU executor against the TF.js CPU backend (pure JS),
# same models, same photo (assets/astronaut.png), same pre-processing, in one run; then the
# face pipeline's task nodes (blazeface, facemesh on its faces) against tasks.js's port.
#   scripts/bench-graph-models.sh [runs]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${1:-5}"
cd "$ROOT"
scripts/fetch-models.sh >/dev/null
command -v node >/dev/null || { echo "bench-graph-models: node is required for the TF.js side" >&2; exit 1; }
(cd tests/reference/tfjs && { [ -d node_modules ] || npm install --no-audit --no-fund >/dev/null; })
cargo build --release -q -p plugin-graph-model --example bench --example bench_tasks
ours="$(target/release/examples/bench "$RUNS")"
tfjs="$(cd tests/reference/tfjs && node reference.js --bench "$RUNS" 2>/dev/null | grep '^{')"
OURS="$ours" TFJS="$tfjs" node -e '
const parse = (s) => Object.fromEntries(s.trim().split("\n").map((l) => JSON.parse(l)).map((r) => [r.model, r]));
const o = parse(process.env.OURS), t = parse(process.env.TFJS);
console.log("| model | graph_model (ms, median) | TF.js CPU (ms, median) | speed-up |");
console.log("|---|---:|---:|---:|");
for (const m of Object.keys(o)) {
  const a = o[m].median_ms, b = t[m] ? t[m].median_ms : NaN;
  console.log(`| ${m} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(b / a).toFixed(1)}x |`);
}'

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

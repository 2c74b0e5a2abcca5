//! Engine overhead benchmark (not a test): `cargo bench -p engine --bench pipeline`.
//!
//! 1. Per-frame engine overhead: a chain of 10 pass-through nodes between a synthetic source
//!    and a null sink (11 edges), 100k frames. Reported as wall time per frame and per frame
//!    per edge. The nodes do no work, so everything measured is the engine: queues, joins,
//!    output checks, thread hand-offs.
//! 2. Pipelining: 3 stages that each sleep for T. Sequential execution would give 1/(3T)
//!    frames per second; a pipelined engine approaches 1/T.
//!
//! Each case runs `REPEATS` times (env BENCH_REPEATS, default 5); medians are printed.

use std::path::Path;
use std::time::Duration;

use engine::graph;
use engine::registry::Registry;
use engine::runtime::{self, RunOptions};

fn run_pipeline(dir: &Path, name: &str, text: &str) -> Duration {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write pipeline");
    let mut registry = Registry::builtin();
    let pipeline = graph::load(&path, &[], &mut registry).unwrap_or_else(|e| panic!("{e}"));
    let nodes = runtime::create_nodes(&pipeline).unwrap_or_else(|e| panic!("{e}"));
    let report = runtime::run(&pipeline, nodes, RunOptions::default());
    assert!(report.error.is_none(), "{:?}", report.error);
    report.wall
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn chain(n: usize, frames: usize, queue: usize) -> String {
    let mut s = format!(
        "[pipeline]\nqueue = {queue}\n[nodes.src]\nplugin = \"synthetic_source\"\nframes = {frames}\nwidth = 1\nheight = 1\n"
    );
    let mut prev = "src.image".to_string();
    for i in 0..n {
        s.push_str(&format!(
            "[nodes.n{i}]\nplugin = \"identity\"\ninputs = {{ in = \"{prev}\" }}\n"
        ));
        prev = format!("n{i}.out");
    }
    s.push_str(&format!(
        "[nodes.sink]\nplugin = \"null_sink\"\ninputs = {{ in = \"{prev}\" }}\n"
    ));
    s
}

fn stages(t_ms: f64, frames: usize) -> String {
    let mut s = format!(
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = {frames}\nwidth = 1\nheight = 1\n"
    );
    let mut prev = "src.image".to_string();
    for i in 0..3 {
        s.push_str(&format!("[nodes.s{i}]\nplugin = \"identity\"\ninputs = {{ in = \"{prev}\" }}\ndelay_ms = {t_ms}\n"));
        prev = format!("s{i}.out");
    }
    s.push_str(&format!(
        "[nodes.sink]\nplugin = \"null_sink\"\ninputs = {{ in = \"{prev}\" }}\n"
    ));
    s
}

fn main() {
    let repeats: usize = std::env::var("BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("engine-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!(
        "engine overhead benchmark ({repeats} repeats, medians; {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| case | frames | edges | wall (s) | per frame (µs) | per frame per edge (µs) |");
    println!("|---|---|---|---|---|---|");
    let frames = 100_000;
    for (nodes, queue) in [(10, 4), (10, 64), (1, 4)] {
        let edges = nodes + 1;
        let walls: Vec<f64> = (0..repeats)
            .map(|_| run_pipeline(&dir, "chain", &chain(nodes, frames, queue)).as_secs_f64())
            .collect();
        let wall = median(walls);
        let per_frame = wall / frames as f64 * 1e6;
        println!(
            "| chain of {nodes} pass-through nodes, queue {queue} | {frames} | {edges} | {wall:.3} | {per_frame:.2} | {:.2} |",
            per_frame / edges as f64
        );
    }
    println!();
    println!("| 3 stages sleeping T each | frames | throughput (frames/s) | 1/T | 1/(3T) | throughput·T |");
    println!("|---|---|---|---|---|---|");
    for t_ms in [1.0, 5.0] {
        let frames = (2000.0 / t_ms) as usize;
        let walls: Vec<f64> = (0..repeats)
            .map(|_| run_pipeline(&dir, "stages", &stages(t_ms, frames)).as_secs_f64())
            .collect();
        let fps = frames as f64 / median(walls);
        println!(
            "| T = {t_ms} ms | {frames} | {fps:.1} | {:.1} | {:.1} | {:.2} |",
            1000.0 / t_ms,
            1000.0 / (3.0 * t_ms),
            fps * t_ms / 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

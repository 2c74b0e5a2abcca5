//! Integration tests: they drive the real `engine` binary on valid and invalid pipelines.
//!
//! The plugin tests need `target/<profile>/libcustom_head.so`, which `cargo build --workspace`
//! (part of the README's test command) builds, and a C compiler (`cc`) for the C plugin.

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn engine_bin() -> &'static str {
    env!("CARGO_BIN_EXE_engine")
}

/// A fresh directory for one test.
fn scratch(name: &str) -> Scratch {
    Scratch::new(&format!("engine-cli-{name}"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

fn engine(dir: &Path, args: &[&str]) -> Output {
    Command::new(engine_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run engine")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Reads a jsonl file written by json_sink.
fn records(path: &Path) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).expect("valid json line"))
        .collect()
}

fn frame_of(r: &serde_json::Value) -> u64 {
    r["frame"].as_u64().expect("frame index")
}

/// x of each instance's bbox: synthetic_source puts the frame index there.
fn box_xs(r: &serde_json::Value) -> Vec<f64> {
    r["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["bbox"][0].as_f64().expect("bbox x"))
        .collect()
}

fn custom_head_lib() -> PathBuf {
    let dir = Path::new(engine_bin()).parent().expect("target dir");
    let lib = dir.join(format!(
        "{}custom_head{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        lib.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`), as the README's test command does",
        lib.display()
    );
    lib
}

/// Compiles the example C plugin into `dir`, with extra compiler flags.
fn c_plugin(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let out = dir.join(format!("lib{name}.so"));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror"])
        .args(flags)
        .arg("-I")
        .arg(root.join("plugins/sdk/include"))
        .arg(root.join("plugins/examples/c_plugin/score_scale.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("a C compiler (cc) is needed for the C plugin tests");
    assert!(status.success(), "compiling the C plugin failed");
    out
}

// ---------------------------------------------------------------------------------------
// Running pipelines
// ---------------------------------------------------------------------------------------

#[test]
fn linear_pipeline_keeps_every_frame_in_order() {
    let dir = scratch("linear");
    let p = write(
        &dir,
        "p.toml",
        r#"
[pipeline]
name = "linear"
queue = 2

[nodes.src]
plugin = "synthetic_source"
frames = 60

[nodes.slow]
plugin = "identity"
inputs = { in = "src.instances" }
jitter_ms = 2.0
seed = 7

[nodes.out]
plugin = "json_sink"
inputs = { instances = "slow.out" }
path = "out/dets.jsonl"
"#,
    );
    let o = engine(&dir, &["run", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let recs = records(&dir.join("out/dets.jsonl"));
    assert_eq!(recs.len(), 60);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(frame_of(r), i as u64);
        assert_eq!(box_xs(r), vec![i as f64]);
    }
    // The per-node table.
    let table = stdout(&o);
    assert!(
        table.contains("p50 ms") && table.contains("wait in ms"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("slow ") && l.contains(" 60 ")),
        "{table}"
    );
    assert!(stderr(&o).contains("device cpu"), "{}", stderr(&o));
}

#[test]
fn fan_out_and_fan_in_join_values_of_the_same_frame_under_random_delays() {
    let dir = scratch("fan");
    let p = write(
        &dir,
        "p.toml",
        r#"
[pipeline]
queue = 3

[nodes.src]
plugin = "synthetic_source"
frames = 80
instances = 2

[nodes.a]
plugin = "identity"
inputs = { in = "src.instances" }
jitter_ms = 3.0
seed = 1

[nodes.b]
plugin = "identity"
inputs = { in = "src.instances" }
jitter_ms = 3.0
seed = 2

[nodes.c]
plugin = "identity"
inputs = { in = "b.out" }
jitter_ms = 1.0
seed = 3

[nodes.merged]
plugin = "concat_instances"
inputs = { first = "a.out", second = "c.out" }

[nodes.out]
plugin = "json_sink"
inputs = { instances = "merged.instances" }
path = "merged.jsonl"

[nodes.direct]
plugin = "json_sink"
inputs = { instances = "src.instances" }
path = "direct.jsonl"
"#,
    );
    let o = engine(&dir, &["run", "--quiet", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let merged = records(&dir.join("merged.jsonl"));
    let direct = records(&dir.join("direct.jsonl"));
    assert_eq!(merged.len(), 80);
    assert_eq!(direct.len(), 80);
    for (i, r) in merged.iter().enumerate() {
        assert_eq!(frame_of(r), i as u64);
        // Two instances from each branch, all of frame i: a mismatched join would mix frames.
        assert_eq!(box_xs(r), vec![i as f64; 4], "frame {i}");
    }
}

#[test]
fn drop_policy_sheds_frames_in_order_and_reports_the_drops() {
    let dir = scratch("drop");
    let p = write(
        &dir,
        "p.toml",
        r#"
[nodes.src]
plugin = "synthetic_source"
frames = 200

[nodes.slow]
plugin = "identity"
inputs = { in = { from = "src.instances", capacity = 1, policy = "drop_newest" } }
delay_ms = 1.0

[nodes.out]
plugin = "json_sink"
inputs = { instances = "slow.out" }
path = "o.jsonl"
"#,
    );
    let o = engine(&dir, &["run", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let recs = records(&dir.join("o.jsonl"));
    assert!(
        !recs.is_empty() && recs.len() < 200,
        "{} records",
        recs.len()
    );
    let frames: Vec<u64> = recs.iter().map(frame_of).collect();
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
    for r in &recs {
        assert_eq!(box_xs(r), vec![frame_of(r) as f64]);
    }
    let dropped = 200 - recs.len();
    assert!(
        stdout(&o).contains(&format!(
            "edge src.instances -> slow.in dropped {dropped} of 200 frames (policy drop_newest"
        )),
        "{}",
        stdout(&o)
    );
}

/// drop_oldest drops frames it already sent: the count is of the 200 frames, not of 200 plus
/// the drops.
#[test]
fn drop_oldest_counts_drops_among_the_frames() {
    let dir = scratch("drop-oldest");
    let p = write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 200\n[nodes.slow]\nplugin = \"identity\"\ninputs = { in = { from = \"src.instances\", capacity = 2, policy = \"drop_oldest\" } }\ndelay_ms = 1.0\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"slow.out\" }\npath = \"o.jsonl\"\n",
    );
    let o = engine(&dir, &["run", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let kept = records(&dir.join("o.jsonl")).len();
    assert!(kept < 200, "{kept} records");
    assert!(
        stdout(&o).contains(&format!(
            "edge src.instances -> slow.in dropped {} of 200 frames (policy drop_oldest",
            200 - kept
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_failing_source_stops_the_pipeline_cleanly_and_sinks_keep_what_they_had() {
    let dir = scratch("corrupt");
    std::fs::create_dir_all(dir.join("imgs")).unwrap();
    // A valid 2x1 PNG, then a file that claims to be a JPEG but is cut short, then another PNG.
    let png = minimal_png();
    std::fs::write(dir.join("imgs/a.png"), &png).unwrap();
    std::fs::write(
        dir.join("imgs/b.jpg"),
        [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F'],
    )
    .unwrap();
    std::fs::write(dir.join("imgs/c.png"), &png).unwrap();
    let pipeline = |on_error: &str| {
        format!(
            r#"
[nodes.frames]
plugin = "image_source"
path = "imgs"
on_error = "{on_error}"

[nodes.none]
plugin = "score_free"
"#
        )
    };
    // First make sure an unknown plugin is reported with a suggestion, then use a real graph.
    let p = write(&dir, "bad.toml", &pipeline("stop"));
    let o = engine(&dir, &["check", p.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("unknown plugin \"score_free\""),
        "{}",
        stderr(&o)
    );

    let graph = |on_error: &str| {
        format!(
            r#"
[nodes.frames]
plugin = "image_source"
path = "imgs"
on_error = "{on_error}"

[nodes.det]
plugin = "synthetic_source"
frames = 3

[nodes.overlay]
plugin = "image_sink"
inputs = {{ image = "frames.image", instances = "det.instances" }}
dir = "overlays"

[nodes.log]
plugin = "json_sink"
inputs = {{ instances = "det.instances" }}
path = "log.jsonl"
"#
        )
    };
    let p = write(&dir, "stop.toml", &graph("stop"));
    let o = engine(&dir, &["run", p.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("node \"frames\" (plugin image_source) failed on frame 1")
            && err.contains("b.jpg"),
        "{err}"
    );
    assert!(
        dir.join("overlays/000000.png").exists(),
        "the frame before the failure was written"
    );
    assert!(!dir.join("overlays/000001.png").exists());

    let p = write(&dir, "skip.toml", &graph("skip"));
    let _ = std::fs::remove_dir_all(dir.join("overlays"));
    let o = engine(&dir, &["run", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped frame 1"), "{}", stderr(&o));
    assert!(dir.join("overlays/000000.png").exists());
    assert!(
        !dir.join("overlays/000001.png").exists(),
        "frame 1 is absent: no overlay"
    );
    assert!(dir.join("overlays/000002.png").exists());
    assert_eq!(records(&dir.join("log.jsonl")).len(), 3);
}

/// A 2x1 RGB PNG (made with zlib's stored blocks, so no encoder is needed here).
fn minimal_png() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    let raw = [0u8, 255, 0, 0, 0, 0, 255]; // filter byte + 2 RGB pixels
    let mut adler_a = 1u32;
    let mut adler_b = 0u32;
    for &b in &raw {
        adler_a = (adler_a + b as u32) % 65521;
        adler_b = (adler_b + adler_a) % 65521;
    }
    let mut z = vec![
        0x78,
        0x01,
        0x01,
        raw.len() as u8,
        0,
        !(raw.len() as u8),
        0xFF,
    ];
    z.extend(raw);
    z.extend(((adler_b << 16) | adler_a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &[0, 0, 0, 2, 0, 0, 0, 1, 8, 2, 0, 0, 0]);
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn chrome_trace_is_written() {
    let dir = scratch("trace");
    let p = write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 5\n[nodes.out]\nplugin = \"null_sink\"\ninputs = { in = \"src.image\" }\n",
    );
    let o = engine(
        &dir,
        &[
            "run",
            "--quiet",
            "--trace",
            "trace.json",
            p.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = std::fs::read_to_string(dir.join("trace.json")).expect("trace written");
    let trace: serde_json::Value = serde_json::from_str(&text).expect("trace is JSON");
    let events = trace.as_array().expect("a JSON array of events");
    let process_spans = events
        .iter()
        .filter(|e| e["name"] == "process" && e["ph"] == "B")
        .count();
    assert_eq!(process_spans, 5, "one span per frame of the sink");
    // A trace path that cannot be created (a directory, a file under /proc): an error that
    // names it and exits 2, not a panic.
    std::fs::create_dir_all(dir.join("adir")).unwrap();
    for bad in ["adir", "/proc/engine-trace.json"] {
        let o = engine(
            &dir,
            &["run", "--quiet", "--trace", bad, p.to_str().unwrap()],
        );
        assert_eq!(code(&o), 2, "{bad}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("error: cannot write trace \"{bad}\""))
                && !stderr(&o).contains("panicked"),
            "{}",
            stderr(&o)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Invalid pipelines: exit code 2 and messages that point at file:line:column
// ---------------------------------------------------------------------------------------

fn check_fails(name: &str, text: &str) -> String {
    let dir = scratch(name);
    let p = write(&dir, "p.toml", text);
    let o = engine(&dir, &["check", "p.toml"]);
    assert_eq!(
        code(&o),
        2,
        "expected an invalid pipeline; stdout: {}",
        stdout(&o)
    );
    let _ = p;
    stderr(&o)
}

const SRC_SINK: &str = "[nodes.src]\nplugin = \"synthetic_source\"\n\n[nodes.out]\nplugin = \"json_sink\"\npath = \"o.jsonl\"\n";

#[test]
fn toml_syntax_error_names_line_and_column() {
    let err = check_fails(
        "syntax",
        "[nodes.src]\nplugin = \"synthetic_source\nframes = 3\n",
    );
    assert!(err.contains("error: p.toml:2:"), "{err}");
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn unknown_node_in_inputs_suggests_the_closest_name() {
    let err = check_fails(
        "unknown-node",
        &format!("{SRC_SINK}inputs = {{ instances = \"scr.instances\" }}\n"),
    );
    assert!(
        err.contains("error: p.toml:7:24: input \"instances\" of node \"out\" refers to unknown node \"scr\""),
        "{err}"
    );
    assert!(err.contains("did you mean \"src\"?"), "{err}");
    assert!(
        err.contains("7 | inputs = { instances = \"scr.instances\" }"),
        "{err}"
    );
}

#[test]
fn unknown_ports_suggest_the_closest_port() {
    let err = check_fails(
        "unknown-port",
        &format!("{SRC_SINK}inputs = {{ instances = \"src.instance\" }}\n"),
    );
    assert!(
        err.contains("node \"src\" (plugin synthetic_source) has no output port \"instance\""),
        "{err}"
    );
    assert!(err.contains("edge src.instance -> out.instances"), "{err}");
    assert!(err.contains("did you mean \"instances\"?"), "{err}");
    let err = check_fails(
        "unknown-in-port",
        &format!("{SRC_SINK}inputs = {{ instance = \"src.instances\" }}\n"),
    );
    assert!(
        err.contains("p.toml:7:12: node \"out\" (plugin json_sink) has no input port \"instance\""),
        "{err}"
    );
    assert!(err.contains("did you mean \"instances\"?"), "{err}");
}

#[test]
fn kind_mismatch_names_the_edge() {
    let err = check_fails(
        "kind",
        &format!("{SRC_SINK}inputs = {{ instances = \"src.image\" }}\n"),
    );
    assert!(
        err.contains("p.toml:7:24: kind mismatch on edge src.image -> out.instances: the output produces image, the input expects instances"),
        "{err}"
    );
}

#[test]
fn unconnected_required_input_and_missing_parameter_are_reported_together() {
    let err = check_fails(
        "unconnected",
        "[nodes.src]\nplugin = \"synthetic_source\"\n[nodes.out]\nplugin = \"json_sink\"\n",
    );
    assert!(
        err.contains("p.toml:3:8: required input \"instances\""),
        "{err}"
    );
    assert!(
        err.contains("is missing required parameter \"path\""),
        "{err}"
    );
    assert!(err.contains("(2 errors)"), "{err}");
}

#[test]
fn parameters_are_checked_against_the_schema() {
    let err = check_fails(
        "params",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = \"ten\"\nwidht = 4\n[nodes.out]\nplugin = \"null_sink\"\ninputs = { in = \"src.image\" }\n",
    );
    assert!(
        err.contains("p.toml:3:10: parameter \"frames\" of node \"src\" must be an integer, found string \"ten\""),
        "{err}"
    );
    assert!(
        err.contains(
            "p.toml:4:1: unknown parameter \"widht\" for node \"src\" (plugin synthetic_source)"
        ),
        "{err}"
    );
    assert!(err.contains("did you mean \"width\"?"), "{err}");
}

/// `[pipeline] precision` takes "fp32", "bf16" or "auto", and bf16 only where the CPU has bf16
/// units; either error points at the value. "auto" says in the header what it chose.
#[test]
fn pipeline_precision_is_checked_at_its_line() {
    const PIPELINE: &str = "[nodes.src]\nplugin = \"synthetic_source\"\n[nodes.out]\nplugin = \"null_sink\"\ninputs = { in = \"src.image\" }\n";
    let err = check_fails(
        "precision",
        &format!("[pipeline]\nprecision = \"fp16\"\n\n{PIPELINE}"),
    );
    assert!(
        err.contains(
            "p.toml:2:13: precision must be \"fp32\", \"bf16\" or \"auto\", found \"fp16\""
        ),
        "{err}"
    );
    let dir = scratch("precision-bf16");
    let check = |precision: &str, bf16_units: Option<&str>| {
        write(
            &dir,
            "p.toml",
            &format!("[pipeline]\nprecision = \"{precision}\"\n\n{PIPELINE}"),
        );
        let mut cmd = Command::new(engine_bin());
        cmd.args(["check", "p.toml"]).current_dir(&dir);
        if let Some(units) = bf16_units {
            cmd.env("KERNELS_BF16", units);
        }
        cmd.output().expect("run engine")
    };
    // bf16 on a CPU without it (KERNELS_BF16=off hides the units of one that has them).
    let has_bf16 = kernels::layers::bf16::units().is_some();
    for units in [None, Some("off")] {
        let o = check("bf16", units);
        if has_bf16 && units.is_none() {
            assert_eq!(code(&o), 0, "{}", stderr(&o));
        } else {
            assert_eq!(code(&o), 2, "{}", stderr(&o));
            assert!(
                stderr(&o)
                    .contains("p.toml:2:13: precision = \"bf16\" needs a CPU with AVX-512 BF16")
                    && stderr(&o).contains("or \"auto\" (the best this CPU has)"),
                "{}",
                stderr(&o)
            );
        }
    }
    // "auto" takes what the CPU has and the header says which.
    let auto_fp32 = "precision auto: fp32 (this CPU has no AVX-512 BF16 and no AMX)";
    let o = check("auto", Some("off"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(auto_fp32), "{}", stdout(&o));
    let o = check("auto", None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let want = match kernels::layers::bf16::units() {
        Some(units) => format!("precision auto: bf16, on {}", units.name()),
        None => auto_fp32.into(),
    };
    assert!(stdout(&o).contains(&want), "{}", stdout(&o));
    // Without "auto", the header says nothing of precision.
    let o = check("fp32", None);
    assert!(!stdout(&o).contains("precision"), "{}", stdout(&o));
}

#[test]
fn cycles_are_refused() {
    let err = check_fails(
        "cycle",
        "[nodes.src]\nplugin = \"synthetic_source\"\n[nodes.a]\nplugin = \"concat_instances\"\ninputs = { first = \"src.instances\", second = \"b.out\" }\n[nodes.b]\nplugin = \"identity\"\ninputs = { in = \"a.instances\" }\n",
    );
    assert!(err.contains("the graph has a cycle"), "{err}");
    assert!(
        err.contains("a.instances -> b.in") && err.contains("b.out -> a.second"),
        "{err}"
    );
}

#[test]
fn set_overrides_parameters_and_reports_unknown_nodes() {
    let dir = scratch("set");
    let p = write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 1000\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"src.instances\" }\npath = \"o.jsonl\"\n",
    );
    let o = engine(
        &dir,
        &[
            "run",
            "--quiet",
            "--set",
            "src.frames=7",
            "--set",
            "out.path=x.jsonl",
            p.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(records(&dir.join("x.jsonl")).len(), 7);
    let o = engine(&dir, &["check", "--set", "sr.frames=7", "p.toml"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("`--set sr.frames=7`") && stderr(&o).contains("did you mean \"src\"?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_prints_every_edge_with_its_contract_and_graph_renders() {
    let dir = scratch("check");
    let p = write(
        &dir,
        "p.toml",
        &format!("{SRC_SINK}inputs = {{ instances = \"src.instances\" }}\n"),
    );
    let o = engine(&dir, &["check", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("is valid: 2 nodes, 1 edges"), "{out}");
    assert!(
        out.contains("src.instances -> out.instances  instances f32[N,4]  (queue 4, block)"),
        "{out}"
    );
    let o = engine(&dir, &["graph", "--format", "dot", "p.toml"]);
    assert!(
        stdout(&o).contains("\"src\" -> \"out\" [label=\"instances -> instances\\ninstances\"];"),
        "{}",
        stdout(&o)
    );
    let o = engine(&dir, &["graph", "--format", "mermaid", "p.toml"]);
    assert!(stdout(&o).starts_with("flowchart LR"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("n0 -- \"instances → instances (instances)\" --> n1"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn missing_pipeline_file_is_an_error() {
    let dir = scratch("missing");
    let o = engine(&dir, &["run", "nope.toml"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("cannot read pipeline file \"nope.toml\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_parameter_value_is_reported_before_the_first_frame() {
    let dir = scratch("create");
    let p = write(
        &dir,
        "p.toml",
        "[nodes.frames]\nplugin = \"image_source\"\npath = \"no/such/*.jpg\"\n[nodes.out]\nplugin = \"null_sink\"\ninputs = { in = \"frames.image\" }\n",
    );
    let o = engine(&dir, &["run", p.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("p.toml:1:8: node \"frames\" (plugin image_source) could not be created"),
        "{}",
        stderr(&o)
    );
}

// ---------------------------------------------------------------------------------------
// Plugins
// ---------------------------------------------------------------------------------------

#[test]
fn rust_cdylib_head_is_loaded_by_path_and_runs() {
    let dir = scratch("rust-plugin");
    let lib = custom_head_lib();
    let text = format!(
        r#"
[plugins]
libraries = ["{}"]

[nodes.src]
plugin = "synthetic_source"
frames = 10
instances = 4

[nodes.head]
plugin = "score_filter"
inputs = {{ instances = "src.instances" }}
min_score = 0.3
max_instances = 2

[nodes.out]
plugin = "json_sink"
inputs = {{ instances = "head.instances" }}
path = "o.jsonl"
"#,
        lib.display()
    );
    let p = write(&dir, "p.toml", &text);
    let o = engine(&dir, &["run", "--quiet", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let recs = records(&dir.join("o.jsonl"));
    assert_eq!(recs.len(), 10);
    for r in &recs {
        // scores 1/(1+j) for j = 0..4: 1.0, 0.5, 0.33, 0.25 -> three pass 0.3, two are kept.
        let scores: Vec<f64> = r["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["score"].as_f64().unwrap())
            .collect();
        assert_eq!(scores, vec![1.0, 0.5]);
    }
    let o = engine(
        &dir,
        &[
            "plugins",
            "--library",
            lib.to_str().unwrap(),
            "--kind",
            "score_filter",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("score_filter  [custom_head 0.1.0"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("ABI 1.1]"), "{}", stdout(&o));
    assert!(stdout(&o).contains("min_score"), "{}", stdout(&o));

    // A panic inside the plugin is contained: an error naming the node, a clean exit.
    let o = engine(
        &dir,
        &[
            "run",
            "--quiet",
            "--set",
            "head.panic_on_frame=4",
            p.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("node \"head\" (plugin score_filter) failed on frame 4"),
        "{err}"
    );
    assert!(
        err.contains("panicked in process: score_filter was asked to panic on frame 4"),
        "{err}"
    );
    assert_eq!(
        records(&dir.join("o.jsonl")).len(),
        4,
        "frames before the panic reached the sink"
    );
}

#[test]
fn a_source_can_live_in_a_library() {
    // ABI 1.1's next_frame: custom_head's box_source, found beside the engine binary.
    let dir = scratch("library-source");
    write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"box_source\"\nframes = 4\ncount = 3\n[nodes.head]\nplugin = \"score_filter\"\ninputs = { instances = \"src.instances\" }\nmin_score = 0.4\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"head.instances\" }\npath = \"o.jsonl\"\n",
    );
    let o = engine(&dir, &["run", "--quiet", "p.toml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let recs = records(&dir.join("o.jsonl"));
    assert_eq!(recs.len(), 4);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(frame_of(r), i as u64);
        assert_eq!(r["source"], format!("box_source/{i}"));
        assert_eq!(
            (r["width"].as_u64(), r["height"].as_u64()),
            (Some(64), Some(48))
        );
        assert_eq!(box_xs(r), vec![i as f64, i as f64]);
    }
}

#[test]
fn a_library_listed_twice_is_loaded_once() {
    // Issue 19: the same library named twice in [plugins] libraries used to be reported as a
    // malformed plugin table.
    let dir = scratch("library-twice");
    let lib = custom_head_lib().display().to_string();
    write(
        &dir,
        "p.toml",
        &format!(
            "[plugins]\nlibraries = [\"{lib}\", \"{lib}\"]\n[nodes.src]\nplugin = \"box_source\"\nframes = 2\ncount = 1\n[nodes.out]\nplugin = \"json_sink\"\ninputs = {{ instances = \"src.instances\" }}\npath = \"o.jsonl\"\n"
        ),
    );
    let o = engine(&dir, &["run", "--quiet", "p.toml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(records(&dir.join("o.jsonl")).len(), 2);
}

#[test]
fn check_reports_parameter_ranges_of_library_kinds_at_their_location() {
    // The ranges cross the ABI (1.1) and `engine check` refuses an out-of-range value at its
    // file:line:col, as `engine run` would, before any node exists (no weights are read).
    let dir = scratch("param-ranges");
    write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"box_source\"\n[nodes.head]\nplugin = \"score_filter\"\ninputs = { instances = \"src.instances\" }\nmax_instances = -1\n[nodes.pre]\nplugin = \"synthetic_source\"\n[nodes.rpn_sink]\nplugin = \"null_sink\"\ninputs = { any = \"head.instances\" }\n",
    );
    let o = engine(&dir, &["check", "p.toml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("p.toml:6:17: parameter \"max_instances\" of node \"head\" must be in 0..=1000000000, got -1"),
        "{err}"
    );
    write(
        &dir,
        "rpn.toml",
        "[nodes.img]\nplugin = \"synthetic_source\"\n[nodes.pre]\nplugin = \"rcnn_preprocess\"\ninputs = { image = \"img.image\" }\n[nodes.body]\nplugin = \"resnet\"\ninputs = { image = \"pre.image\" }\nweights = \"none.pth\"\n[nodes.fpn]\nplugin = \"fpn\"\ninputs = { features = \"body.features\" }\nweights = \"none.pth\"\n[nodes.rpn]\nplugin = \"rpn\"\ninputs = { features = \"fpn.features\", image = \"pre.image\" }\nweights = \"none.pth\"\nnms_thresh = 1.5\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"rpn.proposals\" }\npath = \"o.jsonl\"\n",
    );
    let o = engine(&dir, &["check", "rpn.toml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "rpn.toml:18:14: parameter \"nms_thresh\" of node \"rpn\" must be in [0, 1], got 1.5"
        ),
        "{err}"
    );
}

#[test]
fn a_raw_tensor_wired_into_a_head_fails_at_load() {
    // The heads take a `model_image` (tensor + image_size + original_size), which only a
    // pre-processing node produces; a plain tensor is refused by `engine check`.
    let dir = scratch("model-image");
    write(
        &dir,
        "p.toml",
        "[nodes.img]\nplugin = \"synthetic_source\"\n[nodes.model]\nplugin = \"graph_model\"\ninputs = { image = \"img.image\" }\nmodel = \"m.json\"\n[nodes.paste]\nplugin = \"paste_masks\"\ninputs = { instances = \"img.instances\", image = \"model.outputs\" }\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"paste.instances\" }\npath = \"o.jsonl\"\n",
    );
    let o = engine(&dir, &["check", "p.toml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("p.toml:9:49: kind mismatch on edge model.outputs -> paste.image"),
        "{err}"
    );
    assert!(err.contains("model_image"), "{err}");
}

#[test]
fn new_plugin_builds_outside_the_tree_and_loads() {
    // `engine new-plugin` writes a crate that builds on its own (offline, with the engine's
    // lock file) and that the engine loads through the pipeline's [plugins] path.
    let dir = scratch("new-plugin");
    let o = engine(&dir, &["new-plugin", "my_head"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let root = dir.join("my_head");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--offline", "--quiet"])
        .current_dir(&root)
        .output()
        .expect("run cargo");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let o = engine(&root, &["run", "--quiet", "pipeline.toml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // synthetic_source's scores are 1/(1+j): 1, 0.5 and 0.33 pass min_score = 0.3.
    for r in records(&root.join("out/my_head.jsonl")) {
        assert_eq!(r["instances"].as_array().unwrap().len(), 3);
    }
    let o = engine(&dir, &["new-plugin", "my_head"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = engine(&dir, &["new-plugin", "Bad-Name"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("is not a valid plugin name"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_kinds_in_pipeline_format_md_are_engine_plugins_output() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/PIPELINE_FORMAT.md"),
    )
    .expect("docs/PIPELINE_FORMAT.md");
    let begin = "<!-- engine plugins --markdown: begin -->\n";
    let end = "<!-- engine plugins --markdown: end -->";
    let start = doc.find(begin).expect("begin marker") + begin.len();
    let stop = doc.find(end).expect("end marker");
    let o = Command::new(engine_bin())
        .args(["plugins", "--markdown"])
        .env("ENGINE_PLUGIN_PATH", "")
        .output()
        .expect("run engine");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        &doc[start..stop],
        stdout(&o),
        "docs/PIPELINE_FORMAT.md's kinds are stale: replace the table between the markers with `engine plugins --markdown`"
    );
    let o = engine(&scratch("kind-doc"), &["plugins", "--kind", "rpn"]);
    assert!(
        stdout(&o).contains("nms_thresh   float = 0.7 in [0, 1]  IoU"),
        "{}",
        stdout(&o)
    );
    let o = engine(&scratch("kind-doc"), &["plugins", "--kind", "rpm"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("did you mean \"rpn\"?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn c_plugin_runs_and_wrong_abi_or_non_plugins_are_refused() {
    let dir = scratch("c-plugin");
    let good = c_plugin(&dir, "score_scale", &[]);
    let pipeline = |lib: &Path, extra: &str| {
        format!(
            "[plugins]\nlibraries = [\"{}\"]\n[nodes.src]\nplugin = \"synthetic_source\"\nframes = 3\ninstances = 2\n[nodes.scale]\nplugin = \"score_scale\"\ninputs = {{ instances = \"src.instances\" }}\nfactor = 0.5\n{extra}\n[nodes.out]\nplugin = \"json_sink\"\ninputs = {{ instances = \"scale.instances\" }}\npath = \"o.jsonl\"\n",
            lib.display()
        )
    };
    write(&dir, "p.toml", &pipeline(&good, ""));
    let o = engine(&dir, &["run", "--quiet", "p.toml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let recs = records(&dir.join("o.jsonl"));
    assert_eq!(recs.len(), 3);
    let scores: Vec<f64> = recs[2]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores, vec![0.5, 0.25]);
    assert_eq!(box_xs(&recs[2]), vec![2.0, 2.0]);

    // Mis-shaped output from a plugin is caught at the edge and named.
    let p2 = write(
        &dir,
        "bad_out.toml",
        &pipeline(&good, "drop_last_score = true"),
    );
    let o = engine(&dir, &["run", "--quiet", p2.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("output port \"instances\" produced an invalid instances value: tensor \"scores\" must be [2] (one per row of \"boxes\"), got [1]"),
        "{}",
        stderr(&o)
    );

    let wrong = c_plugin(&dir, "wrong_abi", &["-DSCORE_SCALE_ABI_MAJOR=99"]);
    write(&dir, "wrong.toml", &pipeline(&wrong, ""));
    let o = engine(&dir, &["check", "wrong.toml"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.contains("was built for plugin ABI 99.1, but this engine speaks ABI 1.1"),
        "{err}"
    );
    assert!(err.contains("wrong.toml:2:14"), "{err}");

    let not_plugin = dir.join("libnot_plugin.so");
    let src = write(&dir, "empty.c", "int nothing_here(void) { return 0; }\n");
    assert!(Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&not_plugin)
        .arg(&src)
        .status()
        .unwrap()
        .success());
    write(&dir, "np.toml", &pipeline(&not_plugin, ""));
    let o = engine(&dir, &["check", "np.toml"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(
            "is not an engine plugin: it does not export the symbol `engine_plugin_entry`"
        ),
        "{}",
        stderr(&o)
    );

    let garbage = write(&dir, "libgarbage.so", "this is not a shared library");
    write(&dir, "g.toml", &pipeline(&garbage, ""));
    let o = engine(&dir, &["check", "g.toml"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("cannot load plugin library"),
        "{}",
        stderr(&o)
    );

    // A library built against the ABI 1.0 header (kept in tests/fixtures/abi-1.0) still loads
    // and runs; one that claims a newer minor version is refused with both versions named.
    let abi_1_0 = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/abi-1.0")
        .canonicalize()
        .expect("the ABI 1.0 header fixture");
    let old = c_plugin(
        &dir,
        "score_scale_1_0",
        &[&format!("-I{}", abi_1_0.display())],
    );
    write(&dir, "old.toml", &pipeline(&old, ""));
    let o = engine(&dir, &["run", "--quiet", "old.toml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(records(&dir.join("o.jsonl")).len(), 3);
    let o = engine(
        &dir,
        &[
            "plugins",
            "--library",
            old.to_str().unwrap(),
            "--kind",
            "score_scale",
        ],
    );
    assert!(stdout(&o).contains("ABI 1.0]"), "{}", stdout(&o));
    let newer = c_plugin(&dir, "newer_abi", &["-DSCORE_SCALE_ABI_MINOR=9"]);
    write(&dir, "newer.toml", &pipeline(&newer, ""));
    let o = engine(&dir, &["check", "newer.toml"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("was built for plugin ABI 1.9, but this engine speaks ABI 1.1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn plugins_are_found_on_the_search_path() {
    let dir = scratch("plugin-path");
    let first = dir.join("first");
    let second = dir.join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    // The same plugin in two directories: the earlier directory wins. A file that is no
    // plugin, on the path, is named in a warning and skipped.
    c_plugin(&first, "score_scale", &[]);
    c_plugin(&second, "score_scale", &[]);
    write(&first, "libgarbage.so", "this is not a shared library");
    let pipeline = "[plugins]\npath = [\"second\", \"missing\"]\n[nodes.src]\nplugin = \"synthetic_source\"\nframes = 2\ninstances = 2\n[nodes.scale]\nplugin = \"score_scale\"\ninputs = { instances = \"src.instances\" }\nfactor = 0.5\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"scale.instances\" }\npath = \"o.jsonl\"\n";
    write(&dir, "p.toml", pipeline);
    let run_with_path = |path: &str, args: &[&str]| {
        Command::new(engine_bin())
            .args(args)
            .current_dir(&dir)
            .env("ENGINE_PLUGIN_PATH", path)
            .output()
            .expect("run engine")
    };
    let o = run_with_path("first", &["run", "--quiet", "p.toml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(records(&dir.join("o.jsonl")).len(), 2);
    let err = stderr(&o);
    assert!(err.contains("libgarbage.so"), "{err}");
    assert!(err.contains("\"missing\" cannot be read"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal: {err:?}"
    );
    let o = run_with_path("first", &["plugins", "--kind", "score_scale"]);
    assert!(
        stdout(&o).contains("first/libscore_scale.so"),
        "{}",
        stdout(&o)
    );
    // The workspace's families are found beside the engine binary with no set-up.
    let o = run_with_path("", &["plugins"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let table = stdout(&o);
    for (kind, lib) in [
        ("resnet", "libplugin_backbones.so"),
        ("fpn", "libplugin_backbones.so"),
        ("rpn", "libplugin_rcnn.so"),
        ("roi_box_head", "libplugin_rcnn.so"),
        ("roi_mask_head", "libplugin_rcnn.so"),
        ("graph_model", "libplugin_graph_model.so"),
        ("movenet", "libplugin_graph_model.so"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("{kind} ")) && l.ends_with(lib)),
            "{kind} from {lib}:\n{table}"
        );
    }
    // Two different plugins offering one kind: an error naming both files.
    let other = c_plugin(
        &second,
        "score_scale_other",
        &["-DSCORE_SCALE_PLUGIN_NAME=\"another_plugin\""],
    );
    let o = run_with_path("first", &["check", "p.toml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("node kind \"score_scale\" is offered by two libraries")
            && err.contains("first/libscore_scale.so")
            && err.contains(other.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn special_files_are_refused_not_read_forever() {
    let dir = scratch("special");
    // Under `timeout`, so that a regression fails (exit 124) instead of hanging the tests.
    let run = |args: &[&str]| {
        Command::new("timeout")
            .arg("60")
            .arg(engine_bin())
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run engine under timeout")
    };
    write(
        &dir,
        "device.toml",
        "[nodes.src]\nplugin = \"image_source\"\npath = \"/dev/zero\"\n[nodes.out]\nplugin = \"null_sink\"\ninputs = { in = \"src.image\" }\n",
    );
    let o = run(&["run", "--quiet", "device.toml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("\"/dev/zero\" is a character device, not a regular file"),
        "{}",
        stderr(&o)
    );
    let fifo = dir.join("weights.pth");
    if !Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED the FIFO case: mkfifo is not available");
        return;
    }
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/astronaut.png");
    write(
        &dir,
        "fifo.toml",
        &format!(
            "[nodes.src]\nplugin = \"image_source\"\npath = \"{}\"\n[nodes.pre]\nplugin = \"rcnn_preprocess\"\ninputs = {{ image = \"src.image\" }}\n[nodes.body]\nplugin = \"resnet\"\ninputs = {{ image = \"pre.image\" }}\nweights = \"weights.pth\"\n[nodes.out]\nplugin = \"null_sink\"\ninputs = {{ in = \"body.features\" }}\n",
            photo.display()
        ),
    );
    let o = run(&["run", "--quiet", "fifo.toml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("fifo.toml:7:8")
            && stderr(&o).contains("is a FIFO (named pipe), not a regular file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_run_that_never_starts_leaves_previous_outputs_untouched() {
    let dir = scratch("clobber");
    write(&dir, "o.json", "keep\n");
    // "out" is created before "bad" (see `engine check`'s order), whose parameter fails.
    write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 3\n[nodes.bad]\nplugin = \"json_sink\"\ninputs = { instances = \"src.instances\" }\npath = \"p.json\"\nformat = \"bogus\"\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"src.instances\" }\npath = \"o.json\"\nformat = \"coco\"\n",
    );
    let check = engine(&dir, &["check", "p.toml"]);
    let order = stdout(&check);
    assert!(
        order.find("  out ").unwrap_or(usize::MAX) < order.find("  bad ").unwrap_or(0),
        "{order}"
    );
    let o = engine(&dir, &["run", "p.toml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("o.json")).unwrap(),
        "keep\n"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(left.is_empty(), "temporaries left behind: {left:?}");
    // A run that does start replaces the file whole.
    write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 3\ninstances = 1\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"src.instances\" }\npath = \"o.json\"\nformat = \"coco\"\n",
    );
    let o = engine(&dir, &["run", "--quiet", "p.toml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("o.json")).unwrap()).unwrap();
    assert_eq!(coco.as_array().map(Vec::len), Some(3));
}

#[test]
fn a_bad_set_value_is_blamed_on_the_argument() {
    let dir = scratch("set-range");
    write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 3\n[nodes.slow]\nplugin = \"identity\"\ninputs = { in = \"src.image\" }\n[nodes.out]\nplugin = \"null_sink\"\ninputs = { in = \"slow.out\" }\n",
    );
    for (set, param) in [
        ("src.frames=-5", "frames"),
        ("slow.delay_ms=-1", "delay_ms"),
        ("src.width=0", "width"),
    ] {
        for cmd in ["check", "run"] {
            let o = engine(&dir, &[cmd, "p.toml", "--set", set]);
            assert_eq!(code(&o), 2, "{cmd} {set}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(
                err.contains(&format!(
                    "(command line `--set {set}`): parameter \"{param}\""
                )),
                "{cmd} {set}: {err}"
            );
        }
    }
}

#[test]
fn queue_capacities_are_bounded_at_check_time() {
    let err = check_fails(
        "queue-huge",
        "[pipeline]\nqueue = 100000000000\n[nodes.src]\nplugin = \"synthetic_source\"\n[nodes.out]\nplugin = \"null_sink\"\ninputs = { in = \"src.image\" }\n",
    );
    assert!(
        err.contains("p.toml:2:9") && err.contains("queue must be an integer from 1 to 4096"),
        "{err}"
    );
    let err = check_fails(
        "capacity-huge",
        "[nodes.src]\nplugin = \"synthetic_source\"\n[nodes.out]\nplugin = \"null_sink\"\ninputs = { in = { from = \"src.image\", capacity = 5000 } }\n",
    );
    assert!(
        err.contains("p.toml:5:50") && err.contains("capacity must be an integer from 1 to 4096"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Interruption and the drain deadline
// ---------------------------------------------------------------------------------------

fn interrupt_after(dir: &Path, args: &[&str], after: std::time::Duration) -> Output {
    signal_after(dir, args, after, "-INT")
}

/// Runs the engine, sends it `signal` (as `kill` spells it) after `after`, and waits.
fn signal_after(dir: &Path, args: &[&str], after: std::time::Duration, signal: &str) -> Output {
    let child = Command::new(engine_bin())
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start engine");
    std::thread::sleep(after);
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = std::time::Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the engine took too long to stop"
    );
    out
}

#[test]
fn ctrl_c_drains_the_pipeline_and_flushes_the_sinks() {
    let dir = scratch("sigint");
    write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 1000000\n[nodes.slow]\nplugin = \"identity\"\ninputs = { in = \"src.instances\" }\ndelay_ms = 2.0\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"slow.out\" }\npath = \"o.jsonl\"\n",
    );
    let o = interrupt_after(
        &dir,
        &["run", "p.toml"],
        std::time::Duration::from_millis(800),
    );
    assert_eq!(code(&o), 130, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("interrupted by SIGINT (Ctrl-C); drained and flushed"),
        "{}",
        stderr(&o)
    );
    let recs = records(&dir.join("o.jsonl"));
    assert!(!recs.is_empty());
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(
            frame_of(r),
            i as u64,
            "no frame lost or reordered before the stop"
        );
    }
}

#[test]
fn sigterm_and_sighup_drain_like_ctrl_c_and_leave_valid_files() {
    for (signal, name, exit) in [("-TERM", "SIGTERM", 143), ("-HUP", "SIGHUP", 129)] {
        let dir = scratch(&format!("signal{exit}"));
        write(
            &dir,
            "p.toml",
            "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 1000000\n[nodes.slow]\nplugin = \"identity\"\ninputs = { in = \"src.instances\" }\ndelay_ms = 2.0\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"slow.out\" }\npath = \"o.json\"\nformat = \"coco\"\n",
        );
        let o = signal_after(
            &dir,
            &["run", "--trace", "t.json", "p.toml"],
            std::time::Duration::from_millis(800),
            signal,
        );
        assert_eq!(code(&o), exit, "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("interrupted by {name}; drained and flushed")),
            "{}",
            stderr(&o)
        );
        // The COCO array and the trace are complete JSON documents.
        let coco: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("o.json")).unwrap())
                .unwrap_or_else(|e| panic!("{name}: o.json is not valid JSON: {e}"));
        assert!(coco.as_array().is_some_and(|a| !a.is_empty()), "{name}");
        let trace = std::fs::read_to_string(dir.join("t.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&trace)
            .unwrap_or_else(|e| panic!("{name}: the trace is not valid JSON: {e}"));
    }
}

/// When the drain deadline passes while a stage is still busy, the sinks that got frames stop
/// waiting for more and flush: their file is complete and valid.
#[test]
fn sinks_flush_what_they_got_when_the_drain_deadline_passes() {
    let dir = scratch("deadline-flush");
    write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 1000000\n[nodes.slow]\nplugin = \"identity\"\ninputs = { in = \"src.instances\" }\ndelay_ms = 300.0\n[nodes.out]\nplugin = \"json_sink\"\ninputs = { instances = \"slow.out\" }\npath = \"o.json\"\nformat = \"coco\"\n",
    );
    let o = interrupt_after(
        &dir,
        &["run", "--drain-timeout", "0.05", "p.toml"],
        std::time::Duration::from_millis(1500),
    );
    assert!(matches!(code(&o), 1 | 130), "{}", stderr(&o));
    let text = std::fs::read_to_string(dir.join("o.json"))
        .unwrap_or_else(|e| panic!("o.json was not written: {e}; {}", stderr(&o)));
    let coco: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let n = coco.as_array().map_or(0, Vec::len);
    assert!(n >= 2, "{n} instances; {}", stderr(&o));
}

#[test]
fn a_stage_that_does_not_drain_in_time_is_named_and_the_engine_exits() {
    let dir = scratch("stuck");
    write(
        &dir,
        "p.toml",
        "[nodes.src]\nplugin = \"synthetic_source\"\nframes = 100\n[nodes.stuck]\nplugin = \"identity\"\ninputs = { in = \"src.image\" }\ndelay_ms = 600000.0\n[nodes.out]\nplugin = \"null_sink\"\ninputs = { in = \"stuck.out\" }\n",
    );
    let o = interrupt_after(
        &dir,
        &["run", "--drain-timeout", "1", "p.toml"],
        std::time::Duration::from_millis(500),
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        // `out` only waited for input: it gave up on it and finished; `stuck` is named.
        stderr(&o).contains("stages stuck did not finish within 1 s after the stop"),
        "{}",
        stderr(&o)
    );
}

/// Each video of a folder is a stream: frames carry a new stream id when the next video
/// begins (indices go on, presentation times start again), and a damaged or unsupported
/// video is named, with the frame number, after the frames before the damage.
#[test]
fn videos_are_streams_and_damage_is_named_with_the_frame() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/video");
    let dir = scratch("video");
    let clips = dir.join("clips");
    std::fs::create_dir_all(&clips).expect("dir");
    for name in ["a.y4m", "b.y4m"] {
        std::fs::copy(fixtures.join("tiny.y4m"), clips.join(name)).expect("copy");
    }
    let pipeline = |path: &Path| {
        format!(
            "[nodes.video]\nplugin = \"video_source\"\npath = \"{}\"\n\n[nodes.out]\nplugin = \"video_sink\"\ninputs = {{ image = \"video.image\" }}\npath = \"out/v.mp4\"\n",
            path.display()
        )
    };
    // Two streams: two files, the second named v-1.mp4, each with its 5 frames.
    let file = write(&dir, "two.toml", &pipeline(&clips));
    let o = engine(&dir, &["run", file.to_str().expect("utf-8")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for name in ["v.mp4", "v-1.mp4"] {
        let mut reader = plugin_io::video::open_video(&dir.join("out").join(name)).expect("video");
        let mut times = Vec::new();
        while let Some(f) = reader.next_frame().expect("frame") {
            times.push(f.pts_ns);
        }
        assert_eq!(
            times,
            [0, 40_000_000, 80_000_000, 120_000_000, 160_000_000],
            "{name}"
        );
    }
    // Truncated: the frames before the damage go through, then the frame is named; exit 1.
    let file = write(
        &dir,
        "cut.toml",
        &pipeline(&fixtures.join("tiny_truncated.mp4")),
    );
    let o = engine(&dir, &["run", file.to_str().expect("utf-8")]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("frame 7: the file ends inside this frame's data"),
        "{}",
        stderr(&o)
    );
    let mut reader = plugin_io::video::open_video(&dir.join("out/v.mp4")).expect("partial video");
    let mut frames = 0;
    while reader.next_frame().expect("frame").is_some() {
        frames += 1;
    }
    assert_eq!(frames, 7, "the 7 good frames are written");
    // Unsupported profile: refused before the first frame, naming it and the fix.
    let file = write(
        &dir,
        "high.toml",
        &pipeline(&fixtures.join("tiny_high.mp4")),
    );
    let o = engine(&dir, &["run", file.to_str().expect("utf-8")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("H.264 High profile") && stderr(&o).contains("-profile:v baseline"),
        "{}",
        stderr(&o)
    );
}

/// `engine eval mot` against py-motmetrics on the TUD sequences it ships
/// (`tests/reference/make_mot_fixtures.py`): every metric within 1e-9 (counts exactly), the
/// summary table, and a bad line named with its file, line and column.
#[test]
fn eval_mot_equals_py_motmetrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mot");
    let dir = scratch("mot");
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("expected.json")).expect("expected.json"),
    )
    .expect("JSON");
    for case in ["TUD-Campus", "TUD-Stadtmitte"] {
        let (gt, pred) = (
            root.join(case).join("gt.txt"),
            root.join(case).join("test.txt"),
        );
        let (gt, pred) = (gt.display().to_string(), pred.display().to_string());
        let o = engine(
            &dir,
            &["eval", "mot", "--gt", &gt, "--pred", &pred, "--json"],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let ours: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        let want = &want["cases"][case];
        for key in ["mota", "motp", "idf1", "idp", "idr", "precision", "recall"] {
            let (a, b) = (
                ours[key].as_f64().expect("ours"),
                want[key].as_f64().expect("theirs"),
            );
            assert!(
                (a - b).abs() <= 1e-9,
                "{case} {key}: ours {a}, motmetrics {b}"
            );
        }
        for key in [
            "num_switches",
            "num_fragmentations",
            "num_false_positives",
            "num_misses",
            "mostly_tracked",
            "mostly_lost",
        ] {
            assert_eq!(ours[key], want[key], "{case} {key}");
        }
        let o = engine(&dir, &["eval", "mot", "--gt", &gt, "--pred", &pred]);
        assert!(
            stdout(&o).contains("IDF1") && stdout(&o).contains("MOTA"),
            "{}",
            stdout(&o)
        );
    }
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "1,1,10,10,5,5,1\n2,x,10,10,5,5,1\n").expect("write");
    let (bad, gt) = (
        bad.display().to_string(),
        root.join("TUD-Campus/gt.txt").display().to_string(),
    );
    let o = engine(&dir, &["eval", "mot", "--gt", &gt, "--pred", &bad]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("bad.txt\":2:"), "{}", stderr(&o));
}

/// `engine eval vpq` against VPSNet's `tools/eval_vpq.py` (`tests/reference/make_vpq_fixtures.py`
/// ran it on `tests/fixtures/vpq/main`): the final VPQ, things and stuff within 1e-9, and a
/// missing prediction PNG named.
#[test]
fn eval_vpq_equals_vpsnet_script() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vpq");
    let dir = scratch("vpq");
    let case = root.join("main");
    let arg = |name: &str| case.join(name).display().to_string();
    let (gt, truth, submit) = (
        arg("panoptic_gt.json"),
        arg("panoptic_video"),
        arg("submit"),
    );
    let args = [
        "eval",
        "vpq",
        "--gt-json",
        &gt,
        "--truth-dir",
        &truth,
        "--submit-dir",
    ];
    let o = engine(&dir, &[&args[..], &[&submit, "--json"]].concat());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ours: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("expected.json")).expect("expected.json"),
    )
    .expect("JSON");
    for key in ["vpq_all", "vpq_thing", "vpq_stuff"] {
        let a = ours[key].as_f64().expect("ours");
        let b = want["cases"]["main"][key].as_f64().expect("the script's");
        assert!((a - b).abs() <= 1e-9, "{key}: ours {a}, eval_vpq.py {b}");
    }
    let o = engine(&dir, &[&args[..], &[&submit]].concat());
    assert!(stdout(&o).contains("vpq_all:62.7456"), "{}", stdout(&o));
    // A submission without its PNGs: the missing file is named.
    let empty = dir.join("submit");
    std::fs::create_dir_all(empty.join("pan_pred")).expect("dir");
    std::fs::copy(case.join("submit/pred.json"), empty.join("pred.json")).expect("copy");
    let empty = empty.display().to_string();
    let o = engine(&dir, &[&args[..], &[&empty]].concat());
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("pan_pred"), "{}", stderr(&o));
}

/// `engine eval pq` against panopticapi's `pq_compute` (`tests/reference/make_pq_fixtures.py`
/// ran it on `tests/fixtures/pq/*`): every value of the dict it returned within 1e-9, and
/// panopticapi's errors for inconsistent predictions, with the file.
#[test]
fn eval_pq_equals_panopticapi() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pq");
    let dir = scratch("pq");
    let run = |case: &Path, json: bool| {
        let p = |name: &str| case.join(name).display().to_string();
        let (gj, gd, pj, pd) = (p("gt.json"), p("gt"), p("pred.json"), p("pred"));
        let mut args = vec![
            "eval",
            "pq",
            "--gt-json",
            &gj,
            "--gt-dir",
            &gd,
            "--pred-json",
            &pj,
            "--pred-dir",
            &pd,
        ];
        if json {
            args.push("--json");
        }
        engine(&dir, &args)
    };
    let mut cases = 0;
    for case in ["sample", "generated"] {
        let case = root.join(case);
        let o = run(&case, true);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let ours: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        let want: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(case.join("expected.json")).expect("expected.json"),
        )
        .expect("JSON");
        for group in ["All", "Things", "Stuff"] {
            for key in ["pq", "sq", "rq", "n"] {
                let (a, b) = (ours[group][key].as_f64(), want[group][key].as_f64());
                let (a, b) = (a.expect("ours"), b.expect("panopticapi's"));
                assert!(
                    (a - b).abs() <= 1e-9,
                    "{}: {group} {key}: ours {a}, panopticapi {b}",
                    case.display()
                );
            }
        }
        let want_classes = want["per_class"].as_object().expect("per_class");
        assert_eq!(
            ours["per_class"].as_object().expect("per_class").len(),
            want_classes.len()
        );
        for (id, q) in want_classes {
            for key in ["pq", "sq", "rq"] {
                let a = ours["per_class"][id][key].as_f64().expect("ours");
                let b = q[key].as_f64().expect("panopticapi's");
                assert!(
                    (a - b).abs() <= 1e-9,
                    "{}: class {id} {key}: ours {a}, panopticapi {b}",
                    case.display()
                );
            }
        }
        // The table: panopticapi's header and one line per class.
        let o = run(&case, false);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(
            stdout(&o).contains("PQ") && stdout(&o).contains("Things"),
            "{}",
            stdout(&o)
        );
        cases += 1;
    }
    assert_eq!(cases, 2);
    let errors = root.join("errors");
    let mut checked = 0;
    for entry in std::fs::read_dir(&errors).expect("errors cases") {
        let case = entry.expect("entry").path();
        let want =
            std::fs::read_to_string(case.join("expected_error.txt")).expect("expected_error.txt");
        let o = run(&case, true);
        assert_eq!(code(&o), 2, "{}", case.display());
        let msg = stderr(&o);
        assert!(
            msg.contains(want.trim()),
            "{}: {msg}\nwant: {want}",
            case.display()
        );
        assert!(msg.contains("pred"), "the file is named: {msg}");
        checked += 1;
    }
    assert_eq!(checked, 3);
    // A prediction folder that does not exist, and a corrupt PNG.
    let sample = root.join("sample");
    let p = |name: &str| sample.join(name).display().to_string();
    let o = engine(
        &dir,
        &[
            "eval",
            "pq",
            "--gt-json",
            &p("gt.json"),
            "--gt-dir",
            &p("gt"),
            "--pred-json",
            &p("pred.json"),
            "--pred-dir",
            "nowhere",
        ],
    );
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("\"nowhere\" does not exist"),
        "{}",
        stderr(&o)
    );
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).expect("dir");
    for f in std::fs::read_dir(sample.join("pred")).expect("pred") {
        let f = f.expect("entry").path();
        std::fs::write(
            bad.join(f.file_name().expect("name")),
            b"\x89PNG\r\n\x1a\nnot really",
        )
        .expect("write");
    }
    let b = bad.display().to_string();
    let o = engine(
        &dir,
        &[
            "eval",
            "pq",
            "--gt-json",
            &p("gt.json"),
            "--gt-dir",
            &p("gt"),
            "--pred-json",
            &p("pred.json"),
            "--pred-dir",
            &b,
        ],
    );
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains(".png"), "{}", stderr(&o));
}

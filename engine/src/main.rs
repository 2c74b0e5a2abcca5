//! `engine`: run, check, draw and inspect vision pipelines.
//!
//! Exit codes: 0 success, 1 a failure while running, 2 an invalid pipeline (or bad command
//! line), 128 + the signal when a signal stopped the run after draining it: 130 SIGINT
//! (Ctrl-C), 143 SIGTERM, 129 SIGHUP.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use engine::diag::Diagnostic;
use engine::graph::{self, LoadError, Pipeline};
use engine::registry::Registry;
use engine::{report, runtime};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

// mimalloc as the allocator, freed pages kept committed (kernels::process says why); every
// family library does the same for its own allocations.
kernels::engine_allocator!();

const EXIT_RUN_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "engine",
    version,
    about = "Runs vision pipelines described in TOML files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level on stderr: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline to the end of its sources.
    Run {
        pipeline: PathBuf,
        /// Override a node parameter: --set node.key=value (repeatable).
        #[arg(long = "set", value_name = "NODE.KEY=VALUE")]
        set: Vec<String>,
        /// Write a Chrome trace (open it in Perfetto or chrome://tracing).
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Print neither the progress bar nor the per-node table.
        #[arg(long, short)]
        quiet: bool,
        /// Seconds the stages may take to drain after an error or Ctrl-C.
        #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
        drain_timeout: f64,
    },
    /// Check a pipeline without running it and print every edge with its contract.
    Check {
        pipeline: PathBuf,
        #[arg(long = "set", value_name = "NODE.KEY=VALUE")]
        set: Vec<String>,
    },
    /// Print the pipeline graph as Graphviz DOT or Mermaid.
    Graph {
        pipeline: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
        #[arg(long = "set", value_name = "NODE.KEY=VALUE")]
        set: Vec<String>,
    },
    /// List node kinds with the library, version and ABI of each: the built-in ones and those
    /// of the libraries on the plugin path (ENGINE_PLUGIN_PATH, then the engine's directory).
    Plugins {
        /// A plugin library to load and list as well (repeatable).
        #[arg(long, value_name = "PATH")]
        library: Vec<PathBuf>,
        /// Show one kind in full: its ports and its parameters with their defaults.
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Print the kinds as the Markdown table of docs/PIPELINE_FORMAT.md.
        #[arg(long)]
        markdown: bool,
    },
    /// Evaluate results against ground truth.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// Create a plugin crate NAME (a working head, a pipeline that runs it, the engine's
    /// Cargo.lock) that builds and loads with `cargo build --release && engine run pipeline.toml`.
    NewPlugin {
        /// The crate's and the node kind's name (lowercase letters, digits, _).
        name: String,
        /// Where to create the crate's folder.
        #[arg(long, default_value = ".", value_name = "DIR")]
        dir: PathBuf,
        /// The plugin SDK to depend on (default: the checkout this engine was built from).
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Panoptic Quality (PQ, SQ, RQ for All, Things, Stuff and per class), equal to
    /// panopticapi's pq_compute, on COCO panoptic files (JSON + PNG folder) of the ground truth
    /// and the predictions.
    Pq {
        #[arg(long, value_name = "FILE")]
        gt_json: PathBuf,
        #[arg(long, value_name = "DIR")]
        gt_dir: PathBuf,
        #[arg(long, value_name = "FILE")]
        pred_json: PathBuf,
        #[arg(long, value_name = "DIR")]
        pred_dir: PathBuf,
        /// Categories (a JSON list, or an object with "categories") instead of the ground
        /// truth's.
        #[arg(long, value_name = "FILE")]
        categories: Option<PathBuf>,
        /// Print the dict pq_compute returns, as JSON, instead of the tables.
        #[arg(long)]
        json: bool,
    },
    /// Video Panoptic Quality (VPQ over windows of k = 0, 5, 10, 15 frames, all/things/stuff
    /// and per class), equal to VPSNet's tools/eval_vpq.py on its Cityscapes-VPS layout.
    Vpq {
        /// The ground truth's panoptic JSON (images, annotations, categories).
        #[arg(long, value_name = "FILE")]
        gt_json: PathBuf,
        /// The ground truth's PNGs.
        #[arg(long, value_name = "DIR")]
        truth_dir: PathBuf,
        /// The predictions: pred.json and pan_pred/<image id>.png.
        #[arg(long, value_name = "DIR")]
        submit_dir: PathBuf,
        /// Frames per video (the script's 6: Cityscapes-VPS annotates 6 frames per clip).
        #[arg(long, default_value_t = plugin_io::vpq::DEFAULT_FRAMES_PER_VIDEO)]
        frames_per_video: usize,
        /// Print the results as JSON instead of the tables.
        #[arg(long)]
        json: bool,
    },
    /// CLEAR MOT and identity metrics (MOTA, MOTP, IDF1, IDP, IDR, switches, fragmentations,
    /// mostly tracked/lost, ...), equal to py-motmetrics' MOTChallenge evaluation (IoU
    /// distance, matches up to 0.5), on MOTChallenge text files.
    Mot {
        /// Ground truth: frame, id, left, top, width, height, conf, ... per line.
        #[arg(long, value_name = "FILE")]
        gt: PathBuf,
        /// Tracker output in the same format.
        #[arg(long, value_name = "FILE")]
        pred: PathBuf,
        /// Print the metrics as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    kernels::process::memory_policy();
    let cli = Cli::parse();
    let level = match cli.log_level.parse::<LevelFilter>() {
        Ok(l) => l,
        Err(_) => {
            eprintln!(
                "error: unknown log level \"{}\"; use error, warn, info, debug or trace",
                cli.log_level
            );
            return ExitCode::from(EXIT_INVALID);
        }
    };
    install_panic_hook();
    match cli.command {
        Command::Run {
            pipeline,
            set,
            trace,
            quiet,
            drain_timeout,
        } => run(
            &pipeline,
            &set,
            trace.as_deref(),
            quiet,
            drain_timeout,
            level,
        ),
        Command::Check { pipeline, set } => {
            init_logging(level, None);
            with_pipeline(&pipeline, &set, |p| {
                print!("{}", report::check_summary(p));
                ExitCode::SUCCESS
            })
        }
        Command::Graph {
            pipeline,
            format,
            set,
        } => {
            init_logging(level, None);
            with_pipeline(&pipeline, &set, |p| {
                print!(
                    "{}",
                    match format {
                        GraphFormat::Dot => report::dot(p),
                        GraphFormat::Mermaid => report::mermaid(p),
                    }
                );
                ExitCode::SUCCESS
            })
        }
        Command::Plugins {
            library,
            kind,
            markdown,
        } => {
            init_logging(level, None);
            plugins(&library, kind.as_deref(), markdown)
        }
        Command::Eval {
            what:
                EvalCommand::Pq {
                    gt_json,
                    gt_dir,
                    pred_json,
                    pred_dir,
                    categories,
                    json,
                },
        } => {
            init_logging(level, None);
            match plugin_io::pq::pq_compute(
                &gt_json,
                &pred_json,
                &gt_dir,
                &pred_dir,
                categories.as_deref(),
            ) {
                Ok(r) if json => {
                    println!("{}", r.to_json());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    print!("{}", r.table());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
        Command::Eval {
            what:
                EvalCommand::Vpq {
                    gt_json,
                    truth_dir,
                    submit_dir,
                    frames_per_video,
                    json,
                },
        } => {
            init_logging(level, None);
            let options = plugin_io::vpq::VpqOptions {
                frames_per_video,
                ..Default::default()
            };
            match plugin_io::vpq::vpq_compute(&gt_json, &truth_dir, &submit_dir, &options) {
                Ok(r) if json => {
                    println!("{}", r.to_json());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    println!("{}", r.table().trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
        Command::Eval {
            what: EvalCommand::Mot { gt, pred, json },
        } => {
            init_logging(level, None);
            let metrics = plugin_io::mot::read_mot_file(&gt).and_then(|g| {
                let p = plugin_io::mot::read_mot_file(&pred)?;
                plugin_io::mot::evaluate(&g, &p)
            });
            match metrics {
                Ok(m) if json => {
                    println!("{}", m.to_json());
                    ExitCode::SUCCESS
                }
                Ok(m) => {
                    let name = pred
                        .file_stem()
                        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                    println!("{}", m.table(&name).trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
        Command::NewPlugin { name, dir, sdk } => {
            let sdk = sdk.unwrap_or_else(engine::scaffold::default_sdk);
            match engine::scaffold::new_plugin(&dir, &name, &sdk) {
                Ok(root) => {
                    println!(
                        "created {}\nbuild and run it:\n  cd {} && cargo build --release && engine run pipeline.toml",
                        root.display(),
                        root.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
    }
}

/// `engine plugins`.
fn plugins(libraries: &[PathBuf], kind: Option<&str>, markdown: bool) -> ExitCode {
    let mut registry = Registry::with_search_path();
    for lib in libraries {
        if let Err(e) = registry.load_library(lib) {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    }
    if let Err(e) = registry.load_search_path(&[]) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_INVALID);
    }
    match kind {
        Some(name) => match registry.find(name) {
            Some((k, provider)) => print!("{}", report::describe_kind(&k.spec, provider)),
            None => {
                let hint = engine::diag::closest(name, registry.names())
                    .map_or(String::new(), |s| format!("; did you mean \"{s}\"?"));
                eprintln!("error: no node kind \"{name}\"{hint} (`engine plugins` lists them)");
                return ExitCode::from(EXIT_INVALID);
            }
        },
        None if markdown => print!("{}", report::kinds_markdown(&registry)),
        None => print!("{}", report::kinds_table(&registry)),
    }
    ExitCode::SUCCESS
}

/// Panics inside node stages are caught and reported as node errors with the node's name;
/// the default hook's extra "thread panicked" line would only repeat them.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_stage = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("node:"));
        if !in_stage {
            default(info);
        }
    }));
}

fn init_logging(level: LevelFilter, trace: Option<&Path>) -> Option<tracing_chrome::FlushGuard> {
    // Colour codes only on a terminal: a log file or a pipe gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(level);
    match trace {
        Some(path) => {
            let (chrome, guard) = tracing_chrome::ChromeLayerBuilder::new()
                .file(path)
                .include_args(true)
                .build();
            tracing_subscriber::registry()
                .with(fmt)
                .with(chrome.with_filter(LevelFilter::TRACE))
                .init();
            Some(guard)
        }
        None => {
            tracing_subscriber::registry().with(fmt).init();
            None
        }
    }
}

fn with_pipeline(path: &Path, sets: &[String], f: impl FnOnce(&Pipeline) -> ExitCode) -> ExitCode {
    let mut registry = Registry::with_search_path();
    match graph::load(path, sets, &mut registry) {
        Ok(p) => f(&p),
        Err(e) => {
            match e {
                LoadError::Io { .. } => eprintln!("error: {e}"),
                LoadError::Invalid(d) => eprintln!("{d}"),
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP all stop the pipeline the same way: the sources stop,
/// every stage drains and the sinks flush. A second signal exits at once. Returns the number
/// of the first signal received (0 while none was), for the exit code `128 + number`.
fn watch_signals(stop: Arc<AtomicBool>) -> Arc<std::sync::atomic::AtomicI32> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let first = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let seen = first.clone();
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for sig in signals.forever() {
                    if stop.swap(true, Ordering::SeqCst) {
                        eprintln!(
                            "engine: {} received again, exiting without draining",
                            signal_name(sig)
                        );
                        std::process::exit(i32::from(exit_code_of(sig)));
                    }
                    seen.store(sig, Ordering::SeqCst);
                    eprintln!(
                        "engine: {} received, draining the pipeline (send it again to exit at once)",
                        signal_name(sig)
                    );
                }
            });
        }
        Err(e) => eprintln!("warning: cannot watch for signals ({e}); Ctrl-C will not drain"),
    }
    first
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "SIGINT (Ctrl-C)",
    }
}

/// The shell's convention: 128 + the signal's number (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
fn exit_code_of(sig: i32) -> u8 {
    match sig {
        signal_hook::consts::SIGTERM | signal_hook::consts::SIGHUP => (128 + sig) as u8,
        _ => EXIT_INTERRUPTED,
    }
}

fn run(
    path: &Path,
    sets: &[String],
    trace: Option<&Path>,
    quiet: bool,
    drain_timeout: f64,
    level: LevelFilter,
) -> ExitCode {
    if let Some(t) = trace {
        if let Some(dir) = t.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                eprintln!(
                    "error: cannot write trace \"{}\": directory \"{}\" does not exist",
                    t.display(),
                    dir.display()
                );
                return ExitCode::from(EXIT_INVALID);
            }
        }
        // The trace writer panics on a file it cannot create (a directory, /proc/...): try
        // first, and say why.
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(t)
        {
            eprintln!(
                "error: cannot write trace \"{}\": {e}; give --trace a file path in a writable directory",
                t.display()
            );
            return ExitCode::from(EXIT_INVALID);
        }
    }
    if !(drain_timeout.is_finite() && drain_timeout >= 0.0) {
        eprintln!("error: --drain-timeout must be a number of seconds >= 0");
        return ExitCode::from(EXIT_INVALID);
    }
    let guard = init_logging(level, trace);
    let code = with_pipeline(path, sets, |p| {
        eprintln!(
            "engine: pipeline \"{}\": {} nodes, {} edges; {}",
            p.name,
            p.nodes.len(),
            p.edges.len(),
            p.device_and_precision()
        );
        let nodes = match runtime::create_nodes(p) {
            Ok(n) => n,
            Err(e) => {
                let origin = p
                    .nodes
                    .iter()
                    .find(|n| n.name == e.node)
                    .map_or(engine::diag::Origin::None, |n| n.origin.clone());
                eprint!("{}", Diagnostic::new(e.to_string(), origin).render(&p.file));
                return ExitCode::from(EXIT_INVALID);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let signal = watch_signals(stop.clone());
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {pos} frames through the sinks ({per_sec}) {elapsed}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        });
        let progress_bar = bar.clone();
        let options = runtime::RunOptions {
            stop,
            drain_timeout: Duration::from_secs_f64(drain_timeout),
            progress: progress_bar
                .map(|b| Box::new(move |n: u64| b.set_position(n)) as Box<dyn FnMut(u64)>),
        };
        let result = runtime::run(p, nodes, options);
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if !quiet {
            print!("{}", report::run_table(&result));
        }
        if !result.stuck.is_empty() {
            eprintln!(
                "error: stages {} did not finish within {drain_timeout} s after the stop; exiting without them",
                result.stuck.join(", ")
            );
            std::process::exit(EXIT_RUN_FAILED as i32);
        }
        if let Some(e) = &result.error {
            eprintln!("error: {e}");
            eprintln!("engine: the pipeline stopped; every stage drained and the sinks flushed what they had");
            return ExitCode::from(EXIT_RUN_FAILED);
        }
        if result.interrupted {
            let sig = signal.load(Ordering::SeqCst);
            eprintln!(
                "engine: interrupted by {}; drained and flushed",
                signal_name(sig)
            );
            return ExitCode::from(exit_code_of(sig));
        }
        ExitCode::SUCCESS
    });
    drop(guard);
    code
}

//! Text renderings of a pipeline: the edge list of `engine check`, DOT and Mermaid graphs,
//! the node-kind listing of `engine plugins`, and the per-node table printed after a run.

use std::fmt::Write;

use plugin_sdk::NodeSpec;

use crate::graph::Pipeline;
use crate::registry::{Provider, Registry};
use crate::runtime::RunReport;

/// What `engine check` prints: every node and every edge with its contract.
pub fn check_summary(p: &Pipeline) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "pipeline \"{}\" ({}) is valid: {} nodes, {} edges, {}",
        p.name,
        p.file.path.display(),
        p.nodes.len(),
        p.edges.len(),
        p.device_and_precision()
    );
    let _ = writeln!(s, "nodes (in topological order):");
    let width = p.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
    for &i in &p.order {
        let n = &p.nodes[i];
        let role = if n.kind.spec.is_source() {
            "source"
        } else if n.kind.spec.outputs.is_empty() {
            "sink"
        } else {
            "node"
        };
        let _ = writeln!(
            s,
            "  {:width$}  {} [{role}, {}]",
            n.name,
            n.plugin(),
            n.provider
        );
    }
    let _ = writeln!(s, "edges:");
    let labels: Vec<String> = p.edges.iter().map(|e| p.edge_label(e)).collect();
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    for (e, label) in p.edges.iter().zip(&labels) {
        let _ = writeln!(s, "  {label:width$}  {}", p.edge_contract(e));
    }
    s
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT.
pub fn dot(p: &Pipeline) -> String {
    let mut s = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
        dot_escape(&p.name)
    );
    for n in &p.nodes {
        let _ = writeln!(
            s,
            "  \"{}\" [label=\"{}\\n{}\"];",
            dot_escape(&n.name),
            dot_escape(&n.name),
            dot_escape(n.plugin())
        );
    }
    for e in &p.edges {
        let from = &p.nodes[e.from];
        let to = &p.nodes[e.to];
        let _ = writeln!(
            s,
            "  \"{}\" -> \"{}\" [label=\"{} -> {}\\n{}\"];",
            dot_escape(&from.name),
            dot_escape(&to.name),
            dot_escape(&from.kind.spec.outputs[e.from_port].name),
            dot_escape(&to.kind.spec.inputs[e.to_port].name),
            e.kind
        );
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart.
pub fn mermaid(p: &Pipeline) -> String {
    let clean = |s: &str| s.replace('"', "'");
    let mut s = String::from("flowchart LR\n");
    for (i, n) in p.nodes.iter().enumerate() {
        let _ = writeln!(
            s,
            "  n{i}[\"{}<br/><i>{}</i>\"]",
            clean(&n.name),
            clean(n.plugin())
        );
    }
    for e in &p.edges {
        let _ = writeln!(
            s,
            "  n{} -- \"{} → {} ({})\" --> n{}",
            e.from,
            clean(&p.nodes[e.from].kind.spec.outputs[e.from_port].name),
            clean(&p.nodes[e.to].kind.spec.inputs[e.to_port].name),
            e.kind,
            e.to
        );
    }
    s
}

/// One node kind, as `engine plugins` lists it.
pub fn describe_kind(spec: &NodeSpec, provider: &Provider) -> String {
    let abi = match provider {
        Provider::Library(l) => format!(", ABI {}.{}", l.abi.0, l.abi.1),
        Provider::BuiltIn => String::new(),
    };
    let mut s = format!("{}  [{provider}{abi}]\n    {}\n", spec.kind, spec.doc);
    for (title, ports) in [("inputs", &spec.inputs), ("outputs", &spec.outputs)] {
        if ports.is_empty() {
            continue;
        }
        let _ = writeln!(s, "    {title}:");
        for p in ports {
            let opt = if title == "inputs" && !p.required {
                " (optional)"
            } else {
                ""
            };
            let _ = writeln!(s, "      {:12} {}{opt}  {}", p.name, p.contract(), p.doc);
        }
    }
    if !spec.params.is_empty() {
        let _ = writeln!(s, "    parameters:");
        for p in &spec.params {
            let default = p
                .default
                .as_ref()
                .map_or("required".to_string(), |d| format!("= {d}"));
            let range = p
                .range
                .map_or(String::new(), |(lo, hi)| format!(" in [{lo}, {hi}]"));
            let _ = writeln!(
                s,
                "      {:12} {} {default}{range}  {}",
                p.name, p.ty, p.doc
            );
        }
    }
    s
}

/// `engine plugins`: one line per node kind with the library that provides it, the plugin's
/// version and the library's ABI version.
pub fn kinds_table(registry: &Registry) -> String {
    let rows: Vec<[String; 5]> = registry
        .iter()
        .map(|(k, p)| match p {
            Provider::BuiltIn => [
                k.spec.kind.clone(),
                "built-in".into(),
                env!("CARGO_PKG_VERSION").into(),
                "-".into(),
                "(the engine binary)".into(),
            ],
            Provider::Library(l) => [
                k.spec.kind.clone(),
                l.plugin.clone(),
                l.version.clone(),
                format!("{}.{}", l.abi.0, l.abi.1),
                l.path.clone(),
            ],
        })
        .collect();
    let header = ["KIND", "PLUGIN", "VERSION", "ABI", "LIBRARY"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut s = String::new();
    for r in std::iter::once(header.map(String::from)).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
    s
}

/// `engine plugins --markdown`: the kinds as the Markdown table of docs/PIPELINE_FORMAT.md
/// (kind, family, what it does), without machine-specific paths.
pub fn kinds_markdown(registry: &Registry) -> String {
    let mut s = String::from("| kind | family | what it does |\n|---|---|---|\n");
    for (k, p) in registry.iter() {
        let family = match p {
            Provider::BuiltIn => "built-in".to_string(),
            Provider::Library(l) => l.plugin.clone(),
        };
        let _ = writeln!(
            s,
            "| `{}` | {family} | {} |",
            k.spec.kind,
            k.spec.doc.replace('|', "\\|")
        );
    }
    s
}

/// The per-node table printed at the end of a run.
pub fn run_table(r: &RunReport) -> String {
    let mut s = String::new();
    let width = r
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let pw = r
        .nodes
        .iter()
        .map(|n| n.plugin.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        s,
        "{:width$}  {:pw$}  {:>8} {:>7} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "node",
        "plugin",
        "frames",
        "skipped",
        "errors",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "wait in ms",
        "wait out ms"
    );
    for n in &r.nodes {
        let _ = writeln!(
            s,
            "{:width$}  {:pw$}  {:>8} {:>7} {:>7} {:>10.3} {:>10.3} {:>10.3} {:>12.1} {:>12.1}",
            n.name,
            n.plugin,
            n.frames,
            n.skipped,
            n.errors,
            n.mean_ms(),
            n.percentile_ms(50.0),
            n.percentile_ms(99.0),
            n.wait_in.as_secs_f64() * 1e3,
            n.wait_out.as_secs_f64() * 1e3
        );
    }
    for e in r.edges.iter().filter(|e| e.dropped > 0) {
        let _ = writeln!(
            s,
            "edge {} dropped {} of {} frames (policy {}, capacity {})",
            e.label,
            e.dropped,
            e.offered(),
            e.policy.name(),
            e.capacity
        );
    }
    let _ = writeln!(s, "wall time {:.3} s", r.wall.as_secs_f64());
    s
}

//! `engine new-plugin NAME`: a plugin crate outside the engine's tree that builds and loads in
//! one command. It holds a working head (`NAME`: keeps the instances scoring at least
//! `min_score`, every per-instance tensor alike), a pipeline that runs it, and the engine's
//! own `Cargo.lock`, so that the crate resolves the same dependency versions as the engine
//! (without it, cargo picks the newest compatible ones).

use std::path::{Path, PathBuf};

/// Why no crate was written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("\"{0}\" is not a valid plugin name: use lowercase letters, digits and _, starting with a letter (it is the crate's and the node kind's name)")]
    Name(String),
    #[error("\"{0}\" already exists; choose another name or directory")]
    Exists(PathBuf),
    #[error("the plugin SDK is not at \"{0}\" (the engine was built from another checkout?); pass --sdk path/to/plugins/sdk")]
    NoSdk(PathBuf),
    #[error("cannot write \"{path}\": {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The plugin SDK of the checkout this engine was built from.
pub fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

/// Writes the crate `dir/name` and returns its path.
pub fn new_plugin(dir: &Path, name: &str, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    let sdk = sdk
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .ok_or_else(|| ScaffoldError::NoSdk(sdk.to_path_buf()))?;
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let write = |rel: &str, text: &str| -> Result<(), ScaffoldError> {
        let path = root.join(rel);
        let io = |source| ScaffoldError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(io)
    };
    let sdk_text = sdk.display().to_string().replace('\\', "/");
    write(
        "Cargo.toml",
        &CARGO_TOML
            .replace("{name}", name)
            .replace("{sdk}", &sdk_text),
    )?;
    write("src/lib.rs", &LIB_RS.replace("{name}", name))?;
    write("pipeline.toml", &PIPELINE.replace("{name}", name))?;
    write("README.md", &README.replace("{name}", name))?;
    write(".gitignore", "/target\n/out\n")?;
    // The engine's lock file pins every shared dependency to the engine's versions; cargo drops
    // the entries this crate does not use on its first build.
    if let Some(lock) = sdk
        .parent()
        .and_then(Path::parent)
        .map(|ws| ws.join("Cargo.lock"))
        .filter(|l| l.is_file())
    {
        let text = std::fs::read_to_string(&lock).map_err(|source| ScaffoldError::Io {
            path: lock.clone(),
            source,
        })?;
        write("Cargo.lock", &text)?;
    }
    Ok(root)
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

# A plugin library: `cargo build --release` writes target/release/lib{name}.so, which the
# engine finds through pipeline.toml's [plugins] path (or ENGINE_PLUGIN_PATH).
[lib]
crate-type = ["cdylib"]

[dependencies]
plugin-sdk = { path = "{sdk}" }

# Its own workspace, wherever this folder is.
[workspace]
"#;

const LIB_RS: &str = r#"//! `{name}`: an engine plugin. It keeps the instances that score at least `min_score`, with
//! every per-instance tensor (masks, keypoints, ...) selected alike. Change `process` to make
//! it your head; `engine plugins --kind {name}` shows what the engine reads from `kinds`.

use plugin_sdk::{
    export_plugin, DType, FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs,
    ParamSpec, ParamType, ParamValue, PortKind, PortSpec,
};

export_plugin!(name: "{name}", version: env!("CARGO_PKG_VERSION"), kinds: kinds);

/// The node kinds of this library.
pub fn kinds() -> Vec<NodeKind> {
    let spec = NodeSpec::new("{name}", "Keeps the instances scoring at least min_score")
        .input(
            PortSpec::new("instances", PortKind::Instances, "detections")
                .dtype(DType::F32)
                .shape("N,4"),
        )
        .output(
            PortSpec::new("instances", PortKind::Instances, "the kept detections")
                .dtype(DType::F32)
                .shape("N,4"),
        )
        .param(
            ParamSpec::optional(
                "min_score",
                ParamType::Float,
                ParamValue::Float(0.5),
                "instances scoring below this are dropped",
            )
            // Checked by `engine check` at the value's file:line:col.
            .range(0.0, 1.0),
        );
    vec![NodeKind::new(spec, |params| {
        let min_score = params.float("min_score")? as f32;
        Ok(Box::new(Head { min_score }) as Box<dyn Node>)
    })]
}

struct Head {
    min_score: f32,
}

impl Node for Head {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let instances = inputs.value("instances")?;
        let scores = instances.tensor("scores")?.as_slice::<f32>()?;
        let keep: Vec<usize> = (0..scores.len())
            .filter(|&i| scores[i] >= self.min_score)
            .collect();
        Ok(Outputs::one("instances", instances.select_rows(&keep)?))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_are_documented() {
        assert_eq!(plugin_sdk::lint_kinds(&super::kinds()), Vec::<String>::new());
    }
}
"#;

const PIPELINE: &str = r#"# Runs the {name} plugin on synthetic detections:
#
#   cargo build --release && engine run pipeline.toml
#
# The engine finds target/release/lib{name}.so through [plugins] path (relative to the
# directory you run it in).

[plugins]
path = ["target/release"]

[nodes.detections]
plugin    = "synthetic_source"
frames    = 5
instances = 4

[nodes.head]
plugin    = "{name}"
inputs    = { instances = "detections.instances" }
min_score = 0.3

[nodes.out]
plugin = "json_sink"
inputs = { instances = "head.instances" }
path   = "out/{name}.jsonl"
"#;

const README: &str = r#"# {name}

An engine plugin library, made by `engine new-plugin {name}`.

    cargo build --release && engine run pipeline.toml

- `src/lib.rs`: the node kind `{name}`; `engine plugins --kind {name}` (run in this folder, or
  with `ENGINE_PLUGIN_PATH=target/release`) shows its ports and parameters.
- `pipeline.toml`: runs it on synthetic detections and writes `out/{name}.jsonl`.
- `Cargo.lock`: a copy of the engine's, so this crate builds with the engine's dependency
  versions. Keep it; `cargo update` would move to the newest compatible versions.
- The dependency `plugin-sdk` points at the engine's checkout. It is small: a clean build
  compiles about 15 crates and none of the engine's compute stack.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_nothing_is_overwritten() {
        let dir = std::env::temp_dir().join(format!("scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            new_plugin(&dir, "My-Head", &default_sdk()),
            Err(ScaffoldError::Name(_))
        ));
        let root = new_plugin(&dir, "my_head", &default_sdk()).unwrap();
        for f in [
            "Cargo.toml",
            "src/lib.rs",
            "pipeline.toml",
            "README.md",
            "Cargo.lock",
        ] {
            assert!(root.join(f).is_file(), "{f}");
        }
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("export_plugin!(name: \"my_head\""));
        assert!(matches!(
            new_plugin(&dir, "my_head", &default_sdk()),
            Err(ScaffoldError::Exists(_))
        ));
        assert!(matches!(
            new_plugin(&dir, "other", Path::new("/nonexistent/sdk")),
            Err(ScaffoldError::NoSdk(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

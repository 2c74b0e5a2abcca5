//! The node kinds a pipeline can use: the built-in I/O nodes, and those of plugin libraries,
//! named explicitly (`[plugins] libraries`) or found on the plugin search path.
//!
//! The search path, in order: the directories of `ENGINE_PLUGIN_PATH` (colon-separated), the
//! pipeline's `[plugins] path`, and the directory of the `engine` executable, where
//! `cargo build` puts the workspace's family libraries. In each directory every file named
//! `lib*.so` (the platform's library prefix and suffix) is loaded and asked for its plugin
//! table, in name order. The first library with a given plugin name wins: an explicit library
//! shadows one of the same plugin found on the path, and an earlier directory a later one, as
//! `PATH` does. Two different plugins that offer the same node kind are an error naming both
//! files. A file on the path that is no plugin (no entry symbol, a corrupt file, another ABI) is
//! named in a warning and skipped; named in `[plugins] libraries`, it is an error.

use std::path::{Path, PathBuf};

use plugin_sdk::{FrameInfo, Inputs, Node, NodeKind, ParamValue, Params, Value};

use crate::plugin_host::{self, PluginLoadError};

/// The environment variable that adds directories to the plugin search path.
pub const PLUGIN_PATH_VAR: &str = "ENGINE_PLUGIN_PATH";

/// Where a node kind comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Provider {
    BuiltIn,
    Library(LibraryInfo),
}

/// A loaded plugin library.
#[derive(Clone, Debug, PartialEq)]
pub struct LibraryInfo {
    pub path: String,
    pub plugin: String,
    pub version: String,
    pub abi: (u32, u32),
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::BuiltIn => f.write_str("built-in"),
            Provider::Library(l) => write!(f, "{} {} ({})", l.plugin, l.version, l.path),
        }
    }
}

pub struct Registry {
    kinds: Vec<(NodeKind, Provider)>,
    libraries: Vec<(PathBuf, LibraryInfo)>,
    threads: usize,
    /// `ENGINE_PLUGIN_PATH`, searched before a pipeline's `[plugins] path`.
    env_dirs: Vec<PathBuf>,
    /// Searched after a pipeline's `[plugins] path`: the executable's directory.
    default_dirs: Vec<PathBuf>,
}

/// The thread budget when the pipeline sets none: `RAYON_NUM_THREADS` when set (rayon's own
/// variable, which the libraries' pools would otherwise each read), else every core.
pub fn default_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The directory of the running executable: where `cargo build` puts the family libraries.
pub fn executable_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The directories of `ENGINE_PLUGIN_PATH`, in order (empty entries are ignored).
pub fn env_dirs() -> Vec<PathBuf> {
    std::env::var_os(PLUGIN_PATH_VAR)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn is_library_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with(std::env::consts::DLL_PREFIX)
        && name.ends_with(std::env::consts::DLL_SUFFIX)
        && name.len() > std::env::consts::DLL_PREFIX.len() + std::env::consts::DLL_SUFFIX.len()
}

impl Registry {
    /// The built-in node kinds (the I/O nodes) only.
    pub fn builtin() -> Registry {
        Registry {
            kinds: plugin_io::kinds()
                .into_iter()
                .map(|k| (k, Provider::BuiltIn))
                .collect(),
            libraries: Vec::new(),
            threads: default_threads(),
            env_dirs: Vec::new(),
            default_dirs: Vec::new(),
        }
    }

    /// The built-in kinds, with the search path of a running engine: `ENGINE_PLUGIN_PATH`,
    /// then (per pipeline) `[plugins] path`, then the executable's directory.
    pub fn with_search_path() -> Registry {
        Registry {
            env_dirs: env_dirs(),
            default_dirs: executable_dir().into_iter().collect(),
            ..Registry::builtin()
        }
    }

    /// The built-in kinds, searching `dirs` only (tests and benches that find the libraries
    /// in a directory they know).
    pub fn with_dirs(dirs: Vec<PathBuf>) -> Registry {
        Registry {
            default_dirs: dirs,
            ..Registry::builtin()
        }
    }

    /// For tests, examples and benches that cargo builds into `target/<profile>/deps` or
    /// `.../examples`: the built-in kinds and every library in `target/<profile>`, where
    /// cargo puts the workspace's plugin libraries. Fails when none is there.
    pub fn from_cargo_target_dir() -> Result<Registry, String> {
        let exe_dir = executable_dir().ok_or("cannot find the running executable")?;
        let dir = match exe_dir.file_name().and_then(|n| n.to_str()) {
            Some("deps" | "examples") => exe_dir.parent().map(Path::to_path_buf),
            _ => Some(exe_dir),
        }
        .ok_or("the executable has no parent directory")?;
        let mut registry = Registry::with_dirs(vec![dir.clone()]);
        let warnings = registry
            .scan(&registry.search_path(&[]))
            .map_err(|e| e.to_string())?;
        if registry.libraries.is_empty() {
            return Err(format!(
                "no plugin library in {} ({}); build the workspace first: cargo build --workspace",
                dir.display(),
                warnings.join("; ")
            ));
        }
        Ok(registry)
    }

    /// The whole search path for a pipeline whose `[plugins] path` is `pipeline_dirs`.
    pub fn search_path(&self, pipeline_dirs: &[PathBuf]) -> Vec<PathBuf> {
        self.env_dirs
            .iter()
            .chain(pipeline_dirs)
            .chain(&self.default_dirs)
            .cloned()
            .collect()
    }

    /// The thread budget handed to every library loaded from now on.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The libraries loaded so far, in load order.
    pub fn libraries(&self) -> impl Iterator<Item = &LibraryInfo> {
        self.libraries.iter().map(|(_, l)| l)
    }

    /// Loads a library named by the user. Any failure is an error. A library already loaded
    /// (the same file) is not loaded twice.
    pub fn load_library(&mut self, path: &Path) -> Result<(), PluginLoadError> {
        self.add(path, false).map(|_| ())
    }

    /// Loads every plugin library in `dirs` (see the module documentation). Returns the
    /// warnings: directories that do not exist, and files skipped because they are no usable
    /// plugin. A kind offered by two plugins is an error.
    pub fn scan(&mut self, dirs: &[PathBuf]) -> Result<Vec<String>, PluginLoadError> {
        let mut warnings = Vec::new();
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) => {
                    warnings.push(format!(
                        "plugin path entry \"{}\" cannot be read ({e}); skipping it",
                        dir.display()
                    ));
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| is_library_name(p) && p.is_file())
                .collect();
            files.sort();
            for file in files {
                match self.add(&file, true) {
                    Ok(_) => {}
                    Err(e @ PluginLoadError::Conflict { .. }) => return Err(e),
                    Err(e) => warnings.push(format!("{e}; skipping it (found on the plugin path)")),
                }
            }
        }
        Ok(warnings)
    }

    /// Loads every library on the search path of a pipeline whose `[plugins] path` is
    /// `pipeline_dirs` ([`Registry::search_path`]), logging the warnings of [`Registry::scan`].
    pub fn load_search_path(&mut self, pipeline_dirs: &[PathBuf]) -> Result<(), PluginLoadError> {
        for warning in self.scan(&self.search_path(pipeline_dirs))? {
            tracing::warn!("{warning}");
        }
        Ok(())
    }

    /// Loads one library; `on_path` says it was found by scanning (then a plugin of the same
    /// name that is already loaded shadows it). Returns whether it was added.
    fn add(&mut self, path: &Path, on_path: bool) -> Result<bool, PluginLoadError> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.libraries.iter().any(|(p, _)| *p == canonical) {
            return Ok(false);
        }
        let loaded = plugin_host::load(path, self.threads)?;
        if on_path {
            if let Some((_, first)) = self.libraries.iter().find(|(_, l)| l.plugin == loaded.name) {
                tracing::debug!(
                    "plugin {} at {} is shadowed by {}",
                    loaded.name,
                    path.display(),
                    first.path
                );
                return Ok(false);
            }
        }
        let info = LibraryInfo {
            path: path.display().to_string(),
            plugin: loaded.name.clone(),
            version: loaded.version.clone(),
            abi: loaded.abi,
        };
        for kind in &loaded.kinds {
            if let Some((_, other)) = self.find(&kind.spec.kind) {
                return Err(match other {
                    Provider::BuiltIn => PluginLoadError::Malformed {
                        path: path.to_path_buf(),
                        reason: format!(
                            "node kind \"{}\" is a built-in kind of the engine; rename it in the plugin",
                            kind.spec.kind
                        ),
                    },
                    Provider::Library(first) => PluginLoadError::Conflict {
                        kind: kind.spec.kind.clone(),
                        first: first.path.clone(),
                        second: info.path.clone(),
                    },
                });
            }
        }
        let provider = Provider::Library(info.clone());
        self.kinds
            .extend(loaded.kinds.into_iter().map(|k| (k, provider.clone())));
        self.libraries.push((canonical, info));
        Ok(true)
    }

    /// Creates a node of `kind` outside a pipeline (tests, examples, benches): every declared
    /// default, then `set`. The parameters are checked as in a pipeline.
    pub fn create_node(
        &self,
        kind: &str,
        set: &[(&str, ParamValue)],
    ) -> Result<Box<dyn Node>, String> {
        let (k, _) = self
            .find(kind)
            .ok_or_else(|| format!("no node kind \"{kind}\" (`engine plugins` lists them)"))?;
        let mut params = Params::new();
        for spec in &k.spec.params {
            if let Some(d) = &spec.default {
                params.set(&spec.name, d.clone());
            }
        }
        for (name, value) in set {
            let spec = k
                .spec
                .params
                .iter()
                .find(|p| p.name == *name)
                .ok_or_else(|| format!("{kind} has no parameter \"{name}\""))?;
            let value = value
                .clone()
                .coerce(spec.ty)
                .ok_or_else(|| format!("{kind}.{name} must be {}", spec.ty))?;
            params.set(name, value);
        }
        (k.create)(&params).map_err(|e| e.message().to_string())
    }

    /// Runs `node` on one frame's `inputs` outside a pipeline and returns its output `port`
    /// (tests, examples, benches).
    pub fn run_once(
        node: &mut Box<dyn Node>,
        inputs: &[(&str, &Value)],
        port: &str,
    ) -> Result<Value, String> {
        let mut ins = Inputs::new();
        for (p, v) in inputs {
            ins.push(p, Some((*v).clone()));
        }
        let mut out = node
            .process(&FrameInfo::default(), &ins)
            .map_err(|e| e.to_string())?;
        out.take(port)
            .ok_or_else(|| format!("the node produced no output \"{port}\""))
    }

    pub fn find(&self, name: &str) -> Option<(&NodeKind, &Provider)> {
        self.kinds
            .iter()
            .find(|(k, _)| k.spec.kind == name)
            .map(|(k, p)| (k, p))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.iter().map(|(k, _)| k.spec.kind.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeKind, &Provider)> {
        self.kinds.iter().map(|(k, p)| (k, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_follow_the_platform() {
        assert!(is_library_name(Path::new("/x/libplugin_rcnn.so")));
        assert!(!is_library_name(Path::new("/x/plugin_rcnn.so")));
        assert!(!is_library_name(Path::new("/x/libplugin_rcnn.rlib")));
        assert!(!is_library_name(Path::new("/x/lib.so")));
    }

    #[test]
    fn missing_directories_warn_and_the_builtins_stay() {
        let mut r = Registry::builtin();
        let w = r
            .scan(&[PathBuf::from("/nonexistent/engine-plugins")])
            .unwrap();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("\"/nonexistent/engine-plugins\" cannot be read"),
            "{w:?}"
        );
        assert!(r.find("image_source").is_some());
        assert!(r.find("resnet").is_none());
    }
}

//! The node kinds a pipeline can use: built-in ones and those of loaded plugin libraries.

use std::path::Path;

use plugin_sdk::NodeKind;

use crate::plugin_host::{self, PluginLoadError};

/// Where a node kind comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Provider {
    BuiltIn,
    Library {
        path: String,
        plugin: String,
        version: String,
    },
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::BuiltIn => f.write_str("built-in"),
            Provider::Library {
                path,
                plugin,
                version,
            } => write!(f, "{plugin} {version} ({path})"),
        }
    }
}

pub struct Registry {
    kinds: Vec<(NodeKind, Provider)>,
}

impl Registry {
    /// The built-in node kinds.
    pub fn builtin() -> Registry {
        Registry {
            kinds: plugin_io::kinds()
                .into_iter()
                .chain(plugin_graph_model::kinds())
                .chain(plugin_rcnn::kinds())
                .map(|k| (k, Provider::BuiltIn))
                .collect(),
        }
    }

    /// Loads a plugin library and adds its kinds. A kind whose name is already taken is an
    /// error: a pipeline must never silently run another node than the one its author meant.
    pub fn load_library(&mut self, path: &Path) -> Result<(), PluginLoadError> {
        let loaded = plugin_host::load(path)?;
        let provider = Provider::Library {
            path: path.display().to_string(),
            plugin: loaded.name.clone(),
            version: loaded.version.clone(),
        };
        for kind in loaded.kinds {
            if let Some((_, other)) = self.find(&kind.spec.kind) {
                return Err(PluginLoadError::Malformed {
                    path: path.to_path_buf(),
                    reason: format!(
                        "node kind \"{}\" is already provided by {other}; rename it in the plugin",
                        kind.spec.kind
                    ),
                });
            }
            self.kinds.push((kind, provider.clone()));
        }
        Ok(())
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

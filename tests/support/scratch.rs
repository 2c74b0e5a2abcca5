//! A scratch directory for one test that removes itself when dropped, also when the test
//! panics: a failed run must not leave hundreds of megabytes of weights in the temp folder
//! (CI's disk is small, and each test process writes its own copy).
//!
//! Included with `#[path = ".../tests/support/scratch.rs"] mod scratch;` (`reference.rs`
//! includes it too).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty `<temp>/<name>-<pid>`.
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create scratch dir {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

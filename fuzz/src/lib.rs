//! What the fuzz targets share: a scratch file per process for the readers that take paths.

use std::path::PathBuf;

/// Writes `bytes` to this process's scratch file named `name` (in the system's temporary
/// folder) and returns its path. The readers under test take paths, as the engine calls them.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-fuzz-{}", std::process::id()));
    // The folder may already exist; a failure to write is the harness's, not the target's.
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the scratch file");
    path
}

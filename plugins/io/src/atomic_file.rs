//! Output files that are never left corrupt or emptied: a sink writes into a temporary file
//! beside its target and renames it over the target when it commits, so an interrupted or
//! invalid run leaves the previous file as it was (and no temporary behind, unless the
//! process was killed outright).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use plugin_sdk::NodeError;

use crate::quoted;

/// A file being written to `target` through a temporary beside it.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Creates the temporary beside `target` (whose directory must exist); `target` is
    /// untouched until [`AtomicFile::commit`].
    pub fn create(target: &Path) -> std::io::Result<AtomicFile> {
        let name = target.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path")
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".partial-{}", std::process::id()));
        let temp = target.with_file_name(temp_name);
        let file = File::create(&temp)?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temp,
            out: Some(BufWriter::new(file)),
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), NodeError> {
        let Some(out) = self.out.as_mut() else {
            return Err(NodeError::new(format!(
                "{} was already closed",
                quoted(&self.target)
            )));
        };
        out.write_all(bytes)
            .map_err(|e| NodeError::new(format!("cannot write {}: {e}", quoted(&self.target))))
    }

    /// The writer, for encoders that take one (PNG).
    pub fn writer(&mut self) -> Option<&mut BufWriter<File>> {
        self.out.as_mut()
    }

    /// Flushes and renames the temporary over the target.
    pub fn commit(mut self) -> Result<(), NodeError> {
        self.commit_in_place()
    }

    /// [`AtomicFile::commit`] for an owner that keeps the value (a sink's `finish`); a second
    /// call does nothing.
    pub fn commit_in_place(&mut self) -> Result<(), NodeError> {
        let Some(mut out) = self.out.take() else {
            return Ok(());
        };
        let err = |e: std::io::Error| {
            NodeError::new(format!("cannot write {}: {e}", quoted(&self.target)))
        };
        out.flush().map_err(err)?;
        drop(out);
        std::fs::rename(&self.temp, &self.target).map_err(err)
    }

    pub fn is_committed(&self) -> bool {
        self.out.is_none()
    }
}

/// Writers that seek (an MP4 muxer patching its box sizes) write through it too.
impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.as_mut().ok_or_else(closed)?.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().ok_or_else(closed)?.flush()
    }
}

impl std::io::Seek for AtomicFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.out.as_mut().ok_or_else(closed)?.seek(pos)
    }
}

fn closed() -> std::io::Error {
    std::io::Error::other("the file was already committed")
}

impl Drop for AtomicFile {
    /// Not committed (the run never started, or failed before the sink finished): the
    /// temporary goes, the target stays as it was.
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_changes_only_on_commit() {
        let dir = std::env::temp_dir().join(format!("atomic-file-{}", std::process::id()));
        let target = dir.join("sub/out.json");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        assert!(AtomicFile::create(&dir.join("missing/out.json")).is_err());
        std::fs::write(&target, "old").unwrap();
        // Dropped without commit: the old content stays, no temporary is left.
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(
            std::fs::read_dir(target.parent().unwrap()).unwrap().count(),
            1
        );
        // Committed: replaced.
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(
            std::fs::read_dir(target.parent().unwrap()).unwrap().count(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Reading the files a user names (weights, model files, images) safely: only regular files.
//! A FIFO would block the reader forever, and a character device (`/dev/zero`) would be read
//! until memory runs out; both are refused with a message that says what the path is.

use std::io;
use std::path::Path;

/// The length of `path` when it is a regular file (symbolic links followed), otherwise an
/// `InvalidInput` error naming what it is instead.
pub fn regular_file_len(path: &Path) -> io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let what = if meta.is_dir() {
        "a directory"
    } else {
        special_kind(&meta)
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {what}, not a regular file"),
    ))
}

#[cfg(unix)]
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::Metadata) -> &'static str {
    "a special file"
}

/// The bytes of a regular file (see [`regular_file_len`]).
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    regular_file_len(path)?;
    std::fs::read(path)
}

/// The text of a regular file (see [`regular_file_len`]).
pub fn read_regular_to_string(path: &Path) -> io::Result<String> {
    regular_file_len(path)?;
    std::fs::read_to_string(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_by_what_they_are() {
        let dir = std::env::temp_dir();
        let e = regular_file_len(&dir).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        #[cfg(unix)]
        {
            let e = read_regular(Path::new("/dev/zero")).unwrap_err();
            assert!(e.to_string().contains("a character device"), "{e}");
            let fifo = dir.join(format!("kernels-fifo-{}", std::process::id()));
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                let e = read_regular(&fifo).unwrap_err();
                assert!(e.to_string().contains("a FIFO"), "{e}");
                let _ = std::fs::remove_file(&fifo);
            }
        }
        let f = dir.join(format!("kernels-file-{}", std::process::id()));
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(read_regular(&f).unwrap(), b"abc");
        let _ = std::fs::remove_file(&f);
    }
}

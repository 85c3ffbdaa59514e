//! The data directory's lock: one process writes a data directory.

use crate::{Error, Result};

/// An exclusive `flock` on `DATA_DIR/LOCK`, held for the engine's life, so
/// two processes never write one data directory. The kernel drops it when
/// the process dies, however it dies.
#[allow(dead_code)]
pub(crate) struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &std::path::Path) -> Result<DirLock> {
        use std::os::fd::AsRawFd;
        let io = |source| Error::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            return Err(io(err));
        }
        Ok(DirLock { _file: file })
    }
}

//! The data directory's lock: one process writes a data directory.

use crate::{Error, Result};

/// An exclusive `flock` on `DATA_DIR/LOCK`, held for the engine's life, so
/// two processes never write one data directory. The kernel drops it when
/// the process dies, however it dies.
#[allow(dead_code)]
pub(crate) struct DirLock {
    _file: std::fs::File,
}

/// How long taking the lock waits for a process that is exiting (a
/// `kill -9` returns before the kernel has closed the dying process's
/// files) before the directory counts as in use.
const WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl DirLock {
    /// Takes the lock, waiting up to [`WAIT`] for another holder to go.
    pub(crate) fn acquire(dir: &std::path::Path) -> Result<DirLock> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match DirLock::try_acquire(dir) {
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                taken => return taken,
            }
        }
    }

    fn try_acquire(dir: &std::path::Path) -> Result<DirLock> {
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

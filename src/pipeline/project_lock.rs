//! One `run` (or `gc`) at a time per project: an exclusive `flock(2)` on
//! `.lowrank-smc/lock`.
//!
//! A second `run` waits for the first (it says so, naming the holder's pid, then blocks) rather
//! than failing, so two people or two scripts can start runs without coordinating. A lock held
//! by a process that died — even by `kill -9` — is released by the kernel when its file
//! descriptor closes, so there is no stale lock file to detect or clean up; the pid written in
//! the file is only for the message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Holds the project lock until dropped.
#[derive(Debug)]
pub struct ProjectLock {
    file: File,
    path: PathBuf,
}

/// Whether the lock was free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockWait {
    /// Taken at once.
    Immediate,
    /// Another process (pid, if readable) held it; we waited.
    Waited(Option<u32>),
}

#[cfg(unix)]
fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: flock on a valid, owned file descriptor; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl ProjectLock {
    /// Take the lock in `state_dir`, calling `on_wait(holder_pid)` once if another process
    /// holds it, then blocking until it is free.
    pub fn acquire(
        state_dir: &Path,
        on_wait: impl FnOnce(Option<u32>),
    ) -> std::io::Result<(Self, LockWait)> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let wait = match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => LockWait::Immediate,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = text.trim().parse().ok();
                on_wait(holder);
                flock(&file, libc::LOCK_EX)?;
                LockWait::Waited(holder)
            }
            Err(err) => return Err(err),
        };
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok((Self { file, path }, wait))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProjectLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = flock(&self.file, libc::LOCK_UN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_for_the_first() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (first, wait) = ProjectLock::acquire(dir.path(), |_| {})?;
        assert_eq!(wait, LockWait::Immediate);
        let state = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let result = ProjectLock::acquire(&state, |pid| {
                let _ = tx.send(pid);
            });
            result.map(|(_, wait)| wait)
        });
        let holder = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(holder, Ok(Some(std::process::id())));
        drop(first);
        let waited = waiter
            .join()
            .map_err(|_| std::io::Error::other("panicked"))??;
        assert_eq!(waited, LockWait::Waited(Some(std::process::id())));
        Ok(())
    }
}

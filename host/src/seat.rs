//! A node's seat on its data directory: a lock held for the life of the
//! process, and the id of the node that holds it.
//!
//! One process per data directory: a second lila started on the same
//! directory would run the same sessions (each replacing the other's
//! connection) and write the files a reset of the first had just removed.
//! It refuses to start instead, naming the holder.
//!
//! In cluster mode the seat does one more thing. A node killed with SIGKILL
//! leaves its leases to expire (a ttl: 9 s), since
//! another process cannot tell a dead node from a slow one. A node restarted
//! over the same data directory can: the kernel releases a dead process's
//! lock, so taking the lock proves that the node which ran here last is
//! gone, and its leases are freed at once (`cluster::retire`). A restart
//! after a crash then takes its phones back without waiting out its own
//! leases. The new process still has a new node id, so nothing it does is
//! ever mistaken for its predecessor's.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The lock on `lila/node`, held while this value lives; the file names the
/// node that holds it.
#[derive(Debug)]
pub struct Seat {
    file: File,
}

impl Seat {
    /// Takes the seat of the data directory whose host directory is
    /// `host_dir`; `None` when another live process holds it (`serve` then
    /// refuses to start).
    pub fn take(host_dir: &Path) -> io::Result<Option<Seat>> {
        // Private like everything under the data root (storage/private.rs).
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            dir.mode(crate::storage::private::DIR_MODE);
            options.mode(crate::storage::private::FILE_MODE);
        }
        dir.create(host_dir)?;
        let file = options.open(host_dir.join("node"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Seat { file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// The node named in the seat file of `host_dir` (best effort: for the
    /// sentence that says who holds it).
    pub fn holder(host_dir: &Path) -> String {
        std::fs::read_to_string(host_dir.join("node"))
            .map(|id| id.trim().chars().take(256).collect())
            .unwrap_or_default()
    }

    /// Writes `node_id` as the seat's holder; the node that held it before,
    /// if any: its process has ended.
    pub fn hand_to(&mut self, node_id: &str) -> io::Result<Option<String>> {
        let mut previous = String::new();
        self.file.seek(SeekFrom::Start(0))?;
        // A damaged file names no predecessor: its leases expire by themselves.
        let _ = (&self.file).take(256).read_to_string(&mut previous);
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(node_id.as_bytes())?;
        self.file.sync_data()?;
        let previous = previous.trim();
        Ok((!previous.is_empty() && previous != node_id).then(|| previous.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_holds_the_seat_and_the_next_learns_who_held_it() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("lila");
        let mut first = Seat::take(&host).unwrap().expect("a free seat");
        assert_eq!(first.hand_to("node-a").unwrap(), None, "nobody before");
        // Another open file description of the same file: as another
        // process would (the lock is per open file, not per process).
        assert!(
            Seat::take(&host).unwrap().is_none(),
            "taken while the first lives"
        );
        drop(first);
        let mut second = Seat::take(&host).unwrap().expect("free again");
        assert_eq!(second.hand_to("node-b").unwrap().as_deref(), Some("node-a"));
        drop(second);
        let mut third = Seat::take(&host).unwrap().expect("free again");
        assert_eq!(third.hand_to("node-c").unwrap().as_deref(), Some("node-b"));
    }
}

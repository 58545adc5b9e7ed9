//! The process's open-file limit: raised to what the system allows at start,
//! and checked against what the sessions to resume will need.
//!
//! Every connected session holds a few descriptors (its socket, its SQLite
//! store with WAL and shared-memory files). A node with thousands of
//! sessions runs out of descriptors long before memory or CPU when the soft
//! limit is the usual 1,024; then sockets and stores fail to open with
//! "Too many open files". lila raises the soft limit to the hard one at
//! start (as Go's runtime does), says in the log what it got, warns when
//! that is not enough for the sessions it is about to resume, and exports
//! both numbers on `/metrics`.

use rustix::process::{Resource, getrlimit, setrlimit};

/// Descriptors one connected session holds: its socket, and its SQLite
/// store's database, WAL and shared-memory files. Measured: 1,000 connected
/// sessions hold exactly 4,000 more than none (docs/BENCHMARKS.md). A
/// backup's or a reset's files are transient and come out of `FDS_HEADROOM`.
pub const FDS_PER_SESSION: u64 = 4;
/// Descriptors kept free beyond a new session's, for the API's own
/// connections and the files a reset or a backup opens.
pub const FDS_HEADROOM: u64 = 64;

/// Whether a node with `open` descriptors open under `limit` (0: no limit)
/// has room to start one more session.
pub fn room_for_a_session(open: u64, limit: u64) -> bool {
    limit == 0 || open_files_needed(open, 1) <= limit
}

/// The descriptors a node with `open` open needs to run `sessions` more.
pub fn open_files_needed(open: u64, sessions: usize) -> u64 {
    open + FDS_PER_SESSION * sessions as u64 + FDS_HEADROOM
}

/// The soft limit on open files after trying to raise it to the hard
/// limit; `None` when there is no limit.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        // Failing to raise it is not an error: the check below says what it means.
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current
}

/// Open descriptors right now (Linux), for `/metrics`.
pub fn open_files() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_grows_with_the_sessions_from_what_is_open() {
        assert_eq!(open_files_needed(12, 0), 12 + FDS_HEADROOM);
        assert_eq!(
            open_files_needed(12, 1000),
            12 + 1000 * FDS_PER_SESSION + FDS_HEADROOM
        );
    }

    #[test]
    fn a_session_starts_only_with_its_descriptors_and_the_headroom_free() {
        assert!(room_for_a_session(1_000_000, 0), "no limit");
        let limit = 1_000;
        let last = limit - FDS_PER_SESSION - FDS_HEADROOM;
        assert!(room_for_a_session(last, limit));
        assert!(!room_for_a_session(last + 1, limit));
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let unlimited = |l: Option<u64>| l.unwrap_or(u64::MAX);
        let before = unlimited(getrlimit(Resource::Nofile).current);
        let after = unlimited(raise_open_files_limit());
        assert!(after >= before);
    }
}

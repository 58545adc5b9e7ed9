//! The process's open-file limit: raised to what the system allows at start,
//! and checked against what the sessions to resume will need.
//!
//! Every connected session holds a few descriptors (its socket, and on files
//! its SQLite store with WAL and shared-memory files). A node with thousands of
//! sessions runs out of descriptors long before memory or CPU when the soft
//! limit is the usual 1,024; then sockets and stores fail to open with
//! "Too many open files". lila raises the soft limit to the hard one at
//! start (as Go's runtime does), says in the log what it got, warns when
//! that is not enough for the sessions it is about to resume, and exports
//! both numbers on `/metrics`.

use rustix::process::{Resource, getrlimit, setrlimit};

/// Descriptors one connected session holds on files: its socket, and its
/// SQLite store's database, WAL and shared-memory files. Measured: 1,000
/// connected sessions hold exactly 4,000 more than none (docs/BENCHMARKS.md).
/// A backup's or a reset's files are transient and come out of `FDS_HEADROOM`.
pub const FDS_PER_SESSION_ON_FILES: u64 = 4;
/// On PostgreSQL: its socket alone; the stores share the node's pool.
/// Measured: 10,000 connected sessions hold 10,016 more than none.
pub const FDS_PER_SESSION_ON_POSTGRES: u64 = 1;
/// Descriptors kept free beyond a new session's, for the API's own
/// connections and the files a reset or a backup opens.
pub const FDS_HEADROOM: u64 = 64;

/// Whether a node with `open` descriptors open under `limit` (0: no limit)
/// has room to start one more session of `per_session` descriptors.
pub fn room_for_a_session(open: u64, limit: u64, per_session: u64) -> bool {
    limit == 0 || open_files_needed(open, 1, per_session) <= limit
}

/// The descriptors a node with `open` open needs to run `sessions` more.
pub fn open_files_needed(open: u64, sessions: usize, per_session: u64) -> u64 {
    open + per_session * sessions as u64 + FDS_HEADROOM
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
        let files = FDS_PER_SESSION_ON_FILES;
        assert_eq!(open_files_needed(12, 0, files), 12 + FDS_HEADROOM);
        assert_eq!(
            open_files_needed(12, 1000, files),
            12 + 1000 * files + FDS_HEADROOM
        );
        assert_eq!(
            open_files_needed(12, 10_000, FDS_PER_SESSION_ON_POSTGRES),
            12 + 10_000 + FDS_HEADROOM
        );
    }

    #[test]
    fn a_session_starts_only_with_its_descriptors_and_the_headroom_free() {
        for per_session in [FDS_PER_SESSION_ON_FILES, FDS_PER_SESSION_ON_POSTGRES] {
            assert!(room_for_a_session(1_000_000, 0, per_session), "no limit");
            let limit = 1_000;
            let last = limit - per_session - FDS_HEADROOM;
            assert!(room_for_a_session(last, limit, per_session));
            assert!(!room_for_a_session(last + 1, limit, per_session));
        }
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let unlimited = |l: Option<u64>| l.unwrap_or(u64::MAX);
        let before = unlimited(getrlimit(Resource::Nofile).current);
        let after = unlimited(raise_open_files_limit());
        assert!(after >= before);
    }
}

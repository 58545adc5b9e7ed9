//! The on-disk cache of compiled plugin code (`data/plugins/cache/`), so
//! that a restart loads an 18 MB Python or JavaScript component in
//! milliseconds instead of compiling it again for seconds.
//!
//! One file per (component, engine configuration):
//! `{component sha256}-{engine key}.cwasm`, where the engine key is a
//! SHA-256 of wasmtime's `precompile_compatibility_hash` (target, compiler
//! flags, tunables, features and wasmtime's own version). The file is
//!
//! ```text
//! "lila-compiled-plugin\n"   magic (21 bytes)
//! u32 little-endian          format version (CACHE_FORMAT_VERSION)
//! [u8; 32]                   SHA-256 of the component it was compiled from
//! [u8; 32]                   the engine key
//! [u8; 32]                   SHA-256 of the payload
//! payload                    `Component::serialize` output
//! ```
//!
//! Anything that does not match (a torn write, a bit flip, another format
//! version, another engine) is a miss: the component is compiled again and
//! the file rewritten. Files are written to a temporary name and renamed,
//! so a reader never sees half of one.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8] = b"lila-compiled-plugin\n";
/// The only layout of a cache file this host reads; another one is a miss.
pub const CACHE_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = MAGIC.len() + 4 + 32 * 3;
const EXTENSION: &str = "cwasm";

/// Why a cache file was not used (logged, then the component is compiled).
#[derive(Debug, thiserror::Error)]
pub enum CacheMiss {
    #[error("no cache file")]
    Absent,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a lila cache file of format {CACHE_FORMAT_VERSION}: {reason}")]
    Invalid { path: PathBuf, reason: &'static str },
    #[error("{path} was rejected by wasmtime: {reason}")]
    Rejected { path: PathBuf, reason: String },
}

/// Feeds wasmtime's `Hash` of the engine configuration into SHA-256: unlike
/// `DefaultHasher`, its output is the same in every build and process.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

/// The cache folder for one engine.
pub struct CompiledCache {
    dir: PathBuf,
    engine_key: [u8; 32],
}

impl CompiledCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> CompiledCache {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompiledCache {
            dir,
            engine_key: hasher.0.finalize().into(),
        }
    }

    fn file_name(&self, component_sha256: &str) -> String {
        // 16 hex digits of the engine key keep names short; the full key is
        // in the header and checked.
        let engine = hex::encode(&self.engine_key[..8]);
        format!("{component_sha256}-{engine}.{EXTENSION}")
    }

    /// The compiled component for `component_sha256` (lowercase hex), if a
    /// valid cache file for this engine exists.
    pub fn load(&self, engine: &Engine, component_sha256: &str) -> Result<Component, CacheMiss> {
        let path = self.dir.join(self.file_name(component_sha256));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheMiss::Absent),
            Err(source) => return Err(CacheMiss::Read { path, source }),
        };
        let invalid = |reason| CacheMiss::Invalid {
            path: path.clone(),
            reason,
        };
        let payload = check_header(&bytes, component_sha256, &self.engine_key).map_err(invalid)?;
        // SAFETY: `Component::deserialize` requires bytes that wasmtime's own
        // `serialize` produced; arbitrary bytes could make it run arbitrary
        // machine code. These bytes qualify:
        // - the file lives in lila's data root (`data/plugins/cache/`),
        //   which only lila writes (the same trust as the session
        //   credentials beside it), and only `store` below writes this
        //   folder, from `Component::serialize`;
        // - the header's SHA-256 of the payload was just recomputed over the
        //   bytes read and matches, so a torn write or corruption is caught
        //   (the file is also written under a temporary name and renamed);
        // - the header names this very component (its SHA-256) and this
        //   engine's compatibility key, and wasmtime itself checks its
        //   version and configuration in the payload and refuses a mismatch
        //   with an error (below), never by misbehaving.
        let component = unsafe { Component::deserialize(engine, payload) };
        component.map_err(|e| CacheMiss::Rejected {
            path,
            reason: format!("{e:#}"),
        })
    }

    /// Writes the serialized `component` for `component_sha256`, atomically.
    pub fn store(&self, component_sha256: &str, component: &Component) -> Result<(), String> {
        let payload = component.serialize().map_err(|e| format!("{e:#}"))?;
        let component_sha = hex::decode(component_sha256).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let name = self.file_name(component_sha256);
        let final_path = self.dir.join(&name);
        // Unique per process and call: two lila processes on one data root
        // (a test, an operator's mistake) never write into the same temp file.
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&header(&component_sha, &self.engine_key, &payload))?;
            file.write_all(&payload)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &final_path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", final_path.display())
        })
    }

    /// Removes cache files of components no longer installed, of other
    /// engines, and temp files left by a crash: the folder holds only what
    /// the next start can use.
    pub fn prune(&self, keep_component_sha256: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let keep: HashSet<String> = keep_component_sha256
            .iter()
            .map(|sha| self.file_name(sha))
            .collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.ends_with(&format!(".{EXTENSION}")) || name.ends_with(".tmp");
            if ours && !keep.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The header `store` writes before `payload` (see the module's comment).
pub fn header(component_sha256: &[u8], engine_key: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&CACHE_FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(component_sha256);
    header.extend_from_slice(engine_key);
    header.extend_from_slice(&Sha256::digest(payload));
    header
}

/// The payload of `bytes` if its header is right and its checksum holds.
pub fn check_header<'a>(
    bytes: &'a [u8],
    component_sha256: &str,
    engine_key: &[u8; 32],
) -> Result<&'a [u8], &'static str> {
    if bytes.len() < HEADER_LEN || !bytes.starts_with(MAGIC) {
        return Err("bad magic or truncated header");
    }
    let mut at = MAGIC.len();
    let mut take = |n: usize| {
        let part = &bytes[at..at + n];
        at += n;
        part
    };
    let mut version = [0u8; 4];
    version.copy_from_slice(take(4));
    if u32::from_le_bytes(version) != CACHE_FORMAT_VERSION {
        return Err("unknown format version");
    }
    if hex::encode(take(32)) != component_sha256 {
        return Err("compiled from another component");
    }
    if take(32) != *engine_key {
        return Err("compiled by another engine configuration");
    }
    let checksum = take(32).to_vec();
    let payload = &bytes[HEADER_LEN..];
    if Sha256::digest(payload).as_slice() != checksum.as_slice() {
        return Err("checksum mismatch (corrupt or torn file)");
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: just the preamble.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    fn stored() -> (tempfile::TempDir, Engine, CompiledCache, String, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::new(dir.path().join("cache"), &engine);
        let sha = hex::encode(Sha256::digest(EMPTY_COMPONENT));
        let component = Component::new(&engine, EMPTY_COMPONENT).unwrap();
        cache.store(&sha, &component).unwrap();
        let path = cache.dir.join(cache.file_name(&sha));
        (dir, engine, cache, sha, path)
    }

    #[test]
    fn a_stored_component_loads_back() {
        let (_dir, engine, cache, sha, _) = stored();
        assert!(cache.load(&engine, &sha).is_ok());
        assert!(matches!(
            cache.load(&engine, &"0".repeat(64)),
            Err(CacheMiss::Absent)
        ));
    }

    #[test]
    fn a_damaged_or_foreign_file_is_a_miss_never_loaded() {
        let (_dir, engine, cache, sha, path) = stored();
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut other_version = good.clone();
        other_version[MAGIC.len()] = 2;
        let mut other_engine = good.clone();
        other_engine[MAGIC.len() + 4 + 32] ^= 1;
        for bad in [
            flipped,
            other_version,
            other_engine,
            good[..good.len() - 1].to_vec(),
            good[..10].to_vec(),
            Vec::new(),
        ] {
            std::fs::write(&path, &bad).unwrap();
            assert!(
                matches!(cache.load(&engine, &sha), Err(CacheMiss::Invalid { .. })),
                "{} bytes",
                bad.len()
            );
        }
        // Another component's file under this name is refused too.
        std::fs::write(&path, &good).unwrap();
        let renamed = cache.dir.join(cache.file_name(&"1".repeat(64)));
        std::fs::copy(&path, &renamed).unwrap();
        assert!(matches!(
            cache.load(&engine, &"1".repeat(64)),
            Err(CacheMiss::Invalid { .. })
        ));
    }

    #[test]
    fn pruning_keeps_only_what_is_installed() {
        let (_dir, _engine, cache, sha, path) = stored();
        let stale = cache.dir.join(cache.file_name(&"2".repeat(64)));
        let torn = cache.dir.join(".x.cwasm.1.tmp");
        std::fs::write(&stale, b"old").unwrap();
        std::fs::write(&torn, b"half").unwrap();
        cache.prune(&HashSet::from([sha]));
        assert!(path.exists());
        assert!(!stale.exists() && !torn.exists());
    }
}

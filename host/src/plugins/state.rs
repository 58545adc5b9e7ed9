//! Where a plugin's own data lives, and its small key-value store.
//!
//! Each (plugin, tenant) scope is a folder under `{data}/plugins/`, outside
//! `sessions/`, so no reset, purge or restore ever touches it:
//! `operator/{plugin}/{tenant}/` for an operator plugin and
//! `tenant/{tenant}/{plugin}/` for a tenant's own. It holds `state.json`
//! (versioned) and `archive/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::import_limits::check_state_set;
use crate::config::plugins::PluginOwner;

const STATE_FORMAT_VERSION: u32 = 1;

/// One scope's folder; two scopes never share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateScope {
    pub dir: PathBuf,
    /// The folder's path under `plugins/` (`operator/{plugin}/{tenant}`):
    /// the scope's name in PostgreSQL, the same on every node.
    pub name: String,
}

impl StateScope {
    /// The scope of `plugin_name` (owned by `owner`) for a reset of `tenant`'s session.
    pub fn new(
        data_root: &Path,
        owner: &PluginOwner,
        plugin_name: &str,
        tenant: &str,
    ) -> StateScope {
        let parts = match owner {
            PluginOwner::Operator(_) => [
                "operator".to_owned(),
                plugin_name.to_owned(),
                path_segment(tenant),
            ],
            PluginOwner::Tenant(owner) => [
                "tenant".to_owned(),
                path_segment(owner.as_str()),
                plugin_name.to_owned(),
            ],
        };
        let dir = parts
            .iter()
            .fold(data_root.join("plugins"), |dir, part| dir.join(part));
        StateScope {
            dir,
            name: parts.join("/"),
        }
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.dir.join("archive")
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
}

/// A tenant id as one safe folder name: kept when it is plain
/// (`[A-Za-z0-9_-]`, at most 64 bytes, not starting with `-`), otherwise `~`
/// and a hash. `~` is never plain, so the two forms never collide.
pub fn path_segment(tenant: &str) -> String {
    let plain = !tenant.is_empty()
        && tenant.len() <= 64
        && !tenant.starts_with('-')
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        tenant.to_owned()
    } else {
        format!("~{}", &hex::encode(Sha256::digest(tenant.as_bytes()))[..32])
    }
}

#[derive(Debug, Deserialize)]
struct StateFile {
    version: u32,
    entries: BTreeMap<String, String>,
}

/// [`StateFile`] as written, borrowing the entries instead of cloning them.
#[derive(Serialize)]
struct StateFileRef<'a> {
    version: u32,
    entries: &'a BTreeMap<String, String>,
}

/// Where the plugins' key-value stores are kept.
#[derive(Default)]
pub struct StateStore {
    /// `None`: files, one `state.json` per scope; a pool: PostgreSQL (a
    /// cluster, where a plugin's hook may run on any node).
    database: Option<lila_pgstore::Pool>,
    /// Files only: every scope's entries, read on first use and written
    /// through on each change.
    scopes: Mutex<HashMap<StateScope, BTreeMap<String, String>>>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("postgres", &self.database.is_some())
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// The plugins' state in PostgreSQL (cluster mode).
    pub fn postgres(pool: lila_pgstore::Pool) -> StateStore {
        StateStore {
            database: Some(pool),
            scopes: Mutex::default(),
        }
    }

    pub async fn get(&self, scope: &StateScope, key: &str) -> Option<String> {
        match &self.database {
            None => self.get_file(scope, key),
            Some(pool) => lila_pgstore::plugin_state::get(pool, &scope.name, key)
                .await
                .ok()
                .flatten(),
        }
    }

    pub async fn set(&self, scope: &StateScope, key: &str, value: &str) -> Result<(), String> {
        match &self.database {
            None => self.set_file(scope, key, value),
            Some(pool) => {
                lila_pgstore::plugin_state::set(pool, &scope.name, key, value, |n, exists| {
                    check_state_set(key, value, n, exists)
                })
                .await
                .map_err(|e| e.to_string())
            }
        }
    }

    pub async fn remove(&self, scope: &StateScope, key: &str) -> Result<(), String> {
        match &self.database {
            None => self.remove_file(scope, key),
            Some(pool) => lila_pgstore::plugin_state::remove(pool, &scope.name, key)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    fn with_scope<T>(
        &self,
        scope: &StateScope,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(T, bool), String>,
    ) -> Result<T, String> {
        // A panic while the lock was held cannot leave a map half-changed in
        // a way that matters: the file is the truth and is rewritten whole.
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if !scopes.contains_key(scope) {
            let loaded = read_state(&scope.state_file())?;
            scopes.insert(scope.clone(), loaded);
        }
        let entries = scopes.get_mut(scope).ok_or("state scope vanished")?;
        let (value, changed) = f(entries)?;
        if changed {
            let bytes = encode_state(entries)?;
            crate::storage::private::create_dir_all(&scope.dir)
                .map_err(|e| format!("cannot create the state folder: {e}"))?;
            crate::storage::atomic::write_atomic(&scope.state_file(), &bytes)
                .map_err(|e| format!("cannot save the state: {e}"))?;
        }
        Ok(value)
    }

    fn get_file(&self, scope: &StateScope, key: &str) -> Option<String> {
        self.with_scope(scope, |entries| Ok((entries.get(key).cloned(), false)))
            .ok()
            .flatten()
    }

    fn set_file(&self, scope: &StateScope, key: &str, value: &str) -> Result<(), String> {
        self.with_scope(scope, |entries| {
            check_state_set(key, value, entries.len(), entries.contains_key(key))?;
            entries.insert(key.to_owned(), value.to_owned());
            Ok(((), true))
        })
    }

    fn remove_file(&self, scope: &StateScope, key: &str) -> Result<(), String> {
        self.with_scope(scope, |entries| {
            let existed = entries.remove(key).is_some();
            Ok(((), existed))
        })
    }
}

fn read_state(path: &Path) -> Result<BTreeMap<String, String>, String> {
    match std::fs::read(path) {
        Ok(bytes) => decode_state(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("cannot read the state: {e}")),
    }
}

/// The bytes of a plugin's `state.json` holding `entries`.
pub fn encode_state(entries: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    let file = StateFileRef {
        version: STATE_FORMAT_VERSION,
        entries,
    };
    serde_json::to_vec(&file).map_err(|e| e.to_string())
}

/// The entries of a plugin's `state.json`, from its bytes.
pub fn decode_state(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let file: StateFile =
        serde_json::from_slice(bytes).map_err(|e| format!("the state file is damaged: {e}"))?;
    if file.version != STATE_FORMAT_VERSION {
        return Err(format!(
            "the state file has unknown version {}",
            file.version
        ));
    }
    Ok(file.entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plugins::TenantScope;
    use crate::core::tenant::TenantId;

    /// What a store must do, whichever backend: keep, separate scopes,
    /// survive being opened anew (`reopen`), and hold the limits.
    async fn behaves_as_a_state_store(root: &Path, open: impl Fn() -> StateStore) {
        let op = PluginOwner::Operator(TenantScope::All);
        let acme = StateScope::new(root, &op, "p", "acme");
        let globex = StateScope::new(root, &op, "p", "globex");
        let store = open();
        store.set(&acme, "k", "v").await.unwrap();
        assert_eq!(store.get(&globex, "k").await, None);
        let reopened = open();
        assert_eq!(reopened.get(&acme, "k").await.as_deref(), Some("v"));
        reopened.remove(&acme, "k").await.unwrap();
        assert_eq!(open().get(&acme, "k").await, None);
        // Full at MAX_STATE_KEYS: a new key is refused, an existing one may change.
        for i in 0..super::super::import_limits::MAX_STATE_KEYS {
            store.set(&globex, &format!("k{i}"), "x").await.unwrap();
        }
        let full = store.set(&globex, "one-more", "x").await.unwrap_err();
        assert!(full.contains("full"), "{full}");
        store.set(&globex, "k0", "changed").await.unwrap();
        assert_eq!(open().get(&globex, "k0").await.as_deref(), Some("changed"));
        assert!(store.set(&acme, "", "x").await.is_err());
        let own = StateScope::new(
            root,
            &PluginOwner::Tenant(TenantId::parse("acme").unwrap()),
            "p",
            "acme",
        );
        assert_ne!(own, acme);
        assert_eq!(
            (acme.name.as_str(), own.name.as_str()),
            ("operator/p/acme", "tenant/acme/p")
        );
        assert!(!acme.dir.starts_with(root.join("sessions")));
    }

    #[tokio::test]
    async fn state_in_files_survives_a_new_store_and_scopes_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        behaves_as_a_state_store(dir.path(), StateStore::default).await;
    }

    #[tokio::test]
    async fn state_in_postgres_behaves_as_in_files() {
        let server =
            lila_pgstore::testing::TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
        let pool = lila_pgstore::connect_pool(&server.create_database().unwrap(), 2).unwrap();
        lila_pgstore::migrate(&pool).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        behaves_as_a_state_store(dir.path(), || StateStore::postgres(pool.clone())).await;
        // Nothing went to files: the state lives in the database.
        assert!(!dir.path().join("plugins").exists());
    }

    #[test]
    fn odd_tenant_ids_become_safe_folder_names() {
        assert_eq!(path_segment("acme_1"), "acme_1");
        for odd in ["../x", "a/b", "", ".", "-x", "ação"] {
            let seg = path_segment(odd);
            assert!(
                seg.starts_with('~') && !seg.contains('/'),
                "{odd:?} -> {seg}"
            );
        }
    }
}

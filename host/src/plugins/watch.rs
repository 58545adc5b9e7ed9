//! Hot reload: `notify` events on the config file and the plugin folders,
//! debounced, become reloads on a thread of their own (reading the files
//! must stay off the async executor and off the request path). A reload
//! does not wait for the compiles it starts: each runs on a thread of its
//! own (`Runtime::start_compile`), so a slow one never delays the next reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use super::{PluginError, Runtime};

/// Dropping it stops the watching and ends the reload thread.
pub struct PluginWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    reloads: Arc<AtomicU64>,
}

impl PluginWatcher {
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }
}

pub(super) fn start(
    runtime: Arc<Runtime>,
    debounce: Duration,
) -> Result<PluginWatcher, PluginError> {
    let registry = runtime.registry();
    // The folders are those of the configuration at start: moving them needs a restart.
    let mut folders: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    if let Some(config_dir) = runtime.config_file.parent() {
        // The folder, not the file: editors and `mv` replace the file, and a
        // watch on the old inode would go quiet.
        folders.push((config_dir.to_owned(), RecursiveMode::NonRecursive));
    }
    if let Some(config) = &registry.config {
        folders.push((config.dir.clone(), RecursiveMode::NonRecursive));
        if let Some(tenant_dir) = &config.tenant_dir {
            folders.push((tenant_dir.clone(), RecursiveMode::Recursive));
        }
    }
    let (events, wake) = mpsc::channel::<()>();
    let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
        if let Ok(batch) = result
            && !batch.is_empty()
        {
            let _ = events.send(());
        }
    })
    .map_err(|e| PluginError::Watch {
        path: runtime.config_file.clone(),
        source: e.into(),
    })?;
    for (folder, mode) in &folders {
        // A folder that does not exist yet is created so that a plugin
        // dropped into it later is seen.
        let _ = std::fs::create_dir_all(folder);
        debouncer
            .watch(folder, *mode)
            .map_err(|e| PluginError::Watch {
                path: folder.clone(),
                source: e.into(),
            })?;
    }
    let reloads = Arc::new(AtomicU64::new(0));
    let counter = reloads.clone();
    let config_file = runtime.config_file.clone();
    std::thread::Builder::new()
        .name("lila-plugin-reload".into())
        .spawn(move || {
            // Ends when the debouncer (the only sender) is dropped.
            while wake.recv().is_ok() {
                // Events that arrived while reloading are covered by this reload.
                while wake.try_recv().is_ok() {}
                runtime.reload();
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map_err(|e| PluginError::Watch {
            path: config_file,
            source: e.into(),
        })?;
    tracing::info!(folders = ?folders.iter().map(|(f, _)| f.display().to_string()).collect::<Vec<_>>(), "watching plugins for changes");
    Ok(PluginWatcher {
        _debouncer: debouncer,
        reloads,
    })
}

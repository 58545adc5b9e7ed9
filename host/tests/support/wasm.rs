//! The plugin components the tests load, built on demand.
//!
//! `.ci/run` builds them with `bash plugins/build.sh` before the tests; a
//! bare `cargo test --workspace` on a fresh machine finds `plugins/dist`
//! empty, so the first test that needs a component builds them once, under
//! a file lock (test binaries run in parallel), into a target folder of its
//! own (the outer cargo holds the lock on the workspace's `target/`).

// Test binaries include this file for some of its helpers only.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Every component the tests use, as named in `plugins/dist`.
pub const COMPONENTS: [&str; 5] = [
    "backup-archive",
    "webhook-notify",
    "tenant-policy",
    "misbehave",
    "archive-probe",
];

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate lives in the workspace")
        .to_owned()
}

fn dist_dir() -> PathBuf {
    workspace_dir().join("plugins/dist")
}

fn all_built() -> bool {
    COMPONENTS
        .iter()
        .all(|name| dist_dir().join(format!("{name}.wasm")).is_file())
}

/// The path of `plugins/dist/{name}.wasm`, building the plugins first if needed.
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if all_built() {
            return;
        }
        let target = workspace_dir().join("target");
        std::fs::create_dir_all(&target).expect("target folder");
        let lock = std::fs::File::create(target.join(".plugin-build.lock")).expect("lock file");
        lock.lock().expect("lock the plugin build");
        // Another test process may have built them while this one waited.
        if !all_built() {
            let status = Command::new("bash")
                .arg(workspace_dir().join("plugins/build.sh"))
                .env("CARGO_TARGET_DIR", target.join("plugin-build"))
                .status()
                .expect("run plugins/build.sh");
            assert!(status.success(), "plugins/build.sh failed");
        }
        let _ = lock.unlock();
    });
    let path = dist_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// The path of `plugins/dist/examples/{name}.wasm`, building the examples
/// first if needed: `plugins/build-examples.sh --install` installs their
/// pinned toolchains (componentize-py from PyPI, componentize-js from npm)
/// when missing, so the README's test command works on a fresh machine.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = dist_dir().join("examples").join(format!("{name}.wasm"));
    BUILT.get_or_init(|| {
        let built = || {
            ["python-guard", "js-guard"].iter().all(|n| {
                dist_dir()
                    .join("examples")
                    .join(format!("{n}.wasm"))
                    .is_file()
            })
        };
        if built() {
            return;
        }
        let target = workspace_dir().join("target");
        std::fs::create_dir_all(&target).expect("target folder");
        let lock = std::fs::File::create(target.join(".example-build.lock")).expect("lock file");
        lock.lock().expect("lock the example build");
        if !built() {
            let status = Command::new("bash")
                .arg(workspace_dir().join("plugins/build-examples.sh"))
                .arg("--install")
                .status()
                .expect("run plugins/build-examples.sh");
            assert!(
                status.success(),
                "plugins/build-examples.sh --install failed: the example plugins need \
                 componentize-py (PyPI) and componentize-js (npm); see the script"
            );
        }
        let _ = lock.unlock();
    });
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// The source of an example plugin, as committed in `plugins/examples/`.
pub fn example_source(relative: &str) -> String {
    let path = workspace_dir().join("plugins/examples").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

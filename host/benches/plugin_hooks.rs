//! Benchmark of the plugin hooks (not a timed test): the median reset with no
//! plugins vs with the three bundled ones, and the time from a plugin file
//! change to the new version serving. Prints medians and ratios; the figures
//! go to `docs/BENCHMARKS.md`.
//!
//! `cargo bench -p lila --bench plugin_hooks`

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use lila::plugins::PluginHooks;
use support::Harness;
use support::wasm::component;

const RESETS: usize = 40;
const RELOADS: usize = 8;
/// The production debounce (`cli.rs`).
const DEBOUNCE: Duration = Duration::from_millis(300);

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn resets(h: &Harness) -> Duration {
    let token = h.token("acme");
    let mut samples = Vec::new();
    for i in 0..RESETS {
        let phone = format!("5190000{:04}", i);
        let (status, body) = h.create(&phone, &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let started = Instant::now();
        let (status, body) = h.clear(&phone, &token).await;
        samples.push(started.elapsed());
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    median(samples)
}

fn config(dir: &Path, body: &str) {
    std::fs::write(
        dir.join("lila.toml"),
        format!("[plugins]\nversion = 1\ndir = \"wasm\"\n{body}"),
    )
    .unwrap();
}

async fn receiver() -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

fn sha(hooks: &PluginHooks) -> Option<String> {
    hooks.view().plugins.first()?.sha256.clone()
}

#[tokio::main]
async fn main() {
    let none = resets(&Harness::new().await).await;

    let conf = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(conf.path().join("wasm")).unwrap();
    for name in ["tenant-policy", "backup-archive", "webhook-notify"] {
        std::fs::copy(
            component(name),
            conf.path().join(format!("wasm/{name}.wasm")),
        )
        .unwrap();
    }
    let url = receiver().await;
    config(
        conf.path(),
        &format!(
            "[[plugins.plugin]]\nname = \"tenant-policy\"\nconfig = {{ default = {{ max_resets_per_day = 1000 }} }}\n\
             [[plugins.plugin]]\nname = \"backup-archive\"\nhooks = [\"before-clear\"]\ncapabilities = {{ archive = true }}\n\
             [[plugins.plugin]]\nname = \"webhook-notify\"\nhooks = [\"after-clear\"]\ncapabilities = {{ http = [\"{url}\"] }}\n\
             config = {{ endpoints = [{{ url = \"{url}\", secret = \"s\" }}] }}\n"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let hooks = PluginHooks::load(&conf.path().join("lila.toml"), dir.path()).unwrap();
    let load = started.elapsed();
    let h = Harness::with_dir_and_hooks(dir, hooks.clone()).await;
    let three = resets(&h).await;

    // Hot reload: swap one plugin's file between two components, as a deploy does.
    let conf = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(conf.path().join("wasm")).unwrap();
    let target = conf.path().join("wasm/swapped.wasm");
    std::fs::copy(component("misbehave"), &target).unwrap();
    config(conf.path(), "[[plugins.plugin]]\nname = \"swapped\"\n");
    let data = tempfile::tempdir().unwrap();
    let hooks: Arc<PluginHooks> =
        PluginHooks::load(&conf.path().join("lila.toml"), data.path()).unwrap();
    hooks.watch(DEBOUNCE).unwrap();
    let mut samples = Vec::new();
    for i in 0..RELOADS {
        let next = if i % 2 == 0 {
            "tenant-policy"
        } else {
            "misbehave"
        };
        let before = sha(&hooks);
        let tmp = conf.path().join("wasm/.swap.tmp");
        std::fs::copy(component(next), &tmp).unwrap();
        let started = Instant::now();
        std::fs::rename(&tmp, &target).unwrap();
        while sha(&hooks) == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "reload never happened"
            );
        }
        samples.push(started.elapsed());
    }
    let reload = median(samples);

    println!("plugin hooks benchmark ({RESETS} resets each, {RELOADS} reloads)");
    println!(
        "  reset, no plugins:            median {:>8.2} ms",
        none.as_secs_f64() * 1e3
    );
    println!(
        "  reset, three bundled plugins: median {:>8.2} ms  ({:.1}x)",
        three.as_secs_f64() * 1e3,
        three.as_secs_f64() / none.as_secs_f64()
    );
    println!(
        "  overhead of the plugins:      median {:>8.2} ms",
        (three.as_secs_f64() - none.as_secs_f64()) * 1e3
    );
    println!(
        "  loading the three (compile):  {:>8.2} ms",
        load.as_secs_f64() * 1e3
    );
    println!(
        "  file change -> new version:   median {:>8.2} ms  (debounce {} ms)",
        reload.as_secs_f64() * 1e3,
        DEBOUNCE.as_millis()
    );
}

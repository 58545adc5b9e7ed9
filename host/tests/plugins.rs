//! Reset plugins (SPEC section 5): vetoes, budgets, failures, hot reload,
//! tenant isolation and the three bundled plugins, through the real router
//! and the real wasmtime runtime with components built from `plugins/`.

#[path = "support/process.rs"]
mod process;
mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hmac::{Hmac, KeyInit, Mac};
use lila::phone::Phone;
use lila::plugins::PluginHooks;
use serde_json::{Value, json};
use sha2::Sha256;
use support::handmade::{reset_plugin_slow_to_compile, reset_plugin_with_memories};
use support::wasm::{component, example, example_source};
use support::{Harness, snapshot};

const PHONE: &str = "51987654321";
const OTHER: &str = "51911111111";

/// A data root and a config folder (`lila.toml` plus `wasm/` with the
/// plugin files), so a test can change either without touching the repo.
struct Setup {
    h: Harness,
    hooks: Arc<PluginHooks>,
    conf: tempfile::TempDir,
}

impl Setup {
    /// `plugins_toml` is the body of the `[plugins]` section after `version`;
    /// `files` are copied from `plugins/dist` into `wasm/` as (component, file name).
    async fn new(files: &[(&str, &str)], plugins_toml: &str) -> Setup {
        Setup::with_config(files, plugins_toml, |_| {}).await
    }

    /// `new`, with the gateway's test config adjusted by `edit`.
    async fn with_config(
        files: &[(&str, &str)],
        plugins_toml: &str,
        edit: impl FnOnce(&mut lila::config::Config),
    ) -> Setup {
        let conf = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(conf.path().join("wasm")).unwrap();
        for (name, file) in files {
            std::fs::copy(component(name), conf.path().join("wasm").join(file)).unwrap();
        }
        write_config(conf.path(), plugins_toml);
        let dir = tempfile::tempdir().unwrap();
        let hooks = PluginHooks::load(&conf.path().join("lila.toml"), dir.path()).unwrap();
        let h = Harness::with_dir_hooks_and_config(dir, hooks.clone(), edit).await;
        Setup { h, hooks, conf }
    }

    fn wasm(&self, file: &str) -> PathBuf {
        self.conf.path().join("wasm").join(file)
    }

    async fn plugins(&self) -> Value {
        let (status, body) = self.h.get("/api/plugins", &self.h.operator()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn write_config(dir: &Path, plugins_toml: &str) {
    let text =
        format!("[plugins]\nversion = 1\ndir = \"wasm\"\ntenant_dir = \"tenants\"\n{plugins_toml}");
    let tmp = dir.join(".lila.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("lila.toml")).unwrap();
}

/// Copy then rename, as an operator's deploy (or `plugins/build.sh`) does.
fn install(src: &Path, dst: &Path) {
    let tmp = dst.with_file_name(".install.tmp");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(tmp, dst).unwrap();
}

fn misbehave(fail: &str, time_ms: u64, before: &str, after: &str) -> String {
    format!(
        "[[plugins.plugin]]\nname = \"misbehave\"\nfail = \"{fail}\"\ntime_ms = {time_ms}\nmemory_mib = 16\nconfig = {{ before = \"{before}\", after = \"{after}\", tag = \"v1\" }}\n"
    )
}

fn hook_runs(body: &Value) -> Vec<(String, String, String)> {
    body["hooks"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|r| {
                    (
                        r["plugin"].as_str().unwrap_or("").to_owned(),
                        r["hook"].as_str().unwrap_or("").to_owned(),
                        r["outcome"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn run(plugin: &str, hook: &str, outcome: &str) -> (String, String, String) {
    (plugin.to_owned(), hook.to_owned(), outcome.to_owned())
}

/// A paired session with a queued message; returns the bytes of its files.
async fn session_with_a_message(h: &Harness, phone: &str, token: &str) -> Vec<(PathBuf, Vec<u8>)> {
    h.paired(phone, token).await;
    h.client(phone).await.drop_connection();
    h.wait_status(phone, token, "reconnecting").await;
    let (status, _) = h
        .post(
            &format!("/api/sessions/{phone}/messages"),
            token,
            json!({"to": "51900000001", "text": "hola"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    kept_files(h, phone)
}

/// The session's own files and its outbox (backups are left out: the
/// backup timer may add one at any time).
fn kept_files(h: &Harness, phone: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let p = Phone::parse(phone).unwrap();
    let layout = h.layout();
    let mut files = snapshot(&layout.session_dir(&p));
    files.push((
        layout.outbox_file(&p),
        std::fs::read(layout.outbox_file(&p)).unwrap_or_default(),
    ));
    files
}

#[tokio::test]
async fn a_veto_stops_the_reset_and_changes_nothing_on_disk() {
    let s = Setup::new(
        &[("misbehave", "misbehave.wasm")],
        &misbehave("open", 1000, "veto", "ok"),
    )
    .await;
    let token = s.h.token("acme");
    let before = session_with_a_message(&s.h, PHONE, &token).await;
    let (status, body) = s.h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(
        body["error"],
        "reset refused by plugin 'misbehave': misbehave v1 refuses this reset."
    );
    assert_eq!(kept_files(&s.h, PHONE), before);
    let (_, status) = s.h.status(PHONE, &token).await;
    assert_ne!(status["status"], "cleared", "{status}");
}

async fn check_contained(
    before: &str,
    fail: &str,
    expect_refused: bool,
    expect_outcome: &str,
    expect_detail: &str,
) {
    let s = Setup::new(
        &[("misbehave", "misbehave.wasm")],
        &misbehave(fail, 300, before, "ok"),
    )
    .await;
    let token = s.h.token("acme");
    s.h.paired(PHONE, &token).await;
    let started = Instant::now();
    let (status, body) = s.h.clear(PHONE, &token).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "{before}/{fail} took {took:?}"
    );
    if expect_refused {
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with("reset refused by plugin 'misbehave': "),
            "{error}"
        );
        assert!(error.contains(expect_detail), "{error}");
        assert!(error.contains("fail closed"), "{error}");
        assert!(
            s.h.layout()
                .session_dir(&Phone::parse(PHONE).unwrap())
                .exists()
        );
    } else {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            hook_runs(&body),
            [
                run("misbehave", "before_clear", expect_outcome),
                run("misbehave", "after_clear", "ok")
            ]
        );
        let detail = body["hooks"][0]["detail"].as_str().unwrap_or("");
        assert!(detail.contains(expect_detail), "{body}");
        assert!(
            !s.h.layout()
                .session_dir(&Phone::parse(PHONE).unwrap())
                .exists()
        );
    }
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_and_a_fail_open_reset_completes() {
    check_contained("loop", "open", false, "timed_out", "").await;
}

#[tokio::test]
async fn an_infinite_loop_in_a_fail_closed_plugin_refuses_the_reset_with_a_clear_error() {
    check_contained(
        "loop",
        "closed",
        true,
        "",
        "did not finish within its 300 ms budget",
    )
    .await;
}

#[tokio::test]
async fn a_memory_hog_is_stopped_at_its_cap_and_a_fail_open_reset_completes() {
    check_contained("hog", "open", false, "failed", "16 MiB memory cap").await;
}

#[tokio::test]
async fn a_memory_hog_in_a_fail_closed_plugin_refuses_the_reset_with_a_clear_error() {
    check_contained("hog", "closed", true, "", "16 MiB memory cap").await;
}

#[tokio::test]
async fn a_sleep_past_the_budget_is_cut_at_the_deadline() {
    // The sleep returns at the deadline, and the plugin is then out of time.
    check_contained("sleep", "open", false, "timed_out", "").await;
}

#[tokio::test]
async fn a_trapping_after_clear_never_undoes_a_reset() {
    let s = Setup::new(
        &[("misbehave", "misbehave.wasm")],
        &misbehave("closed", 1000, "ok", "trap"),
    )
    .await;
    let token = s.h.token("acme");
    session_with_a_message(&s.h, PHONE, &token).await;
    let (status, body) = s.h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        hook_runs(&body),
        [
            run("misbehave", "before_clear", "ok"),
            run("misbehave", "after_clear", "failed")
        ]
    );
    assert!(body["hooks"][1]["detail"].as_str().is_some(), "{body}");
    let p = Phone::parse(PHONE).unwrap();
    assert!(!s.h.layout().session_dir(&p).exists());
    assert!(!s.h.layout().outbox_file(&p).exists());
    let (status, view) = s.h.status(PHONE, &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{view}");
}

#[tokio::test]
async fn misbehaving_plugins_together_cannot_hold_a_reset_past_the_phase_budget() {
    // Three looping plugins of 1 s each, but the before-clear phase may take 600 ms in all.
    let mut toml = String::from("before_clear_total_ms = 600\nafter_clear_total_ms = 600\n");
    for name in ["loop-a", "loop-b", "loop-c"] {
        toml.push_str(&format!(
            "[[plugins.plugin]]\nname = \"{name}\"\nfile = \"misbehave.wasm\"\ntime_ms = 1000\nconfig = {{ before = \"loop\", after = \"loop\" }}\n"
        ));
    }
    let s = Setup::new(&[("misbehave", "misbehave.wasm")], &toml).await;
    let token = s.h.token("acme");
    s.h.paired(PHONE, &token).await;
    let started = Instant::now();
    let (status, body) = s.h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        hook_runs(&body)
            .iter()
            .all(|(_, _, outcome)| outcome == "timed_out"),
        "{body}"
    );
}

#[tokio::test]
async fn an_invalid_wasm_dropped_in_keeps_the_old_one_serving() {
    let s = Setup::new(
        &[("misbehave", "misbehave.wasm")],
        &misbehave("open", 1000, "veto", "ok"),
    )
    .await;
    let old_sha = s.plugins().await["plugins"][0]["sha256"].clone();
    // A half-written file: the first bytes of a component, then nothing.
    let bytes = std::fs::read(s.wasm("misbehave.wasm")).unwrap();
    std::fs::write(s.wasm("misbehave.wasm"), &bytes[..bytes.len() / 3]).unwrap();
    s.hooks.reload();
    let listed = s.plugins().await;
    let plugin = &listed["plugins"][0];
    assert_eq!(plugin["sha256"], old_sha, "{listed}");
    assert_eq!(plugin["loaded"], true);
    assert!(
        plugin["lastError"]
            .as_str()
            .unwrap()
            .contains("misbehave.wasm"),
        "{listed}"
    );
    let token = s.h.token("acme");
    s.h.create(PHONE, &token).await;
    let (status, body) = s.h.clear(PHONE, &token).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the old version still vetoes: {body}"
    );
    // A broken config is reported too, and the old one keeps serving.
    std::fs::write(
        s.conf.path().join("lila.toml"),
        "[plugins]\nversion = 1\nbogus = true\n",
    )
    .unwrap();
    s.hooks.reload();
    let listed = s.plugins().await;
    assert!(
        listed["configError"].as_str().unwrap().contains("bogus"),
        "{listed}"
    );
    assert_eq!(listed["plugins"][0]["name"], "misbehave");
}

#[tokio::test]
async fn hot_reload_swaps_a_plugin_under_concurrent_resets_with_no_failed_call() {
    let toml = "[[plugins.plugin]]\nname = \"swapped\"\nfail = \"closed\"\n";
    let s = Setup::new(&[("misbehave", "swapped.wasm")], toml).await;
    s.hooks.watch(Duration::from_millis(50)).unwrap();
    let old_sha = s.plugins().await["plugins"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = s.h.token("acme");
    let phones: Vec<String> = (0..4).map(|i| format!("5190000010{i}")).collect();
    let h = Arc::new(s.h);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for phone in phones.clone() {
        let (h, token, outcomes) = (h.clone(), token.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..6 {
                let (status, body) = h.create(&phone, &token).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (status, body) = h.clear(&phone, &token).await;
                outcomes.lock().unwrap().push((status, body));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A different, equally well-behaved component under the same name.
    install(
        &component("tenant-policy"),
        &s.conf.path().join("wasm/swapped.wasm"),
    );
    for task in tasks {
        task.await.unwrap();
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert_eq!(outcomes.len(), 24);
    for (status, body) in outcomes.iter() {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert!(hook_runs(body).iter().all(|(_, _, o)| o == "ok"), "{body}");
    }
    let new_sha = loop_until(|| async {
        let (_, listed) = h.get("/api/plugins", &h.operator()).await;
        let sha = listed["plugins"][0]["sha256"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (sha != old_sha).then_some(sha)
    })
    .await;
    assert_eq!(new_sha, lila_sha(&component("tenant-policy")));
}

fn lila_sha(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

async fn loop_until<T, F: std::future::Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> T {
    for _ in 0..1000 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition never held");
}

#[tokio::test]
async fn a_tenant_plugin_does_not_run_for_another_tenant() {
    let s = Setup::new(&[], "").await;
    let acme_dir = s.conf.path().join("tenants/acme");
    std::fs::create_dir_all(&acme_dir).unwrap();
    std::fs::copy(component("misbehave"), acme_dir.join("guard.wasm")).unwrap();
    std::fs::write(
        acme_dir.join("guard.toml"),
        "config = { before = \"veto\", tag = \"acme\" }\n",
    )
    .unwrap();
    s.hooks.reload();
    let listed = s.plugins().await;
    assert_eq!(listed["plugins"][0]["name"], "acme/guard", "{listed}");
    assert_eq!(listed["plugins"][0]["owner"], "acme");
    let (acme, globex) = (s.h.token("acme"), s.h.token("globex"));
    s.h.create(PHONE, &acme).await;
    s.h.create(OTHER, &globex).await;
    let (status, body) = s.h.clear(OTHER, &globex).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(hook_runs(&body), []);
    let (status, body) = s.h.clear(PHONE, &acme).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["error"],
        "reset refused by plugin 'acme/guard': misbehave acme refuses this reset."
    );
}

#[tokio::test]
async fn a_tenant_plugin_without_a_settings_file_runs_with_the_defaults() {
    let s = Setup::new(&[], "").await;
    let acme_dir = s.conf.path().join("tenants/acme");
    std::fs::create_dir_all(&acme_dir).unwrap();
    // No guard.toml: the README says it is optional.
    install(&component("misbehave"), &acme_dir.join("guard.wasm"));
    s.hooks.reload();
    let listed = s.plugins().await;
    let guard = &listed["plugins"][0];
    assert_eq!(guard["name"], "acme/guard", "{listed}");
    assert_eq!(guard["loaded"], true, "{listed}");
    assert_eq!(guard["enabled"], true, "{listed}");
    assert_eq!(
        guard["hooks"],
        json!(["before_clear", "after_clear", "on_event"])
    );
    assert_eq!(guard["failMode"], "open");
    let acme = s.h.token("acme");
    s.h.create(PHONE, &acme).await;
    let (status, body) = s.h.clear(PHONE, &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        hook_runs(&body),
        [
            run("acme/guard", "before_clear", "ok"),
            run("acme/guard", "after_clear", "ok")
        ]
    );
}

/// A webhook receiver on 127.0.0.1:0 that records each request's body and signature.
async fn receiver() -> (String, Arc<Mutex<Vec<(Vec<u8>, String)>>>) {
    receiver_taking(Duration::ZERO).await
}

/// A receiver that takes `delay` to answer each request.
async fn receiver_taking(delay: Duration) -> (String, Arc<Mutex<Vec<(Vec<u8>, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    let signature = headers
                        .get("x-lila-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    tokio::time::sleep(delay).await;
                    store.lock().unwrap().push((body.to_vec(), signature));
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

fn webhook_toml(url: &str, allow: &str) -> String {
    format!(
        "[[plugins.plugin]]\nname = \"webhook-notify\"\nhooks = [\"after-clear\"]\ncapabilities = {{ http = [\"{allow}\"] }}\nconfig = {{ endpoints = [{{ url = \"{url}\", secret = \"whsec_test\" }}], max_attempts = 1 }}\n"
    )
}

#[tokio::test]
async fn the_webhook_reaches_a_local_receiver_with_a_valid_signature() {
    let (url, seen) = receiver().await;
    let s = Setup::new(
        &[("webhook-notify", "webhook-notify.wasm")],
        &webhook_toml(&url, &url),
    )
    .await;
    let token = s.h.token("acme");
    s.h.paired(PHONE, &token).await;
    let (status, body) = s.h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        hook_runs(&body),
        [run("webhook-notify", "after_clear", "ok")]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (event, signature) = &seen[0];
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
    mac.update(event);
    assert_eq!(
        *signature,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let event: Value = serde_json::from_slice(event).unwrap();
    assert_eq!(event["event"], "session.cleared");
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["phone"], PHONE);
}

#[tokio::test]
async fn a_url_not_on_the_allow_list_is_refused_and_nothing_is_sent() {
    let (url, seen) = receiver().await;
    let s = Setup::new(
        &[("webhook-notify", "webhook-notify.wasm")],
        &webhook_toml(&url, "https://hooks.example.com/lila"),
    )
    .await;
    let token = s.h.token("acme");
    s.h.paired(PHONE, &token).await;
    let (status, body) = s.h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "the reset stands: {body}");
    assert_eq!(
        hook_runs(&body),
        [run("webhook-notify", "after_clear", "failed")]
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn backup_archive_writes_its_archive_outside_sessions() {
    let toml = "[[plugins.plugin]]\nname = \"backup-archive\"\nhooks = [\"before-clear\"]\ncapabilities = { archive = true }\n";
    let s = Setup::new(&[("backup-archive", "backup-archive.wasm")], toml).await;
    let token = s.h.token("acme");
    session_with_a_message(&s.h, PHONE, &token).await;
    let (status, body) = s.h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        hook_runs(&body),
        [run("backup-archive", "before_clear", "ok")]
    );
    let archive_dir =
        s.h.root()
            .join("plugins/operator/backup-archive/acme/archive");
    let archives: Vec<PathBuf> = std::fs::read_dir(&archive_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    let name = archives[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        name.starts_with(&format!("acme-{PHONE}-")) && name.ends_with(".json"),
        "{name}"
    );
    let archive: Value = serde_json::from_slice(&std::fs::read(&archives[0]).unwrap()).unwrap();
    assert_eq!(archive["outbox"][0]["text"], "hola", "{archive}");
    assert_eq!(archive["credentials_included"], false);
    assert!(!archives[0].starts_with(s.h.root().join("sessions")));
}

#[tokio::test]
async fn tenant_policy_veto_reason_reaches_the_api_error() {
    let toml = format!(
        "[[plugins.plugin]]\nname = \"tenant-policy\"\n[plugins.plugin.config.tenants.acme]\nprotected_phones = [\"{PHONE}\"]\n"
    );
    let s = Setup::new(&[("tenant-policy", "tenant-policy.wasm")], &toml).await;
    let token = s.h.token("acme");
    s.h.create(PHONE, &token).await;
    let (status, body) = s.h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["error"],
        format!(
            "reset refused by plugin 'tenant-policy': Phone +{PHONE} is protected by your reset policy and cannot be reset. Ask an administrator to remove it from the protected list."
        )
    );
}

#[tokio::test]
async fn plugins_are_listed_to_operators_only_and_counted_in_metrics() {
    let s = Setup::new(
        &[("misbehave", "misbehave.wasm")],
        &misbehave("open", 1000, "ok", "ok"),
    )
    .await;
    let token = s.h.token("acme");
    s.h.create(PHONE, &token).await;
    let (status, _) = s.h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.h.get("/api/plugins", &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["success"], false);
    let listed = s.plugins().await;
    let p = &listed["plugins"][0];
    assert_eq!(p["name"], "misbehave");
    assert_eq!(
        p["hooks"],
        json!(["before_clear", "after_clear", "on_event"])
    );
    assert_eq!(p["tenants"], json!(["*"]));
    assert_eq!(p["failMode"], "open");
    assert_eq!(p["calls"]["ok"], 2);
    assert_eq!(p["calls"]["eventsDropped"], 0);
    assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
    let (_, metrics) =
        s.h.call(axum::http::Method::GET, "/metrics", None, None)
            .await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("lila_hook_calls_total{hook=\"before_clear\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("lila_hook_duration_ms_count{hook=\"after_clear\"} 1"));
}

/// Budgets a Python or JavaScript plugin needs: its runtime is instantiated
/// for every call (tens of MiB, and the debug build of the host is slow).
const LANGUAGE_LIMITS: &str = "before_clear_total_ms = 8000\nafter_clear_total_ms = 8000\n[plugins.tenant_plugins]\ntime_ms = 5000\nmemory_mib = 128\n";

/// Installs example `name` as tenant `tenant`'s plugin under `tenant_dir`, with `settings` as its NAME.toml.
fn install_example(tenant_dir: &Path, tenant: &str, name: &str, settings: &str) {
    let dir = tenant_dir.join(tenant);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), settings).unwrap();
    install(&example(name), &dir.join(format!("{name}.wasm")));
}

#[tokio::test]
async fn python_and_javascript_plugins_veto_keep_state_and_run_only_for_their_tenant() {
    let s = Setup::new(&[], LANGUAGE_LIMITS).await;
    let tenants = s.conf.path().join("tenants");
    install_example(
        &tenants,
        "acme",
        "python-guard",
        "config = { max_resets = 1 }\n",
    );
    install_example(
        &tenants,
        "globex",
        "js-guard",
        "config = { max_resets = 1 }\n",
    );
    s.hooks.reload();
    let listed = s.plugins().await;
    let names: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme/python-guard", "globex/js-guard"], "{listed}");
    for plugin in listed["plugins"].as_array().unwrap() {
        assert_eq!(plugin["loaded"], true, "{plugin}");
        assert_eq!(plugin["state"], "loaded", "{plugin}");
    }
    for (tenant, phone, plugin, name) in [
        ("acme", PHONE, "acme/python-guard", "python-guard"),
        ("globex", OTHER, "globex/js-guard", "js-guard"),
    ] {
        let token = s.h.token(tenant);
        s.h.create(phone, &token).await;
        // Only the tenant's own plugin runs: the other tenant's is not called.
        let (status, body) = s.h.clear(phone, &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            hook_runs(&body),
            [
                run(plugin, "before_clear", "ok"),
                run(plugin, "after_clear", "ok")
            ]
        );
        // `after_clear` counted the reset in the state store; the next
        // call (a fresh instance) reads it back and vetoes.
        s.h.create(phone, &token).await;
        let (status, body) = s.h.clear(phone, &token).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(
            body["error"],
            format!(
                "reset refused by plugin '{plugin}': Phone +{phone} has already been reset 1 time(s) ({name} allows 1)."
            )
        );
    }
}

/// The fenced block of `wit/README.md` that follows `heading`'s first line
/// starting with `label` (e.g. "`app.py`:").
fn readme_block<'a>(readme: &'a str, label: &str) -> &'a str {
    let start = readme
        .find(&format!("\n{label}\n"))
        .unwrap_or_else(|| panic!("wit/README.md has no {label} block"));
    let rest = &readme[start..];
    let open = rest.find("```").expect("an opening fence");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    &body[..body.find("\n```").expect("a closing fence") + 1]
}

#[test]
fn the_wit_readme_shows_the_example_sources_verbatim() {
    let readme = std::fs::read_to_string(support::wasm::workspace_dir().join("wit/README.md"))
        .expect("wit/README.md");
    for (label, source) in [
        (
            "`plugins/examples/python-guard/app.py`:",
            "python-guard/app.py",
        ),
        (
            "`plugins/examples/js-guard/plugin.js`:",
            "js-guard/plugin.js",
        ),
        (
            "`plugins/examples/js-guard/build.mjs`:",
            "js-guard/build.mjs",
        ),
    ] {
        assert_eq!(
            readme_block(&readme, label),
            example_source(source),
            "wit/README.md's {label} block differs from plugins/examples/{source}: copy the file into the README"
        );
    }
}

const PROCESS_SECRET: &str = "plugin-test-secret-plugin-test-secret";
/// A WhatsApp URL on which nothing listens: sessions exist, never connect.
const CLOSED_PORT_URL: &str = "ws://127.0.0.1:9/ws/chat";

fn process_token(tenant: Option<&str>) -> String {
    let auth = lila::auth::JwtAuth::new(PROCESS_SECRET.as_bytes()).unwrap();
    let tenant = tenant.map(|t| lila::core::tenant::TenantId::parse(t).unwrap());
    auth.mint(tenant.as_ref(), tenant.is_none(), Duration::from_secs(600))
        .unwrap()
}

/// `GET /api/plugins` of a child-process server, by plugin name.
fn plugin_state(server: &process::Server, name: &str) -> Value {
    let (status, body) = server
        .request("GET", "/api/plugins", Some(&process_token(None)), None)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not listed: {body}"))
}

/// Waits (bounded generously: a cold compile in the debug build takes a
/// while) until `name` is no longer compiling, and returns its entry.
fn wait_loaded(server: &process::Server, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let state = plugin_state(server, name);
        if state["state"] != "compiling" {
            assert_eq!(state["state"], "loaded", "{state}");
            return state;
        }
        assert!(Instant::now() < deadline, "{name} still compiling: {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_python_plugin_compiles_in_the_background_and_is_cached_for_the_next_start() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let tenants = root.path().join("tenants");
    std::fs::create_dir_all(&data).unwrap();
    // Both tenants run the same component: acme's fails closed, globex's fails open.
    // The resets' budget for before_clear hooks leaves room for a Python
    // component's first call on a loaded machine (300 ms once failed in CI).
    install_example(
        &tenants,
        "acme",
        "python-guard",
        "fail = \"closed\"\nconfig = { max_resets = 1 }\n",
    );
    install_example(
        &tenants,
        "globex",
        "python-guard",
        "config = { max_resets = 1 }\n",
    );
    std::fs::write(
        data.with_extension("toml"),
        format!(
            "[plugins]\nversion = 1\ndir = \"wasm\"\ntenant_dir = \"{}\"\nbefore_clear_total_ms = 1500\nafter_clear_total_ms = 8000\n[plugins.tenant_plugins]\ntime_ms = 5000\nmemory_mib = 128\n",
            tenants.display()
        ),
    )
    .unwrap();
    let (acme, globex) = (process_token(Some("acme")), process_token(Some("globex")));

    // Cold cache: the API answers while the plugin still compiles.
    let server = process::Server::start_with_config(&data, PROCESS_SECRET, CLOSED_PORT_URL);
    let state = plugin_state(&server, "acme/python-guard");
    assert_eq!(state["state"], "compiling", "{state}");
    assert_eq!(state["loaded"], false, "{state}");
    assert_eq!(server.create(PHONE, &acme).0, 200);
    assert_eq!(server.create(OTHER, &globex).0, 200);
    // A reset that arrives now waits its 1,500 ms budget (the compile takes
    // far longer), then: fail closed refuses...
    let (status, body) = server.clear(PHONE, &acme).unwrap();
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "reset refused by plugin 'acme/python-guard': the plugin was still being compiled"
        ) && error.contains("fail closed"),
        "{error}"
    );
    // ...and fail open goes on, with the skip in its hooks.
    let (status, body) = server.clear(OTHER, &globex).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        hook_runs(&body)[0],
        run("globex/python-guard", "before_clear", "skipped")
    );
    assert!(
        body["hooks"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("not ready"),
        "{body}"
    );
    let state = wait_loaded(&server, "acme/python-guard");
    assert_eq!(state["compiledFrom"], "source", "{state}");
    // Ready now: it runs, and counts the reset in its state.
    let (status, body) = server.clear(PHONE, &acme).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        hook_runs(&body),
        [
            run("acme/python-guard", "before_clear", "ok"),
            run("acme/python-guard", "after_clear", "ok")
        ]
    );
    server.kill();

    // Warm cache: the compiled code is loaded, not compiled.
    let cache_dir = data.join("plugins/cache");
    let cached: Vec<PathBuf> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(cached.len(), 1, "one file per component: {cached:?}");
    let server = process::Server::start_with_config(&data, PROCESS_SECRET, CLOSED_PORT_URL);
    let state = wait_loaded(&server, "acme/python-guard");
    assert_eq!(state["compiledFrom"], "cache", "{state}");
    server.kill();

    // A corrupt cache file is not trusted: it is compiled again and rewritten.
    let mut bytes = std::fs::read(&cached[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&cached[0], &bytes).unwrap();
    let server = process::Server::start_with_config(&data, PROCESS_SECRET, CLOSED_PORT_URL);
    let state = wait_loaded(&server, "acme/python-guard");
    assert_eq!(state["compiledFrom"], "source", "{state}");
    assert_ne!(
        std::fs::read(&cached[0]).unwrap(),
        bytes,
        "the cache file was rewritten"
    );
    // It works, and its state survived the restarts: acme's phone was reset once.
    assert_eq!(server.create(PHONE, &acme).0, 200);
    let (status, body) = server.clear(PHONE, &acme).unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"],
        format!(
            "reset refused by plugin 'acme/python-guard': Phone +{PHONE} has already been reset 1 time(s) (python-guard allows 1)."
        )
    );
}

fn signature_of(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn chosen_events_reach_the_webhook_in_order_signed_and_once_each() {
    let (url, seen) = receiver().await;
    let s = Setup::new(
        &[("webhook-notify", "webhook-notify.wasm")],
        &format!(
            "[[plugins.plugin]]\nname = \"webhook-notify\"\nhooks = [\"on-event\"]\ncapabilities = {{ http = [\"{url}\"] }}\nconfig = {{ endpoints = [{{ url = \"{url}\", secret = \"whsec_test\" }}], events = [\"session.status\", \"session.cleared\"] }}\n"
        ),
    )
    .await;
    let token = s.h.token("acme");
    s.h.paired(PHONE, &token).await;
    let (status, body) = s.h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An event-only plugin has no part in the reset itself.
    assert!(hook_runs(&body).is_empty(), "{body}");
    s.h.wait_for("the session.cleared event at the receiver", || {
        seen.lock().unwrap().iter().any(|(b, _)| {
            serde_json::from_slice::<Value>(b).is_ok_and(|e| e["event"] == "session.cleared")
        })
    })
    .await;
    // Give a duplicate, if there were one, the time to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().clone();
    let events: Vec<Value> = seen
        .iter()
        .map(|(body, signature)| {
            assert_eq!(*signature, signature_of(body));
            serde_json::from_slice(body).unwrap()
        })
        .collect();
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated: {ids:?}"
    );
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["event"].as_str().unwrap(),
                e["status"].as_str().unwrap_or("")
            )
        })
        .collect();
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("no {kind} in {kinds:?}"))
    };
    assert!(at("session.status:qr") < at("session.status:connected"));
    assert!(at("session.status:connected") < at("session.cleared:"));
    // Only the chosen types, for the owner's phone.
    assert!(
        events
            .iter()
            .all(|e| e["event"] == "session.status" || e["event"] == "session.cleared")
    );
    assert!(
        events
            .iter()
            .all(|e| e["tenant"] == "acme" && e["phone"] == PHONE)
    );
    assert_eq!(events[at("session.cleared:")]["report"]["phone"], PHONE);
}

#[tokio::test]
async fn a_slow_event_plugin_never_holds_a_session_back_and_what_it_drops_is_counted() {
    // Each forwarded event takes the receiver 300 ms; the plugin's queue holds one.
    let (url, seen) = receiver_taking(Duration::from_millis(300)).await;
    // Every type the host publishes, from the host's own list: webhook-notify
    // keeps a copy of it, and refuses a config naming a type it lacks.
    let every_type = lila::core::event::EVENT_TYPES;
    let s = Setup::with_config(
        &[("webhook-notify", "webhook-notify.wasm")],
        &format!(
            "[[plugins.plugin]]\nname = \"webhook-notify\"\nhooks = [\"on-event\"]\ncapabilities = {{ http = [\"{url}\"] }}\nconfig = {{ endpoints = [{{ url = \"{url}\", secret = \"whsec_test\" }}], events = {every_type:?} }}\n"
        ),
        |config| config.events.plugin_queue = 1,
    )
    .await;
    let token = s.h.token("acme");
    s.h.paired(PHONE, &token).await;
    const MESSAGES: usize = 12;
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        let (status, body) =
            s.h.send_text(PHONE, &token, "51900000001", &format!("m{i}"))
                .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Every message is sent while the plugin is still far behind: the
    // session did not wait for it.
    for id in &ids {
        let path = format!("/api/sessions/{PHONE}/messages/{id}");
        let mut sent = false;
        for _ in 0..500 {
            let (_, body) = s.h.get(&path, &token).await;
            if body["status"] != "queued" {
                sent = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sent, "message {id} was never sent");
    }
    let forwarded_by_then = seen.lock().unwrap().len();
    assert!(
        forwarded_by_then < 2 * MESSAGES,
        "{forwarded_by_then} events forwarded before the messages were sent"
    );
    // The plugin catches up; what did not fit in its queue is counted, in
    // the plugins listing and in /metrics alike.
    let mut calls = Value::Null;
    for _ in 0..200 {
        let plugins = s.plugins().await;
        calls = plugins["plugins"][0]["calls"].clone();
        let handled = calls["ok"].as_u64().unwrap_or(0) + calls["failed"].as_u64().unwrap_or(0);
        if handled as usize == seen.lock().unwrap().len()
            && calls["eventsDropped"].as_u64() > Some(0)
        {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if s.plugins().await["plugins"][0]["calls"] == calls {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped = calls["eventsDropped"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "nothing dropped: {calls}");
    assert_eq!(calls["failed"], 0, "{calls}");
    assert_eq!(calls["timedOut"], 0, "{calls}");
    assert_eq!(
        calls["ok"].as_u64().unwrap() as usize,
        seen.lock().unwrap().len(),
        "one POST per call: {calls}"
    );
    let (status, metrics) =
        s.h.call(axum::http::Method::GET, "/metrics", None, None)
            .await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains(&format!(
            "lila_plugin_events_dropped_total{{plugin=\"webhook-notify\"}} {dropped}"
        )),
        "{metrics}"
    );
}

/// `POST …/clear?force=true`: an operator's reset that a tenant's
/// fail-closed plugin cannot stop, reported as forced; a tenant may not
/// force, and the operator's own plugins still decide.
#[tokio::test]
async fn an_operator_forces_a_reset_past_a_tenants_fail_closed_plugin_and_it_says_so() {
    let s = Setup::new(&[], "").await;
    let tenant_dir = s.conf.path().join("tenants").join("acme");
    std::fs::create_dir_all(&tenant_dir).unwrap();
    std::fs::write(
        tenant_dir.join("misbehave.toml"),
        "fail = \"closed\"\nconfig = { before = \"trap\", after = \"ok\" }\n",
    )
    .unwrap();
    install(&component("misbehave"), &tenant_dir.join("misbehave.wasm"));
    s.hooks.reload();
    let acme = s.h.token("acme");
    let operator = s.h.operator();
    s.h.create(PHONE, &acme).await;
    let clear = |query: &'static str, token: String| {
        let h = &s.h;
        async move {
            h.call(
                axum::http::Method::POST,
                &format!("/api/sessions/{PHONE}/clear{query}"),
                Some(&token),
                None,
            )
            .await
        }
    };
    // The failing tenant plugin holds every reset, the operator's too.
    for token in [acme.clone(), operator.clone()] {
        let (status, body) = clear("", token).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("acme/misbehave"),
            "{body}"
        );
    }
    let (status, body) = clear("?force=true", acme.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = clear("?force=maybe", operator.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The operator forces it: the plugin was heard, and did not stop it.
    let (status, body) = clear("?force=true", operator.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["forced"], true, "{body}");
    assert_eq!(
        hook_runs(&body)[0],
        run("acme/misbehave", "before_clear", "failed"),
        "{body}"
    );
    // Cleared: the phone is gone for its tenant, as after any reset.
    assert_eq!(s.h.status(PHONE, &acme).await.0, StatusCode::NOT_FOUND);
    let (_, metrics) =
        s.h.call(axum::http::Method::GET, "/metrics", None, None)
            .await;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("lila_resets_forced_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_forced_reset_still_obeys_the_operators_own_plugins() {
    let s = Setup::new(
        &[("misbehave", "misbehave.wasm")],
        &misbehave("closed", 1000, "veto", "ok"),
    )
    .await;
    let acme = s.h.token("acme");
    s.h.create(PHONE, &acme).await;
    let (status, body) =
        s.h.call(
            axum::http::Method::POST,
            &format!("/api/sessions/{PHONE}/clear?force=true"),
            Some(&s.h.operator()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("'misbehave'"),
        "{body}"
    );
}

/// The `/metrics` line `name` (with its labels), as a number.
async fn metric(h: &Harness, name: &str) -> u64 {
    let (_, metrics) = h
        .call(axum::http::Method::GET, "/metrics", None, None)
        .await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// A Setup whose `many.wasm` is a handmade component with `memories`
/// memories of `pages_each` pages, fail closed with an 8 MiB cap.
async fn with_memories(memories: u32, pages_each: u64, limits: &str) -> Setup {
    let toml = format!(
        "{limits}[[plugins.plugin]]\nname = \"many\"\nfail = \"closed\"\nmemory_mib = 8\nhooks = [\"before-clear\"]\n"
    );
    let s = Setup::new(&[], &toml).await;
    std::fs::write(
        s.wasm("many.wasm"),
        reset_plugin_with_memories(memories, pages_each),
    )
    .unwrap();
    s.hooks.reload();
    assert_eq!(s.plugins().await["plugins"][0]["loaded"], true);
    s
}

/// Issue 17: the memory cap was per memory, so a component with sixteen
/// memories had sixteen caps (16 MiB under an 8 MiB cap here), and nothing
/// bounded how many memories a call could create.
#[tokio::test]
async fn a_component_with_sixteen_memories_gets_one_memory_cap_not_sixteen() {
    // (memories, pages each, limits, what a fail-closed plugin's refusal says, the limit counted)
    let refused = [
        // Sixteen memories of 1 MiB, the count allowed: their sum is over the cap.
        (
            16,
            16,
            "max_memories = 16\n",
            "ran out of its 8 MiB memory cap (all its memories and tables together)",
            "memory",
        ),
        // Sixteen memories of one page, over the default count of 8.
        (
            16,
            1,
            "",
            "creates more memories than the 8 a plugin call may have (plugins.max_memories)",
            "memories",
        ),
    ];
    for (memories, pages, limits, reason, limit) in refused {
        let s = with_memories(memories, pages, limits).await;
        let (status, body) = reset_acme(&s).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(reason), "{error}");
        let hits = format!("lila_plugin_limits_hit_total{{limit=\"{limit}\"}}");
        assert_eq!(metric(&s.h, &hits).await, 1);
    }
    // Two memories of 1 MiB fit the one cap together: the reset goes on.
    let s = with_memories(2, 16, "").await;
    let (status, body) = reset_acme(&s).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(hook_runs(&body), [run("many", "before_clear", "ok")]);
}

/// Creates acme's `PHONE` and resets it.
async fn reset_acme(s: &Setup) -> (StatusCode, Value) {
    let token = s.h.token("acme");
    s.h.create(PHONE, &token).await;
    s.h.clear(PHONE, &token).await
}

/// Issue 17: nothing bounded how many plugin calls ran at once. With one
/// call slot, a reset whose plugin finds it taken waits for it within the
/// call's budget, and past that is told so (fail closed: refused), never
/// skipped in silence.
#[tokio::test]
async fn plugin_calls_beyond_the_call_slots_wait_and_are_refused_with_a_reason() {
    let toml = "max_concurrent_calls = 1\n\
        [[plugins.plugin]]\nname = \"slow\"\nfile = \"misbehave.wasm\"\ntenants = [\"acme\"]\ntime_ms = 2000\nconfig = { before = \"sleep\" }\n\
        [[plugins.plugin]]\nname = \"quick\"\nfile = \"misbehave.wasm\"\ntenants = [\"globex\"]\nfail = \"closed\"\ntime_ms = 300\n";
    let s = Setup::new(&[("misbehave", "misbehave.wasm")], toml).await;
    let (acme, globex) = (s.h.token("acme"), s.h.token("globex"));
    s.h.create(PHONE, &acme).await;
    s.h.create(OTHER, &globex).await;
    let (slow, quick) = tokio::join!(s.h.clear(PHONE, &acme), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.h.clear(OTHER, &globex).await
    });
    assert_eq!(slow.0, StatusCode::OK, "{}", slow.1);
    assert_eq!(quick.0, StatusCode::CONFLICT, "{}", quick.1);
    let error = quick.1["error"].as_str().unwrap();
    assert!(
        error.contains("all 1 plugin call slots (plugins.max_concurrent_calls) stayed busy")
            && error.contains("fail closed"),
        "{error}"
    );
    assert_eq!(
        metric(
            &s.h,
            "lila_plugin_calls_waited_total{hook=\"before_clear\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            &s.h,
            "lila_plugin_limits_hit_total{limit=\"concurrent_calls\"}"
        )
        .await,
        1
    );
    // With the slot free again, the same reset goes through.
    let (status, body) = s.h.clear(OTHER, &globex).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `archive-probe`'s state entry `key` for `tenant` (what `write-archive` answered), once there.
fn probe_answer(h: &Harness, tenant: &str, key: &str) -> Option<String> {
    let path = h.root().join(format!(
        "plugins/operator/archive-probe/{tenant}/state.json"
    ));
    let state: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    state["entries"][key].as_str().map(str::to_owned)
}

fn archive_probe(hooks: &str, bytes: u64) -> String {
    format!(
        "[[plugins.plugin]]\nname = \"archive-probe\"\ncapabilities = {{ archive = true }}\nconfig = {{ hooks = [{hooks}], bytes = {bytes} }}\n"
    )
}

/// Issue 17: `write-archive` had no total, so a plugin could fill the disk
/// one 32 MiB archive per call. The quota is per plugin and tenant, and the
/// plugin is told when a write would pass it.
#[tokio::test]
async fn the_archive_quota_holds_per_plugin_and_tenant_and_the_plugin_is_told() {
    let toml = format!(
        "archive_quota_mib = 1\n{}",
        archive_probe("\"before-clear\"", 700_000)
    );
    let s = Setup::new(&[("archive-probe", "archive-probe.wasm")], &toml).await;
    let acme = s.h.token("acme");
    s.h.create(PHONE, &acme).await;
    let (status, body) = s.h.clear(PHONE, &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A second 700,000 bytes would make 1,400,000 of acme's 1 MiB.
    s.h.create(PHONE, &acme).await;
    let (status, body) = s.h.clear(PHONE, &acme).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(
            "the archive quota of this plugin for this tenant is 1048576 bytes, 700000 are stored"
        ),
        "{error}"
    );
    assert_eq!(
        metric(
            &s.h,
            "lila_plugin_limits_hit_total{limit=\"archive_quota\"}"
        )
        .await,
        1
    );
    let stored = std::fs::read_dir(
        s.h.root()
            .join("plugins/operator/archive-probe/acme/archive"),
    )
    .unwrap()
    .count();
    assert_eq!(stored, 1);
    // Another tenant's archives are counted apart.
    let globex = s.h.token("globex");
    s.h.create(OTHER, &globex).await;
    let (status, body) = s.h.clear(OTHER, &globex).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Issue 17: `write-archive` worked in `on-event` too, where no reset asks
/// for an archive and every session event could write one.
#[tokio::test]
async fn write_archive_is_refused_in_on_event() {
    let toml = archive_probe("\"on-event\", \"after-clear\"", 10);
    let s = Setup::new(&[("archive-probe", "archive-probe.wasm")], &toml).await;
    let acme = s.h.token("acme");
    s.h.create(PHONE, &acme).await;
    let answer = loop_until(|| async { probe_answer(&s.h, "acme", "on-event") }).await;
    assert_eq!(
        answer,
        "err: denied: write-archive works only in before-clear and after-clear, not in on-event"
    );
    let archive =
        s.h.root()
            .join("plugins/operator/archive-probe/acme/archive");
    assert!(!archive.join("on-event.bin").exists());
    // In a reset hook the same plugin still may.
    let (status, body) = s.h.clear(PHONE, &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = probe_answer(&s.h, "acme", "after-clear").unwrap_or_default();
    assert!(answer.starts_with("ok: "), "{answer}");
    assert!(archive.join("after-clear.bin").exists());
}

/// `bytes` with a custom section of `padding` zero bytes at the end: the
/// same component, bigger.
fn padded(mut bytes: Vec<u8>, padding: usize) -> Vec<u8> {
    let name = b"padding";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.resize(payload.len() + padding, 0);
    bytes.push(0);
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    bytes.extend_from_slice(&payload);
    bytes
}

/// Issue 17: a plugin file of any size was read whole and compiled.
#[tokio::test]
async fn a_plugin_file_over_the_size_limit_is_refused_with_the_reason() {
    let toml = format!(
        "max_file_mib = 1\n{}",
        misbehave("open", 1000, "veto", "ok")
    );
    let s = Setup::new(&[("misbehave", "misbehave.wasm")], &toml).await;
    let old_sha = s.plugins().await["plugins"][0]["sha256"].clone();
    let big = padded(std::fs::read(s.wasm("misbehave.wasm")).unwrap(), 3 << 19);
    let tmp = s.wasm(".big.tmp");
    std::fs::write(&tmp, &big).unwrap();
    std::fs::rename(tmp, s.wasm("misbehave.wasm")).unwrap();
    s.hooks.reload();
    let listed = s.plugins().await;
    let plugin = &listed["plugins"][0];
    let error = plugin["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "the file is {} bytes, and a plugin may be at most 1048576 bytes (plugins.max_file_mib)",
            big.len()
        )),
        "{listed}"
    );
    // The previous version keeps serving, as for any file that fails to load.
    assert_eq!(plugin["sha256"], old_sha, "{listed}");
    assert_eq!(
        metric(&s.h, "lila_plugin_limits_hit_total{limit=\"file_size\"}").await,
        1
    );
}

fn plugin_state_of(hooks: &PluginHooks, name: &str) -> &'static str {
    hooks
        .view()
        .plugins
        .iter()
        .find(|p| p.name == name)
        .map_or("absent", |p| p.state)
}

/// Issue 17: plugins were compiled one after the other on the reload
/// thread, with no time limit, so one slow or huge plugin held back every
/// other one (and every later reload) for as long as it took.
#[tokio::test]
async fn a_slow_compile_holds_no_other_plugin_back_and_is_cut_at_its_time_limit() {
    let slow = reset_plugin_slow_to_compile(1_500, 1_500);
    let with_config = |limits: &str| {
        let conf = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(conf.path().join("wasm")).unwrap();
        std::fs::write(conf.path().join("wasm/slow.wasm"), &slow).unwrap();
        std::fs::copy(component("misbehave"), conf.path().join("wasm/quick.wasm")).unwrap();
        write_config(
            conf.path(),
            &format!(
                "{limits}[[plugins.plugin]]\nname = \"slow\"\n[[plugins.plugin]]\nname = \"quick\"\n"
            ),
        );
        conf
    };
    // The slow one first in the config: the quick one is ready long before it.
    let conf = with_config("");
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let hooks = PluginHooks::start(&conf.path().join("lila.toml"), data.path()).unwrap();
    loop_until(|| async { (plugin_state_of(&hooks, "quick") == "loaded").then_some(()) }).await;
    let quick_ready = started.elapsed();
    assert_eq!(
        plugin_state_of(&hooks, "slow"),
        "compiling",
        "the quick plugin was ready only after the slow one ({quick_ready:?})"
    );
    loop_until(|| async { (plugin_state_of(&hooks, "slow") == "loaded").then_some(()) }).await;
    let slow_ready = started.elapsed();
    eprintln!("quick plugin ready after {quick_ready:?}, slow plugin after {slow_ready:?}");
    // With a time limit shorter than that compile, it is refused with the reason.
    let limit_ms = (slow_ready.as_millis() / 4).max(50);
    let conf = with_config(&format!("compile_timeout_ms = {limit_ms}\n"));
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let hooks = PluginHooks::load(&conf.path().join("lila.toml"), data.path()).unwrap();
    let took = started.elapsed();
    assert!(
        took < slow_ready,
        "loading waited for the slow compile: {took:?}"
    );
    let view = hooks.view();
    let slow_status = view.plugins.iter().find(|p| p.name == "slow").unwrap();
    assert_eq!(slow_status.state, "failed");
    let error = slow_status.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "compiling it took longer than {limit_ms} ms (plugins.compile_timeout_ms), so it was not loaded"
        )),
        "{error}"
    );
    assert_eq!(plugin_state_of(&hooks, "quick"), "loaded");
    use lila::hooks::ResetHooks;
    let metrics = lila::metrics::HookMetrics::render(
        hooks.hook_metrics(),
        lila::metrics::TenantLabels::Shown,
    );
    assert!(
        metrics.contains("lila_plugin_limits_hit_total{limit=\"compile_time\"} 1"),
        "{metrics}"
    );
}

/// Compiles run at most `max_concurrent_compiles` at once (each takes a
/// core and, for a Python plugin, hundreds of MiB); one more waits its turn.
#[tokio::test]
async fn compiles_beyond_the_compile_slots_wait_their_turn() {
    let toml = "max_concurrent_compiles = 1\n\
        [[plugins.plugin]]\nname = \"misbehave\"\n\
        [[plugins.plugin]]\nname = \"archive-probe\"\n";
    let s = Setup::new(
        &[
            ("misbehave", "misbehave.wasm"),
            ("archive-probe", "archive-probe.wasm"),
        ],
        toml,
    )
    .await;
    let listed = s.plugins().await;
    for plugin in listed["plugins"].as_array().unwrap() {
        assert_eq!(plugin["state"], "loaded", "{plugin}");
    }
    assert_eq!(
        metric(
            &s.h,
            "lila_plugin_limits_hit_total{limit=\"concurrent_compiles\"}"
        )
        .await,
        1
    );
}

//! Shared test harness: a gateway over a temp data root with the scripted
//! WhatsApp fake, called through its real router, as the Portal calls it.
#![allow(dead_code)]

pub mod handmade;
pub mod wasm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use lila::auth::JwtAuth;
use lila::config::Config;
use lila::core::tenant::TenantId;
use lila::gateway::Gateway;
use lila::hooks::{NoHooks, ResetHooks};
use lila::http::{AppState, router};
use lila::layout::DataLayout;
use lila::phone::Phone;
use lila::whatsapp::scripted::{ScriptedClient, ScriptedWhatsApp};
use serde_json::Value;
use tower::ServiceExt;

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub wa: ScriptedWhatsApp,
    pub gateway: Arc<Gateway>,
    pub app: axum::Router,
    pub auth: Arc<JwtAuth>,
    pub config: Config,
}

pub fn test_config(root: &Path) -> Config {
    let mut config = Config {
        data_dir: root.to_owned(),
        ..Config::default()
    };
    config.backups.interval = Duration::from_millis(100);
    config.backups.retention = 3;
    config.sessions.logout_timeout = Duration::from_millis(500);
    config.sessions.request_timeout = Duration::from_secs(2);
    config.sessions.max_restart_backoff = Duration::from_secs(1);
    config
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_hooks(Arc::new(NoHooks)).await
    }

    pub async fn with_hooks(hooks: Arc<dyn ResetHooks>) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = test_config(dir.path());
        Harness::start(dir, config, ScriptedWhatsApp::new(), hooks).await
    }

    /// A harness whose test config `edit` adjusts first.
    pub async fn with_config(edit: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        edit(&mut config);
        Harness::start(dir, config, ScriptedWhatsApp::new(), Arc::new(NoHooks)).await
    }

    /// Like `with_hooks`, over a data root the caller already made (the
    /// plugin runtime needs the root before the gateway exists).
    pub async fn with_dir_and_hooks(dir: tempfile::TempDir, hooks: Arc<dyn ResetHooks>) -> Harness {
        Harness::with_dir_hooks_and_config(dir, hooks, |_| {}).await
    }

    /// `with_dir_and_hooks`, with the test config adjusted by `edit` first.
    pub async fn with_dir_hooks_and_config(
        dir: tempfile::TempDir,
        hooks: Arc<dyn ResetHooks>,
        edit: impl FnOnce(&mut Config),
    ) -> Harness {
        let mut config = test_config(dir.path());
        edit(&mut config);
        Harness::start(dir, config, ScriptedWhatsApp::new(), hooks).await
    }

    async fn start(
        dir: tempfile::TempDir,
        config: Config,
        wa: ScriptedWhatsApp,
        hooks: Arc<dyn ResetHooks>,
    ) -> Harness {
        let gateway = Gateway::new(config.clone(), Arc::new(wa.clone()), hooks);
        gateway.boot().await;
        let auth = Arc::new(JwtAuth::new(SECRET).expect("key"));
        let app = router(AppState {
            gateway: gateway.clone(),
            auth: auth.clone(),
            cluster: None,
        });
        Harness {
            dir,
            wa,
            gateway,
            app,
            auth,
            config,
        }
    }

    /// Stops this "process" and starts a new one over the same data root, with
    /// nothing carried over in memory (a fresh fake too, so it has seen no start).
    pub async fn restart(self) -> Harness {
        self.gateway.shutdown().await;
        let Harness { dir, config, .. } = self;
        Harness::start(dir, config, ScriptedWhatsApp::new(), Arc::new(NoHooks)).await
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn layout(&self) -> DataLayout {
        DataLayout::new(self.root())
    }

    pub fn token(&self, tenant: &str) -> String {
        let tenant = TenantId::parse(tenant).expect("tenant");
        self.auth
            .mint(Some(&tenant), false, Duration::from_secs(600))
            .expect("token")
    }

    pub fn operator(&self) -> String {
        self.auth
            .mint(None, true, Duration::from_secs(600))
            .expect("token")
    }

    /// Sends a request with extra `headers` through the router; the whole response.
    pub async fn respond(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> axum::response::Response {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request");
        self.app.clone().oneshot(request).await.expect("response")
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self.respond(method, path, token, body, &[]).await;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, json)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn create(&self, phone: &str, token: &str) -> (StatusCode, Value) {
        self.post(
            "/api/sessions",
            token,
            serde_json::json!({ "phoneNumber": phone }),
        )
        .await
    }

    /// `POST /api/sessions/{phone}/messages {to, text}`.
    pub async fn send_text(
        &self,
        phone: &str,
        token: &str,
        to: &str,
        text: &str,
    ) -> (StatusCode, Value) {
        self.post(
            &format!("/api/sessions/{phone}/messages"),
            token,
            serde_json::json!({ "to": to, "text": text }),
        )
        .await
    }

    pub async fn clear(&self, phone: &str, token: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/api/sessions/{phone}/clear"),
            Some(token),
            None,
        )
        .await
    }

    pub async fn status(&self, phone: &str, token: &str) -> (StatusCode, Value) {
        self.get(&format!("/api/sessions/{phone}/status"), token)
            .await
    }

    /// Waits (bounded) until the session's status is `wanted`.
    pub async fn wait_status(&self, phone: &str, token: &str, wanted: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..500 {
            let (_, body) = self.status(phone, token).await;
            if body["status"] == wanted {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("status of {phone} never became {wanted}; last: {last}");
    }

    /// The newest scripted client of `phone`, waiting (bounded) for it to exist.
    pub async fn client(&self, phone: &str) -> Arc<ScriptedClient> {
        let phone = Phone::parse(phone).expect("phone");
        for _ in 0..500 {
            if let Some(client) = self.wa.latest(&phone) {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no client was ever started for {phone}");
    }

    /// Creates a session, has the phone scan its QR, and waits for `connected`.
    pub async fn paired(&self, phone: &str, token: &str) {
        let (status, body) = self.create(phone, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        self.wait_status(phone, token, "qr").await;
        self.client(phone).await.scan();
        self.wait_status(phone, token, "connected").await;
    }

    /// Waits (bounded) until `cond` holds.
    pub async fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

/// Every file under `root`, relative to it, sorted.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Every file under `root` with its bytes, for byte-identical comparisons.
pub fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(root)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(root.join(&p)).unwrap_or_default()))
        .collect()
}

/// A `MakeWriter` target: every formatted line lands in a shared buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Forgets what was captured so far.
    pub fn clear(&self) {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.clear();
        }
    }

    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

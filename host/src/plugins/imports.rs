//! The host side of the plugin ABI: the store's data (`HostState`) and the
//! imports a plugin may call (`log`, `config`, time, `sleep-ms`, `http-post`,
//! `write-archive`, `read-credentials`, the state store).
//!
//! They are implemented once, against the newest version (`wit::latest`);
//! each older version's module (`wit/since_v*.rs`) forwards its imports here.
//!
//! Every import is bounded by the call's deadline, checks the capability
//! struct before it touches the network or the disk, and acts only in the
//! plugin's own (plugin, tenant) scope.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, trace, warn};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::engine::StoreCap;
use super::import_limits::{
    MAX_ARCHIVE_BYTES, MAX_CREDENTIAL_BYTES, MAX_HTTP_REQUEST_BYTES, MAX_HTTP_RESPONSE_BYTES,
    MAX_HTTP_TIMEOUT_MS, MAX_LOG_BYTES, MAX_LOG_LINES_PER_CALL, check_archive_name,
    numbered_archive_name, truncate_utf8,
};
use super::state::{StateScope, StateStore};
use super::wit::latest::lila::hooks::{archive, credentials, host, http, state, types};
use crate::clock::now_ms;
use crate::config::capabilities::Capabilities;
use crate::metrics::HookMetrics;

/// Which hook a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    BeforeClear,
    AfterClear,
    OnEvent,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::BeforeClear => "before_clear",
            HookKind::AfterClear => "after_clear",
            HookKind::OnEvent => "on_event",
        }
    }
}

/// Everything one call's imports may use, and nothing more.
pub struct CallEnv {
    /// The plugin's key (`name`, or `tenant/name` for a tenant plugin).
    pub plugin: String,
    pub tenant: String,
    pub phone: String,
    pub reset_id: String,
    pub hook: HookKind,
    pub deadline: Instant,
    pub capabilities: Capabilities,
    pub config_json: Arc<str>,
    /// The data root: stored paths are reported relative to it.
    pub data_root: PathBuf,
    /// `sessions/{phone}/` of the phone being reset, for `read-credentials`.
    pub session_dir: PathBuf,
    /// This (plugin, tenant)'s archive folder, outside `sessions/`.
    pub archive_dir: PathBuf,
    /// The most this (plugin, tenant)'s archive folder may hold, in bytes.
    pub archive_quota_bytes: u64,
    pub state: Arc<StateStore>,
    /// The runtime's counters, for the limits an import enforces.
    pub metrics: Arc<HookMetrics>,
    pub state_scope: StateScope,
}

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub memory: StoreCap,
    env: CallEnv,
    log_lines: u32,
}

/// WASI for toolchains that import it, with nothing behind it: no preopened
/// directories, no environment or arguments, no sockets, an empty stdin, and
/// stdout/stderr going nowhere (the default builder inherits none of the
/// host's stdio).
fn locked_down_wasi() -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder.build()
}

impl HostState {
    pub fn new(env: CallEnv, memory: StoreCap) -> HostState {
        HostState {
            wasi: locked_down_wasi(),
            table: ResourceTable::new(),
            memory,
            env,
            log_lines: 0,
        }
    }

    fn remaining(&self) -> Duration {
        self.env.deadline.saturating_duration_since(Instant::now())
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.env.data_root)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    async fn log(&mut self, level: host::LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES_PER_CALL {
            return;
        }
        let message = truncate_utf8(&message, MAX_LOG_BYTES);
        let env = &self.env;
        macro_rules! emit {
            ($mac:ident) => {
                $mac!(plugin = %env.plugin, tenant = %env.tenant, phone = %env.phone, reset_id = %env.reset_id, hook = env.hook.as_str(), "plugin: {message}")
            };
        }
        match level {
            host::LogLevel::Trace => emit!(trace),
            host::LogLevel::Debug => emit!(debug),
            host::LogLevel::Info => emit!(info),
            host::LogLevel::Warn => emit!(warn),
            host::LogLevel::Error => emit!(error),
        }
    }

    async fn config(&mut self) -> String {
        self.env.config_json.to_string()
    }

    async fn now_ms(&mut self) -> u64 {
        now_ms()
    }

    async fn deadline_ms(&mut self) -> u64 {
        now_ms() + self.remaining().as_millis() as u64
    }

    async fn sleep_ms(&mut self, ms: u32) {
        let wanted = Duration::from_millis(u64::from(ms));
        tokio::time::sleep(wanted.min(self.remaining())).await;
    }
}

/// Headers a plugin may not set: the host owns the connection and the framing.
fn is_hop_by_hop(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "host"
            | "connection"
            | "content-length"
            | "transfer-encoding"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "expect"
    ) || name.starts_with("proxy-")
}

fn post_blocking(
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<http::HttpResponse, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut request = agent.post(url);
    for (name, value) in headers {
        if !is_hop_by_hop(name) {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let response = request.send(body).map_err(|e| match e {
        ureq::Error::Timeout(_) => {
            format!("no answer from {url} within {} ms", timeout.as_millis())
        }
        other => format!("POST {url} failed: {other}"),
    })?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    // Past the cap the body is cut, as documented: the plugin still gets the status.
    let _ = response
        .into_body()
        .into_reader()
        .take(MAX_HTTP_RESPONSE_BYTES as u64)
        .read_to_end(&mut body);
    Ok(http::HttpResponse {
        status,
        headers,
        body,
    })
}

impl http::Host for HostState {
    async fn http_post(
        &mut self,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<http::HttpResponse, String> {
        self.env.capabilities.check_http(&url)?;
        if body.len() > MAX_HTTP_REQUEST_BYTES {
            return Err(format!(
                "the request body is {} bytes; at most {MAX_HTTP_REQUEST_BYTES} are sent",
                body.len()
            ));
        }
        let timeout = Duration::from_millis(u64::from(timeout_ms).min(MAX_HTTP_TIMEOUT_MS))
            .min(self.remaining());
        if timeout.is_zero() {
            return Err("no time left in this call's budget".into());
        }
        info!(plugin = %self.env.plugin, tenant = %self.env.tenant, phone = %self.env.phone, origin = %Capabilities::origin_of(&url), "plugin http-post");
        // The blocking client runs on the blocking pool, bounded by its own
        // global timeout; the outer timeout guards against a stuck resolver.
        let task =
            tokio::task::spawn_blocking(move || post_blocking(&url, &headers, &body, timeout));
        match tokio::time::timeout(timeout + Duration::from_millis(50), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("the request task failed: {e}")),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }
}

/// Why `write-archive` refused: the quota is counted apart from the other failures.
enum ArchiveRefusal {
    OverQuota(String),
    Failed(String),
}

/// The bytes of the regular files in `dir` (none when it does not exist).
fn folder_bytes(dir: &Path) -> Result<u64, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot list the archive folder: {e}")),
    };
    let mut total = 0u64;
    for entry in entries.flatten() {
        if let Ok(meta) = entry.metadata()
            && meta.is_file()
        {
            total = total.saturating_add(meta.len());
        }
    }
    Ok(total)
}

/// Serializes archive writes, so that two calls of one (plugin, tenant)
/// cannot both fit under the quota that only one of them fits under.
static ARCHIVE_WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn write_archive_blocking(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    quota: u64,
) -> Result<PathBuf, ArchiveRefusal> {
    let _one_at_a_time = ARCHIVE_WRITES.lock().unwrap_or_else(|p| p.into_inner());
    let stored = folder_bytes(dir).map_err(ArchiveRefusal::Failed)?;
    if stored.saturating_add(bytes.len() as u64) > quota {
        return Err(ArchiveRefusal::OverQuota(format!(
            "the archive quota of this plugin for this tenant is {quota} bytes, {stored} are stored, and this archive is {} more; nothing was written",
            bytes.len()
        )));
    }
    crate::storage::private::create_dir_all(dir)
        .map_err(|e| ArchiveRefusal::Failed(format!("cannot create the archive folder: {e}")))?;
    for n in 0..10_000u32 {
        let candidate = if n == 0 {
            name.to_owned()
        } else {
            numbered_archive_name(name, n)
        };
        let path = dir.join(&candidate);
        if path.exists() {
            continue;
        }
        crate::storage::atomic::write_atomic(&path, bytes)
            .map_err(|e| ArchiveRefusal::Failed(format!("cannot write {candidate}: {e}")))?;
        return Ok(path);
    }
    Err(ArchiveRefusal::Failed(format!(
        "too many archives named like {name}"
    )))
}

impl archive::Host for HostState {
    async fn write_archive(&mut self, name: String, bytes: Vec<u8>) -> Result<String, String> {
        self.env.capabilities.check_archive()?;
        if self.env.hook == HookKind::OnEvent {
            return Err(
                "denied: write-archive works only in before-clear and after-clear, not in on-event"
                    .into(),
            );
        }
        check_archive_name(&name)?;
        if bytes.len() > MAX_ARCHIVE_BYTES {
            return Err(format!(
                "the archive is {} bytes; at most {MAX_ARCHIVE_BYTES} are stored",
                bytes.len()
            ));
        }
        let dir = self.env.archive_dir.clone();
        let quota = self.env.archive_quota_bytes;
        let written =
            tokio::task::spawn_blocking(move || write_archive_blocking(&dir, &name, &bytes, quota))
                .await
                .map_err(|e| format!("the archive task failed: {e}"))?;
        let path = match written {
            Ok(path) => path,
            Err(ArchiveRefusal::Failed(error)) => return Err(error),
            Err(ArchiveRefusal::OverQuota(error)) => {
                self.env.metrics.limit_hit("archive_quota");
                warn!(plugin = %self.env.plugin, tenant = %self.env.tenant, phone = %self.env.phone, error = %error, "plugin archive refused: over its quota");
                return Err(error);
            }
        };
        let stored = self.relative(&path);
        info!(plugin = %self.env.plugin, tenant = %self.env.tenant, phone = %self.env.phone, path = %stored, "plugin wrote an archive");
        Ok(stored)
    }
}

/// Every regular file under `dir` (symlinks are not followed), at most `cap` bytes in total.
fn read_files_blocking(dir: &Path, cap: u64) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot list the session folder: {e}")),
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let bytes = std::fs::read(entry.path())
                    .map_err(|e| format!("cannot read a credential file: {e}"))?;
                total += bytes.len() as u64;
                if total > cap {
                    return Err(format!("the credentials are over {cap} bytes"));
                }
                out.push((entry.path(), bytes));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

impl credentials::Host for HostState {
    async fn read_credentials(&mut self) -> Result<Vec<credentials::CredentialFile>, String> {
        self.env
            .capabilities
            .check_credentials(self.env.hook == HookKind::BeforeClear)?;
        let dir = self.env.session_dir.clone();
        let files =
            tokio::task::spawn_blocking(move || read_files_blocking(&dir, MAX_CREDENTIAL_BYTES))
                .await
                .map_err(|e| format!("the read task failed: {e}"))??;
        warn!(plugin = %self.env.plugin, tenant = %self.env.tenant, phone = %self.env.phone, files = files.len(), "plugin read the session's credentials (operator opt-in)");
        Ok(files
            .into_iter()
            .map(|(path, bytes)| credentials::CredentialFile {
                path: self.relative(&path),
                bytes,
            })
            .collect())
    }
}

impl state::Host for HostState {
    async fn state_get(&mut self, key: String) -> Option<String> {
        self.env.state.get(&self.env.state_scope, &key).await
    }

    async fn state_set(&mut self, key: String, value: String) -> Result<(), String> {
        self.env
            .state
            .set(&self.env.state_scope, &key, &value)
            .await
    }

    async fn state_remove(&mut self, key: String) {
        if let Err(e) = self.env.state.remove(&self.env.state_scope, &key).await {
            warn!(plugin = %self.env.plugin, tenant = %self.env.tenant, error = %e, "plugin state could not be saved");
        }
    }
}

//! Runs the real `lila` binary as a child process and talks to it over HTTP,
//! as the Portal does. Shared by the crash tests and the end-to-end tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The cluster secret the tests' cluster nodes share (`LILA_CLUSTER_SECRET`).
pub const CLUSTER_SECRET: &str = "cluster-test-cluster-secret-of-32-bytes";

pub struct Server {
    pub data: std::path::PathBuf,
    child: Child,
    port: u16,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A token for `tenant`, signed with `secret`.
pub fn tenant_token(secret: &str, tenant: &str) -> String {
    let auth = lila::auth::JwtAuth::new(secret.as_bytes()).expect("key");
    let tenant = lila::core::tenant::TenantId::parse(tenant).expect("tenant");
    auth.mint(Some(&tenant), false, Duration::from_secs(600))
        .expect("token")
}

impl Server {
    /// Starts `lila serve` over `data` with `secret`, every session pointed at `wa_url`.
    pub fn start(data: &Path, secret: &str, wa_url: &str, crash_at: Option<&str>) -> Server {
        std::fs::write(data.with_extension("toml"), "").expect("config file");
        Server::spawn(data, secret, wa_url, crash_at)
    }

    /// Like `start`, with the TOML config the caller wrote beside the data root (`{data}.toml`).
    pub fn start_with_config(data: &Path, secret: &str, wa_url: &str) -> Server {
        Server::spawn(data, secret, wa_url, None)
    }

    /// `http://127.0.0.1:{port}`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Like `start_with_config`, with the crash switch set.
    pub fn start_with_config_crashing_at(
        data: &Path,
        secret: &str,
        wa_url: &str,
        crash_at: &str,
    ) -> Server {
        Server::spawn(data, secret, wa_url, Some(crash_at))
    }

    /// Starts `lila serve` with the caller's config and `LILA_CRASH_AT`, and
    /// waits for it to abort during boot, before it ever listens.
    pub fn crash_during_boot(data: &Path, secret: &str, wa_url: &str, crash_at: &str) {
        let port = free_port();
        let mut child = Server::launch(data, secret, wa_url, Some(crash_at), port);
        if exit_within(&mut child, Duration::from_secs(30)).is_none() {
            panic!("lila did not crash at {crash_at} during boot");
        }
    }

    /// Starts `lila serve` with the config `{data}.toml` (written by the
    /// caller) and `RUST_LOG=rust_log`, its log (stdout, and stderr) written to `log`.
    pub fn start_logging_to(
        data: &Path,
        secret: &str,
        wa_url: &str,
        rust_log: &str,
        log: &Path,
    ) -> Server {
        let port = free_port();
        let file = std::fs::File::create(log).expect("log file");
        let errors = file.try_clone().expect("log file");
        let mut command = Server::serve_command(data, secret, wa_url, port, rust_log);
        // Plain text (tracing-subscriber honours NO_COLOR), for the test to read.
        command.env("NO_COLOR", "1").stdout(file).stderr(errors);
        let child = command.spawn().expect("start lila");
        Server::wait_until_up(data, child, port)
    }

    /// Starts `lila serve` as a cluster node (sharing [`CLUSTER_SECRET`]) on the PostgreSQL at
    /// `database_url`, logging to `{data}.log`.
    pub fn start_node(data: &Path, secret: &str, wa_url: &str, database_url: &str) -> Server {
        Server::start_node_with_env(data, secret, wa_url, database_url, &[])
    }

    /// `start_node`, with more environment (`LILA_CRASH_AT`, `LILA_NODE_URL`).
    pub fn start_node_with_env(
        data: &Path,
        secret: &str,
        wa_url: &str,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> Server {
        std::fs::write(data.with_extension("toml"), "").expect("config file");
        let port = free_port();
        // Its log beside the data root (`{data}.log`, appended to by a
        // restarted node), for a failing test to show.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .expect("log file");
        let errors = log.try_clone().expect("log file");
        let mut command = Server::serve_command(data, secret, wa_url, port, "info");
        command
            .env("LILA_DATABASE_URL", database_url)
            .env("LILA_CLUSTER_SECRET", CLUSTER_SECRET)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(log)
            .stderr(errors);
        let child = command.spawn().expect("start lila");
        Server::wait_until_up(data, child, port)
    }

    /// Runs `lila serve` over `data`, which must refuse to start (within
    /// 20 s): what it printed, stdout and stderr together.
    pub fn refused_to_start(data: &Path, secret: &str, wa_url: &str) -> String {
        Server::refused_to_start_with_env(data, secret, wa_url, &[])
    }

    /// `refused_to_start`, with more environment (`LILA_DATABASE_URL`).
    pub fn refused_to_start_with_env(
        data: &Path,
        secret: &str,
        wa_url: &str,
        env: &[(&str, &str)],
    ) -> String {
        let mut command = Server::serve_command(data, secret, wa_url, free_port(), "warn");
        command
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start lila");
        let Some(status) = exit_within(&mut child, Duration::from_secs(20)) else {
            panic!("lila started over {} instead of refusing", data.display());
        };
        assert!(!status.success(), "a refusal exits with an error");
        // It has exited: reading its (short) output to the end cannot block.
        let output = child.wait_with_output().expect("lila's output");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Sends SIGSTOP (`true`) or SIGCONT (`false`): a node paused as by a
    /// partition or a long stall, then resumed.
    pub fn pause(&self, paused: bool) {
        let signal = if paused { "-STOP" } else { "-CONT" };
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }

    /// Starts `lila serve` from a shell that set `umask` first, with the
    /// config `{data}.toml` (written by the caller) and no configured JWT
    /// secret, so that lila generates `lila/jwt.secret` itself.
    pub fn start_under_umask(data: &Path, wa_url: &str, umask: &str) -> Server {
        let port = free_port();
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" serve"))
            .arg(env!("CARGO_BIN_EXE_lila"));
        let mut command = Server::with_serve_env(shell, data, "", wa_url, port, "warn");
        command
            .env_remove("LILA_JWT_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("start lila");
        Server::wait_until_up(data, child, port)
    }

    fn serve_command(
        data: &Path,
        secret: &str,
        wa_url: &str,
        port: u16,
        rust_log: &str,
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lila"));
        command.arg("serve");
        Server::with_serve_env(command, data, secret, wa_url, port, rust_log)
    }

    /// `command` (which runs `lila serve`) with the environment that points it at this test's world.
    fn with_serve_env(
        mut command: Command,
        data: &Path,
        secret: &str,
        wa_url: &str,
        port: u16,
        rust_log: &str,
    ) -> Command {
        command
            .env("LILA_DATA_DIR", data)
            .env("LILA_BIND", format!("127.0.0.1:{port}"))
            .env("LILA_JWT_SECRET", secret)
            .env("LILA_WA_URL", wa_url)
            .env("LILA_CONFIG", data.with_extension("toml"))
            .env("RUST_LOG", rust_log);
        command
    }

    fn launch(data: &Path, secret: &str, wa_url: &str, crash_at: Option<&str>, port: u16) -> Child {
        let mut command = Server::serve_command(data, secret, wa_url, port, "warn");
        command.stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(step) = crash_at {
            command.env("LILA_CRASH_AT", step);
        }
        command.spawn().expect("start lila")
    }

    fn spawn(data: &Path, secret: &str, wa_url: &str, crash_at: Option<&str>) -> Server {
        let port = free_port();
        let child = Server::launch(data, secret, wa_url, crash_at, port);
        Server::wait_until_up(data, child, port)
    }

    fn wait_until_up(data: &Path, child: Child, port: u16) -> Server {
        let server = Server {
            data: data.to_owned(),
            child,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if server.request("GET", "/health", None, None).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("lila did not come up on port {port}");
    }

    /// A minimal HTTP/1.1 client: one request per connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let (status, raw) = self.request_raw(method, path, token, body)?;
        let json = raw
            .split("\r\n\r\n")
            .nth(1)
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        Ok((status, json))
    }

    /// `GET path` without a token; the body as text (`/metrics`).
    pub fn get_text(&self, path: &str) -> std::io::Result<String> {
        let (_, raw) = self.request_raw("GET", path, None, None)?;
        Ok(raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
    }

    /// The status and the whole raw response (head and body).
    fn request_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw)?;
        let status = raw
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        Ok((status, raw))
    }

    /// `POST /api/sessions {phoneNumber}`.
    pub fn create(&self, phone: &str, token: &str) -> (u16, Value) {
        let body = serde_json::json!({ "phoneNumber": phone });
        self.request("POST", "/api/sessions", Some(token), Some(&body))
            .expect("create request")
    }

    /// `POST /api/sessions/{phone}/messages {to, text}`.
    pub fn send_text(&self, phone: &str, token: &str, to: &str, text: &str) -> (u16, Value) {
        let body = serde_json::json!({ "to": to, "text": text });
        self.request(
            "POST",
            &format!("/api/sessions/{phone}/messages"),
            Some(token),
            Some(&body),
        )
        .expect("message request")
    }

    /// `POST /api/sessions/{phone}/clear`. An error when the server died answering (crash tests expect that).
    pub fn clear(&self, phone: &str, token: &str) -> std::io::Result<(u16, Value)> {
        self.request(
            "POST",
            &format!("/api/sessions/{phone}/clear"),
            Some(token),
            None,
        )
    }

    /// `GET /api/sessions/{phone}/status`'s body (`null` when it failed).
    pub fn status(&self, phone: &str, token: &str) -> Value {
        self.request(
            "GET",
            &format!("/api/sessions/{phone}/status"),
            Some(token),
            None,
        )
        .map(|(_, body)| body)
        .unwrap_or(Value::Null)
    }

    /// Waits (bounded, 20 s) until the session's status is `wanted`; its body.
    pub fn wait_status(&self, phone: &str, token: &str, wanted: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..1000 {
            last = self.status(phone, token);
            if last["status"] == wanted {
                return last;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("status never became {wanted}; last: {last}");
    }

    /// Waits (bounded) for `GET /api/sessions/{phone}/qr` to show a QR; its body.
    pub fn wait_qr(&self, phone: &str, token: &str) -> Value {
        let mut qr = Value::Null;
        wait_until("a QR from the API", || {
            qr = self
                .request(
                    "GET",
                    &format!("/api/sessions/{phone}/qr"),
                    Some(token),
                    None,
                )
                .map(|(_, body)| body)
                .unwrap_or(Value::Null);
            qr["qr"].is_string()
        });
        qr
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns how long the process took to exit (killed
    /// after 60 s).
    pub fn terminate(mut self) -> Duration {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        started.elapsed()
    }

    /// Waits for the process to die by itself (an abort at a crash point).
    pub fn wait_for_exit(mut self) {
        if exit_within(&mut self.child, Duration::from_secs(20)).is_none() {
            panic!("lila did not crash at its crash point");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit` for `child` to exit by itself; its status, or `None`
/// when it was still running (it is then killed).
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Waits (bounded) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

//! Benchmark of `serve`'s start with a Python tenant plugin (not a timed
//! test): time from spawning the real `lila` binary to its first answered
//! request (`GET /health`), and to the plugin being ready (`GET /api/plugins`
//! shows it loaded), with a cold and a warm compiled-code cache. Prints
//! medians; the figures go to `docs/BENCHMARKS.md`.
//!
//! `cargo bench -p lila --bench plugin_start -- [RUNS]` (default 5 runs per
//! case). Needs `plugins/dist/examples/python-guard.wasm`
//! (`bash plugins/build-examples.sh`).

#[path = "../tests/support/process.rs"]
mod process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lila::auth::JwtAuth;
use serde_json::Value;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
/// How often the benchmark polls: the resolution of its figures.
const POLL: Duration = Duration::from_millis(2);

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// One GET; `None` while nothing answers yet.
fn get(port: u16, path: &str, token: &str) -> Option<Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    if !raw.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(raw.split("\r\n\r\n").nth(1)?).ok()
}

struct Run {
    first_answer: Duration,
    plugins_ready: Duration,
    compiled_from: String,
}

fn start_once(data: &Path, token: &str) -> Run {
    let port = process::free_port();
    let started = Instant::now();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_lila"))
        .arg("serve")
        .env("LILA_DATA_DIR", data)
        .env("LILA_BIND", format!("127.0.0.1:{port}"))
        .env("LILA_JWT_SECRET", SECRET)
        .env("LILA_WA_URL", "ws://127.0.0.1:9/ws/chat")
        .env("LILA_CONFIG", data.with_extension("toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lila");
    let deadline = started + Duration::from_secs(300);
    let first_answer = loop {
        if get(port, "/health", token).is_some() {
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "lila never answered");
        std::thread::sleep(POLL);
    };
    let (plugins_ready, compiled_from) = loop {
        let plugin = get(port, "/api/plugins", token)
            .and_then(|body| body["plugins"].get(0).cloned())
            .unwrap_or(Value::Null);
        if plugin["state"] == "loaded" {
            let from = plugin["compiledFrom"].as_str().unwrap_or("?").to_owned();
            break (started.elapsed(), from);
        }
        assert!(plugin["state"] != "failed", "{plugin}");
        assert!(Instant::now() < deadline, "the plugin never loaded");
        std::thread::sleep(POLL);
    };
    let _ = child.kill();
    let _ = child.wait();
    Run {
        first_answer,
        plugins_ready,
        compiled_from,
    }
}

fn report(case: &str, runs: Vec<Run>, expect_from: &str) {
    for run in &runs {
        assert_eq!(run.compiled_from, expect_from, "{case}");
    }
    let first: Vec<Duration> = runs.iter().map(|r| r.first_answer).collect();
    let ready: Vec<Duration> = runs.iter().map(|r| r.plugins_ready).collect();
    let list = |d: &[Duration]| d.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
    println!(
        "| {case} | {} ({}) | {} ({}) |",
        ms(median(first.clone())),
        list(&first),
        ms(median(ready.clone())),
        list(&ready)
    );
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned();
    let python: PathBuf = workspace.join("plugins/dist/examples/python-guard.wasm");
    assert!(
        python.is_file(),
        "{} is missing: run `bash plugins/build-examples.sh`",
        python.display()
    );
    let root = tempfile::tempdir().expect("temp dir");
    let tenant_dir = root.path().join("tenants/acme");
    std::fs::create_dir_all(&tenant_dir).expect("tenant dir");
    std::fs::copy(&python, tenant_dir.join("python-guard.wasm")).expect("copy plugin");
    let data = root.path().join("data");
    std::fs::write(
        data.with_extension("toml"),
        format!(
            "[plugins]\nversion = 1\ntenant_dir = \"{}\"\n[plugins.tenant_plugins]\nmemory_mib = 128\n",
            root.path().join("tenants").display()
        ),
    )
    .expect("config");
    let token = JwtAuth::new(SECRET.as_bytes())
        .expect("key")
        .mint(None, true, Duration::from_secs(3600))
        .expect("token");
    let cache = data.join("plugins/cache");
    println!(
        "| cache | start → first answered request, median ({runs} runs) | start → plugin ready, median ({runs} runs) |"
    );
    println!("| --- | ---: | ---: |");
    let cold = (0..runs)
        .map(|_| {
            let _ = std::fs::remove_dir_all(&cache);
            start_once(&data, &token)
        })
        .collect();
    report("cold (compiled from source)", cold, "source");
    // The last cold run left the cache filled.
    let warm = (0..runs).map(|_| start_once(&data, &token)).collect();
    report("warm (loaded from cache)", warm, "cache");
}

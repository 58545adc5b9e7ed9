//! Enqueue latency with 0, 1,000 and 10,000 messages already queued.
//!
//! For each level, writes a phone's record (stopped, so no client runs)
//! and an outbox already holding N messages of 1 KiB, starts the real
//! `lila` binary (bench profile) over it, and times `POST
//! /api/sessions/{phone}/messages` 200 times over loopback, one at a time
//! (each answered 202 only once the message is durable). The top level is
//! 9,799 queued, so that the warm-up request and the 200 measured fit under
//! the default limit of 10,000 per phone. Prints the median, p90 and worst latency per level,
//! and the size of the outbox file afterwards.
//!
//! Run: `cargo bench -p lila --bench outbox`.

#[path = "../tests/support/process.rs"]
mod process;

use std::time::{Duration, Instant};

use process::{Server, tenant_token};

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const PHONE: &str = "51987654321";
const MEASURED: usize = 200;
const LEVELS: [usize; 3] = [0, 1_000, 9_799];

fn write_phone(root: &std::path::Path, queued: usize) {
    let records = root.join("lila/phones");
    std::fs::create_dir_all(&records).expect("records dir");
    std::fs::write(
        records.join(format!("{PHONE}.json")),
        "{\"version\":2,\"owner\":\"acme\",\"desired\":\"stopped\",\"purge\":null,\"updatedAtMs\":1}",
    )
    .expect("record");
    if queued == 0 {
        return;
    }
    // Version 1 of the outbox file: every build reads it.
    let text = "x".repeat(1024);
    let messages: Vec<String> = (0..queued)
        .map(|i| {
            format!(
                "{{\"id\":\"3EB0{i:020X}\",\"to\":\"51900000001@s.whatsapp.net\",\"text\":\"{text}\",\"createdAtMs\":1,\"attempts\":0}}"
            )
        })
        .collect();
    let outbox = root.join("whatsapp/outbox");
    std::fs::create_dir_all(&outbox).expect("outbox dir");
    std::fs::write(
        outbox.join(format!("{PHONE}.json")),
        format!("{{\"version\":1,\"messages\":[{}]}}", messages.join(",")),
    )
    .expect("outbox");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    let token = tenant_token(SECRET, "acme");
    println!("enqueue latency, {MEASURED} sequential POSTs of a 1 KiB text per level (ms)");
    println!("| queued before | median | p90 | worst | outbox file after |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for queued in LEVELS {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        write_phone(&data, queued);
        // A closed port: no session runs, so nothing leaves the queue.
        let server = Server::start(&data, SECRET, "ws://127.0.0.1:9/ws/chat", None);
        let text = "y".repeat(1024);
        // One request first, so that the phone's actor has loaded its queue.
        let (status, body) = server.send_text(PHONE, &token, "51900000002", &text);
        assert_eq!(status, 202, "{body}");
        let mut took = Vec::with_capacity(MEASURED);
        for _ in 0..MEASURED {
            let started = Instant::now();
            let (status, body) = server.send_text(PHONE, &token, "51900000002", &text);
            took.push(started.elapsed());
            assert_eq!(status, 202, "{body}");
        }
        took.sort();
        let file = data.join(format!("whatsapp/outbox/{PHONE}.json"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {queued} | {:.2} | {:.2} | {:.2} | {:.1} MiB |",
            ms(percentile(&took, 0.5)),
            ms(percentile(&took, 0.9)),
            ms(took[took.len() - 1]),
            size as f64 / (1024.0 * 1024.0)
        );
        server.kill();
    }
}

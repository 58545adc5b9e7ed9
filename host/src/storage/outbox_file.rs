//! `whatsapp/outbox/{phone}.json`: the durable queue, as an append-only log.
//!
//! Format (version 2, JSON Lines): a header line, then one line per change,
//! each written with one `write` and synced before the change is answered:
//!
//! ```text
//! {"version":2}
//! {"queued":{"id":"3EB0…","to":"…@s.whatsapp.net","text":"…","createdAtMs":1,"attempts":0}}
//! {"attempted":{"id":"3EB0…","attempts":1}}
//! {"left":{"id":"3EB0…"}}
//! ```
//!
//! So an enqueue costs one line (O(the message)), not a rewrite of the
//! queue. When the lines that no longer describe a waiting message (those
//! of messages gone, superseded attempt counts) outweigh the queue by more
//! than `COMPACT_SLACK_BYTES`, the file is rewritten atomically with the
//! queue alone; when the queue empties, the file is removed ("empty" is
//! stored as no file). A crash during an append leaves at most a last line
//! without its newline: that change was never acknowledged, and loading
//! drops it (and truncates it away, so the next append starts clean).
//!
//! Version 1 (`{"version":1,"messages":[…]}`, rewritten on every change)
//! still loads, and loading rewrites it as version 2.
//! PostgreSQL stores the same bytes a compaction writes (`encode_bytes`).
//!
//! Every function here does blocking file I/O: callers run it on the
//! blocking pool (`PhoneStore`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StorageError;
use super::atomic::{sync_dir, write_atomic};
use super::versioned::read_if_present;
use crate::core::outbox::{Outbox, OutboxChange, OutboxMessage, Recipient};
use crate::layout::DataLayout;
use crate::phone::Phone;

const VERSION_1: u32 = 1;
const VERSION: u32 = 2;
const WHAT: &str = "outbox";
/// How far the log may outgrow its queue before it is compacted: the
/// amortised cost of a change stays O(the change), and a queue that is
/// mostly sent is not rewritten after every message.
pub const COMPACT_SLACK_BYTES: u64 = 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    /// Version 1 kept the whole queue here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<MessageFile>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageFile {
    id: String,
    to: String,
    text: String,
    created_at_ms: u64,
    attempts: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Record {
    Queued(MessageFile),
    Attempted { id: String, attempts: u32 },
    Left { id: String },
}

impl MessageFile {
    fn of(m: &OutboxMessage) -> MessageFile {
        MessageFile {
            id: m.id.clone(),
            to: m.to.as_jid().to_owned(),
            text: m.text.clone(),
            created_at_ms: m.created_at_ms,
            attempts: m.attempts,
        }
    }

    fn into_message(self, path: &Path) -> Result<OutboxMessage, StorageError> {
        let to =
            Recipient::parse(&self.to).map_err(|e| StorageError::corrupt_from(path, WHAT, e))?;
        Ok(OutboxMessage {
            id: self.id,
            to,
            text: self.text,
            created_at_ms: self.created_at_ms,
            attempts: self.attempts,
        })
    }
}

fn record_of(change: &OutboxChange) -> Record {
    match change {
        OutboxChange::Queued(m) => Record::Queued(MessageFile::of(m)),
        OutboxChange::Attempted { id, attempts } => Record::Attempted {
            id: id.clone(),
            attempts: *attempts,
        },
        OutboxChange::Left { id } => Record::Left { id: id.clone() },
    }
}

/// One line of the log: `value` as JSON and a newline.
fn line<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    let mut bytes = serde_json::to_vec(value)
        .map_err(|e| StorageError::corrupt_from(Path::new(WHAT), WHAT, e))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The line `append` writes for `change` (encoded off the blocking pool).
pub fn encode_change(change: &OutboxChange) -> Result<Vec<u8>, StorageError> {
    line(&record_of(change))
}

/// The outbox stored in `bytes` (read from `path`, named in errors), and
/// where its last whole line ends: a shorter length than `bytes` means a
/// torn last line, which is not part of the queue.
fn decode_log(path: &Path, bytes: &[u8]) -> Result<(Outbox, usize), StorageError> {
    let corrupt = |reason: String| StorageError::corrupt(path, WHAT, reason);
    let whole = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    let mut lines = bytes[..whole].split(|b| *b == b'\n');
    let header = match lines.next() {
        Some(first) if !first.is_empty() => first,
        // Nothing whole was ever written: a crash while creating the file.
        _ => {
            // Version 1 was written without a newline, atomically: the whole
            // file is its one line.
            if bytes.is_empty() || !bytes.starts_with(b"{\"version\":1") {
                return Ok((Outbox::default(), 0));
            }
            bytes
        }
    };
    let header: Header =
        serde_json::from_slice(header).map_err(|e| StorageError::corrupt_from(path, WHAT, e))?;
    match header.version {
        VERSION_1 => {
            let messages = header
                .messages
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.into_message(path))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((Outbox::from_messages(messages), bytes.len()));
        }
        VERSION => {}
        other => {
            return Err(corrupt(format!(
                "version {other} is not one this build reads (it reads {VERSION_1} and {VERSION})"
            )));
        }
    }
    let mut outbox = Outbox::default();
    for (n, raw) in lines.enumerate() {
        if raw.is_empty() {
            continue;
        }
        let record: Record =
            serde_json::from_slice(raw).map_err(|e| corrupt(format!("line {}: {e}", n + 2)))?;
        outbox.replay(match record {
            Record::Queued(m) => OutboxChange::Queued(m.into_message(path)?),
            Record::Attempted { id, attempts } => OutboxChange::Attempted { id, attempts },
            Record::Left { id } => OutboxChange::Left { id },
        });
    }
    Ok((outbox, whole))
}

/// The outbox stored in `bytes` (either version; from the database too).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Outbox, StorageError> {
    decode_log(path, bytes).map(|(outbox, _)| outbox)
}

/// The compacted log of `outbox`: its header and one line per message;
/// `None` for an empty queue (stored as no file, or no row).
pub fn encode_bytes(outbox: &Outbox) -> Result<Option<Vec<u8>>, StorageError> {
    if outbox.is_empty() {
        return Ok(None);
    }
    let mut bytes = line(&Header {
        version: VERSION,
        messages: None,
    })?;
    for m in outbox.iter() {
        bytes.extend(line(&Record::Queued(MessageFile::of(m)))?);
    }
    Ok(Some(bytes))
}

/// One message as a row of the database's outbox holds it: its JSON, as a
/// `queued` line of the log carries it.
pub fn encode_message(message: &OutboxMessage) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(&MessageFile::of(message))
        .map_err(|e| StorageError::corrupt_from(Path::new(WHAT), WHAT, e))
}

/// The message `encode_message` wrote (read from `path`, named in errors).
pub fn decode_message(path: &Path, bytes: &[u8]) -> Result<OutboxMessage, StorageError> {
    let file: MessageFile =
        serde_json::from_slice(bytes).map_err(|e| StorageError::corrupt_from(path, WHAT, e))?;
    file.into_message(path)
}

/// Loads the phone's queue. A torn last line (a crash during an append
/// that was never acknowledged) is cut off the file, durably, so that the
/// next append does not land after it; a file of version 1 is rewritten as
/// a log, so that appends find one.
pub fn load(layout: &DataLayout, phone: &Phone) -> Result<Outbox, StorageError> {
    let path = layout.outbox_file(phone);
    let Some(bytes) = read_if_present(&path)? else {
        return Ok(Outbox::default());
    };
    let (outbox, whole) = decode_log(&path, &bytes)?;
    if bytes.starts_with(b"{\"version\":1") {
        save(layout, phone, &outbox)?;
    } else if whole < bytes.len() {
        if whole == 0 {
            remove(&path)?;
        } else {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| StorageError::io(&path, e))?;
            file.set_len(whole as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| StorageError::io(&path, e))?;
        }
    }
    Ok(outbox)
}

/// What an append left to do: nothing, or a compaction (`after` in full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Done,
    /// The log outweighs its queue by more than `COMPACT_SLACK_BYTES`.
    WantsCompaction,
}

/// Appends one change's `line` (from `encode_change`) and syncs it. The
/// queue after the change holds `after_bytes` (`Outbox::bytes`) and is
/// empty when `after_empty`: then the file is removed instead.
pub fn append(
    layout: &DataLayout,
    phone: &Phone,
    line: &[u8],
    after_bytes: u64,
    after_empty: bool,
) -> Result<Appended, StorageError> {
    let path = layout.outbox_file(phone);
    if after_empty {
        remove(&path)?;
        return Ok(Appended::Done);
    }
    let file = match OpenOptions::new().append(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new log: its header and first line appear at once.
            let mut bytes = self::line(&Header {
                version: VERSION,
                messages: None,
            })?;
            bytes.extend_from_slice(line);
            write_atomic(&path, &bytes)?;
            return Ok(Appended::Done);
        }
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    let before = file
        .metadata()
        .map_err(|e| StorageError::io(&path, e))?
        .len();
    if let Err(e) = write_synced(&path, &file, line) {
        // Not acknowledged: cut what may have reached the file, so that the
        // next append does not follow a torn line (if this fails too, the
        // torn line is the last one, which loading drops).
        let _ = file.set_len(before).and_then(|()| file.sync_data());
        return Err(e);
    }
    let len = before + line.len() as u64;
    Ok(
        if len > after_bytes.saturating_mul(2) + COMPACT_SLACK_BYTES {
            Appended::WantsCompaction
        } else {
            Appended::Done
        },
    )
}

fn write_synced(path: &Path, mut file: &File, line: &[u8]) -> Result<(), StorageError> {
    file.write_all(line)
        .and_then(|()| file.sync_data())
        .map_err(|e| StorageError::io(path, e))
}

fn remove(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => path.parent().map_or(Ok(()), sync_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Replaces the file with the compacted log of `outbox`, atomically (or
/// removes it for an empty queue). O(the queue): after a compaction's
/// trigger, or when a whole queue is written at once (an import).
pub fn save(layout: &DataLayout, phone: &Phone, outbox: &Outbox) -> Result<(), StorageError> {
    let path = layout.outbox_file(phone);
    match encode_bytes(outbox)? {
        Some(bytes) => write_atomic(&path, &bytes),
        None => remove(&path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, text: &str) -> OutboxMessage {
        let to = Recipient::parse("51911111111").unwrap();
        OutboxMessage::new(id.into(), to, text.into(), 1).unwrap()
    }

    /// A data root, the phone and its outbox file's path.
    fn fixture() -> (tempfile::TempDir, DataLayout, Phone, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataLayout::new(dir.path());
        let phone = Phone::parse("51987654321").unwrap();
        let path = layout.outbox_file(&phone);
        (dir, layout, phone, path)
    }

    /// Applies `change` to `outbox` and appends it, compacting when asked.
    fn apply(layout: &DataLayout, phone: &Phone, outbox: &mut Outbox, change: OutboxChange) {
        outbox.replay(change.clone());
        let line = encode_change(&change).unwrap();
        if append(layout, phone, &line, outbox.bytes(), outbox.is_empty()).unwrap()
            == Appended::WantsCompaction
        {
            save(layout, phone, outbox).unwrap();
        }
    }

    #[test]
    fn the_log_round_trips_in_order_and_an_empty_queue_leaves_no_file() {
        let (_dir, layout, phone, _) = fixture();
        let mut outbox = Outbox::default();
        for (i, text) in ["uno", "dos", "tres"].iter().enumerate() {
            apply(
                &layout,
                &phone,
                &mut outbox,
                OutboxChange::Queued(message(&format!("id{i}"), text)),
            );
        }
        apply(
            &layout,
            &phone,
            &mut outbox,
            OutboxChange::Attempted {
                id: "id0".into(),
                attempts: 1,
            },
        );
        assert_eq!(load(&layout, &phone).unwrap(), outbox);
        assert_eq!(load(&layout, &phone).unwrap().head().unwrap().attempts, 1);
        for id in ["id0", "id1", "id2"] {
            apply(
                &layout,
                &phone,
                &mut outbox,
                OutboxChange::Left { id: id.into() },
            );
        }
        assert!(!layout.outbox_file(&phone).exists());
        assert!(load(&layout, &phone).unwrap().is_empty());
    }

    #[test]
    fn an_enqueue_appends_one_line_whatever_the_queue_holds() {
        let (_dir, layout, phone, path) = fixture();
        let mut outbox = Outbox::default();
        let text = "x".repeat(1000);
        let mut sizes = Vec::new();
        for i in 0..200 {
            apply(
                &layout,
                &phone,
                &mut outbox,
                OutboxChange::Queued(message(&format!("m{i:03}"), &text)),
            );
            sizes.push(std::fs::metadata(&path).unwrap().len());
        }
        let growth: Vec<u64> = sizes.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(growth.iter().all(|g| *g == growth[0]), "{growth:?}");
        assert!(
            growth[0] < 1200,
            "one line per message, not the queue: {}",
            growth[0]
        );
    }

    #[test]
    fn the_log_is_compacted_once_dead_lines_outweigh_the_queue() {
        let (_dir, layout, phone, path) = fixture();
        let mut outbox = Outbox::default();
        apply(
            &layout,
            &phone,
            &mut outbox,
            OutboxChange::Queued(message("keep", "stays")),
        );
        let text = "y".repeat(10_000);
        // Well over COMPACT_SLACK_BYTES go through the log, one at a time.
        for i in 0..300 {
            let id = format!("m{i}");
            apply(
                &layout,
                &phone,
                &mut outbox,
                OutboxChange::Queued(message(&id, &text)),
            );
            apply(&layout, &phone, &mut outbox, OutboxChange::Left { id });
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(
            len <= 2 * outbox.bytes() + COMPACT_SLACK_BYTES + 20_000,
            "{len}"
        );
        assert_eq!(load(&layout, &phone).unwrap(), outbox);
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_cut_off_before_the_next_append() {
        let (_dir, layout, phone, path) = fixture();
        let mut outbox = Outbox::default();
        apply(
            &layout,
            &phone,
            &mut outbox,
            OutboxChange::Queued(message("a", "acked")),
        );
        // A crash half-way through the second append.
        let torn = encode_change(&OutboxChange::Queued(message("b", "never acked"))).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(file);
        let mut loaded = load(&layout, &phone).unwrap();
        assert_eq!(loaded, outbox);
        apply(
            &layout,
            &phone,
            &mut loaded,
            OutboxChange::Queued(message("c", "after")),
        );
        let ids: Vec<_> = load(&layout, &phone)
            .unwrap()
            .iter()
            .map(|m| m.id.clone())
            .collect();
        assert_eq!(ids, ["a", "c"]);
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_reported_not_skipped() {
        let (_dir, layout, phone, path) = fixture();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "{\"version\":2}\n{\"queued\":garbage}\n{\"left\":{\"id\":\"x\"}}\n",
        )
        .unwrap();
        let err = load(&layout, &phone).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_version_1_file_loads_as_a_log() {
        let (_dir, layout, phone, path) = fixture();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"version":1,"messages":[{"id":"old","to":"51911111111@s.whatsapp.net","text":"hola","createdAtMs":5,"attempts":2}]}"#,
        )
        .unwrap();
        let mut outbox = load(&layout, &phone).unwrap();
        assert_eq!(
            outbox.head().map(|m| (m.id.as_str(), m.attempts)),
            Some(("old", 2))
        );
        apply(
            &layout,
            &phone,
            &mut outbox,
            OutboxChange::Queued(message("new", "adiós")),
        );
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("{\"version\":2}\n")
        );
        let ids: Vec<_> = load(&layout, &phone)
            .unwrap()
            .iter()
            .map(|m| m.id.clone())
            .collect();
        assert_eq!(ids, ["old", "new"]);
    }
}

//! The WebAssembly component: binds the `reset-hook` world's exports to the
//! plain logic in the crate root, and the `ArchiveHost` trait to the host imports.

wit_bindgen::generate!({
    world: "reset-hook",
    path: "../../wit/lila-hooks-0.1.0",
});

use exports::lila::hooks::reset::Guest;
use lila::hooks::host::{self, LogLevel};
use lila::hooks::types::{Decision, ResetContext, ResetReport};
use lila::hooks::{archive, credentials};

use crate::{
    ArchiveHost, CredentialFile, FileInfo, OutboxMessage, ResetSnapshot, SessionState, Verdict,
};

struct WitHost;

impl ArchiveHost for WitHost {
    fn read_credentials(&mut self) -> Result<Vec<CredentialFile>, String> {
        let files = credentials::read_credentials()?;
        Ok(files
            .into_iter()
            .map(|file| CredentialFile {
                path: file.path,
                bytes: file.bytes,
            })
            .collect())
    }

    fn write_archive(&mut self, name: &str, bytes: &[u8]) -> Result<String, String> {
        archive::write_archive(name, bytes)
    }

    fn info(&mut self, message: &str) {
        host::log(LogLevel::Info, message);
    }

    fn error(&mut self, message: &str) {
        host::log(LogLevel::Error, message);
    }
}

// WIT types stay at this edge; the logic sees only the crate's own types.
fn snapshot(ctx: ResetContext) -> ResetSnapshot {
    ResetSnapshot {
        tenant: ctx.tenant,
        phone: ctx.phone,
        reset_id: ctx.reset_id,
        requested_at_ms: ctx.requested_at_ms,
        session: SessionState {
            status: ctx.session.status,
            own_jid: ctx.session.own_jid,
            paired: ctx.session.paired,
        },
        session_files: ctx
            .plan
            .session_files
            .into_iter()
            .map(|file| FileInfo {
                path: file.path,
                size: file.size,
            })
            .collect(),
        backup_count: ctx.plan.backup_count,
        outbox: ctx
            .plan
            .outbox
            .into_iter()
            .map(|message| OutboxMessage {
                id: message.id,
                to: message.to,
                text: message.text,
                created_at_ms: message.created_at_ms,
            })
            .collect(),
    }
}

struct BackupArchive;

impl Guest for BackupArchive {
    fn before_clear(ctx: ResetContext) -> Decision {
        match crate::before_clear(&host::config(), &snapshot(ctx), &mut WitHost) {
            Ok(Verdict::Allow) => Decision::Allow,
            Ok(Verdict::Veto(reason)) => Decision::Veto(reason),
            // A configuration error traps after logging why: the call is then
            // `failed`, and the operator's fail mode for this plugin decides.
            Err(error) => {
                let message = error.to_string();
                host::log(LogLevel::Error, &message);
                panic!("{message}");
            }
        }
    }

    /// Everything worth keeping was archived before the reset.
    fn after_clear(_report: ResetReport) {}
}

export!(BackupArchive);

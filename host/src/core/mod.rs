//! The pure core: what the host decides, as plain values and functions.
//!
//! Nothing in here does I/O, spawns a task, or knows about HTTP, tokio or the
//! WhatsApp client. The actors in `session`, the files in `storage` and the
//! handlers in `http` carry out what these types decide, and most of the
//! host's rules are tested here without touching a disk.

pub mod event;
pub mod inbound;
pub mod message_status;
pub mod outbox;
pub mod record;
pub mod recovery;
pub mod reset_plan;
pub mod reset_report;
pub mod status;
pub mod tenant;

//! lila: a multi-tenant WhatsApp session gateway.
//!
//! Start with `ARCHITECTURE.md` at the repository root, which also gives the
//! layers `tests/architecture.rs` checks. In short: `core` is the pure logic
//! (state machine, reset plan, boot policy, outbox rules); `session` holds
//! one actor per phone that carries it out; `storage` keeps each phone's
//! state (files on one node, PostgreSQL in a cluster); `whatsapp` is the
//! seam to the WhatsApp client; `plugins` runs the WebAssembly hooks;
//! `gateway` ties the actors together; `cluster` is everything a node does
//! as part of a cluster; `http` is the Portal's API; `cli` is the binary's
//! glue.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod core;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod hooks;
pub mod http;
pub mod import;
pub mod layout;
pub mod limits;
pub mod metrics;
pub mod phone;
pub mod plugins;
pub mod request_id;
pub mod seat;
pub mod session;
pub mod storage;
pub mod whatsapp;

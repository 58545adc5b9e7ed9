//! `lila:hooks@0.2.0` (`wit/lila-hooks-0.2.0`), the newest version: `latest`.
//! The 0.1.0 interfaces under the new version, plus the `events` export
//! (`on-event`). `imports.rs` implements its import traits.
//!
//! The world bound is `reset-and-event-hook`, which has every interface of
//! the package: a component of `reset-hook` or `event-hook` exports a part
//! of it, and `VERSION` finds each export on its own.

use wasmtime::component::HasSelf;

use self::exports::lila::hooks::{events, reset};
use super::Version;
use crate::plugins::imports::HostState;

// Imports are async so that a sleep or an HTTP request never blocks an
// executor thread.
wasmtime::component::bindgen!({
    path: "../wit/lila-hooks-0.2.0",
    world: "reset-and-event-hook",
    imports: { default: async },
    exports: { default: async },
});

pub const VERSION: Version = Version {
    number: "0.2.0",
    add_to_linker: |linker| {
        ResetAndEventHook::add_to_linker::<_, HasSelf<_>>(linker, |state: &mut HostState| state)
    },
    reset: Some(|pre| Ok(Box::new(reset::GuestIndices::new(pre)?))),
    events: Some(|pre| Ok(Box::new(events::GuestIndices::new(pre)?))),
};

super::exports_take_latest_types!(reset: reset::GuestIndices);
super::exports_take_latest_types!(events: events::GuestIndices);

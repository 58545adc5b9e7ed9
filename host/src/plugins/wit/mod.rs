//! The bindings of every `lila:hooks` version the host runs, one module per
//! version (`since_v0_1_0`, `since_v0_2_0`, ...), and `latest`, the newest.
//!
//! The host is written against `latest` alone: `imports.rs` implements
//! latest's import traits (the one implementation of the imports), and
//! `plugins/mod.rs` and `event_hooks.rs` translate the host's resets and
//! events to latest's types (the one translation). An older version's module
//! adapts its world to latest: its import traits convert their values to
//! latest's and call latest's implementation, and its exports take latest's
//! values (`ResetExport`, `EventsExport`) and convert them to its own (0.1.0
//! has nothing to convert: its `types` are 0.2.0's Rust types).
//! Nothing outside this folder names a version but `latest`.
//!
//! `with` shares a whole interface's Rust bindings between versions, and
//! with them the name the linker knows the interface by: only `types`, which
//! the linker does not need, is shared that way. An imported interface keeps
//! bindings of its own in every version (their records are small) so that it
//! is linked under that version's name.
//!
//! # Adding a version (say 0.3.0)
//!
//! 1. `wit/lila-hooks-0.3.0/`, next to the frozen ones.
//! 2. A module `since_v0_3_0.rs` like `since_v0_2_0.rs`: its `bindgen!`, its
//!    `VERSION`, and `exports_take_latest_types!` for each of its exports.
//!    If its `types` are unchanged, its `bindgen!` shares them with `with`
//!    (`"lila:hooks/types@0.3.0": super::since_v0_2_0::lila::hooks::types`),
//!    so that the translation and the older exports need nothing new.
//! 3. Here: `mod since_v0_3_0;`, `pub use since_v0_3_0 as latest;` and its
//!    entry in `VERSIONS`, the one place versions are dispatched (linking,
//!    finding a component's exports, the message for a component without
//!    any; calls go through the trait objects found there).
//! 4. `since_v0_2_0.rs` becomes an old version: like `since_v0_1_0.rs`, its
//!    import traits forward to latest's. Where 0.3.0 changed an import's
//!    signature or a type, `imports.rs` and the translations follow it, and
//!    each older module converts between its own types and the new ones
//!    (the compiler points at every place).

pub mod since_v0_1_0;
pub mod since_v0_2_0;

pub use since_v0_2_0 as latest;

use async_trait::async_trait;
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, Linker};

use self::latest::exports::lila::hooks::events::Event;
use self::latest::lila::hooks::types::{Decision, ResetContext, ResetReport};
use super::imports::HostState;

/// The store a hook runs in.
pub type PluginStore = Store<HostState>;

/// Every version the host runs, oldest first: a component that exports the
/// same hook in two versions is called in the older one.
pub const VERSIONS: [Version; 2] = [since_v0_1_0::VERSION, since_v0_2_0::VERSION];

/// A version of `lila:hooks` as the host runs it.
pub struct Version {
    /// The package version, as in `lila:hooks/reset@0.1.0`.
    pub number: &'static str,
    /// Links the version's imports (all of them, answered by `latest`'s).
    pub add_to_linker: fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
    /// Finds the version's `reset` in a component (`None`: the version has no `reset`).
    pub reset: Option<Find<dyn ResetExport>>,
    /// Finds the version's `events` in a component (`None`: the version has no `events`).
    pub events: Option<Find<dyn EventsExport>>,
}

/// Finds an export in a component; an error when the component does not have it.
pub type Find<E> = fn(&InstancePre<HostState>) -> wasmtime::Result<Box<E>>;

/// A component's `reset` export, in whichever version: called with latest's types.
#[async_trait]
pub trait ResetExport: Send + Sync {
    async fn before_clear(
        &self,
        store: &mut PluginStore,
        instance: &Instance,
        ctx: &ResetContext,
    ) -> wasmtime::Result<Decision>;

    async fn after_clear(
        &self,
        store: &mut PluginStore,
        instance: &Instance,
        report: &ResetReport,
    ) -> wasmtime::Result<()>;
}

/// A component's `events` export, in whichever version: called with latest's types.
#[async_trait]
pub trait EventsExport: Send + Sync {
    async fn on_event(
        &self,
        store: &mut PluginStore,
        instance: &Instance,
        event: &Event,
    ) -> wasmtime::Result<()>;
}

/// Implements `ResetExport` (`reset: ...`) or `EventsExport` (`events: ...`)
/// for a version's generated export bindings whose functions take latest's
/// Rust types as they are (its `types` are latest's, shared with `with`). A
/// version whose types differ implements the trait by hand, converting
/// latest's values to its own.
macro_rules! exports_take_latest_types {
    (reset: $indices:ty) => {
        #[async_trait::async_trait]
        impl $crate::plugins::wit::ResetExport for $indices {
            async fn before_clear(
                &self,
                store: &mut $crate::plugins::wit::PluginStore,
                instance: &$crate::plugins::wit::Instance,
                ctx: &$crate::plugins::wit::ResetContext,
            ) -> wasmtime::Result<$crate::plugins::wit::Decision> {
                let guest = self.load(&mut *store, instance)?;
                guest.call_before_clear(store, ctx).await
            }

            async fn after_clear(
                &self,
                store: &mut $crate::plugins::wit::PluginStore,
                instance: &$crate::plugins::wit::Instance,
                report: &$crate::plugins::wit::ResetReport,
            ) -> wasmtime::Result<()> {
                let guest = self.load(&mut *store, instance)?;
                guest.call_after_clear(store, report).await
            }
        }
    };
    (events: $indices:ty) => {
        #[async_trait::async_trait]
        impl $crate::plugins::wit::EventsExport for $indices {
            async fn on_event(
                &self,
                store: &mut $crate::plugins::wit::PluginStore,
                instance: &$crate::plugins::wit::Instance,
                event: &$crate::plugins::wit::Event,
            ) -> wasmtime::Result<()> {
                let guest = self.load(&mut *store, instance)?;
                guest.call_on_event(store, event).await
            }
        }
    };
}
use exports_take_latest_types;

/// Links the imports of every version.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    VERSIONS
        .iter()
        .try_for_each(|version| (version.add_to_linker)(linker))
}

/// The hooks a component exports, each in the oldest version it has it in.
pub struct Exports {
    pub reset: Option<Box<dyn ResetExport>>,
    pub events: Option<Box<dyn EventsExport>>,
}

/// A component that exports none of the hooks is not a plugin.
#[derive(Debug, thiserror::Error)]
#[error("it exports neither {}", hook_interfaces())]
pub struct NoHooks;

impl Exports {
    pub fn of(pre: &InstancePre<HostState>) -> Result<Exports, NoHooks> {
        let exports = Exports {
            reset: VERSIONS
                .iter()
                .filter_map(|version| version.reset)
                .find_map(|find| find(pre).ok()),
            events: VERSIONS
                .iter()
                .filter_map(|version| version.events)
                .find_map(|find| find(pre).ok()),
        };
        if exports.reset.is_none() && exports.events.is_none() {
            return Err(NoHooks);
        }
        Ok(exports)
    }
}

/// `lila:hooks/reset@0.1.0, lila:hooks/reset@0.2.0 nor lila:hooks/events@0.2.0`.
fn hook_interfaces() -> String {
    let mut names: Vec<String> = VERSIONS
        .iter()
        .flat_map(|version| {
            let reset = version.reset.map(|_| "reset");
            let events = version.events.map(|_| "events");
            [reset, events]
                .into_iter()
                .flatten()
                .map(|hook| format!("lila:hooks/{hook}@{}", version.number))
        })
        .collect();
    match names.pop() {
        Some(last) if !names.is_empty() => format!("{} nor {last}", names.join(", ")),
        Some(last) => last,
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_every_hook_of_every_version() {
        assert_eq!(
            NoHooks.to_string(),
            "it exports neither lila:hooks/reset@0.1.0, lila:hooks/reset@0.2.0 nor lila:hooks/events@0.2.0"
        );
    }
}

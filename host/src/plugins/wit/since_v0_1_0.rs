//! `lila:hooks@0.1.0` (`wit/lila-hooks-0.1.0`), frozen, adapted to `latest`:
//! its imports convert their few types of their own and call latest's
//! implementation; its `reset` takes latest's types as they are.
//!
//! Its `types` are 0.2.0's Rust types (`with`): the records are the same in
//! both versions, and wasmtime checks values by shape, so one translation
//! of a reset serves both. They are named through `since_v0_2_0` rather than
//! `latest` so that a later version which changes them makes this module
//! stop compiling (and convert) instead of failing a type check at run time.

use wasmtime::component::HasSelf;

use self::exports::lila::hooks::reset;
use self::lila::hooks::{archive, credentials, host, http, state};
use super::Version;
use super::latest::lila::hooks as latest;
use crate::plugins::imports::HostState;

wasmtime::component::bindgen!({
    path: "../wit/lila-hooks-0.1.0",
    world: "reset-hook",
    imports: { default: async },
    exports: { default: async },
    with: { "lila:hooks/types@0.1.0": super::since_v0_2_0::lila::hooks::types },
});

pub const VERSION: Version = Version {
    number: "0.1.0",
    add_to_linker: |linker| {
        ResetHook::add_to_linker::<_, HasSelf<_>>(linker, |state: &mut HostState| state)
    },
    reset: Some(|pre| Ok(Box::new(reset::GuestIndices::new(pre)?))),
    events: None,
};

super::exports_take_latest_types!(reset: reset::GuestIndices);

impl host::Host for HostState {
    async fn log(&mut self, level: host::LogLevel, message: String) {
        latest::host::Host::log(self, level.into(), message).await
    }

    async fn config(&mut self) -> String {
        latest::host::Host::config(self).await
    }

    async fn now_ms(&mut self) -> u64 {
        latest::host::Host::now_ms(self).await
    }

    async fn deadline_ms(&mut self) -> u64 {
        latest::host::Host::deadline_ms(self).await
    }

    async fn sleep_ms(&mut self, ms: u32) {
        latest::host::Host::sleep_ms(self, ms).await
    }
}

impl From<host::LogLevel> for latest::host::LogLevel {
    fn from(level: host::LogLevel) -> Self {
        match level {
            host::LogLevel::Trace => Self::Trace,
            host::LogLevel::Debug => Self::Debug,
            host::LogLevel::Info => Self::Info,
            host::LogLevel::Warn => Self::Warn,
            host::LogLevel::Error => Self::Error,
        }
    }
}

impl http::Host for HostState {
    async fn http_post(
        &mut self,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<http::HttpResponse, String> {
        latest::http::Host::http_post(self, url, headers, body, timeout_ms)
            .await
            .map(Into::into)
    }
}

impl From<latest::http::HttpResponse> for http::HttpResponse {
    fn from(response: latest::http::HttpResponse) -> Self {
        Self {
            status: response.status,
            headers: response.headers,
            body: response.body,
        }
    }
}

impl archive::Host for HostState {
    async fn write_archive(&mut self, name: String, bytes: Vec<u8>) -> Result<String, String> {
        latest::archive::Host::write_archive(self, name, bytes).await
    }
}

impl credentials::Host for HostState {
    async fn read_credentials(&mut self) -> Result<Vec<credentials::CredentialFile>, String> {
        let files = latest::credentials::Host::read_credentials(self).await?;
        Ok(files.into_iter().map(Into::into).collect())
    }
}

impl From<latest::credentials::CredentialFile> for credentials::CredentialFile {
    fn from(file: latest::credentials::CredentialFile) -> Self {
        Self {
            path: file.path,
            bytes: file.bytes,
        }
    }
}

impl state::Host for HostState {
    async fn state_get(&mut self, key: String) -> Option<String> {
        latest::state::Host::state_get(self, key).await
    }

    async fn state_set(&mut self, key: String, value: String) -> Result<(), String> {
        latest::state::Host::state_set(self, key, value).await
    }

    async fn state_remove(&mut self, key: String) {
        latest::state::Host::state_remove(self, key).await
    }
}

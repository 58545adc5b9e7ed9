//! WhatsApp Web's current version, which a client announces when it
//! connects: fetched once per process (from `web.whatsapp.com/sw.js`) and
//! shared by every session's start, refreshed when it is older than
//! [`REFRESH_AFTER`] and when WhatsApp turns a client down as outdated.
//!
//! Left to itself, whatsapp-rust fetches it at every connect of a session
//! that has not stored one yet: a restart of 10,000 new sessions would be
//! 10,000 requests to the same URL, and during an outage each session's
//! every retry is one more. Here concurrent starts wait for one fetch, and
//! a failed fetch is remembered for [`RETRY_AFTER`]: the starts in that
//! window fail with its reason at once, without a request of their own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use whatsapp_rust::http::HttpClient;

/// A version as whatsapp-rust takes it: (primary, secondary, tertiary).
pub type Version = (u32, u32, u32);

/// How long a fetched version is used before it is fetched again (the
/// client's own cache keeps one for 24 h).
pub const REFRESH_AFTER: Duration = Duration::from_secs(6 * 60 * 60);
/// How long a failed fetch answers for the next ones.
pub const RETRY_AFTER: Duration = Duration::from_secs(15);
/// The longest one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// What is known, and since when.
#[derive(Debug, Clone, Default)]
struct Known {
    version: Option<(Version, Instant)>,
    failure: Option<(String, Instant)>,
}

/// What a start does with what is known (pure; see [`decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Use(Version),
    Fetch,
    Fail(String),
}

/// A fresh version is used; a recent failure answers without a request;
/// anything else fetches. A stale version is still better than none: when
/// its refresh fails, the old one goes on being used.
fn decide(known: &Known, now: Instant) -> Decision {
    match (&known.version, &known.failure) {
        (Some((version, at)), _) if now.duration_since(*at) < REFRESH_AFTER => {
            Decision::Use(*version)
        }
        (Some((version, _)), Some((_, failed))) if now.duration_since(*failed) < RETRY_AFTER => {
            Decision::Use(*version)
        }
        (None, Some((reason, failed))) if now.duration_since(*failed) < RETRY_AFTER => {
            Decision::Fail(reason.clone())
        }
        _ => Decision::Fetch,
    }
}

/// The process's one source of WhatsApp Web's version.
pub struct WebVersion {
    http: Arc<dyn HttpClient>,
    known: Mutex<Known>,
}

impl WebVersion {
    pub fn new(http: Arc<dyn HttpClient>) -> WebVersion {
        WebVersion {
            http,
            known: Mutex::new(Known::default()),
        }
    }

    /// The version to announce, fetching it first when there is none, or
    /// an old one. `Err` is the failed fetch's reason (an error chain's
    /// text, for the caller to classify), at most once per [`RETRY_AFTER`].
    pub async fn current(&self) -> Result<Version, String> {
        // One fetch at a time: the starts that arrive meanwhile wait for
        // its result instead of asking too.
        let mut known = self.known.lock().await;
        match decide(&known, Instant::now()) {
            Decision::Use(version) => return Ok(version),
            Decision::Fail(reason) => return Err(reason),
            Decision::Fetch => {}
        }
        tracing::info!("fetching WhatsApp Web's current version");
        let fetched = tokio::time::timeout(
            FETCH_TIMEOUT,
            whatsapp_rust::version::fetch_latest_app_version(&self.http),
        )
        .await
        .unwrap_or_else(|_| {
            Err(whatsapp_rust::anyhow::anyhow!(
                "no answer within {} s",
                FETCH_TIMEOUT.as_secs()
            ))
        });
        let now = Instant::now();
        match fetched {
            Ok(version) => {
                tracing::info!(
                    version = %format_args!("{}.{}.{}", version.0, version.1, version.2),
                    "WhatsApp Web's version"
                );
                known.version = Some((version, now));
                known.failure = None;
                Ok(version)
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(error = %reason, retry_in_s = RETRY_AFTER.as_secs(), "could not fetch WhatsApp Web's version");
                known.failure = Some((reason.clone(), now));
                match known.version {
                    Some((version, _)) => Ok(version),
                    None => Err(reason),
                }
            }
        }
    }

    /// WhatsApp turned a client down as outdated: the next start fetches
    /// the version anew.
    pub async fn outdated(&self) {
        let mut known = self.known.lock().await;
        if known.version.take().is_some() {
            tracing::warn!(
                "WhatsApp says the client is outdated; the next start fetches its version again"
            );
        }
        known.failure = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Version = (2, 3000, 1);

    #[test]
    fn a_fresh_version_is_used_and_an_old_one_fetched_again() {
        let now = Instant::now();
        let mut known = Known::default();
        assert_eq!(decide(&known, now), Decision::Fetch);
        known.version = Some((V, now));
        assert_eq!(decide(&known, now + REFRESH_AFTER / 2), Decision::Use(V));
        assert_eq!(decide(&known, now + REFRESH_AFTER), Decision::Fetch);
    }

    #[test]
    fn a_failure_answers_for_a_while_then_lets_one_fetch_try_again() {
        let now = Instant::now();
        let known = Known {
            version: None,
            failure: Some(("dns error".into(), now)),
        };
        assert_eq!(
            decide(&known, now + RETRY_AFTER / 2),
            Decision::Fail("dns error".into())
        );
        assert_eq!(decide(&known, now + RETRY_AFTER), Decision::Fetch);
    }

    #[test]
    fn a_failed_refresh_keeps_the_old_version_in_use() {
        let now = Instant::now();
        let refreshed_at = now + REFRESH_AFTER;
        let known = Known {
            version: Some((V, now)),
            failure: Some(("timeout".into(), refreshed_at)),
        };
        assert_eq!(
            decide(&known, refreshed_at + RETRY_AFTER / 2),
            Decision::Use(V)
        );
        assert_eq!(decide(&known, refreshed_at + RETRY_AFTER), Decision::Fetch);
    }

    /// An HTTP client that counts its requests and fails them.
    struct Failing(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl HttpClient for Failing {
        async fn execute(
            &self,
            _request: whatsapp_rust::http::HttpRequest,
        ) -> Result<whatsapp_rust::http::HttpResponse, whatsapp_rust::anyhow::Error> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(whatsapp_rust::anyhow::anyhow!(
                "dns error: failed to lookup address"
            ))
        }
    }

    #[tokio::test]
    async fn a_thousand_starts_during_an_outage_make_one_request() {
        let http = Arc::new(Failing(Default::default()));
        let versions = Arc::new(WebVersion::new(http.clone()));
        let starts: Vec<_> = (0..1000)
            .map(|_| {
                let versions = versions.clone();
                tokio::spawn(async move { versions.current().await })
            })
            .collect();
        for start in starts {
            let answer = start.await.unwrap();
            assert!(answer.is_err_and(|e| e.contains("dns error")));
        }
        assert_eq!(http.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

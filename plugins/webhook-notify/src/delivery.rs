//! Delivering one event to every endpoint, with retries and backoff, inside the
//! call's time budget.
//!
//! Attempts go in rounds: every endpoint still pending gets one attempt per
//! round, and the wait between rounds doubles (`backoff_ms`, `2*backoff_ms`,
//! ...). Rounds rather than one endpoint at a time, so a dead receiver cannot
//! spend the budget that a healthy one needed. Waiting uses the host's
//! `sleep-ms`, which counts against the budget; before each wait and attempt
//! the plugin checks `deadline-ms` and stops in time, so it ends with a report
//! instead of being cut off.

use crate::config::{Endpoint, WebhookConfig};
use crate::signature::{SIGNATURE_HEADER, signature_value};

/// The host imports delivery needs.
pub trait Transport {
    fn now_ms(&mut self) -> u64;
    fn deadline_ms(&mut self) -> u64;
    fn sleep_ms(&mut self, ms: u32);
    /// The HTTP status, or why there is none.
    fn post(
        &mut self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout_ms: u32,
    ) -> Result<u16, String>;
}

/// Prefix of an `http-post` error when the host refused without sending
/// (URL not allow-listed, capability not granted): retrying cannot help.
pub const HOST_REFUSAL_PREFIX: &str = "denied:";

/// No attempt starts with less time than this left: it could not finish.
const MIN_ATTEMPT_MS: u64 = 100;
/// Kept back from the deadline for logging and returning.
const RETURN_MARGIN_MS: u64 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx answer.
    Delivered { attempts: u32, status: u16 },
    /// An answer that retrying cannot change (3xx, or 4xx other than 408, 425, 429).
    Rejected { attempts: u32, status: u16 },
    /// The host refused to send (not allow-listed, or no `http` capability).
    Refused { reason: String },
    /// Attempts or time ran out while the endpoint kept failing.
    GaveUp { attempts: u32, last_error: String },
}

impl Delivery {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Delivery::Delivered { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointDelivery {
    pub url: String,
    pub delivery: Delivery,
}

/// The headers of one endpoint's request. `delivery_id` lets receivers
/// de-duplicate retries: it is the reset id, the same on every attempt.
pub fn request_headers(
    endpoint: &Endpoint,
    event_name: &str,
    delivery_id: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (
            "User-Agent".to_owned(),
            concat!("lila-webhook-notify/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
        ("X-Lila-Event".to_owned(), event_name.to_owned()),
        ("X-Lila-Delivery".to_owned(), delivery_id.to_owned()),
        (
            SIGNATURE_HEADER.to_owned(),
            signature_value(endpoint.secret.as_bytes(), body),
        ),
    ]
}

fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500..=599)
}

/// The wait before round `round` (0-based; round 0 has none).
fn backoff_before(round: u32, backoff_ms: u32) -> u32 {
    match round {
        0 => 0,
        _ => backoff_ms.saturating_mul(1 << (round - 1).min(16)),
    }
}

struct Pending<'a> {
    endpoint: &'a Endpoint,
    headers: Vec<(String, String)>,
    attempts: u32,
    last_error: Option<String>,
    finished: Option<Delivery>,
}

/// Sends `body` to every configured endpoint and says how each ended.
pub fn deliver(
    config: &WebhookConfig,
    event_name: &str,
    delivery_id: &str,
    body: &[u8],
    transport: &mut impl Transport,
) -> Vec<EndpointDelivery> {
    let mut pending: Vec<Pending<'_>> = config
        .endpoints
        .iter()
        .map(|endpoint| Pending {
            endpoint,
            headers: request_headers(endpoint, event_name, delivery_id, body),
            attempts: 0,
            last_error: None,
            finished: None,
        })
        .collect();
    let usable_deadline = transport.deadline_ms().saturating_sub(RETURN_MARGIN_MS);

    'rounds: for round in 0..config.max_attempts {
        if pending.iter().all(|state| state.finished.is_some()) {
            break;
        }
        let wait = backoff_before(round, config.backoff_ms);
        if wait > 0 {
            let after_wait = transport.now_ms().saturating_add(u64::from(wait));
            if after_wait.saturating_add(MIN_ATTEMPT_MS) > usable_deadline {
                break;
            }
            transport.sleep_ms(wait);
        }
        for state in pending.iter_mut().filter(|state| state.finished.is_none()) {
            let left = usable_deadline.saturating_sub(transport.now_ms());
            if left < MIN_ATTEMPT_MS {
                break 'rounds;
            }
            let timeout_ms =
                u32::try_from(left).map_or(config.timeout_ms, |left| left.min(config.timeout_ms));
            state.attempts += 1;
            let answer = transport.post(&state.endpoint.url, &state.headers, body, timeout_ms);
            let attempts = state.attempts;
            match answer {
                Ok(status) if (200..300).contains(&status) => {
                    state.finished = Some(Delivery::Delivered { attempts, status });
                }
                Ok(status) if is_retryable(status) => {
                    state.last_error = Some(format!("HTTP {status}"));
                }
                Ok(status) => {
                    state.finished = Some(Delivery::Rejected { attempts, status });
                }
                Err(reason) if reason.starts_with(HOST_REFUSAL_PREFIX) => {
                    state.finished = Some(Delivery::Refused { reason });
                }
                Err(reason) => state.last_error = Some(reason),
            }
        }
    }

    pending
        .into_iter()
        .map(|state| EndpointDelivery {
            url: state.endpoint.url.clone(),
            delivery: state.finished.unwrap_or_else(|| Delivery::GaveUp {
                attempts: state.attempts,
                last_error: state
                    .last_error
                    .unwrap_or_else(|| "no time was left in the call's budget".to_owned()),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use super::*;
    use crate::event::EVENT_NAME;

    /// A virtual clock and scripted answers per URL. Each post takes
    /// `latency_ms` of virtual time; an unscripted post answers 200.
    struct FakeTransport {
        now: u64,
        deadline: u64,
        latency_ms: u64,
        answers: BTreeMap<String, VecDeque<Result<u16, String>>>,
        posts: Vec<Post>,
        sleeps: Vec<u32>,
    }

    #[derive(Debug)]
    struct Post {
        url: String,
        headers: Vec<(String, String)>,
        timeout_ms: u32,
    }

    impl FakeTransport {
        fn new(budget_ms: u64) -> Self {
            FakeTransport {
                now: 1_000_000,
                deadline: 1_000_000 + budget_ms,
                latency_ms: 10,
                answers: BTreeMap::new(),
                posts: Vec::new(),
                sleeps: Vec::new(),
            }
        }

        fn script(mut self, url: &str, answers: &[Result<u16, &str>]) -> Self {
            let answers = answers
                .iter()
                .map(|answer| answer.map_err(str::to_owned))
                .collect();
            self.answers.insert(url.to_owned(), answers);
            self
        }

        fn urls_posted(&self) -> Vec<&str> {
            self.posts.iter().map(|post| post.url.as_str()).collect()
        }
    }

    impl Transport for FakeTransport {
        fn now_ms(&mut self) -> u64 {
            self.now
        }
        fn deadline_ms(&mut self) -> u64 {
            self.deadline
        }
        fn sleep_ms(&mut self, ms: u32) {
            self.sleeps.push(ms);
            self.now += u64::from(ms);
        }
        fn post(
            &mut self,
            url: &str,
            headers: &[(String, String)],
            _body: &[u8],
            timeout_ms: u32,
        ) -> Result<u16, String> {
            self.posts.push(Post {
                url: url.to_owned(),
                headers: headers.to_vec(),
                timeout_ms,
            });
            self.now += self.latency_ms;
            self.answers
                .get_mut(url)
                .and_then(VecDeque::pop_front)
                .unwrap_or(Ok(200))
        }
    }

    const A: &str = "https://a.example/hook";
    const B: &str = "https://b.example/hook";
    const BODY: &[u8] = br#"{"event":"session.cleared"}"#;

    fn config(urls: &[&str]) -> WebhookConfig {
        let endpoints: Vec<String> = urls
            .iter()
            .map(|url| format!(r#"{{"url": "{url}", "secret": "secret-of-{url}"}}"#))
            .collect();
        WebhookConfig::parse(&format!(
            r#"{{"endpoints": [{}], "max_attempts": 3, "backoff_ms": 200, "timeout_ms": 2000}}"#,
            endpoints.join(",")
        ))
        .unwrap()
    }

    fn header<'a>(post: &'a Post, name: &str) -> Option<&'a str> {
        post.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn only(results: Vec<EndpointDelivery>) -> Delivery {
        assert_eq!(results.len(), 1);
        results
            .into_iter()
            .map(|result| result.delivery)
            .next()
            .unwrap()
    }

    #[test]
    fn first_try_success_sends_signed_event_headers() {
        let mut transport = FakeTransport::new(10_000);
        let results = deliver(&config(&[A]), EVENT_NAME, "r-42", BODY, &mut transport);
        assert_eq!(
            only(results),
            Delivery::Delivered {
                attempts: 1,
                status: 200
            }
        );
        let post = &transport.posts[0];
        assert_eq!(header(post, "X-Lila-Event"), Some("session.cleared"));
        assert_eq!(header(post, "X-Lila-Delivery"), Some("r-42"));
        assert_eq!(header(post, "Content-Type"), Some("application/json"));
        // printf '%s' '{"event":"session.cleared"}' \
        //   | openssl dgst -sha256 -hmac 'secret-of-https://a.example/hook'
        assert_eq!(
            header(post, "X-Lila-Signature"),
            Some("sha256=4a8a4845e62b0b17a67732b46c37ec99db5231357877dadbb268b62e25129301")
        );
        assert!(transport.sleeps.is_empty());
    }

    #[test]
    fn server_errors_are_retried_with_doubling_backoff() {
        let mut transport =
            FakeTransport::new(10_000).script(A, &[Ok(500), Err("connection refused"), Ok(204)]);
        let results = deliver(&config(&[A]), EVENT_NAME, "r-42", BODY, &mut transport);
        assert_eq!(
            only(results),
            Delivery::Delivered {
                attempts: 3,
                status: 204
            }
        );
        assert_eq!(transport.sleeps, vec![200, 400]);
    }

    #[test]
    fn persistent_failure_gives_up_after_max_attempts_with_the_last_error() {
        let mut transport =
            FakeTransport::new(10_000).script(A, &[Ok(503), Ok(429), Ok(502), Ok(200)]);
        let results = deliver(&config(&[A]), EVENT_NAME, "r-42", BODY, &mut transport);
        assert_eq!(
            only(results),
            Delivery::GaveUp {
                attempts: 3,
                last_error: "HTTP 502".to_owned()
            }
        );
        assert_eq!(transport.posts.len(), 3);
    }

    #[test]
    fn client_errors_and_host_refusals_are_not_retried() {
        let mut transport = FakeTransport::new(10_000).script(A, &[Ok(404)]).script(
            B,
            &[Err(
                "denied: https://b.example/hook is not on the allow-list",
            )],
        );
        let results = deliver(&config(&[A, B]), EVENT_NAME, "r-42", BODY, &mut transport);
        assert_eq!(
            results[0].delivery,
            Delivery::Rejected {
                attempts: 1,
                status: 404
            }
        );
        assert_eq!(
            results[1].delivery,
            Delivery::Refused {
                reason: "denied: https://b.example/hook is not on the allow-list".to_owned()
            }
        );
        assert_eq!(transport.posts.len(), 2);
        assert!(transport.sleeps.is_empty());
    }

    #[test]
    fn a_dead_endpoint_does_not_delay_a_healthy_one() {
        let mut transport = FakeTransport::new(10_000).script(A, &[Ok(500), Ok(500), Ok(500)]);
        let results = deliver(&config(&[A, B]), EVENT_NAME, "r-42", BODY, &mut transport);
        assert_eq!(
            results[1].delivery,
            Delivery::Delivered {
                attempts: 1,
                status: 200
            }
        );
        assert_eq!(transport.urls_posted(), vec![A, B, A, A]);
    }

    #[test]
    fn each_endpoint_is_signed_with_its_own_secret() {
        let mut transport = FakeTransport::new(10_000);
        deliver(&config(&[A, B]), EVENT_NAME, "r-42", BODY, &mut transport);
        let signatures: Vec<_> = transport
            .posts
            .iter()
            .map(|post| header(post, "X-Lila-Signature"))
            .collect();
        assert_eq!(
            signatures,
            vec![
                Some(signature_value(format!("secret-of-{A}").as_bytes(), BODY).as_str()),
                Some(signature_value(format!("secret-of-{B}").as_bytes(), BODY).as_str()),
            ]
        );
        assert_ne!(signatures[0], signatures[1]);
    }

    #[test]
    fn retries_stop_before_the_deadline_and_timeouts_fit_the_budget() {
        // 600 ms budget: attempt 1 at 0 ms, wait 200, attempt 2 at ~210 ms;
        // waiting 400 more would leave no room for attempt 3.
        let mut transport = FakeTransport::new(600).script(A, &[Ok(500), Ok(500), Ok(200)]);
        transport.latency_ms = 10;
        let results = deliver(&config(&[A]), EVENT_NAME, "r-42", BODY, &mut transport);
        assert_eq!(
            only(results),
            Delivery::GaveUp {
                attempts: 2,
                last_error: "HTTP 500".to_owned()
            }
        );
        assert_eq!(transport.sleeps, vec![200]);
        assert!(transport.now <= transport.deadline);
        // The per-attempt timeout is cut to what is left (minus the return margin).
        assert_eq!(transport.posts[0].timeout_ms, 550);
        assert_eq!(transport.posts[1].timeout_ms, 340);
    }

    #[test]
    fn no_budget_means_no_attempt() {
        let mut transport = FakeTransport::new(20);
        let results = deliver(&config(&[A]), EVENT_NAME, "r-42", BODY, &mut transport);
        assert_eq!(
            only(results),
            Delivery::GaveUp {
                attempts: 0,
                last_error: "no time was left in the call's budget".to_owned()
            }
        );
        assert!(transport.posts.is_empty());
    }

    #[test]
    fn no_endpoints_sends_nothing() {
        let mut transport = FakeTransport::new(10_000);
        assert!(deliver(&config(&[]), EVENT_NAME, "r-42", BODY, &mut transport).is_empty());
        assert!(transport.posts.is_empty());
    }
}

//! The session state machine: how a session's visible state follows what its
//! WhatsApp client reports, and what the actor must do about it.
//!
//! The actor feeds every client event through [`SessionState::on_event`] and
//! carries out the returned [`Reaction`]. Events from a client the actor has
//! already replaced or stopped never get here: the actor drops them by
//! generation before they reach the machine.

use std::time::Duration;

/// What `GET /status` reports. `ready` is true exactly in `Connected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No client running, nothing asked for.
    Stopped,
    /// A client is being built and connected.
    Starting,
    /// Connected to WhatsApp, waiting for the phone to scan a QR code (or enter a pairing code).
    Qr,
    /// Paired, logged in and connected.
    Connected,
    /// The connection dropped, or WhatsApp could not be reached: a new
    /// connection is being tried (after a back-off); `last_error` says why
    /// when the last attempt failed.
    Reconnecting,
    /// The phone unlinked this device; credentials were removed. Create again to pair.
    LoggedOut,
    /// The session could not be kept running; see `last_error`.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Stopped => "stopped",
            Status::Starting => "starting",
            Status::Qr => "qr",
            Status::Connected => "connected",
            Status::Reconnecting => "reconnecting",
            Status::LoggedOut => "logged_out",
            Status::Failed => "failed",
        }
    }
}

/// Why a connection to WhatsApp could not be made. `/metrics` counts failures
/// by this cause (`lila_connection_failures_total{cause=…}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailureCause {
    /// No route or no name: the DNS lookup failed, or the network or host is unreachable.
    Unreachable,
    /// The host answered but nothing accepted the connection.
    Refused,
    /// No answer in time.
    Timeout,
    /// The secure connection (TLS, certificate) could not be set up.
    Tls,
    /// The server answered and turned the request down (an HTTP error status).
    Rejected,
    /// Anything else.
    Other,
}

impl ConnectFailureCause {
    pub const ALL: [ConnectFailureCause; 6] = [
        ConnectFailureCause::Unreachable,
        ConnectFailureCause::Refused,
        ConnectFailureCause::Timeout,
        ConnectFailureCause::Tls,
        ConnectFailureCause::Rejected,
        ConnectFailureCause::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailureCause::Unreachable => "unreachable",
            ConnectFailureCause::Refused => "refused",
            ConnectFailureCause::Timeout => "timeout",
            ConnectFailureCause::Tls => "tls",
            ConnectFailureCause::Rejected => "rejected",
            ConnectFailureCause::Other => "other",
        }
    }
}

/// What the WhatsApp client reported, reduced to what the host cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A new QR code to show (it rotates).
    Qr { code: String },
    /// Paired and logged in; `me` is the own JID when known.
    Connected { me: Option<String> },
    /// The socket dropped; the client retries on its own.
    Disconnected,
    /// The server ended the session for good (the phone unlinked this device).
    LoggedOut { reason: String },
    /// Another connection with the same credentials took over.
    StreamReplaced,
    /// No phone scanned the QR codes (or entered the code) before they ran out.
    PairingExpired,
    /// The client's run loop ended without being asked to.
    ClientExited { error: Option<String> },
    /// A connection attempt failed before WhatsApp answered; `detail` is a
    /// sentence for an operator (what was tried, what went wrong).
    ConnectFailed {
        cause: ConnectFailureCause,
        detail: String,
    },
}

/// What the actor must do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    Nothing,
    /// Start sending the outbox.
    FlushOutbox,
    /// Stop the client; its credentials are dead: delete them and their
    /// backups, and remember `LoggedOut` so that nothing resumes or re-QRs.
    ForgetCredentials,
    /// Stop the client and leave the credentials (another connection owns them now).
    StopClient,
    /// Build a new client after a delay (a client cannot be restarted).
    ScheduleRestart,
    /// Stop the client now and build a new one after the back-off: the
    /// client's own reconnect loop would retry at its own pace, and lila,
    /// not the client, decides how often an unreachable WhatsApp is tried.
    StopAndRestartLater,
    /// As `StopAndRestartLater`, for a connection that dropped during
    /// pairing: its QR codes died with it, and a new client brings new ones.
    PairAgain,
    /// Stop the client and stay down until someone asks again: an unpaired
    /// session must not cycle through QR codes forever.
    StopAndStayDown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub status: Status,
    pub qr: Option<String>,
    pub me: Option<String>,
    pub last_error: Option<String>,
}

impl Default for SessionState {
    fn default() -> Self {
        SessionState {
            status: Status::Stopped,
            qr: None,
            me: None,
            last_error: None,
        }
    }
}

impl SessionState {
    pub fn ready(&self) -> bool {
        self.status == Status::Connected
    }

    pub fn on_event(&mut self, event: SessionEvent) -> Reaction {
        match event {
            SessionEvent::Qr { code } => {
                self.status = Status::Qr;
                self.qr = Some(code);
                // WhatsApp answered: an earlier "cannot reach" no longer holds.
                self.last_error = None;
                Reaction::Nothing
            }
            SessionEvent::Connected { me } => {
                self.status = Status::Connected;
                self.qr = None;
                if me.is_some() {
                    self.me = me;
                }
                self.last_error = None;
                Reaction::FlushOutbox
            }
            SessionEvent::Disconnected => match self.status {
                Status::Connected => {
                    self.status = Status::Reconnecting;
                    Reaction::Nothing
                }
                // The QR codes belong to the connection that dropped: the
                // server forgot them, and no phone can scan the one shown.
                // The client's own reconnect may not bring new ones (seen
                // under load), so a new client starts the pairing again.
                Status::Qr => {
                    self.status = Status::Reconnecting;
                    self.qr = None;
                    self.last_error = Some(
                        "the connection to WhatsApp dropped during pairing; new QR codes follow"
                            .into(),
                    );
                    Reaction::PairAgain
                }
                _ => Reaction::Nothing,
            },
            SessionEvent::LoggedOut { reason } => {
                self.status = Status::LoggedOut;
                self.qr = None;
                self.me = None;
                self.last_error = Some(format!("logged out by WhatsApp: {reason}"));
                Reaction::ForgetCredentials
            }
            SessionEvent::StreamReplaced => {
                self.status = Status::Failed;
                self.qr = None;
                self.last_error =
                    Some("another connection with these credentials replaced this one".into());
                Reaction::StopClient
            }
            SessionEvent::PairingExpired => {
                self.status = Status::Failed;
                self.qr = None;
                self.last_error = Some(
                    "no phone linked this device before the QR codes ran out; create the session again for a new QR".into(),
                );
                Reaction::StopAndStayDown
            }
            SessionEvent::ClientExited { error } => {
                self.status = Status::Reconnecting;
                self.qr = None;
                self.last_error = error;
                Reaction::ScheduleRestart
            }
            SessionEvent::ConnectFailed { cause: _, detail } => {
                self.status = Status::Reconnecting;
                self.qr = None;
                self.last_error = Some(format!("cannot reach WhatsApp: {detail}"));
                Reaction::StopAndRestartLater
            }
        }
    }

    /// The client was just started (or restarted). A restart after a failure
    /// stays `Reconnecting`, so the status does not flicker back to
    /// `starting` on every attempt against an unreachable WhatsApp.
    pub fn on_start(&mut self) {
        if self.status != Status::Reconnecting {
            self.status = Status::Starting;
        }
        self.qr = None;
    }

    /// The client was stopped to be rebuilt after a back-off: the session is
    /// still meant to run, and `last_error` keeps saying why.
    pub fn on_stopped_for_restart(&mut self) {
        self.status = Status::Reconnecting;
        self.qr = None;
    }

    /// The actor stopped the client on request; nothing runs.
    pub fn on_stop(&mut self) {
        self.status = Status::Stopped;
        self.qr = None;
    }

    /// Building or starting the client failed; a restart is scheduled.
    pub fn on_start_failed(&mut self, error: String) {
        self.status = Status::Failed;
        self.qr = None;
        self.last_error = Some(error);
    }
}

/// The wait before retry `attempt` (0 for the first): doubling from one
/// second up to `max`, then "equal jitter", a point in the upper half picked
/// by `jitter` (a random number in [0, 1)). So sessions that failed together
/// (a network outage) spread their retries instead of all trying in the same
/// instant, and none retries sooner than half its step.
pub fn retry_delay(attempt: u32, max: Duration, jitter: f64) -> Duration {
    let ceiling = Duration::from_secs(1u64 << attempt.min(20)).min(max);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        1.0
    };
    ceiling / 2 + ceiling.mul_f64(jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: Vec<SessionEvent>) -> (SessionState, Vec<Reaction>) {
        let mut state = SessionState::default();
        state.on_start();
        let reactions = events.into_iter().map(|e| state.on_event(e)).collect();
        (state, reactions)
    }

    #[test]
    fn qr_then_connected_is_ready_with_own_jid_and_flushes_the_outbox() {
        let (state, reactions) = run(vec![
            SessionEvent::Qr {
                code: "2@abc".into(),
            },
            SessionEvent::Connected {
                me: Some("51987654321:1@s.whatsapp.net".into()),
            },
        ]);
        assert!(state.ready());
        assert_eq!(state.qr, None, "the QR is gone once paired");
        assert_eq!(state.me.as_deref(), Some("51987654321:1@s.whatsapp.net"));
        assert_eq!(reactions, [Reaction::Nothing, Reaction::FlushOutbox]);
    }

    #[test]
    fn a_drop_is_not_ready_and_the_client_reconnects_by_itself() {
        let (state, reactions) = run(vec![
            SessionEvent::Connected { me: None },
            SessionEvent::Disconnected,
        ]);
        assert_eq!(state.status, Status::Reconnecting);
        assert!(!state.ready());
        assert_eq!(reactions[1], Reaction::Nothing);
    }

    #[test]
    fn a_drop_during_pairing_hides_the_dead_qr_and_pairs_again_with_a_new_client() {
        let (state, reactions) = run(vec![
            SessionEvent::Qr {
                code: "2@dead".into(),
            },
            SessionEvent::Disconnected,
        ]);
        assert_eq!(state.status, Status::Reconnecting);
        assert_eq!(state.qr, None, "a code the server forgot is not shown");
        assert!(
            state
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("pairing")
        );
        assert_eq!(reactions[1], Reaction::PairAgain);
        // Before any QR (the first connection is still being made) a drop
        // is the client's own retry to handle.
        let (state, reactions) = run(vec![SessionEvent::Disconnected]);
        assert_eq!(state.status, Status::Starting);
        assert_eq!(reactions, [Reaction::Nothing]);
    }

    #[test]
    fn a_server_logout_forgets_credentials_and_does_not_loop_on_qr() {
        let (state, reactions) = run(vec![
            SessionEvent::Connected {
                me: Some("x@s.whatsapp.net".into()),
            },
            SessionEvent::LoggedOut {
                reason: "401".into(),
            },
        ]);
        assert_eq!(state.status, Status::LoggedOut);
        assert_eq!(state.me, None);
        assert_eq!(reactions[1], Reaction::ForgetCredentials);
    }

    #[test]
    fn a_replaced_stream_stops_without_fighting_back() {
        let (state, reactions) = run(vec![SessionEvent::StreamReplaced]);
        assert_eq!(state.status, Status::Failed);
        assert_eq!(reactions, [Reaction::StopClient]);
    }

    #[test]
    fn unscanned_qr_codes_running_out_stop_the_session_instead_of_looping() {
        let (state, reactions) = run(vec![
            SessionEvent::Qr { code: "2@a".into() },
            SessionEvent::PairingExpired,
        ]);
        assert_eq!(state.status, Status::Failed);
        assert_eq!(state.qr, None);
        assert_eq!(reactions[1], Reaction::StopAndStayDown);
    }

    #[test]
    fn an_unexpected_exit_schedules_a_restart() {
        let (state, reactions) = run(vec![SessionEvent::ClientExited {
            error: Some("boom".into()),
        }]);
        assert_eq!(state.status, Status::Reconnecting);
        assert_eq!(reactions, [Reaction::ScheduleRestart]);
    }

    fn unreachable(detail: &str) -> SessionEvent {
        SessionEvent::ConnectFailed {
            cause: ConnectFailureCause::Refused,
            detail: detail.into(),
        }
    }

    #[test]
    fn a_failed_connect_shows_reconnecting_with_an_operator_sentence_and_restarts_later() {
        let (state, reactions) = run(vec![unreachable(
            "connection refused at ws://127.0.0.1:9/ws/chat",
        )]);
        assert_eq!(state.status, Status::Reconnecting);
        assert!(!state.ready());
        assert_eq!(
            state.last_error.as_deref(),
            Some("cannot reach WhatsApp: connection refused at ws://127.0.0.1:9/ws/chat")
        );
        assert_eq!(reactions, [Reaction::StopAndRestartLater]);
    }

    #[test]
    fn a_restart_after_a_failed_connect_stays_reconnecting_and_keeps_the_reason() {
        let (mut state, _) = run(vec![unreachable("no route")]);
        state.on_stop();
        state.on_stopped_for_restart();
        assert_eq!(state.status, Status::Reconnecting);
        state.on_start();
        assert_eq!(
            state.status,
            Status::Reconnecting,
            "each attempt must not flip the status back to starting"
        );
        assert_eq!(
            state.last_error.as_deref(),
            Some("cannot reach WhatsApp: no route")
        );
    }

    #[test]
    fn reaching_whatsapp_again_clears_the_reason() {
        let (state, _) = run(vec![
            unreachable("no route"),
            SessionEvent::Qr { code: "2@q".into() },
        ]);
        assert_eq!(state.status, Status::Qr);
        assert_eq!(state.last_error, None);
        let (state, _) = run(vec![
            unreachable("no route"),
            SessionEvent::Connected { me: None },
        ]);
        assert!(state.ready());
        assert_eq!(state.last_error, None);
    }

    #[test]
    fn a_connected_session_that_cannot_reconnect_says_why() {
        let (state, reactions) = run(vec![
            SessionEvent::Connected { me: None },
            SessionEvent::Disconnected,
            unreachable("DNS lookup failed"),
        ]);
        assert_eq!(state.status, Status::Reconnecting);
        assert!(
            state
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("cannot reach WhatsApp"))
        );
        assert_eq!(reactions[2], Reaction::StopAndRestartLater);
    }

    #[test]
    fn a_fresh_start_after_a_stop_is_starting() {
        let (mut state, _) = run(vec![unreachable("x")]);
        state.on_stop();
        state.on_start();
        assert_eq!(state.status, Status::Starting);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap_with_jitter() {
        let max = Duration::from_secs(60);
        for (attempt, ceiling_secs) in [(0, 1), (1, 2), (2, 4), (5, 32), (6, 60), (40, 60)] {
            let ceiling = Duration::from_secs(ceiling_secs);
            let low = retry_delay(attempt, max, 0.0);
            let high = retry_delay(attempt, max, 0.999_999);
            assert_eq!(low, ceiling / 2, "attempt {attempt}");
            assert!(
                high <= ceiling && high > ceiling.mul_f64(0.99),
                "attempt {attempt}: {high:?}"
            );
        }
        // Different random draws spread sessions across the upper half.
        let spread: Vec<Duration> = [0.0, 0.25, 0.5, 0.75]
            .iter()
            .map(|j| retry_delay(4, max, *j))
            .collect();
        assert!(spread.windows(2).all(|w| w[0] < w[1]), "{spread:?}");
        // A nonsensical draw never means "retry at once".
        assert_eq!(retry_delay(3, max, f64::NAN), Duration::from_secs(8));
        assert_eq!(retry_delay(3, max, -4.0), Duration::from_secs(4));
    }
}

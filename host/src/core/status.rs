//! The session state machine: how a session's visible state follows what its
//! WhatsApp client reports, and what the actor must do about it.
//!
//! The actor feeds every client event through [`SessionState::on_event`] and
//! carries out the returned [`Reaction`]. Events from a client the actor has
//! already replaced or stopped never get here: the actor drops them by
//! generation before they reach the machine.

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
    /// The connection dropped; the client is reconnecting by itself.
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
            SessionEvent::Disconnected => {
                if self.status == Status::Connected {
                    self.status = Status::Reconnecting;
                }
                Reaction::Nothing
            }
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
        }
    }

    /// The client was just started (or restarted).
    pub fn on_start(&mut self) {
        self.status = Status::Starting;
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
}

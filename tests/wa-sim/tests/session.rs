//! Server-side logout, dropped sockets, replaced streams and the client's own
//! logout, each driven through the real client.

mod common;

use common::{WAIT, paired_client, start_sim};
use whatsapp_rust::prelude::*;

fn phone_of(jid: &str) -> String {
    jid.split(':').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_unlink_logs_the_client_out_and_it_does_not_come_back() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut client, jid) = paired_client(&sim, dir.path()).await;

    sim.logout_device(&jid)
        .expect("the phone unlinks the device");
    client
        .wait_for("LoggedOut", |e| {
            matches!(e, Event::LoggedOut(_)).then_some(())
        })
        .await;
    assert!(
        sim.devices().iter().all(|d| d.jid != jid),
        "the device is forgotten"
    );
    assert!(sim.wait_until(WAIT, |s| !s.is_connected(&jid)).await);
    assert!(!client.client.is_connected() || !client.client.is_logged_in());
    let attempts = sim.connection_attempts(&phone_of(&jid));
    client.stop().await;
    assert_eq!(
        sim.connection_attempts(&phone_of(&jid)),
        attempts,
        "a logged-out client makes no further login attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_is_reconnected_by_the_client() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut client, jid) = paired_client(&sim, dir.path()).await;
    let attempts = sim.connection_attempts(&phone_of(&jid));

    sim.drop_device(&jid).expect("drop");
    client
        .wait_for("Disconnected", |e| {
            matches!(e, Event::Disconnected(_)).then_some(())
        })
        .await;
    client.wait_connected().await;
    assert!(sim.connection_attempts(&phone_of(&jid)) > attempts);
    assert!(sim.wait_until(WAIT, |s| s.is_connected(&jid)).await);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_stream_is_reported_and_not_retried() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut client, jid) = paired_client(&sim, dir.path()).await;

    sim.replace_stream(&jid).expect("replace");
    client
        .wait_for("StreamReplaced", |e| {
            matches!(e, Event::StreamReplaced(_)).then_some(())
        })
        .await;
    assert!(sim.wait_until(WAIT, |s| !s.is_connected(&jid)).await);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_logout_reaches_the_simulator_as_remove_companion_device() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (client, jid) = paired_client(&sim, dir.path()).await;

    tokio::time::timeout(WAIT, client.client.logout())
        .await
        .expect("logout finishes");
    assert!(
        sim.wait_until(WAIT, |s| !s.removed_devices().is_empty())
            .await,
        "the simulator saw remove-companion-device"
    );
    let removed = sim.removed_devices();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].jid, jid);
    assert_eq!(removed[0].requested_by, jid);
    assert!(sim.devices().iter().all(|d| d.jid != jid));
    assert!(sim.wait_until(WAIT, |s| !s.is_connected(&jid)).await);
    client.stop().await;
}

// Regression: the simulator answered the key-bundle digest with 404, so the
// client uploaded 812 fresh pre-keys at every login, which made restarts of
// many sessions CPU-bound for no reason a real server would give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_finds_its_key_bundle_and_uploads_no_new_pre_keys() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut client, jid) = paired_client(&sim, dir.path()).await;
    assert!(
        sim.wait_until(WAIT, |s| s.pre_key_uploads(&jid) >= 1).await,
        "the first login uploads pre-keys"
    );
    let uploads = sim.pre_key_uploads(&jid);
    sim.drop_device(&jid).expect("drop");
    client
        .wait_for("Disconnected", |e| {
            matches!(e, Event::Disconnected(_)).then_some(())
        })
        .await;
    client.wait_connected().await;
    // The digest check runs in the background after login; give it time.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sim.pre_key_uploads(&jid), uploads);
    client.stop().await;
}

//! `kappa status`: on a database at rest, and on one a `kappa serve` holds
//! (which publishes its status in DIR/kappa-status.json every second).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use async_std::net::TcpStream;
use common::*;
use futures::StreamExt;
use kappa_core::{Kappa, ReplicateOptions};
use serde_json::Value;

fn status(dir: &std::path::Path) -> Value {
    json_lines(dir, &["status"]).remove(0)
}

#[test]
fn status_of_an_empty_database() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    let text = ok(&d, &["status"]);
    assert!(text.contains("not being served"), "{text}");
    assert!(text.contains("feeds: 0 (0 writable), 0 entries"), "{text}");
    assert!(text.contains("peers: none connected") && text.contains("views: none"), "{text}");
    assert!(text.contains("open files: ") && text.contains("memory: "), "{text}");
    let s = status(&d);
    assert_eq!(s["serving"], Value::Null);
    assert_eq!(s["feeds"]["count"], 0);
    assert_eq!(s["peers"], serde_json::json!([]));
    assert_eq!(s["views"], serde_json::json!([]));
    assert!(s["memory"]["rss_bytes"].as_u64().is_some_and(|r| r > 0));
    assert!(!d.join("views.redb").exists(), "status created the view file");
}

#[test]
fn status_of_a_served_database_shows_its_peers_and_views() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    for i in 0..20 {
        ok(&d, &["put", &format!("k{i}"), &i.to_string()]);
    }
    let key = key_of(&d);
    let server = Server::start(&d, &[]);
    let pid = server.child.id();

    // Published before the address was printed.
    let s = status(&d);
    assert_eq!(s["serving"]["pid"], pid);
    assert_eq!(s["serving"]["listening"], server.addr.as_str());
    assert_eq!(s["feeds"]["entries"], 20);
    assert_eq!(s["views"][0]["name"], "kv");
    assert_eq!(s["views"][0]["available"], 20);
    let text = ok(&d, &["status"]);
    assert!(text.contains(&format!("served by pid {pid} on {}", server.addr)), "{text}");

    // A live Rust peer connects and downloads everything; the server's next
    // status shows it.
    async_std::task::block_on(async {
        let mut shared = [0u8; 32];
        hex::decode_to_slice(&key, &mut shared).unwrap();
        let client = Kappa::builder().shared_key(shared).open().unwrap();
        let stream = TcpStream::connect(&server.addr).await.unwrap();
        let (session, handle) =
            client.replicate_session(stream, ReplicateOptions::new(true).live(true)).unwrap();
        let session = async_std::task::spawn(session);
        let mut added = client.multifeed().subscribe();
        let feed = added.next().await.unwrap().feed;
        loop {
            let changed = feed.changed();
            if feed.len() == 20 && feed.lock().downloaded(0..20) == 20 {
                break;
            }
            changed.await;
        }
        // Wait for a status the server wrote after the client had it all (it
        // rewrites it every second).
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let s = loop {
            assert!(std::time::Instant::now() < give_up, "no status showed the peer: {}", status(&d));
            let s = status(&d);
            if s["peers"].as_array().is_some_and(|p| p.len() == 1 && p[0]["blocks_sent"] == 20) {
                break s;
            }
            async_std::task::sleep(std::time::Duration::from_millis(100)).await;
        };
        let p = &s["peers"][0];
        assert_eq!(p["verified"], true);
        assert_eq!(p["live"], true);
        assert_eq!(p["initiator"], false);
        assert!(p["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{p}");
        assert!(p["buffered_bytes"].as_u64().is_some());
        let text = ok(&d, &["status"]);
        assert!(
            text.contains("peers: 1") && text.contains("127.0.0.1:") && text.contains("20 blocks"),
            "{text}"
        );
        handle.close();
        session.await.unwrap();
    });

    // Once the server is gone (killed: its status file is left behind), the
    // figures come from the database itself: no peers, the view stopped.
    drop(server);
    let s = status(&d);
    assert_eq!(s["serving"], Value::Null);
    assert_eq!(s["peers"], serde_json::json!([]));
    assert_eq!(s["views"][0]["status"], "stopped");
    assert_eq!(
        (s["views"][0]["indexed"].as_u64(), s["views"][0]["available"].as_u64()),
        (Some(20), Some(20))
    );
}

#[test]
fn a_clean_stop_removes_the_status_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    let server = Server::start(&d, &["--exit-when-idle-ms", "200"]);
    assert!(d.join("kappa-status.json").exists());
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(!d.join("kappa-status.json").exists());
}

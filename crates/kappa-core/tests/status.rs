//! `Kappa::status`: feeds, running sessions (what is being synced and how
//! far), views (indexed against available), open files and memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_std::os::unix::net::UnixStream;
use futures::StreamExt;
use kappa_core::view::sum::SumView;
use kappa_core::{Kappa, ReplicateOptions};

const KEY: [u8; 32] = [5; 32];

#[test]
fn an_empty_database_reports_nothing_but_its_process() {
    let db = Kappa::builder().shared_key(KEY).open().unwrap();
    let s = db.status().unwrap();
    assert_eq!((s.feeds.count, s.feeds.writable, s.feeds.entries), (0, 0, 0));
    assert!(s.peers.is_empty() && s.views.is_empty() && !s.seed);
    assert!(s.files.capacity > 0);
    assert!(s.memory.rss_bytes.is_some_and(|r| r > 0), "{:?}", s.memory);
    assert!(s.memory.peak_rss_bytes >= s.memory.rss_bytes);
    assert!(s.files.descriptors.is_some_and(|d| d >= 3));
    // It round-trips through JSON (what `kappa serve` publishes).
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<kappa_core::KappaStatus>(&text).unwrap(), s);
}

#[test]
fn views_report_indexed_against_available_also_when_not_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = Kappa::builder().dir(tmp.path()).shared_key(KEY).open().unwrap();
        let w = db.writer("local").unwrap();
        for i in 0..50 {
            w.append(&i).unwrap();
        }
        let sum = db.use_view("sum", 1, SumView::new).unwrap();
        async_std::task::block_on(sum.ready()).unwrap();
        let s = db.status().unwrap();
        assert_eq!((s.feeds.count, s.feeds.writable, s.feeds.entries), (1, 1, 50));
        assert_eq!(s.views.len(), 1);
        assert_eq!((s.views[0].name.as_str(), s.views[0].indexed, s.views[0].available), ("sum", 50, 50));
        assert!(s.files.open <= s.files.capacity && s.files.peak_open > 0);
        drop(sum);
        db.close().unwrap();
    }
    // Reopened, the view not in use: its stored progress, nothing indexed.
    let db = Kappa::builder().dir(tmp.path()).shared_key(KEY).open().unwrap();
    db.writer("local").unwrap().append(&50).unwrap();
    let s = db.status().unwrap();
    assert_eq!(s.views.len(), 1, "{:?}", s.views);
    let v = &s.views[0];
    assert_eq!((v.name.as_str(), v.status.as_str(), v.indexed, v.available), ("sum", "stopped", 50, 51));
    assert!(!db.views_open_for_writing(), "status wrote the view file");
    drop(db);
    // Seed mode says so, and has no views.
    let seed = Kappa::builder().dir(tmp.path()).shared_key(KEY).seed_mode(true).open().unwrap();
    let s = seed.status().unwrap();
    assert!(s.seed && s.views.is_empty());
    assert_eq!(s.feeds.entries, 51);
}

/// A version bump rebuilds the view beside its live rows: the status shows
/// the rebuild's progress and the live version; a rebuild left half way
/// shows for the view not in use too, and resumes when it is used.
#[test]
fn a_rebuild_in_progress_shows_beside_the_live_rows() {
    let tmp = tempfile::tempdir().unwrap();
    const N: u64 = 60_000;
    {
        let db = Kappa::builder().dir(tmp.path()).shared_key(KEY).open().unwrap();
        let values: Vec<u64> = (0..N).collect();
        db.writer("local").unwrap().append_batch(&values).unwrap();
        let sum = db.use_view("sum", 1, SumView::new).unwrap();
        async_std::task::block_on(sum.ready()).unwrap();
        drop(sum);
        db.close().unwrap();
    }
    let want = (0..N).sum::<u64>() as f64;
    {
        let db = Kappa::builder().dir(tmp.path()).shared_key(KEY).open().unwrap();
        let sum = db.use_view("sum", 2, SumView::new).unwrap();
        assert!(sum.state().rebuild.is_some(), "a version bump rebuilds beside the live rows");
        // Readers see the whole old view meanwhile.
        assert_eq!(sum.get().unwrap(), want);
        while sum.state().indexed == 0 {
            std::thread::yield_now();
        }
        async_std::task::block_on(db.pause(&["sum"])).unwrap();
        let s = db.status().unwrap();
        let v = &s.views[0];
        let r = v.rebuild.as_ref().expect("the rebuild shows in the status");
        assert_eq!((r.live_version, r.live_indexed), (Some(1), N), "{v:?}");
        assert!(v.indexed > 0 && v.indexed < N, "{v:?}");
        assert_eq!(v.status, "paused");
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<kappa_core::KappaStatus>(&text).unwrap(), s);
        assert_eq!(sum.get().unwrap(), want, "still the old view");
        drop(sum);
        db.close().unwrap();
    }
    let db = Kappa::builder().dir(tmp.path()).shared_key(KEY).open().unwrap();
    let s = db.status().unwrap();
    let v = &s.views[0];
    assert_eq!(v.status, "stopped");
    let r = v.rebuild.as_ref().expect("a rebuild left half way shows for a stopped view");
    assert_eq!((r.live_version, r.live_indexed), (Some(1), N));
    assert!(v.indexed > 0 && v.indexed < N, "{v:?}");
    let sum = db.use_view("sum", 2, SumView::new).unwrap();
    async_std::task::block_on(sum.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), want);
    assert!(sum.state().rebuild.is_none());
    assert!(db.status().unwrap().views[0].rebuild.is_none());
}

#[test]
fn a_live_session_shows_its_peer_and_what_moved() {
    async_std::task::block_on(async {
        let server = Kappa::builder().shared_key(KEY).open().unwrap();
        let w = server.writer("local").unwrap();
        let values: Vec<u64> = (0..300).collect();
        w.append_batch(&values).unwrap();
        let client = Kappa::builder().shared_key(KEY).open().unwrap();

        let (x, y) = UnixStream::pair().unwrap();
        let (serving, server_handle) =
            server.replicate_session(x, ReplicateOptions::new(false).live(true).peer("client-1")).unwrap();
        let (syncing, client_handle) =
            client.replicate_session(y, ReplicateOptions::new(true).live(true).peer("server")).unwrap();
        let serving = async_std::task::spawn(serving);
        let syncing = async_std::task::spawn(syncing);

        // Wait until the client holds all 300 entries (events, no polling).
        let mut added = client.multifeed().subscribe();
        let feed = loop {
            let a = added.next().await.unwrap();
            if a.feed.public_key() == w.feed().public_key() {
                break a.feed;
            }
        };
        loop {
            let changed = feed.changed();
            if feed.len() == 300 && feed.lock().downloaded(0..300) == 300 {
                break;
            }
            changed.await;
        }

        let s = client.status().unwrap();
        assert_eq!(s.peers.len(), 1, "{:?}", s.peers);
        let p = &s.peers[0];
        assert_eq!(p.peer.as_deref(), Some("server"));
        assert!(p.initiator && p.live && p.verified);
        assert_eq!(p.blocks_received, 300);
        assert_eq!(p.wire, Some(6));
        assert!(p.bytes_received > 0 && p.feeds >= 1);
        assert_eq!(s.feeds.entries, 300);

        let s = server.status().unwrap();
        assert_eq!(s.peers.len(), 1);
        let p = &s.peers[0];
        assert_eq!(p.peer.as_deref(), Some("client-1"));
        assert!(!p.initiator && p.live);
        assert_eq!(p.blocks_sent, 300);
        assert!(p.syncing.iter().all(|f| f.ours == 300), "{:?}", p.syncing);

        client_handle.close();
        server_handle.close();
        serving.await.unwrap();
        syncing.await.unwrap();
        // Ended sessions are gone.
        assert!(server.status().unwrap().peers.is_empty());
        assert!(client.status().unwrap().peers.is_empty());
    });
}

#[test]
fn a_session_is_listed_only_while_it_runs() {
    async_std::task::block_on(async {
        let server = Kappa::builder().shared_key(KEY).open().unwrap();
        let w = server.writer("local").unwrap();
        let values: Vec<u64> = (0..10).collect();
        w.append_batch(&values).unwrap();
        let client = Kappa::builder().shared_key(KEY).open().unwrap();
        let (x, y) = UnixStream::pair().unwrap();
        let (serving, server_handle) =
            server.replicate_session(x, ReplicateOptions::new(false).live(true)).unwrap();
        // The client's session is built but not run yet: it is registered once
        // it runs, so there is nothing to show.
        let (syncing, client_handle) =
            client.replicate_session(y, ReplicateOptions::new(true).live(true)).unwrap();
        assert!(client.status().unwrap().peers.is_empty());
        let serving = async_std::task::spawn(serving);
        let syncing = async_std::task::spawn(syncing);
        let mut added = client.multifeed().subscribe();
        let feed = added.next().await.unwrap().feed;
        loop {
            let changed = feed.changed();
            if feed.lock().downloaded(0..10) == 10 {
                break;
            }
            changed.await;
        }
        let p = &client.status().unwrap().peers[0];
        assert_eq!(p.blocks_received, 10);
        client_handle.close();
        server_handle.close();
        serving.await.unwrap();
        syncing.await.unwrap();
        assert!(client.status().unwrap().peers.is_empty());
    });
}

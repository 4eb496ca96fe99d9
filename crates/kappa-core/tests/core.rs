//! The kappa-core [A] cases (reference §2: 1, 2), the seed's example, and the
//! facade's own promises: views by name, clear errors for misuse, a locked or
//! foreign directory, events, encodings, close.

use futures::executor::block_on;
use futures::StreamExt;
use kappa_core::view::kv::KvView;
use kappa_core::view::sum::SumView;
use kappa_core::{Kappa, KappaError, KappaEvent, ValueEncoding};
use serde_json::json;

#[test]
fn simple_sum_view() {
    let core = Kappa::in_memory().unwrap();
    let sum = core.use_view("sum", 1, SumView::new).unwrap();
    core.writer("local").unwrap().append(&1).unwrap();
    block_on(core.ready(&[])).unwrap();
    assert_eq!(sum.get().unwrap(), 1.0);
}

#[test]
fn views_still_work_while_indexing_is_paused() {
    let core = Kappa::in_memory().unwrap();
    let sum = core.use_view("sum", 1, SumView::new).unwrap();
    core.writer("local").unwrap().append(&1).unwrap();
    block_on(core.ready(&["sum"])).unwrap();
    block_on(core.pause(&[])).unwrap();
    block_on(core.ready(&[])).unwrap();
    assert_eq!(sum.get().unwrap(), 1.0);
    core.writer("local").unwrap().append(&10).unwrap();
    core.resume(&["sum"]).unwrap();
    block_on(core.ready(&[])).unwrap();
    assert_eq!(sum.get().unwrap(), 11.0);
}

#[test]
fn views_by_name_and_misuse() {
    let core = Kappa::in_memory().unwrap();
    let _kv = core.use_view("kv", 1, KvView::new).unwrap();
    assert!(matches!(core.use_view("kv", 1, KvView::new), Err(KappaError::ViewExists(_))));
    assert!(core.view::<KvView>("kv").is_some());
    assert!(core.view::<SumView>("kv").is_none(), "wrong type");
    assert!(core.view::<KvView>("nope").is_none());
    assert!(matches!(block_on(core.ready(&["nope"])), Err(KappaError::UnknownView(_))));
    assert_eq!(core.view_names(), vec!["kv"]);
    let states = core.view_states();
    assert_eq!(states[0].0, "kv");
}

#[test]
fn kv_table_across_restart_and_writers_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let core = Kappa::open(dir.path()).unwrap();
        let kv = core.use_view("kv", 1, KvView::new).unwrap();
        let w = core.writer("local").unwrap();
        w.append(&json!({"key": "soup", "value": "tomato", "links": []})).unwrap();
        block_on(kv.ready()).unwrap();
        core.close().unwrap();
        core.close().unwrap(); // twice is fine
        assert!(matches!(core.writer("local"), Err(KappaError::Closed)));
        w.key()
    };
    let core = Kappa::open(dir.path()).unwrap();
    assert_eq!(core.writer("local").unwrap().key(), key);
    let kv = core.use_view("kv", 1, KvView::new).unwrap();
    block_on(kv.ready()).unwrap();
    assert_eq!(kv.get("soup").unwrap()[0].json::<serde_json::Value>().unwrap()["value"], "tomato");
    // The directory is a multifeed directory (JS kappa-core 6 opens it), with the
    // views beside the numbered feed folders.
    assert!(dir.path().join("0/localname").exists());
    assert!(dir.path().join(kappa_core::VIEWS_FILE).exists());
}

#[test]
fn a_locked_or_foreign_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let held = Kappa::open(dir.path()).unwrap();
    match Kappa::open(dir.path()) {
        Err(e) => assert!(e.to_string().contains("lock"), "{e}"),
        Ok(_) => panic!("opened a database another handle holds"),
    }
    drop(held);
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    assert!(matches!(Kappa::open(foreign.path()), Err(KappaError::NotADatabase(_))));
    assert_eq!(std::fs::read_dir(foreign.path()).unwrap().count(), 1, "nothing was written");
}

#[test]
fn events_report_feeds_and_indexing() {
    let core = Kappa::in_memory().unwrap();
    core.writer("first").unwrap();
    let _sum = core.use_view("sum", 1, SumView::new).unwrap();
    let mut events = core.events();
    core.writer("first").unwrap().append(&2).unwrap();
    block_on(core.ready(&[])).unwrap();
    let got: Vec<KappaEvent> = block_on(async {
        let mut out = Vec::new();
        while out.len() < 2 {
            match events.next().await {
                Some(e @ KappaEvent::FeedAdded(_)) => out.push(e),
                Some(e @ KappaEvent::View { event: kappa_core::IndexEvent::Indexed { .. }, .. }) => {
                    out.push(e)
                }
                Some(_) => {}
                None => break,
            }
        }
        out
    });
    assert!(matches!(&got[0], KappaEvent::FeedAdded(f) if f.name.as_deref() == Some("first")));
    assert!(matches!(&got[1], KappaEvent::View { name, .. } if name == "sum"));
}

#[test]
fn json_entries_are_byte_identical_to_js_and_other_encodings_work() {
    let core = Kappa::in_memory().unwrap();
    let w = core.writer("local").unwrap();
    w.append(&json!({"type": "chat/text", "content": {"text": "hi"}})).unwrap();
    assert_eq!(
        w.feed().get(0).unwrap().unwrap(),
        b"{\"type\":\"chat/text\",\"content\":{\"text\":\"hi\"}}\n"
    );
    w.append_batch(&[1.0, 2.5]).unwrap();
    assert_eq!(w.feed().get(1).unwrap().unwrap(), b"1\n", "JS prints 1.0 as 1");
    let bin = Kappa::builder().value_encoding(ValueEncoding::Binary).open().unwrap();
    let w = bin.writer("local").unwrap();
    w.append("raw text").unwrap();
    w.append_raw([0u8, 255]).unwrap();
    assert_eq!(w.feed().get(0).unwrap().unwrap(), b"raw text");
    assert!(matches!(w.append(&json!({"not": "bytes"})), Err(KappaError::Encoding(_))));
}

#[async_std::test]
async fn serve_replicates_with_every_peer_that_connects_over_tcp() {
    use async_std::net::{TcpListener, TcpStream};
    let key = [9u8; 32];
    let server = kappa_core::Kappa::builder().shared_key(key).open().unwrap();
    server.writer("local").unwrap().append(&"from the server").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<kappa_core::Kappa> =
        (0..2).map(|_| kappa_core::Kappa::builder().shared_key(key).open().unwrap()).collect();
    for (i, c) in clients.iter().enumerate() {
        c.writer("local").unwrap().append(&format!("from client {i}")).unwrap();
    }
    let mut reports = Vec::new();
    let serving = server.serve(listener.incoming().take(2), |r| reports.push(r.unwrap()));
    let syncing = async {
        for c in &clients {
            let stream = TcpStream::connect(addr).await.unwrap();
            c.replicate(stream, kappa_core::ReplicateOptions::new(true)).await.unwrap();
        }
    };
    let (served, ()) = futures::join!(serving, syncing);
    served.unwrap();
    assert_eq!(reports.len(), 2);
    // The server holds every client's feed; the second client also got the first's.
    assert_eq!(server.feeds().len(), 3);
    assert_eq!(clients[1].feeds().len(), 3);
    assert!(server.feeds().iter().all(|f| f.len() == 1 && f.lock().is_complete()));
}

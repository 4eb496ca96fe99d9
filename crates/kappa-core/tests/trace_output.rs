//! A failed sync's cause is in the tracing output: two databases with
//! different shared keys replicate over TCP, with a test subscriber capturing
//! every kappa event; the output names the cause, inside the spans of the
//! replication and its session.

use async_std::net::{TcpListener, TcpStream};
use kappa_core::{Kappa, ReplicateOptions};
use kappa_testkit::trace::capture;

#[test]
fn a_sync_with_another_shared_key_is_traced_with_its_cause() {
    let (errors, out) = capture("kappa_core=debug,kappa_multifeed=debug,kappa_protocol=debug", || {
        async_std::task::block_on(async {
            let a = Kappa::builder().shared_key([1; 32]).open().unwrap();
            let b = Kappa::builder().shared_key([2; 32]).open().unwrap();
            a.writer("local").unwrap().append(&"a").unwrap();
            b.writer("local").unwrap().append(&"b").unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let serving = async {
                let (stream, peer) = listener.accept().await.unwrap();
                let mut opts = ReplicateOptions::new(false);
                opts.peer = Some(peer.to_string());
                a.replicate(stream, opts).await
            };
            let syncing = async {
                let stream = TcpStream::connect(addr).await.unwrap();
                b.replicate(stream, ReplicateOptions::new(true)).await
            };
            let (served, synced) = futures::join!(serving, syncing);
            (served.unwrap_err().to_string(), synced.unwrap_err().to_string())
        })
    });
    assert!(errors.0.contains("another shared key") && errors.1.contains("another shared key"), "{errors:?}");
    let failed: Vec<&str> = out.lines().filter(|l| l.contains("session ended: failed")).collect();
    assert_eq!(failed.len(), 2, "both sessions' ends:\n{out}");
    // Each side saw the other's root channel: each session's end names the
    // cause, typed, inside the spans of the replication and its session (the
    // served side's naming the peer).
    for line in &failed {
        assert!(line.contains("another shared key"), "{line}");
        assert!(line.contains("cause=Rejected("), "{line}");
        assert!(line.contains("replicate{") && line.contains(":session{"), "{line}");
    }
    assert!(failed.iter().any(|l| l.contains("replicate{peer=\"127.0.0.1:")), "{out}");
    assert!(out.contains("handshake done generation=kappa-core 6"), "{out}");
    assert!(out.contains("replicate: failed"), "{out}");
}

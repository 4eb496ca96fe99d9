//! `Kappa::serve_with`: connections over a cap are closed before their
//! handshake and reported as `KappaError::Refused`; the others replicate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use async_std::net::{TcpListener, TcpStream};
use futures::{AsyncReadExt, StreamExt};
use kappa_core::{Kappa, ReplicateOptions, ServeOptions};

#[test]
fn a_connection_over_the_per_address_cap_is_refused_and_the_others_replicate() {
    async_std::task::block_on(async {
        let server = Kappa::builder().shared_key([7; 32]).open().unwrap();
        server.writer("local").unwrap().append(&"hello").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ended = Arc::new(Mutex::new(Vec::new()));
        let log = ended.clone();
        // Three connections: a parked one, one refused (same address), then a
        // real peer after the parked one left.
        let incoming = listener.incoming().take(3).map(|r| {
            r.map(|s| {
                let ip = s.peer_addr().ok().map(|a| a.ip());
                (s, ip)
            })
        });
        let serving = server.serve_with(incoming, ServeOptions::default().max_per_address(1), move |r| {
            log.lock().unwrap().push(r.map(|rep| rep.blocks_sent()).map_err(|e| e.to_string()));
        });
        let clients = async {
            let parked = TcpStream::connect(addr).await.unwrap();
            // The parked connection is admitted before the next one is accepted.
            let mut refused = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 64];
            // Closed before any handshake byte is sent to it.
            let n = refused.read(&mut buf).await.unwrap_or(0);
            assert_eq!(n, 0, "the refused connection got bytes");
            drop(parked);
            // The parked session ends (its peer hung up) and frees the place;
            // `take(3)` makes the next connection the last one accepted.
            loop {
                if ended.lock().unwrap().len() >= 2 {
                    break;
                }
                async_std::task::yield_now().await;
            }
            let client = Kappa::builder().shared_key([7; 32]).open().unwrap();
            let stream = TcpStream::connect(addr).await.unwrap();
            client.replicate(stream, ReplicateOptions::new(true)).await
        };
        let (served, synced) = futures::join!(serving, clients);
        served.unwrap();
        assert_eq!(synced.unwrap().blocks_received(), 1);
        let ended = ended.lock().unwrap();
        assert_eq!(ended.len(), 3, "{ended:?}");
        assert!(ended[0].as_ref().is_err_and(|e| e.contains("per-address limit")), "{ended:?}");
        // The parked peer hung up: a live session's end, with nothing sent.
        assert!(matches!(ended[1], Ok(0) | Err(_)), "{ended:?}");
        assert_eq!(ended[2], Ok(1));
    });
}

//! The async driver over an in-memory stream whose writes or flushes fail: the
//! session ends with that I/O error, its kind kept (not as an end of stream).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::io::{AsyncRead, AsyncWrite};
use kappa_log::storage::MemoryProvider;
use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_protocol::{EndReason, FeedOptions, ProtocolError, ProtocolOptions, Session, SessionReport};

/// One direction of an in-memory byte stream.
#[derive(Default)]
struct Pipe {
    buf: VecDeque<u8>,
    closed: bool,
    reader: Option<Waker>,
}

impl Pipe {
    fn close(&mut self) {
        self.closed = true;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

/// One end of an in-memory duplex stream.
struct End {
    rx: Arc<Mutex<Pipe>>,
    tx: Arc<Mutex<Pipe>>,
}

fn duplex() -> (End, End) {
    let (x, y) = (Arc::new(Mutex::new(Pipe::default())), Arc::new(Mutex::new(Pipe::default())));
    (End { rx: x.clone(), tx: y.clone() }, End { rx: y, tx: x })
}

impl Drop for End {
    fn drop(&mut self) {
        self.tx.lock().unwrap().close();
        self.rx.lock().unwrap().close();
    }
}

impl AsyncRead for End {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut p = self.rx.lock().unwrap();
        if p.buf.is_empty() {
            if p.closed {
                return Poll::Ready(Ok(0));
            }
            p.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(p.buf.len());
        for (b, v) in buf.iter_mut().zip(p.buf.drain(..n)) {
            *b = v;
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for End {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut p = self.tx.lock().unwrap();
        if p.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        p.buf.extend(buf);
        if let Some(w) = p.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.lock().unwrap().close();
        Poll::Ready(Ok(()))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fails {
    Write,
    Flush,
}

/// An end whose writes or flushes fail with `kind` once `after` bytes went
/// through.
struct Failing {
    inner: End,
    fails: Fails,
    after: usize,
    kind: io::ErrorKind,
    written: usize,
}

impl Failing {
    fn failed(&self, what: Fails) -> bool {
        self.fails == what && self.written >= self.after
    }
}

impl AsyncRead for Failing {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Failing {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.failed(Fails::Write) {
            return Poll::Ready(Err(io::Error::new(self.kind, "injected write failure")));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.failed(Fails::Flush) {
            return Poll::Ready(Err(io::Error::new(self.kind, "injected flush failure")));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

fn writer(n: u64) -> SharedFeed {
    let mut f = Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[4; 32])).open().unwrap();
    f.append_batch((0..n).map(|i| vec![i as u8; 1024])).unwrap();
    SharedFeed::new(f)
}

/// Blocks of 1 KiB the initiator serves: 4 MiB, so the session is far from
/// done when the stream fails (the session writes up to about 1 MiB at once).
const BLOCKS: u64 = 4000;

/// Replicates [`BLOCKS`] from a serving initiator whose stream fails as said
/// to a replica; returns both reports.
async fn replicate_over(fails: Fails, after: usize, kind: io::ErrorKind) -> (SessionReport, SessionReport) {
    let w = writer(BLOCKS);
    let r = SharedFeed::new(Feed::builder(MemoryProvider::new()).public_key(*w.public_key()).open().unwrap());
    let (x, y) = duplex();
    let x = Failing { inner: x, fails, after, kind, written: 0 };
    let (s1, h1) = Session::new(x, ProtocolOptions::new(true));
    let (s2, h2) = Session::new(y, ProtocolOptions::new(false));
    h1.open_feed(w, FeedOptions::default());
    h2.open_feed(r, FeedOptions::default());
    futures::join!(s1.run(), s2.run())
}

fn io_kind(e: &ProtocolError) -> Option<io::ErrorKind> {
    match e {
        ProtocolError::Io(e) => Some(e.kind()),
        _ => None,
    }
}

#[async_std::test]
async fn a_failed_flush_ends_the_session_with_its_error() {
    let (a, b) = replicate_over(Fails::Flush, 20_000, io::ErrorKind::BrokenPipe).await;
    match &a.end {
        EndReason::Failed(e) => {
            assert_eq!(io_kind(e), Some(io::ErrorKind::BrokenPipe), "{e:?}");
            assert!(e.to_string().contains("injected flush failure"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(b.blocks_received() < BLOCKS, "{b:?}");
    // The peer saw the stream end early.
    assert!(matches!(b.end, EndReason::Failed(ProtocolError::UnexpectedEof | ProtocolError::Io(_))), "{b:?}");
}

#[async_std::test]
async fn a_failed_write_ends_the_session_with_its_error() {
    let (a, b) = replicate_over(Fails::Write, 20_000, io::ErrorKind::BrokenPipe).await;
    match &a.end {
        EndReason::Failed(e) => {
            assert_eq!(io_kind(e), Some(io::ErrorKind::BrokenPipe), "{e:?}");
            assert!(e.to_string().contains("injected write failure"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(b.blocks_received() < BLOCKS, "{b:?}");
    assert!(matches!(b.end, EndReason::Failed(ProtocolError::UnexpectedEof | ProtocolError::Io(_))), "{b:?}");
}

#[async_std::test]
async fn a_write_failing_in_the_handshake_keeps_its_kind_under_ended_unverified() {
    let (a, _) = replicate_over(Fails::Write, 0, io::ErrorKind::ConnectionReset).await;
    match &a.end {
        EndReason::Failed(ProtocolError::EndedUnverified { during_handshake: true, source }) => {
            assert_eq!(io_kind(source), Some(io::ErrorKind::ConnectionReset), "{source:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// An end that records the largest write it is handed.
struct Recording {
    inner: End,
    largest: Arc<std::sync::atomic::AtomicUsize>,
}

impl AsyncRead for Recording {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recording {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.largest.fetch_max(buf.len(), std::sync::atomic::Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A burst of commands queued at once (20,000 extension messages) does not
/// hold the session's task until the last is handled: the writer sends
/// between them, so no single write carries the whole burst. Everything runs
/// in one task (`join!`), so the burst is queued before the session sees
/// any of it, whatever the machine's speed.
#[async_std::test]
async fn a_burst_of_commands_lets_the_writer_run_between_them() {
    use futures::StreamExt;
    use kappa_protocol::Event;
    const BURST: usize = 20_000;
    let (x, y) = duplex();
    let largest = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let x = Recording { inner: x, largest: largest.clone() };
    let opts = |initiator| ProtocolOptions::new(initiator).live(true).extensions(vec!["burst".into()]);
    let (s1, h1) = Session::new(x, opts(true));
    let (mut s2, h2) = Session::new(y, opts(false));
    let mut events = s2.events();
    // A feed on each side keeps the live session open.
    let w = writer(10);
    h1.open_feed(w.clone(), FeedOptions::default());
    h2.open_feed(
        SharedFeed::new(Feed::builder(MemoryProvider::new()).public_key(*w.public_key()).open().unwrap()),
        FeedOptions::default(),
    );
    let driver = async {
        let mut received = 0;
        h1.send_extension("burst", vec![0; 8]);
        // The first one arrived: the sessions are up.
        while received == 0 {
            match events.next().await {
                Some(Event::Extension { .. }) => received += 1,
                Some(_) => {}
                None => panic!("the session ended before the first extension message"),
            }
        }
        largest.store(0, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..BURST {
            h1.send_extension("burst", vec![1; 100]);
        }
        while received < 1 + BURST {
            match events.next().await {
                Some(Event::Extension { .. }) => received += 1,
                Some(_) => {}
                None => panic!("the session ended after {received} extension messages"),
            }
        }
        h1.close();
        h2.close();
    };
    let (a, b, ()) = futures::join!(s1.run(), s2.run(), driver);
    assert_eq!(a.end, EndReason::Disconnected, "{a:?}");
    assert_eq!(b.end, EndReason::Disconnected, "{b:?}");
    let largest = largest.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("the largest write during the burst: {largest} bytes");
    assert!(
        largest < 32 * 1024,
        "one write carried {largest} bytes of a {BURST}-message burst: the commands ran without letting the \
         writer in"
    );
}

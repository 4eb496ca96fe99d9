//! Capturing the tracing output of the libraries in a test: a subscriber
//! that writes formatted events (with their spans) into a buffer, set as the
//! default of the current thread while a closure runs.

use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// A buffer the captured output goes to.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything captured so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = CapturedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CapturedWriter(self.0.clone())
    }
}

/// A writer into a [`Captured`] buffer.
pub struct CapturedWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for CapturedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A plain-text subscriber at `filter` writing into `captured`.
fn subscriber(filter: &str, captured: &Captured) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish()
}

/// Runs `f` with every event at `filter` (an `EnvFilter` directive such as
/// `"debug"` or `"kappa_protocol=trace"`) captured on this thread; returns
/// `f`'s result and the captured text. Events of other threads are not
/// captured.
pub fn capture<T>(filter: &str, f: impl FnOnce() -> T) -> (T, String) {
    let captured = Captured::default();
    let subscriber = subscriber(filter, &captured);
    let out = tracing::subscriber::with_default(subscriber, f);
    (out, captured.text())
}

/// Installs, once per process, a global subscriber at `filter` writing into
/// the returned buffer: for events of threads a test does not run itself
/// (an indexer's). Later calls return the same buffer (and keep the first
/// filter), so a test binary should call it from one test only.
pub fn capture_global(filter: &str) -> Captured {
    static GLOBAL: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    GLOBAL
        .get_or_init(|| {
            let captured = Captured::default();
            let subscriber = subscriber(filter, &captured);
            // Fails only if another global subscriber is set: then nothing is
            // captured, and the test says so by what it does not find.
            let _ = tracing::subscriber::set_global_default(subscriber);
            captured
        })
        .clone()
}

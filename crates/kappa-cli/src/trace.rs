//! The tracing subscriber of the `kappa` binary: `-v`, `-vv`, `-vvv` or
//! `RUST_LOG` turn on the libraries' spans and events, written to standard
//! error (never to standard output, which `--json` keeps for its values).
//!
//! Without either nothing is installed and nothing extra is printed.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The crates whose events `-v` turns on (the rest stay at warnings).
const OUR_CRATES: &[&str] = &[
    "kappa",
    "kappa_cli",
    "kappa_core",
    "kappa_protocol",
    "kappa_multifeed",
    "kappa_index",
    "kappa_log",
    "kappa_storage",
    "kappa_view",
    "kappa_view_redb",
    "kappa_view_postgres",
    "kappa_discovery",
];

/// The filter `-v` repeated `verbose` times asks for: info, debug, then
/// trace for our crates; `None` for none.
fn verbosity_filter(verbose: u8) -> Option<String> {
    let level = match verbose {
        0 => return None,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut directives = String::from("warn");
    for c in OUR_CRATES {
        directives.push_str(&format!(",{c}={level}"));
    }
    Some(directives)
}

/// Installs the subscriber if `RUST_LOG` is set (it wins) or `verbose > 0`.
/// A `RUST_LOG` that does not parse is reported and `-v` used instead.
pub(crate) fn init(verbose: u8) {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = match from_env {
        Some(directives) => match EnvFilter::try_new(&directives) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("kappa: warning: RUST_LOG is not a valid filter ({e}); ignored");
                verbosity_filter(verbose).and_then(|d| EnvFilter::try_new(d).ok())
            }
        },
        None => verbosity_filter(verbose).and_then(|d| EnvFilter::try_new(d).ok()),
    };
    let Some(filter) = filter else { return };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(EscapedStderr)
        .with_ansi(false)
        .with_target(true)
        .try_init();
}

/// Standard error, with the characters that could forge lines or reach the
/// terminal escaped, as every other line the CLI prints: events carry text
/// from peers (extension names, their errors).
struct EscapedStderr;

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = EscapingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter
    }
}

/// Writes each chunk (the formatter writes an event as one line, in one
/// write) to standard error, escaped but for the line's closing newline.
struct EscapingWriter;

impl Write for EscapingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().lock().write_all(escaped(buf).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `chunk` escaped as [`crate::output::escape_bytes`] does, but for its
/// closing newline.
fn escaped(chunk: &[u8]) -> String {
    let (body, newline) = match chunk.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (chunk, false),
    };
    let mut line = crate::output::escape_bytes(body);
    if newline {
        line.push('\n');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_text_cannot_forge_a_line_or_reach_the_terminal() {
        let event = b"DEBUG session failed error=malformed x\nFAKE \x1b[2J message\n";
        assert_eq!(escaped(event), "DEBUG session failed error=malformed x\\nFAKE \\u{1b}[2J message\n");
        assert_eq!(escaped(b"no newline"), "no newline");
    }

    #[test]
    fn verbosity_levels() {
        assert_eq!(verbosity_filter(0), None);
        let f = verbosity_filter(1).unwrap();
        assert!(f.starts_with("warn,") && f.contains("kappa_protocol=info"), "{f}");
        assert!(verbosity_filter(2).unwrap().contains("kappa_multifeed=debug"));
        assert!(verbosity_filter(5).unwrap().contains("kappa_index=trace"));
        for v in 1..4 {
            EnvFilter::try_new(verbosity_filter(v).unwrap()).unwrap();
        }
    }
}

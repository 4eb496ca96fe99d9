//! `-v`/`-vv` and `RUST_LOG`: the libraries' tracing on standard error, the
//! cause of a failed sync among it, standard output untouched (`--json`
//! still parses), and nothing extra without them.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// Runs `kappa --dir DIR ARGS...` with `RUST_LOG` as given (unset if `None`).
fn run(dir: &Path, args: &[&str], rust_log: Option<&str>) -> Output {
    let mut c = Command::new(KAPPA);
    c.arg("--dir").arg(dir).args(args);
    match rust_log {
        Some(v) => c.env("RUST_LOG", v),
        None => c.env_remove("RUST_LOG"),
    };
    c.output().expect("run kappa")
}

fn json_stdout(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn vv_sync_with_another_shared_key_prints_the_cause_on_stderr_and_json_stays_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    ok(&a, &["put", "x", "1"]);
    ok(&b, &["put", "y", "2"]);
    let server = Server::start(&a, &["--max-peers", "1"]);
    let o = run(&b, &["-vv", "--json", "sync", &server.addr], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    // The session's end, with the cause, typed, inside its spans.
    let ended = err
        .lines()
        .find(|l| l.contains("session ended: failed"))
        .unwrap_or_else(|| panic!("no session end in stderr:\n{err}"));
    assert!(ended.contains("INFO"), "{ended}");
    assert!(ended.contains("another shared key"), "{ended}");
    assert!(ended.contains("cause=Rejected("), "{ended}");
    assert!(ended.contains("replicate{peer=") && ended.contains("session{initiator=true"), "{ended}");
    // -vv shows debug events too: the handshake and its generation.
    assert!(err.contains("DEBUG") && err.contains("handshake done generation="), "{err}");
    // Standard output holds JSON only (here nothing), and the error is still
    // the last line of stderr, as JSON.
    assert!(json_stdout(&o).is_empty(), "{}", stdout(&o));
    let last: Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "runtime");
    assert!(last["error"].as_str().unwrap().contains("shared key"), "{last}");
    let (code, _) = server.wait();
    assert_eq!(code, Some(0));
}

#[test]
fn v_sync_keeps_json_stdout_parseable_and_logs_to_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    ok(&a, &["put", "x", "1"]);
    let server = Server::start(&a, &["--max-peers", "1"]);
    let o = run(&b, &["-v", "--json", "sync", &server.addr], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines = json_stdout(&o);
    assert_eq!(lines.len(), 1, "{}", stdout(&o));
    assert_eq!(lines[0]["blocks_received"], 1, "{}", lines[0]);
    let err = stderr(&o);
    assert!(err.contains("session ended"), "{err}");
    // -v is info: no debug events.
    assert!(!err.contains("DEBUG"), "{err}");
    let (code, _) = server.wait();
    assert_eq!(code, Some(0));
}

#[test]
fn rust_log_overrides_and_without_either_nothing_extra_is_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    ok(&a, &["put", "x", "1"]);

    let server = Server::start(&a, &["--max-peers", "1"]);
    let o = run(&b, &["sync", &server.addr], Some("kappa_protocol=debug"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("handshake done"), "{err}");
    // Only what RUST_LOG asked for: no feed exchange events.
    assert!(!err.contains("kappa_multifeed"), "{err}");
    assert!(stdout(&o).starts_with("synced with"), "{}", stdout(&o));
    server.wait();

    let server = Server::start(&a, &["--max-peers", "1"]);
    let o = run(&b, &["sync", &server.addr], None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "stderr without -v or RUST_LOG");
    server.wait();

    // A RUST_LOG that is not a filter is said so, and ignored.
    let o = run(&b, &["key"], Some("kappa_protocol=loud"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("kappa: warning: RUST_LOG is not a valid filter"), "{}", stderr(&o));
}

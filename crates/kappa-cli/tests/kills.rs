//! SIGKILL at random moments of `kappa put`, `kappa append -`, `kappa table`,
//! `kappa sync` (from a live server) and `kappa serve` (while a peer syncs with
//! it), the first command in a fresh directory and later ones: after every kill
//! the database opens, every acknowledged write (a command that exited 0 before
//! the kill; for a sync or a serve, every entry of the peer) is in the log, and
//! the kv view equals a rebuild from scratch.
//!
//! A seeded sample runs with the tests (20 kills per command, half of them of a
//! first command); `cargo xtask soak kills [N]` runs N per command (default 100)
//! with a fresh seed. The environment sets the campaign: `KAPPA_SOAK_KILLS`
//! (kills per command), `KAPPA_SOAK_SEED`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Rng;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KAPPA: &str = env!("CARGO_BIN_EXE_kappa");

/// Kills per command, half of them of a first command in a fresh directory.
fn kills() -> u64 {
    std::env::var("KAPPA_SOAK_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20)
}

fn seed(salt: u64) -> u64 {
    let base = std::env::var("KAPPA_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_0013);
    (base ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = spawn(dir, args, stdin);
    c.stdin.take();
    c.wait_with_output().expect("run kappa")
}

fn spawn(dir: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Child {
    let mut c = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kappa");
    if let (Some(text), Some(mut pipe)) = (stdin, c.stdin.take()) {
        // Small enough for the pipe's buffer; a child killed early closes it.
        let _ = pipe.write_all(text.as_bytes());
    }
    c
}

fn ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let o = run(dir, args, stdin);
    assert_eq!(
        o.status.code(),
        Some(0),
        "kappa {args:?} in {} failed:\nstdout: {}\nstderr: {}",
        dir.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn lines(s: &str) -> Vec<Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
}

/// What the directory must hold: every acknowledged entry, by id.
#[derive(Default)]
struct Model {
    acked: Vec<(String, Value)>,
}

impl Model {
    /// Records what a `put --json KEY VALUE` that exited 0 printed.
    fn put_acked(&mut self, stdout: &str) {
        for l in lines(stdout) {
            let entry = json!({"key": l["key"], "value": l["value"], "links": l["links"]});
            self.acked.push((l["id"].as_str().unwrap().to_owned(), entry));
        }
    }

    /// Records what an `append --json -` of `entries` that exited 0 printed.
    fn append_acked(&mut self, stdout: &str, entries: &[Value]) {
        let ids = lines(stdout);
        assert_eq!(
            ids.len(),
            entries.len(),
            "append acknowledged {} of {} entries",
            ids.len(),
            entries.len()
        );
        for (l, e) in ids.iter().zip(entries) {
            self.acked.push((l["id"].as_str().unwrap().to_owned(), e.clone()));
        }
    }
}

/// `entries` as `append -` reads them.
fn jsonl(entries: &[Value]) -> String {
    entries.iter().map(|e| format!("{e}\n")).collect()
}

fn entries(rng: &mut Rng, n: usize) -> Vec<Value> {
    (0..n).map(|_| json!({"key": format!("a{}", rng.below(400)), "value": rng.below(1 << 20)})).collect()
}

/// The directory copied without its view file (and lock): a rebuild from scratch.
fn copy_without_views(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        let n = name.to_string_lossy();
        if n.starts_with("views.redb") || n == "LOCK" {
            continue;
        }
        if e.path().is_dir() {
            copy_without_views(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// After a kill: the database opens, the acknowledged entries are in the log,
/// and the kv view equals a rebuild from scratch.
fn check(dir: &Path, model: &Model, scratch: &Path, what: &str) {
    let o = run(dir, &["--json", "table"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{what}: table after the kill failed: {err}");
    assert!(!err.contains("moved to"), "{what}: a kill left a view file that had to be moved aside: {err}");
    let table = String::from_utf8(o.stdout).unwrap();
    if model.acked.is_empty() && !dir.join("0").exists() {
        return;
    }
    // Every feed the model names (an id is FEED@SEQ), the local one first.
    let mut logs = vec![None];
    for (id, _) in &model.acked {
        let feed = id.split('@').next().unwrap_or_default().to_owned();
        if !logs.contains(&Some(feed.clone())) {
            logs.push(Some(feed));
        }
    }
    let mut log: HashMap<String, Value> = HashMap::new();
    for feed in &logs {
        let mut args = vec!["--json", "log"];
        args.extend(feed.as_deref());
        log.extend(
            lines(&ok(dir, &args, None))
                .into_iter()
                .filter_map(|l| Some((l["id"].as_str()?.to_owned(), l.get("value")?.clone()))),
        );
    }
    for (id, entry) in &model.acked {
        assert_eq!(log.get(id), Some(entry), "{what}: acknowledged entry {id} is not in the log as written");
    }
    let _ = std::fs::remove_dir_all(scratch);
    copy_without_views(dir, scratch);
    let rebuilt = ok(scratch, &["--json", "table"], None);
    if table != rebuilt {
        let feeds = |d: &Path| String::from_utf8_lossy(&run(d, &["feeds"], None).stdout).into_owned();
        let checked = |d: &Path| String::from_utf8_lossy(&run(d, &["check"], None).stdout).into_owned();
        panic!(
            "{what}: the kv view differs from a rebuild from scratch\nfeeds:\n{}rebuilt feeds:\n{}check:\n{}\ntable:\n{table}\nrebuilt:\n{rebuilt}",
            feeds(dir),
            feeds(scratch),
            checked(dir)
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmd {
    Put,
    Append,
    Table,
}

/// One command of `cmd`'s campaign in `dir`: prepares its input, starts it and
/// kills it after `delay` (unless it is done by then), then updates `model`.
/// Returns how long it ran and whether the kill ended it.
fn kill_one(
    cmd: Cmd,
    dir: &Path,
    rng: &mut Rng,
    model: &mut Model,
    delay: Option<Duration>,
) -> (Duration, bool) {
    let (args, input): (Vec<String>, Option<Vec<Value>>) = match cmd {
        Cmd::Put => {
            let key = format!("k{}", rng.below(8));
            let value = format!("{{\"n\":{}}}", rng.below(1 << 30));
            (vec!["--json".into(), "put".into(), key, value], None)
        }
        Cmd::Append => (vec!["--json".into(), "append".into(), "-".into()], Some(entries(rng, 50))),
        Cmd::Table => {
            // New entries the table must index first.
            let batch = entries(rng, 300);
            let out = ok(dir, &["--json", "append", "-"], Some(&jsonl(&batch)));
            model.append_acked(&out, &batch);
            (vec!["--json".into(), "table".into()], None)
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdin = input.as_deref().map(jsonl);
    let started = Instant::now();
    let mut c = spawn(dir, &args, stdin.as_deref());
    if let Some(d) = delay {
        std::thread::sleep(d);
        let _ = c.kill(); // SIGKILL
    }
    let o = c.wait_with_output().unwrap();
    let took = started.elapsed();
    match o.status.code() {
        Some(0) => match cmd {
            Cmd::Put => model.put_acked(&String::from_utf8_lossy(&o.stdout)),
            Cmd::Append => model.append_acked(&String::from_utf8_lossy(&o.stdout), input.as_deref().unwrap()),
            Cmd::Table => {}
        },
        // Killed: nothing acknowledged.
        None => return (took, true),
        Some(code) => panic!(
            "{cmd:?} {args:?} in {} exited {code} on its own: {}",
            dir.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
    (took, false)
}

/// One command of a campaign in a directory: runs it (killed after the delay,
/// if given) and updates the model; how long it ran and whether the kill ended it.
type RunOne<'a> = dyn FnMut(&Path, &mut Rng, &mut Model, Option<Duration>) -> (Duration, bool) + 'a;

/// The kill loop every campaign shares: `one` is timed uninterrupted (first
/// in a fresh directory, then later), then `kills()` runs of it are killed at
/// random moments, alternately of a first command in a fresh directory and of
/// a later one in a directory that grows; after each, [`check`]. With
/// `finish`, a last uninterrupted run in the grown directory must complete.
/// `between` runs after each check (e.g. to assert a server outlived it).
fn kill_campaign(
    label: &str,
    tmp: &Path,
    rng: &mut Rng,
    one: &mut RunOne<'_>,
    between: &mut dyn FnMut(&str),
    finish: bool,
) {
    let scratch = tmp.join("rebuild");
    let calib = tmp.join("calibrate");
    let mut model = Model::default();
    let (first_takes, _) = one(&calib, rng, &mut model, None);
    let (later_takes, _) = one(&calib, rng, &mut model, None);
    check(&calib, &model, &scratch, &format!("{label} uninterrupted"));

    let later = tmp.join("later");
    let mut later_model = Model::default();
    let (mut killed, mut early) = (0, 0);
    let n = kills().div_ceil(2);
    for i in 0..n {
        for first in [true, false] {
            let delay = kill_delay(rng, if first { first_takes } else { later_takes });
            let mut fresh = Model::default();
            let (dir, model) = if first {
                (tmp.join(format!("first-{i}")), &mut fresh)
            } else {
                (later.clone(), &mut later_model)
            };
            let (_, by_kill) = one(&dir, rng, model, Some(delay));
            killed += u64::from(by_kill);
            early += u64::from(delay < Duration::from_millis(3));
            let what =
                format!("{label} kill {i} ({}, after {delay:?})", if first { "first" } else { "later" });
            check(&dir, model, &scratch, &what);
            if first {
                let _ = std::fs::remove_dir_all(&dir);
            }
            between(&what);
        }
    }
    if finish {
        // The directory a run of kills left behind still does the job whole.
        one(&later, rng, &mut later_model, None);
        check(&later, &later_model, &scratch, &format!("{label} after the kills"));
    }
    eprintln!(
        "{label}: {} runs killed at random moments ({early} in the first 3 ms; first run {first_takes:?}, later {later_takes:?}); {killed} of them ended by the kill (the others had exited 0)",
        2 * n
    );
    assert!(killed >= n / 2, "{label}: only {killed} of {} runs were ended by their kill", 2 * n);
}

/// The campaign for `cmd` (see [`kill_campaign`]).
fn campaign(cmd: Cmd, salt: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed(salt));
    let mut one = |dir: &Path, rng: &mut Rng, model: &mut Model, delay| kill_one(cmd, dir, rng, model, delay);
    kill_campaign(&format!("{cmd:?}"), tmp.path(), &mut rng, &mut one, &mut |_| {}, false);
}

#[test]
fn sigkill_during_put() {
    campaign(Cmd::Put, 1);
}

#[test]
fn sigkill_during_append_from_stdin() {
    campaign(Cmd::Append, 2);
}

#[test]
fn sigkill_during_table() {
    campaign(Cmd::Table, 3);
}

/// A peer database with `n` entries: its shared key and every entry as
/// `kappa --json log` prints it (id, entry).
fn peer_with(dir: &Path, rng: &mut Rng, n: usize) -> (String, Vec<(String, Value)>) {
    let mut model = Model::default();
    for _ in 0..n / 500 {
        let batch = entries(rng, 500);
        let out = ok(dir, &["--json", "append", "-"], Some(&jsonl(&batch)));
        model.append_acked(&out, &batch);
    }
    let key = ok(dir, &["key"], None).trim().to_owned();
    (key, model.acked)
}

/// Runs `child` for `delay` (if given), then SIGKILLs it; its output and
/// whether the kill ended it.
fn kill_after(mut child: std::process::Child, delay: Option<Duration>) -> (Output, bool) {
    if let Some(d) = delay {
        std::thread::sleep(d);
        let _ = child.kill();
    }
    let o = child.wait_with_output().unwrap();
    let killed = o.status.code().is_none();
    (o, killed)
}

/// A delay for a kill: a third in the first 3 ms, the rest in the command's usual run.
fn kill_delay(rng: &mut Rng, takes: Duration) -> Duration {
    let us = if rng.below(3) == 0 { rng.below(3_000) } else { rng.below(takes.as_micros() as u64 + 1) };
    Duration::from_micros(us)
}

/// One `kappa sync` from the serving peer at `addr` into `dir` (after a local
/// `put` there when `dir` holds a database already), killed after `delay`.
/// A sync that exits 0 acknowledges every entry of the peer.
fn sync_one(
    dir: &Path,
    key: &str,
    addr: &str,
    peer: &[(String, Value)],
    rng: &mut Rng,
    model: &mut Model,
    delay: Option<Duration>,
) -> (Duration, bool) {
    if dir.join("0").exists() {
        let v = format!("{{\"n\":{}}}", rng.below(1 << 30));
        let out = ok(dir, &["--json", "put", &format!("local{}", rng.below(8)), &v], None);
        model.put_acked(&out);
    }
    let started = Instant::now();
    let child = spawn(dir, &["--shared-key", key, "--json", "sync", addr], None);
    let (o, killed) = kill_after(child, delay);
    let took = started.elapsed();
    match o.status.code() {
        Some(0) => model.acked.extend(peer.iter().cloned()),
        None => {}
        Some(code) => panic!(
            "sync into {} exited {code} on its own: {}",
            dir.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
    (took, killed)
}

/// SIGKILL at random moments of the first and later `kappa sync` from a live
/// `kappa serve` holding 2,000 entries: the database opens, its own
/// acknowledged writes and (after a sync that exited 0) the peer's entries are
/// there, the view equals a rebuild; the server outlives every killed client
/// and a last uninterrupted sync completes.
#[test]
fn sigkill_during_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed(4));
    let src = tmp.path().join("peer");
    let (key, peer) = peer_with(&src, &mut rng, 2000);
    let mut server = common::Server::start(&src, &[]);
    let addr = server.addr.clone();
    let mut one = |dir: &Path, rng: &mut Rng, model: &mut Model, delay| {
        sync_one(dir, &key, &addr, &peer, rng, model, delay)
    };
    let mut alive =
        |what: &str| assert!(server.child.try_wait().unwrap().is_none(), "{what}: kappa serve exited");
    kill_campaign("Sync", tmp.path(), &mut rng, &mut one, &mut alive, true);
}

/// One `kappa serve --max-peers 1` in `dir` (after a local `put` when `dir`
/// holds a database already) that the peer in `peer_dir` syncs with as soon as
/// it listens; the server is killed `delay` after it started. A server that
/// exits 0 (its one session over) acknowledges every entry of the peer.
#[allow(clippy::too_many_arguments)]
fn serve_one(
    dir: &Path,
    key: &str,
    peer_dir: &Path,
    peer: &[(String, Value)],
    rng: &mut Rng,
    model: &mut Model,
    delay: Option<Duration>,
) -> (Duration, bool) {
    use std::io::{BufRead, BufReader};
    if dir.join("0").exists() {
        let v = format!("{{\"n\":{}}}", rng.below(1 << 30));
        let out = ok(dir, &["--json", "put", &format!("local{}", rng.below(8)), &v], None);
        model.put_acked(&out);
    }
    let started = Instant::now();
    let mut child = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(dir)
        .args(["--shared-key", key, "serve", "--listen", "127.0.0.1:0", "--max-peers", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kappa serve");
    // The peer dials as soon as the server says where it listens.
    let stdout = child.stdout.take().unwrap();
    let peer_dir = peer_dir.to_owned();
    let client = std::thread::spawn(move || {
        let mut first = String::new();
        let mut out = BufReader::new(stdout);
        if out.read_line(&mut first).unwrap_or(0) == 0 {
            return None;
        }
        let addr = first.trim().strip_prefix("listening on ")?.to_owned();
        let o = run(&peer_dir, &["sync", &addr], None);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        Some(o)
    });
    let (o, killed) = kill_after(child, delay);
    let took = started.elapsed();
    let peer_sync = client.join().unwrap();
    match o.status.code() {
        Some(0) => {
            model.acked.extend(peer.iter().cloned());
            let p = peer_sync.expect("the server exited 0 without a peer");
            assert_eq!(p.status.code(), Some(0), "the peer's sync: {}", String::from_utf8_lossy(&p.stderr));
        }
        None => {}
        Some(code) => panic!(
            "serve in {} exited {code} on its own: {}",
            dir.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
    (took, killed)
}

/// SIGKILL at random moments of the first and later `kappa serve` while a peer
/// with 2,000 entries syncs with it (and in its first milliseconds, before it
/// listens): the database opens, its own acknowledged writes and (after a
/// serve that exited 0) the peer's entries are there, the view equals a
/// rebuild, and a last uninterrupted serve completes.
#[test]
fn sigkill_during_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed(5));
    let peer_dir = tmp.path().join("peer");
    let (key, peer) = peer_with(&peer_dir, &mut rng, 2000);
    let mut one = |dir: &Path, rng: &mut Rng, model: &mut Model, delay| {
        serve_one(dir, &key, &peer_dir, &peer, rng, model, delay)
    };
    kill_campaign("Serve", tmp.path(), &mut rng, &mut one, &mut |_| {}, true);
}

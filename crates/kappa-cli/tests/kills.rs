//! SIGKILL at random moments of `kappa put`, `kappa append -` and `kappa table`,
//! the first command in a fresh directory and later ones: after every kill the
//! database opens, every acknowledged write (a command that exited 0 before the
//! kill) is in the log, and the kv view equals a rebuild from scratch.
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
    let log: HashMap<String, Value> = lines(&ok(dir, &["--json", "log"], None))
        .into_iter()
        .filter_map(|l| Some((l["id"].as_str()?.to_owned(), l.get("value")?.clone())))
        .collect();
    for (id, entry) in &model.acked {
        assert_eq!(log.get(id), Some(entry), "{what}: acknowledged entry {id} is not in the log as written");
    }
    let _ = std::fs::remove_dir_all(scratch);
    copy_without_views(dir, scratch);
    let rebuilt = ok(scratch, &["--json", "table"], None);
    assert_eq!(table, rebuilt, "{what}: the kv view differs from a rebuild from scratch");
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

/// The campaign for `cmd`: `kills()` kills, alternately of a first command in
/// a fresh directory and of a later one in a directory that grows.
fn campaign(cmd: Cmd, salt: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed(salt));
    let scratch = tmp.path().join("rebuild");
    // How long the command takes here, first and later, uninterrupted.
    let mut model = Model::default();
    let calib = tmp.path().join("calibrate");
    let (first_takes, _) = kill_one(cmd, &calib, &mut rng, &mut model, None);
    let (later_takes, _) = kill_one(cmd, &calib, &mut rng, &mut model, None);
    check(&calib, &model, &scratch, "uninterrupted");

    let later = tmp.path().join("later");
    let mut later_model = Model::default();
    let (mut killed, mut early) = (0, 0);
    let n = kills().div_ceil(2);
    for i in 0..n {
        for first in [true, false] {
            let takes = if first { first_takes } else { later_takes };
            // A third of the kills in the first 3 ms (opening, creating the
            // view file), the rest anywhere in the command's usual run.
            let ms =
                if rng.below(3) == 0 { rng.below(3_000) } else { rng.below(takes.as_micros() as u64 + 1) };
            let delay = Duration::from_micros(ms);
            let (dir, mut fresh_model) = if first {
                let d = tmp.path().join(format!("first-{i}"));
                (d, Some(Model::default()))
            } else {
                (later.clone(), None)
            };
            let model = fresh_model.as_mut().unwrap_or(&mut later_model);
            let (_, ended_by_kill) = kill_one(cmd, &dir, &mut rng, model, Some(delay));
            if ended_by_kill {
                killed += 1;
            }
            if delay < Duration::from_millis(3) {
                early += 1;
            }
            let what =
                format!("{cmd:?} kill {i} ({}, after {delay:?})", if first { "first" } else { "later" });
            check(&dir, model, &scratch, &what);
            if first {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    eprintln!(
        "{cmd:?}: {} commands killed at random moments ({early} in the first 3 ms; first run {first_takes:?}, later {later_takes:?}); {killed} of them ended by the kill (the others had exited 0)",
        2 * n
    );
    assert!(killed >= n / 2, "only {killed} of {} commands were ended by their kill", 2 * n);
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

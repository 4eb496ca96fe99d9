//! Helpers shared by the CLI test files: run `kappa` as a user would, start a
//! `kappa serve`, sync once.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KAPPA: &str = env!("CARGO_BIN_EXE_kappa");

/// Runs `kappa --dir DIR ARGS...`.
pub fn kappa(dir: &Path, args: &[&str]) -> Output {
    Command::new(KAPPA).env_remove("RUST_LOG").arg("--dir").arg(dir).args(args).output().expect("run kappa")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects exit 0; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = kappa(dir, args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "kappa {args:?} failed:\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs with `--json` and parses every stdout line.
pub fn json_lines(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    ok(dir, &all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Every file under `dir` with its bytes.
pub fn digest(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(d) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

pub fn key_of(dir: &Path) -> String {
    ok(dir, &["key"]).trim().to_owned()
}

/// A running `kappa serve`: its address and the rest of its output.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub out: BufReader<ChildStdout>,
}

impl Server {
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(KAPPA)
            .env_remove("RUST_LOG")
            .arg("--dir")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kappa serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let addr = if extra.contains(&"--json") {
            let v: Value = serde_json::from_str(&first).unwrap();
            assert_eq!(v["event"], "listening");
            v["addr"].as_str().unwrap().to_owned()
        } else {
            first
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("first line: {first:?}"))
                .to_owned()
        };
        Server { child, addr, out }
    }

    /// Waits for the server to exit (it was given limits); returns its code and
    /// the rest of its output.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                panic!("kappa serve did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).unwrap();
        (status.code(), rest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Syncs `dir` with a server once (`serve --max-peers 1`).
pub fn sync_once(server_dir: &Path, client_dir: &Path) -> (String, String) {
    let server = Server::start(server_dir, &["--max-peers", "1"]);
    let client = ok(client_dir, &["sync", &server.addr]);
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "serve: {log}");
    (client, log)
}

/// Two directories sharing a's key.
pub fn pair(tmp: &Path) -> (PathBuf, PathBuf) {
    let a = tmp.join("a");
    let b = tmp.join("b");
    let key = key_of(&a);
    ok(&b, &["--shared-key", &key, "key"]);
    assert_eq!(key_of(&b), key);
    (a, b)
}

pub fn fails(dir: &Path, args: &[&str], code: i32, message: &str) {
    let before = digest(dir);
    let o = kappa(dir, args);
    assert_eq!(o.status.code(), Some(code), "kappa {args:?}: {}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains(message), "kappa {args:?}: expected {message:?} in {:?}", stderr(&o));
    assert!(stdout(&o).is_empty(), "kappa {args:?} printed {:?}", stdout(&o));
    assert_eq!(digest(dir), before, "kappa {args:?} changed the directory");
}

/// A seeded xorshift generator for the test campaigns.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The keys of the kv table of the database in `dir` with shared key `key`,
/// sorted, each once.
pub fn table_keys(dir: &Path, key: &str) -> Vec<String> {
    let out = ok(dir, &["--shared-key", key, "--json", "table"]);
    let mut keys: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["key"].as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

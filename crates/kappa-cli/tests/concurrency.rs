//! Many `kappa` processes on one directory at once. One process uses a
//! directory at a time: every other one is refused at once with exit 3 and the
//! one "in use by another process" message, never exit 1 or another message;
//! what a process that exited 0 wrote is there afterwards; the directory's
//! shared key is the first one written, whoever wins the race to create it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const KAPPA: &str = env!("CARGO_BIN_EXE_kappa");

fn spawn(dir: &Path, args: &[String]) -> Child {
    Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kappa")
}

fn in_use_message(dir: &Path) -> String {
    format!(
        "kappa: error: the database {} is in use by another process (e.g. `kappa serve`); stop it or use another --dir\n",
        dir.display()
    )
}

/// Runs the commands at once; checks every exit is 0, or 3 with the one
/// message. Returns each command's output.
fn round(dir: &Path, commands: &[Vec<String>]) -> Vec<Output> {
    let children: Vec<Child> = commands.iter().map(|c| spawn(dir, c)).collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for (c, o) in commands.iter().zip(&outputs) {
        let err = String::from_utf8_lossy(&o.stderr);
        match o.status.code() {
            Some(0) => {}
            Some(3) => assert_eq!(err, in_use_message(dir), "kappa {c:?}"),
            other => panic!("kappa {c:?} exited {other:?}: {err}"),
        }
    }
    outputs
}

fn commands(run: usize) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut cmds = Vec::new();
    for i in 0..4 {
        cmds.push(s(&["put", &format!("k{run}-{i}"), &i.to_string()]));
    }
    cmds.push(s(&["append", &format!(r#"{{"run":{run}}}"#)]));
    cmds.push(s(&["get", "k0-0"]));
    cmds.push(s(&["table"]));
    cmds.push(s(&["log"]));
    cmds.push(s(&["feeds"]));
    cmds.push(s(&["views"]));
    cmds.push(s(&["key"]));
    cmds.push(s(&["key"]));
    cmds
}

#[test]
fn concurrent_commands_are_refused_cleanly_20_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let mut refused = 0;
    for run in 0..20 {
        // Odd rounds race on a directory that does not exist yet.
        let dir =
            if run % 2 == 1 { tmp.path().join(format!("fresh-{run}")) } else { tmp.path().join("shared") };
        let cmds = commands(run);
        let outputs = round(&dir, &cmds);
        refused += outputs.iter().filter(|o| o.status.code() == Some(3)).count();
        // Every put that succeeded is there, and every `key` that ran saw the
        // key the directory keeps.
        let key =
            Command::new(KAPPA).env_remove("RUST_LOG").arg("--dir").arg(&dir).arg("key").output().unwrap();
        assert_eq!(key.status.code(), Some(0));
        for (c, o) in cmds.iter().zip(&outputs) {
            if o.status.code() != Some(0) {
                continue;
            }
            if c[0] == "put" {
                let got = Command::new(KAPPA)
                    .env_remove("RUST_LOG")
                    .arg("--dir")
                    .arg(&dir)
                    .args(["--json", "get", &c[1]])
                    .output()
                    .unwrap();
                let v: Value = serde_json::from_slice(&got.stdout).unwrap();
                assert_eq!(v["heads"][0]["value"].to_string(), c[2], "round {run}: {c:?} was lost");
            }
            if c[0] == "key" {
                assert_eq!(o.stdout, key.stdout, "round {run}: the shared key changed");
            }
        }
    }
    eprintln!("{refused} of {} commands were refused", 20 * commands(0).len());
}

#[test]
fn while_serve_runs_every_command_is_refused_at_once_with_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let put = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(&dir)
        .args(["put", "a", "1"])
        .output()
        .unwrap();
    assert!(put.status.success());
    let mut server = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("listening on "), "{first}");
    for _ in 0..20 {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cmds = [
            s(&["get", "a"]),
            s(&["put", "b", "2"]),
            s(&["table"]),
            s(&["log"]),
            s(&["feeds"]),
            s(&["views"]),
            s(&["key"]),
            s(&["append", "{}"]),
        ];
        let start = Instant::now();
        let outputs: Vec<Output> = cmds
            .iter()
            .map(|c| spawn(&dir, c))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        for (c, o) in cmds.iter().zip(&outputs) {
            assert_eq!(o.status.code(), Some(3), "kappa {c:?}");
            assert_eq!(String::from_utf8_lossy(&o.stderr), in_use_message(&dir), "kappa {c:?}");
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not refused at once: {:?}", start.elapsed());
    }
    let _ = server.kill();
    let _ = server.wait();
}

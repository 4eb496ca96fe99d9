//! A child process whose standard output is read line by line on a thread of
//! its own, for tests that wait for what a peer prints.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process and the lines it printed; killed and reaped on drop.
///
/// Its standard input stays open (a peer that exits when it closes lives
/// as long as this), its standard error goes to the test's.
#[derive(Debug)]
pub struct LineChild {
    child: Child,
    _stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, in order.
    pub seen: Vec<String>,
}

impl LineChild {
    /// Starts `cmd`.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn start(mut cmd: Command) -> LineChild {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout of {cmd:?}"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineChild { child, _stdin: stdin, lines, seen: Vec::new() }
    }

    /// The first line (printed already, or within `within`) for which `pred`
    /// holds.
    ///
    /// # Panics
    /// When none comes within `within` (saying `what` was awaited, and what
    /// was printed).
    pub fn wait_for(&mut self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no {what} within {within:?}; printed {:?}", self.seen),
            }
        }
    }

    /// Every line printed until now, after reading for `during` more.
    pub fn lines_after(&mut self, during: Duration) -> &[String] {
        let deadline = Instant::now() + during;
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Stops the process with SIGINT (a clean stop), waits for it and reads
    /// what it printed to the end.
    pub fn interrupt(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(rest);
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

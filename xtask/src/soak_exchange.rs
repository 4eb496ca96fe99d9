//! `cargo xtask soak exchange [ROUNDS]`: the feed-exchange campaign.
//!
//! 1. The JS interop suite through the chaos proxy
//!    (`kappa-multifeed/tests/chaos_interop.rs`), ROUNDS rounds (default 50) of
//!    its 24 combinations (live or not on each side, empty or full on each
//!    side, both roles, either side listening), each round with new proxy
//!    seeds; it prints the count of runs and failures and fails on any.
//! 2. The exchange against the multifeed 5 model on the in-memory pair, over
//!    20,000 seeds.
//!
//! Needs `interop/setup.sh` to have run (a missing harness fails: `CI` is set).

use std::process::Command;
use std::time::Instant;

use crate::root;

fn cargo_test(test: &str, env: &[(&str, String)]) -> Result<(), String> {
    let started = Instant::now();
    let args = ["test", "-p", "kappa-multifeed", "--test", test, "--", "--nocapture", "--test-threads", "1"];
    eprintln!(
        "$ {} cargo {}",
        env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        args.join(" ")
    );
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args).current_dir(root()).env("CI", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    eprintln!("  ({:.1}s)", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("the {test} soak failed ({status}); its output names every failed run"))
    }
}

/// Runs the campaign (see the module docs).
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let rounds: u64 = match args.first() {
        Some(s) => s.parse().map_err(|_| format!("ROUNDS must be a number, not {s:?}"))?,
        None => 50,
    };
    cargo_test("chaos_interop", &[("KAPPA_CHAOS_ROUNDS", rounds.to_string())])?;
    cargo_test("exchange", &[("EXCHANGE_SEEDS", "20000".into())])
}

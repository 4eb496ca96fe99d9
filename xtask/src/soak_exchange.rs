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
//! `cargo xtask soak interop [ROUNDS]`: the JS interop suites
//! ([`INTEROP_SUITES`]) through chaos proxies (every connection they make goes
//! through one; `kappa_testkit::chaos::route`), ROUNDS runs each (default 50),
//! each run with its own seed; it prints the runs, the failures and their
//! seeds, and fails on any. `cargo xtask ci` runs one seeded round.
//!
//! Needs `interop/setup.sh` to have run (a missing harness fails: `CI` is set).

use std::process::Command;
use std::time::Instant;

use crate::root;

fn cargo_test(test: &str, env: &[(&str, String)]) -> Result<(), String> {
    cargo_test_in("kappa-multifeed", test, env)
}

/// The JS interop suites that run through chaos proxies when
/// `KAPPA_CHAOS_SEED` is set: (package, test target).
pub(crate) const INTEROP_SUITES: &[(&str, &str)] = &[
    ("kappa-protocol", "interop_js"),
    ("kappa-multifeed", "interop_tcp"),
    ("kappa-multifeed", "interop_kc7"),
    ("kappa-cli", "js_interop"),
];

/// One round of [`INTEROP_SUITES`] through chaos proxies seeded from `seed`
/// (one cargo run over the workspace, so nothing is built again with other
/// features); the failures.
pub(crate) fn interop_round(seed: u64) -> Vec<String> {
    let started = Instant::now();
    let mut args = vec!["test", "--workspace"];
    for (_, test) in INTEROP_SUITES {
        args.extend(["--test", test]);
    }
    args.extend(["--", "--test-threads", "1"]);
    eprintln!("$ KAPPA_CHAOS_SEED={seed} cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(root())
        .env("CI", "1")
        .env("KAPPA_CHAOS_SEED", seed.to_string())
        .status();
    eprintln!("  ({:.1}s)", started.elapsed().as_secs_f64());
    match status {
        Ok(s) if s.success() => Vec::new(),
        Ok(s) => {
            vec![format!("the interop suites with KAPPA_CHAOS_SEED={seed} ({s}; the output names the test)")]
        }
        Err(e) => vec![format!("cannot run cargo: {e}")],
    }
}

/// Runs `cargo xtask soak interop [ROUNDS]` (see the module docs).
pub(crate) fn interop(args: &[String]) -> Result<(), String> {
    let rounds: u64 = match args.first() {
        Some(s) => s.parse().map_err(|_| format!("ROUNDS must be a number, not {s:?}"))?,
        None => 50,
    };
    let base = std::env::var("KAPPA_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let mut failed = Vec::new();
    for i in 0..rounds {
        failed.extend(interop_round(base.wrapping_add(i)));
    }
    let runs = rounds * INTEROP_SUITES.len() as u64;
    eprintln!(
        "soak interop: {rounds} rounds of {} suites ({runs} suite runs) from seed {base}; {} rounds failed",
        INTEROP_SUITES.len(),
        failed.len()
    );
    for f in &failed {
        eprintln!("  failed: {f}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {rounds} interop rounds failed through the chaos proxy", failed.len()))
    }
}

fn cargo_test_in(package: &str, test: &str, env: &[(&str, String)]) -> Result<(), String> {
    let started = Instant::now();
    let args = ["test", "-p", package, "--test", test, "--", "--nocapture", "--test-threads", "1"];
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

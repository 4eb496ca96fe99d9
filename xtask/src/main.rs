//! Project automation, the one entry point for CI and maintenance tasks.
//!
//! ```text
//! cargo xtask ci            fmt check, tidy, clippy -D warnings, tests (with fuzz corpus
//!                           replay and JS interop), doc build
//! cargo xtask tidy          docs/architecture.md's dependency diagram against `cargo
//!                           metadata`: fails on an edge it does not show; see tidy.rs
//! cargo xtask fuzz [SECS]   run every cargo-fuzz target for SECS seconds each (default 60)
//! cargo xtask bench [log | replication | postgres | cli [N] | seed]
//!                           criterion benches and the JS figures measured side by side,
//!                           written to docs/benchmarks.md (log: only the kappa-log
//!                           section, with the CLI loops; replication: only the
//!                           replication rows of both wire generations, printed;
//!                           postgres: only the PostgreSQL rows, printed; cli: only
//!                           `kappa append -` of N lines and the first `views`, printed;
//!                           seed: sync 1,000 × 1,000 entries, open 10,000 feeds and
//!                           serve 100 peers, printed)
//! cargo xtask soak <CAMPAIGN> [N]
//!                           long randomized campaigns (kills, damage, all; exchange and
//!                           interop in soak_exchange.rs); see soak.rs
//! ```

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod bench;
mod soak;
mod soak_exchange;
mod tidy;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("soak") if args.get(1).map(String::as_str) == Some("exchange") => soak_exchange::run(&args[2..]),
        Some("soak") if args.get(1).map(String::as_str) == Some("interop") => {
            soak_exchange::interop(&args[2..])
        }
        Some("ci") => ci(),
        Some("tidy") => tidy::run(),
        Some("fuzz") => fuzz(args.get(1).map(String::as_str)),
        Some("bench") => bench::run_bench(&args[1..]),
        Some("soak") => soak::soak(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | tidy | fuzz [SECONDS] | bench [log | replication | postgres] | soak CAMPAIGN [N]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    let dir = env::var("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|_| ".".into());
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// Runs a command in the repository root, failing on a non-zero exit.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let started = Instant::now();
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    eprintln!("  ({:.1}s)", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed with {status}", args.join(" ")))
    }
}

fn ci() -> Result<(), String> {
    // A full run builds the workspace in six feature sets plus the fuzz
    // workspace; full debug info and incremental caches would take most of the
    // disk a small CI machine has (a clean run once failed with ENOSPC). Line
    // tables keep backtraces' file and line; a user's own settings win.
    for (var, value) in [("CARGO_PROFILE_DEV_DEBUG", "line-tables-only"), ("CARGO_INCREMENTAL", "0")] {
        if env::var_os(var).is_none() {
            env::set_var(var, value);
        }
    }
    // Free space up front, so a run that dies of a full disk says so early.
    let _ = run("df", &["-h", "."]);
    // The JS harness the interop tests run (installs only what is missing).
    run("bash", &["interop/setup.sh"])?;
    run("cargo", &["fmt", "--all", "--check"])?;
    eprintln!("$ cargo xtask tidy");
    tidy::run()?;
    run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    // The facade as an embedded application gets it: default features, so no
    // database client (the workspace build unifies features and turns it on).
    run("cargo", &["clippy", "-p", "kappa-core", "--lib", "--", "-D", "warnings"])?;
    // The layers build without what sits above them: the sans-IO state machine
    // without its async driver, and an indexer without the network stack.
    run(
        "cargo",
        &["clippy", "-p", "kappa-protocol", "--no-default-features", "--lib", "--", "-D", "warnings"],
    )?;
    run("cargo", &["clippy", "-p", "kappa-index", "--no-default-features", "--lib", "--", "-D", "warnings"])?;
    lacks_dependencies("kappa-protocol", &["futures", "futures-timer"])?;
    lacks_dependencies(
        "kappa-index",
        &["kappa-multifeed", "kappa-protocol", "x25519-dalek", "chacha20poly1305"],
    )?;
    // The libraries as a user gets them: no `fuzzing` entry points or test
    // hooks (a workspace build turns those on for the tests that use them).
    run(
        "cargo",
        &[
            "clippy",
            "-p",
            "kappa-log",
            "-p",
            "kappa-protocol",
            "-p",
            "kappa-multifeed",
            "-p",
            "kappa-discovery",
            "-p",
            "kappa-view-postgres",
            "--lib",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The cargo-fuzz targets (a workspace of their own) still compile against
    // the crates' `fuzzing` features.
    run("cargo", &["check", "--manifest-path", "fuzz/Cargo.toml", "--bins"])?;
    // The tests include the fuzz corpus replays (tests/fuzz_corpus.rs in each crate)
    // and the JS interop tests (which need interop/setup.sh to have run).
    run("cargo", &["test", "--workspace", "--all-targets"])?;
    run("cargo", &["test", "--workspace", "--doc"])?;
    // A seeded sample of `soak interop`: the JS interop suites once through
    // chaos proxies.
    let failed = soak_exchange::interop_round(0x13);
    if !failed.is_empty() {
        return Err(format!("interop through the chaos proxy failed: {}", failed.join("; ")));
    }
    env::set_var("RUSTDOCFLAGS", "-D warnings");
    run("cargo", &["doc", "--workspace", "--no-deps"])?;
    Ok(())
}

/// Fails if `krate`, built with `--no-default-features`, has any of `absent`
/// among its normal dependencies, direct or not (from `cargo tree`).
fn lacks_dependencies(krate: &str, absent: &[&str]) -> Result<(), String> {
    let args = ["tree", "-p", krate, "--no-default-features", "-e", "normal", "--prefix", "none"];
    eprintln!("$ cargo {}", args.join(" "));
    let out = Command::new("cargo")
        .args(args)
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!("`cargo {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let found: Vec<&str> = absent
        .iter()
        .copied()
        .filter(|dep| tree.lines().any(|l| l.split_whitespace().next() == Some(*dep)))
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!("{krate} without default features still depends on {}", found.join(", ")))
    }
}

/// The fuzz targets, by name (see `fuzz/fuzz_targets/`).
const FUZZ_TARGETS: &[&str] = &[
    "open_feed",
    "verify_proof",
    "bitfield",
    "frame_decoder",
    "message_decoders",
    "handshake_responder",
    "handshake_initiator",
    "session",
    "multifeed_extensions",
    "postgres_client",
    "mdns_packet",
];

fn fuzz(seconds: Option<&str>) -> Result<(), String> {
    let secs = seconds.unwrap_or("60");
    secs.parse::<u64>().map_err(|_| format!("not a number of seconds: {secs}"))?;
    for target in FUZZ_TARGETS {
        let time = format!("-max_total_time={secs}");
        run("cargo", &["fuzz", "run", "--fuzz-dir", "fuzz", "-s", "none", target, "--", &time])?;
    }
    Ok(())
}

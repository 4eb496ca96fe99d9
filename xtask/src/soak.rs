//! `cargo xtask soak <campaign> [N]`: long randomized campaigns that the test
//! suite runs only a seeded sample of. Each runs its test with a fresh seed
//! (printed, and taken from `KAPPA_SOAK_SEED` if set, to replay a failure).
//!
//! ```text
//! cargo xtask soak kills [N]    SIGKILL at random moments of the first and later `kappa put`,
//!                               `append -`, `table`, `sync` and `serve`: N kills each (default 100)
//! cargo xtask soak damage [N]   N single-byte flips in views.redb (default 200)
//! cargo xtask soak feeds [N]    a database of N feeds (default 10,000) served, synced and
//!                               checked under `ulimit -n 256`, every entry compared
//! cargo xtask soak all          every campaign with its default
//! ```
//!
//! A campaign is a name, a test to run and the environment variable that sets
//! its size: add one to `CAMPAIGNS`.

use std::env;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::run;

struct Campaign {
    name: &'static str,
    /// `cargo test` arguments.
    test: &'static [&'static str],
    /// The environment variable that sets N, and its default.
    size_var: &'static str,
    default: u64,
}

const CAMPAIGNS: &[Campaign] = &[
    Campaign {
        name: "kills",
        test: &["-p", "kappa-cli", "--test", "kills"],
        size_var: "KAPPA_SOAK_KILLS",
        default: 100,
    },
    Campaign {
        name: "damage",
        test: &["-p", "kappa-cli", "--test", "view_damage"],
        size_var: "KAPPA_SOAK_DAMAGE",
        default: 200,
    },
    Campaign {
        name: "feeds",
        test: &["-p", "kappa-cli", "--test", "many_feeds"],
        size_var: "KAPPA_SOAK_FEEDS",
        default: 10_000,
    },
];

pub(crate) fn soak(args: &[String]) -> Result<(), String> {
    let names: Vec<&str> = CAMPAIGNS.iter().map(|c| c.name).collect();
    let usage = || format!("usage: cargo xtask soak <{} | all> [N]", names.join(" | "));
    let which = args.first().ok_or_else(usage)?;
    let size = match args.get(1) {
        Some(n) => Some(n.parse::<u64>().map_err(|_| format!("not a number: {n}; {}", usage()))?),
        None => None,
    };
    let chosen: Vec<&Campaign> = match which.as_str() {
        "all" => CAMPAIGNS.iter().collect(),
        name => vec![CAMPAIGNS.iter().find(|c| c.name == name).ok_or_else(usage)?],
    };
    let seed = match env::var("KAPPA_SOAK_SEED") {
        Ok(s) => s,
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64).to_string(),
    };
    for c in chosen {
        let n = size.unwrap_or(c.default);
        eprintln!("soak {}: {}={n} KAPPA_SOAK_SEED={seed}", c.name, c.size_var);
        env::set_var(c.size_var, n.to_string());
        env::set_var("KAPPA_SOAK_SEED", &seed);
        let mut args = vec!["test"];
        args.extend_from_slice(c.test);
        args.extend_from_slice(&["--", "--nocapture"]);
        run("cargo", &args)?;
    }
    Ok(())
}

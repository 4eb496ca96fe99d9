//! `cargo xtask bench`: the criterion benches and the JS stack measured side by
//! side in the same run, written to `docs/benchmarks.md` as ratios.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{root, run};

/// One headline figure: a criterion bench and the JS figure it is compared with.
struct Figure {
    what: &'static str,
    /// `group/function/parameter` under `target/criterion/`.
    criterion: &'static str,
    /// Elements per iteration of the criterion bench.
    per_iter: f64,
    /// Key in the JS bench's JSON output.
    js_key: &'static str,
    unit: &'static str,
    target: &'static str,
}

const FIGURES: &[Figure] = &[
    Figure {
        what: "append, batches of 1000, 30-byte entries, file, no fsync",
        criterion: "append/file/batch_1000",
        per_iter: 1000.0,
        js_key: "append_batch_1000_per_s",
        unit: "entries/s",
        target: "≥ 1,000,000",
    },
    Figure {
        what: "append one by one (one signature each), file, no fsync",
        criterion: "append/file/batch_1",
        per_iter: 1.0,
        js_key: "append_single_per_s",
        unit: "entries/s",
        target: "≥ 50,000",
    },
    Figure {
        what: "random get, warm, 100,000-entry feed on file",
        criterion: "get/file/random_warm",
        per_iter: 1.0,
        js_key: "random_get_per_s",
        unit: "reads/s",
        target: "≥ 1,000,000",
    },
];

fn criterion_rate(dir: &Path, f: &Figure) -> Result<f64, String> {
    let path = dir.join(f.criterion).join("new/estimates.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let ns = v["mean"]["point_estimate"].as_f64().ok_or_else(|| format!("{}: no mean", path.display()))?;
    Ok(f.per_iter / (ns * 1e-9))
}

fn js_figures() -> Result<Value, String> {
    run("bash", &["interop/setup.sh"])?;
    eprintln!("$ node interop/bench-hypercore.js --runs 3");
    let out = Command::new("node")
        .args(["interop/bench-hypercore.js", "--runs", "3"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    if !out.status.success() {
        return Err(format!("JS bench failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().ok_or("JS bench printed nothing")?;
    serde_json::from_str(line).map_err(|e| format!("JS bench output {line:?}: {e}"))
}

fn fmt_rate(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.to_owned()))
        .and_then(|l| l.split(':').nth(1).map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores, {cpu}; node {node}")
}

/// Runs the benches and writes `docs/benchmarks.md`.
pub(crate) fn run_bench(_args: &[String]) -> Result<(), String> {
    run("cargo", &["bench", "-p", "kappa-log", "--bench", "feed"])?;
    let js = js_figures()?;
    let dir = root().join("target/criterion");
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Made by `cargo xtask bench` on {date}, {}. Rust figures are criterion means \
         (`crates/*/benches/`); JS figures come from `interop/bench-hypercore.js` (JS \
         hypercore 8.14.0 from the pinned `interop/` stack), run in the same invocation on \
         the same machine. The machine is a shared 2-core VM: expect run-to-run noise of \
         ±20%, more for single appends and JS.\n",
        machine()
    );
    let _ = writeln!(md, "## kappa-log (one feed)\n");
    let _ = writeln!(md, "| workload | kappa-rs | JS hypercore 8 | ratio | target |");
    let _ = writeln!(md, "| --- | --- | --- | --- | --- |");
    for f in FIGURES {
        let rust = criterion_rate(&dir, f)?;
        let js_rate = js[f.js_key].as_f64().ok_or_else(|| format!("JS output lacks {}", f.js_key))?;
        let _ = writeln!(
            md,
            "| {} | {} {} | {} {} | **{:.1}×** | {} |",
            f.what,
            fmt_rate(rust),
            f.unit,
            fmt_rate(js_rate),
            f.unit,
            rust / js_rate,
            f.target
        );
        eprintln!("{}: rust {:.0} js {:.0} ratio {:.1}", f.what, rust, js_rate, rust / js_rate);
    }
    let _ = writeln!(md, "\nJS bench output: `{js}`\n");
    let _ = writeln!(
        md,
        "Notes: entries are 30 bytes; storage is files in a fresh temporary directory, no fsync \
         (both sides). Single appends sign every entry (Ed25519 signing is the floor, about \
         80k/s here). Random gets read one block each through the offset index kept in \
         memory for the contiguous prefix of the feed."
    );
    let path = root().join("docs/benchmarks.md");
    std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

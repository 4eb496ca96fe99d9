//! `kappa-mdns`: announces and/or looks up a topic on the LAN, printing each
//! peer found as `found IP:PORT`. A debugging tool, and the peer process of
//! the network-namespace tests.
//!
//! ```text
//! kappa-mdns announce TOPIC PORT      answer lookups of TOPIC (64 hex) with PORT
//! kappa-mdns lookup TOPIC             print peers of TOPIC
//! kappa-mdns both TOPIC PORT          both
//! options: --requery-ms N (ask again every N to 2N ms), --for-ms N (exit after)
//! ```
//! It also exits when its standard input closes.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use kappa_discovery::{Discovery, LanDiscovery, LanOptions};

fn usage() -> ! {
    eprintln!("usage: kappa-mdns [--requery-ms N] [--for-ms N] announce|lookup|both TOPIC [PORT]");
    std::process::exit(2)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = LanOptions::default();
    let mut until = None;
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        let Some(n) = args.first().and_then(|v| v.parse::<u64>().ok()) else { usage() };
        args.remove(0);
        match flag.as_str() {
            "--requery-ms" => opts = opts.requery(Duration::from_millis(n), Duration::from_millis(2 * n)),
            "--for-ms" => until = Some(Instant::now() + Duration::from_millis(n)),
            _ => usage(),
        }
    }
    let (mode, topic) = match (args.first(), args.get(1)) {
        (Some(m), Some(t)) => (m.as_str(), t),
        _ => usage(),
    };
    let mut key = [0u8; 32];
    if hex::decode_to_slice(topic, &mut key).is_err() {
        usage()
    }
    let port = args.get(2).and_then(|p| p.parse::<u16>().ok());
    let d = match LanDiscovery::new(opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "kappa-mdns: {e}: {}",
                std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
            );
            std::process::exit(1)
        }
    };
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        std::process::exit(0)
    });
    let lookup = matches!(mode, "lookup" | "both");
    if matches!(mode, "announce" | "both") {
        let Some(port) = port else { usage() };
        if let Err(e) = d.announce(key, port) {
            eprintln!("kappa-mdns: {e}");
            std::process::exit(1)
        }
    } else if mode != "lookup" {
        usage()
    }
    let mut found = if lookup { d.lookup(key).ok() } else { None };
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        if until.is_some_and(|u| Instant::now() >= u) {
            std::process::exit(0)
        }
        match found.as_mut() {
            Some(l) => {
                if let Some(addr) = l.next_timeout(Duration::from_millis(100)) {
                    println!("found {addr}");
                    let _ = std::io::stdout().flush();
                }
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

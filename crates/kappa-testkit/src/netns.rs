//! Test LANs in network namespaces: hosts joined by veth pairs to a bridge in
//! a switch namespace, multicast on, a route for 224.0.0.0/4, nothing routed
//! anywhere else. Each LAN's namespace names are unique (process id and a
//! counter), so tests run in parallel; dropping the [`Lan`] deletes them, also
//! when the test panics.
//!
//! Making namespaces needs root (`ip netns`). Where they cannot be made,
//! [`Lan::new`] says so loudly and returns `None` (the test skips), except
//! under CI (`CI` set), where it panics.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A test LAN: `hosts` namespaces on one bridge, host `i` at `10.77.0.(i+1)/24`.
#[derive(Debug)]
pub struct Lan {
    switch: String,
    hosts: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Lan {
    /// Makes a LAN of `hosts` hosts for `test`; `None` (after a loud message)
    /// where namespaces cannot be made outside CI.
    ///
    /// # Panics
    /// Under CI when namespaces cannot be made.
    pub fn new(test: &str, hosts: usize) -> Option<Lan> {
        match Self::try_new(hosts) {
            Ok(lan) => Some(lan),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("{test}: cannot make network namespaces: {e}")
            }
            Err(e) => {
                eprintln!(
                    "\n*** SKIPPED {test}: cannot make network namespaces ({e}); run as root with `ip` ***\n"
                );
                None
            }
        }
    }

    fn try_new(hosts: usize) -> Result<Lan, String> {
        let tag = format!("kt{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let switch = format!("{tag}sw");
        ip(&["netns", "add", &switch])?;
        // From here on, Drop cleans up whatever was made.
        let mut lan = Lan { switch, hosts: Vec::new() };
        let sw = lan.switch.clone();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..hosts {
            let host = format!("{tag}h{i}");
            ip(&["netns", "add", &host])?;
            lan.hosts.push(host.clone());
            let port = format!("p{i}");
            ip(&["-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &host, "addr", "add", &format!("{}/24", Self::addr_of(i)), "dev", "eth0"])?;
            ip(&["-n", &host, "link", "set", "eth0", "multicast", "on", "up"])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
            ip(&["-n", &host, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(lan)
    }

    fn addr_of(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, i as u8 + 1)
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Self::addr_of(i)
    }

    /// Host `i`'s namespace name.
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// A command that runs `program` in host `i` (`ip netns exec`).
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i]]).arg(program);
        c
    }

    /// Takes host `i`'s link down (`false`) or up again (`true`).
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), String> {
        ip(&["-n", &self.switch, "link", "set", &format!("p{i}"), if up { "up" } else { "down" }])
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

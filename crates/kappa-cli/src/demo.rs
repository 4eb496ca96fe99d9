//! `kappa demo`: the whole story with real components, in a temporary folder.

use std::path::Path;
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use kappa_core::view::sum::SumView;
use kappa_core::Kappa;
use serde_json::{json, Value};

use crate::commands::{get_lines, key_json, parse_value, put_entry, table_lines};
use crate::db::{self, Db};
use crate::error::{CliError, Result};
use crate::net::{self, ServeEvent, ServeLimits};
use crate::output::{short_id, Out};

/// Prints the story: text, or one JSON object per step, note and table.
struct Narrator<'a> {
    out: &'a Out,
    step: usize,
}

impl Narrator<'_> {
    fn step(&mut self, title: &str) -> Result<()> {
        self.step += 1;
        let n = self.step;
        self.out.text("")?;
        self.out.emit(format!("== {n}. {title}"), || json!({"step": n, "title": title}))
    }

    fn say(&self, text: impl AsRef<str>) -> Result<()> {
        let text = text.as_ref();
        self.out.emit(text, || json!({"note": text}))
    }

    fn cmd(&self, who: &str, cmd: &str) -> Result<()> {
        self.out.emit(format!("{who}$ kappa {cmd}"), || json!({"db": who, "command": cmd}))
    }

    async fn table(&self, who: &str, db: &Db) -> Result<()> {
        let kv = db.kv()?;
        kv.ready().await?;
        let all = kv.all()?;
        if self.out.json {
            let rows: Vec<Value> = all.iter().map(|(k, h)| key_json(k, h)).collect();
            return self.out.json_line(&json!({"db": who, "table": rows}));
        }
        self.out.text(format!("{who}$ kappa table"))?;
        for line in table_lines(&all) {
            self.out.text(format!("    {line}"))?;
        }
        Ok(())
    }

    async fn put(&self, who: &str, db: &Db, key: &str, value: &str) -> Result<()> {
        let shown = if value.contains(' ') { format!("{value:?}") } else { value.to_owned() };
        self.cmd(who, &format!("put {key} {shown}"))?;
        let kv = db.kv()?;
        put_entry(db, &kv, key, &parse_value(value), false).await?;
        Ok(())
    }

    async fn get(&self, who: &str, db: &Db, key: &str) -> Result<()> {
        let kv = db.kv()?;
        kv.ready().await?;
        let heads = kv.get(key)?;
        if self.out.json {
            let mut v = key_json(key, &heads);
            v["db"] = json!(who);
            return self.out.json_line(&v);
        }
        self.cmd(who, &format!("get {key}"))?;
        for line in get_lines(key, &heads) {
            self.out.text(format!("    {line}"))?;
        }
        Ok(())
    }
}

/// Waits for the server's report of the session that just ended.
async fn server_report(
    n: &Narrator<'_>,
    kappa: &Kappa,
    events: &mut mpsc::UnboundedReceiver<ServeEvent>,
) -> Result<()> {
    loop {
        let ev = async_std::future::timeout(Duration::from_secs(30), events.next())
            .await
            .map_err(|_| CliError::Runtime("demo: the server did not report the session".into()))?;
        match ev {
            Some(ServeEvent::Done { peer, report }) => {
                n.say(format!(
                    "alice (serving): session with {peer} done: {}",
                    net::report_summary(&report)
                ))?;
                for line in net::report_feed_lines(kappa, &report) {
                    n.out.text(format!("  {line}"))?;
                }
                return Ok(());
            }
            Some(ServeEvent::Failed { peer, error }) => {
                return Err(CliError::Runtime(format!("demo: alice's session with {peer} failed: {error}")))
            }
            Some(ServeEvent::Connected { peer }) => {
                n.say(format!("alice (serving): peer {peer} connected"))?
            }
            Some(_) => {}
            None => return Err(CliError::Runtime("demo: the server stopped early".into())),
        }
    }
}

/// Syncs bob with alice's server and prints both sides' reports.
async fn sync(
    n: &Narrator<'_>,
    alice: &Kappa,
    bob: &Db,
    addr: &str,
    events: &mut mpsc::UnboundedReceiver<ServeEvent>,
) -> Result<()> {
    n.cmd("bob", &format!("sync {addr}"))?;
    let stream = net::connect(addr, Duration::from_secs(10)).await?;
    let report = net::sync_stream(
        &bob.kappa,
        stream,
        addr,
        kappa_core::protocol::Selection::All,
        net::PeerLimits::default(),
        false,
    )
    .await?;
    n.say(format!("bob: synced with {addr}: {}", net::report_summary(&report)))?;
    for line in net::report_feed_lines(&bob.kappa, &report) {
        n.out.text(format!("  {line}"))?;
    }
    server_report(n, alice, events).await
}

/// A count view: version 1 counts every entry; version 2 only writes of `monday`.
async fn count(n: &Narrator<'_>, dir: &Path, key: [u8; 32], version: u64) -> Result<f64> {
    let db = db::open(dir, Some(key), db::Views::Stored)?;
    let view = if version == 1 {
        db.kappa.use_view("count", 1, |s| SumView::with(s, |_| Some(1.0)))?
    } else {
        db.kappa.use_view("count", version, |s| {
            SumView::with(s, |e| {
                let v: Value = e.json().ok()?;
                (v.get("key")? == "monday").then_some(1.0)
            })
        })?
    };
    view.ready().await?;
    let total = view.get()?;
    let st = view.state();
    n.say(format!(
        "alice: view \"count\" version {version}: {total} (indexed {}/{} entries of {} logs)",
        st.indexed,
        st.total,
        db.kappa.feeds().len()
    ))?;
    drop(view);
    db.close()?;
    Ok(total)
}

/// `kappa demo`.
pub(crate) async fn run(out: &Out) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("kappa-demo-")
        .tempdir()
        .map_err(|e| CliError::Runtime(format!("cannot create a temporary folder: {e}")))?;
    let mut n = Narrator { out, step: 0 };
    let key = db::random_key();
    let dir_a = tmp.path().join("alice");
    let dir_b = tmp.path().join("bob");
    n.say("kappa demo: two friends keep a table of what they eat, each on their own device.")?;
    n.say(format!("Everything happens in {} (removed at the end).", tmp.path().display()))?;

    n.step("Two databases, each writing to its own signed, append-only log")?;
    let alice = db::open(&dir_a, Some(key), db::Views::Stored)?;
    let bob = db::open(&dir_b, Some(key), db::Views::Stored)?;
    n.say(format!(
        "Both use the shared key {}… (peers must know it to replicate; `kappa key` prints it).",
        &hex::encode(key)[..16]
    ))?;
    n.put("alice", &alice, "monday", "soup").await?;
    n.put("alice", &alice, "tuesday", "sandwich").await?;
    n.put("bob", &bob, "monday", "salad").await?;
    n.put("bob", &bob, "wednesday", "pizza").await?;
    n.say("Each put appends {\"key\", \"value\", \"links\"} to the writer's log; the kv view turns logs into a table.")?;
    n.table("alice", &alice).await?;
    n.table("bob", &bob).await?;

    n.step("Replication over TCP on loopback: alice serves (live), bob syncs (once)")?;
    let listener = net::bind("127.0.0.1:0").await?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Runtime(format!("cannot read the listening address: {e}")))?
        .to_string();
    n.cmd("alice", &format!("serve --listen {addr}"))?;
    let (ev_tx, mut events) = mpsc::unbounded();
    let server = async_std::task::spawn(net::serve_loop(
        alice.kappa.clone(),
        listener,
        ServeLimits { max_peers: Some(2), ..ServeLimits::default() },
        None,
        move |ev| {
            let _ = ev_tx.unbounded_send(ev);
            Ok(())
        },
    ));
    sync(&n, &alice.kappa, &bob, &addr, &mut events).await?;
    n.say("Both now hold both logs (entries are verified against the writer's signature).")?;
    n.table("alice", &alice).await?;
    n.table("bob", &bob).await?;
    n.say("monday was written on both sides before they met: a fork. The kv view keeps both heads,")?;
    n.say("the same on both sides, whatever order entries arrived in.")?;
    n.get("bob", &bob, "monday").await?;

    n.step("Merging the fork: a put links every current head")?;
    n.put("bob", &bob, "monday", "soup and salad").await?;
    sync(&n, &alice.kappa, &bob, &addr, &mut events).await?;
    n.get("alice", &alice, "monday").await?;
    n.table("alice", &alice).await?;
    n.table("bob", &bob).await?;
    server.await?;

    n.step("The logs behind the table")?;
    n.cmd("alice", "feeds")?;
    for (_, name, feed) in alice.kappa.multifeed().feed_infos() {
        let k = feed.public_key().to_hex();
        let line = format!(
            "    {}  {:<6}  {} entries{}",
            short_id(&k),
            name.clone().unwrap_or_else(|| "remote".into()),
            feed.len(),
            if feed.is_writable() { ", writable" } else { "" }
        );
        out.emit(line, || json!({"db": "alice", "feed": k, "name": name, "length": feed.len()}))?;
    }
    alice.close()?;
    bob.close()?;

    n.step("Views are versioned: bump the version and the view is rebuilt from every log")?;
    let v1 = count(&n, &dir_a, key, 1).await?;
    n.say("Reopened with version 2, whose map counts only writes of monday:")?;
    let v2 = count(&n, &dir_a, key, 2).await?;
    n.say(format!(
        "The stored rows were made by version 1, so version 2 cleared them and re-indexed every entry ({v1} → {v2})."
    ))?;

    n.step("Your turn")?;
    n.say("kappa put KEY VALUE · kappa get KEY · kappa table · kappa serve --listen 0.0.0.0:7000 · kappa sync HOST:7000")?;
    n.say("(`kappa --help` lists every command; --dir picks the database, default ./kappa-data.)")?;
    Ok(())
}

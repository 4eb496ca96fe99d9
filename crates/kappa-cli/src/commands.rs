//! The database commands (everything but `serve`, `sync` and `demo`).

use kappa_core::log::PackedBlocks;
use kappa_core::view::kv::{Head, KvView};
use kappa_core::{IndexState, SharedFeed, Status, ValueEncoding, ViewHandle};
use serde_json::{json, Value};

use crate::db::{Db, KV_VERSION, WRITER};
use crate::error::{CliError, Result};
use crate::output::{columns, compact, ellipsize, escape, short_id, Out};
use crate::progress;

impl From<kappa_core::view::ViewError> for CliError {
    fn from(e: kappa_core::view::ViewError) -> Self {
        CliError::Runtime(format!("kv view: {e}"))
    }
}

/// What a head holds: the entry's `value` field, or the whole entry if it has
/// none (entries other apps wrote), or its text if it is not JSON.
pub(crate) fn head_value(h: &Head) -> Value {
    match h.json::<Value>() {
        Ok(Value::Object(mut o)) => match o.remove("value") {
            Some(v) => v,
            None => Value::Object(o),
        },
        Ok(other) => other,
        Err(_) => Value::String(String::from_utf8_lossy(&h.value).trim_end().to_owned()),
    }
}

/// A key with its heads, as JSON.
pub(crate) fn key_json(key: &str, heads: &[Head]) -> Value {
    let hs: Vec<Value> = heads.iter().map(|h| json!({"id": h.id, "value": head_value(h)})).collect();
    json!({"key": key, "forked": heads.len() > 1, "heads": hs})
}

/// `VALUE` as given on the command line: JSON if it parses, else a string.
pub(crate) fn parse_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// A finished `put`.
pub(crate) struct Put {
    /// The new entry's id.
    pub(crate) id: String,
    /// The heads it replaced.
    pub(crate) links: Vec<String>,
}

/// Appends `{key, value, links}` linking `key`'s current heads.
pub(crate) async fn put_entry(
    db: &Db,
    kv: &ViewHandle<KvView>,
    key: &str,
    value: &Value,
    bars: bool,
) -> Result<Put> {
    progress::index(kv, bars).await?;
    let links: Vec<String> = kv.get(key)?.into_iter().map(|h| h.id).collect();
    let entry = json!({"key": key, "value": value, "links": links});
    let w = db.kappa.writer(WRITER)?;
    let seq = w.append(&entry)?;
    // Indexed before the command ends, so the next command finds the view
    // current: a `get` or `table` then reads it without writing. The entry
    // is stored either way: a failure here is only worth a warning.
    if let Err(e) = progress::index(kv, bars).await {
        eprintln!("kappa: warning: the entry is stored, but indexing it failed: {}", escape(&e.to_string()));
    }
    Ok(Put { id: format!("{}@{seq}", w.key().to_hex()), links })
}

/// `kappa put KEY VALUE`.
pub(crate) async fn put(db: &Db, out: &Out, key: &str, value: &str) -> Result<()> {
    let value = parse_value(value);
    let kv = db.kv()?;
    let done = put_entry(db, &kv, key, &value, out.bars()).await?;
    let merged = match done.links.len() {
        0 => String::new(),
        1 => " (replaces 1 head)".to_owned(),
        n => format!(" (merges {n} heads)"),
    };
    out.emit(
        format!("{} = {}{merged}  id {}", escape(key), compact(&value), done.id),
        || json!({"key": key, "value": value, "id": done.id, "links": done.links}),
    )
}

/// The lines `get` prints for `key` in text mode.
pub(crate) fn get_lines(key: &str, heads: &[Head]) -> Vec<String> {
    // Keys and values come from peers: no control character reaches the terminal.
    let key = escape(key);
    match heads {
        [] => vec![format!("{key}: not set")],
        [h] => vec![format!("{key} = {}  id {}", compact(&head_value(h)), h.id)],
        hs => {
            let mut lines = vec![format!("{key}: forked ({} heads); the next put merges them", hs.len())];
            let rows: Vec<Vec<String>> = hs
                .iter()
                .map(|h| vec![format!("  {}", compact(&head_value(h))), format!("id {}", h.id)])
                .collect();
            lines.extend(columns(&rows));
            lines
        }
    }
}

/// `kappa get KEY`.
pub(crate) async fn get(db: &Db, out: &Out, key: &str) -> Result<()> {
    let kv = db.kv()?;
    progress::index(&kv, out.bars()).await?;
    let heads = kv.get(key)?;
    if out.json {
        return out.json_line(&key_json(key, &heads));
    }
    for line in get_lines(key, &heads) {
        out.text(line)?;
    }
    Ok(())
}

/// The kv view as text lines.
pub(crate) fn table_lines(all: &[(String, Vec<Head>)]) -> Vec<String> {
    if all.is_empty() {
        return vec!["(no keys yet: add one with `kappa put KEY VALUE`)".to_owned()];
    }
    let mut rows = vec![vec!["KEY".to_owned(), "VALUE".to_owned(), "ID".to_owned(), String::new()]];
    for (key, heads) in all {
        for (i, h) in heads.iter().enumerate() {
            // Escaped before measuring, so the columns line up.
            let k = if i == 0 { ellipsize(&escape(key), 30) } else { String::new() };
            let note = if i == 0 && heads.len() > 1 {
                format!("forked ({} heads)", heads.len())
            } else {
                String::new()
            };
            rows.push(vec![k, ellipsize(&escape(&compact(&head_value(h))), 50), short_id(&h.id), note]);
        }
    }
    columns(&rows)
}

/// `kappa table`.
pub(crate) async fn table(db: &Db, out: &Out) -> Result<()> {
    let kv = db.kv()?;
    progress::index(&kv, out.bars()).await?;
    let all = kv.all()?;
    if out.json {
        for (key, heads) in &all {
            out.json_line(&key_json(key, heads))?;
        }
        return Ok(());
    }
    for line in table_lines(&all) {
        out.text(line)?;
    }
    Ok(())
}

/// Parses the entries of `kappa append` into blocks: the argument, or with `-`
/// every non-blank line of standard input. Each is encoded as JS writes it
/// (`JSON.stringify` of the parsed value, plus `\n`) straight from its text,
/// without a value tree, into one buffer (a line at a time: the input is never
/// held whole), so a million lines cost little more than reading them.
pub(crate) fn parse_entries(arg: &str) -> Result<PackedBlocks> {
    if arg != "-" {
        let mut blocks = PackedBlocks::new();
        blocks.push_with(|out| encode_entry(arg, None, out))?;
        return Ok(blocks);
    }
    read_entries(std::io::stdin().lock())
}

/// The lines of `input` as blocks (see [`parse_entries`]).
fn read_entries(mut input: impl std::io::BufRead) -> Result<PackedBlocks> {
    let mut blocks = PackedBlocks::new();
    let mut line = String::new();
    for n in 1.. {
        line.clear();
        let read = input.read_line(&mut line).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => {
                CliError::Usage(format!("line {n} of standard input is not UTF-8"))
            }
            _ => CliError::Usage(format!("reading standard input: {e}")),
        })?;
        if read == 0 {
            break;
        }
        let text = line.strip_suffix('\n').unwrap_or(&line);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.trim().is_empty() {
            continue;
        }
        blocks.push_with(|out| encode_entry(text, Some(n), out))?;
    }
    Ok(blocks)
}

/// Encodes one entry of `kappa append` onto `out`; `line` names it in the error.
fn encode_entry(text: &str, line: Option<usize>, out: &mut Vec<u8>) -> Result<()> {
    ValueEncoding::Json.encode_json_text_into(text, out).map_err(|e| {
        let reason = match e {
            kappa_core::log::LogError::Encoding(reason) => reason,
            other => other.to_string(),
        };
        match line {
            Some(n) => CliError::Usage(format!("malformed JSON entry on line {n}: {reason}")),
            None => CliError::Usage(format!("malformed JSON entry: {reason}")),
        }
    })
}

/// `kappa append` (the entries are parsed and encoded before the database is
/// opened, as JSON blocks).
pub(crate) fn append(db: &Db, out: &Out, blocks: PackedBlocks) -> Result<()> {
    let w = db.kappa.writer(WRITER)?;
    let feed = w.key().to_hex();
    if blocks.is_empty() {
        return out.text("nothing to append");
    }
    // Every database the CLI opens is JSON (kappa-core's default encoding; a
    // feed's encoding is not kept on disk), so the blocks go in as they are,
    // after whatever the feed already holds. A writer of another encoding
    // would get blocks it misreads: refused, not re-encoded.
    if w.encoding() != ValueEncoding::Json {
        return Err(CliError::Runtime(format!(
            "the local writer encodes {:?}, not JSON: kappa append writes JSON blocks only",
            w.encoding()
        )));
    }
    let seqs = w.append_packed(blocks)?;
    let n = seqs.end - seqs.start;
    if n == 1 {
        let id = format!("{feed}@{}", seqs.start);
        return out.emit(format!("appended {id}"), || json!({"id": id, "feed": feed, "seq": seqs.start}));
    }
    if out.json {
        for seq in seqs {
            out.json_line(&json!({"id": format!("{feed}@{seq}"), "feed": feed, "seq": seq}))?;
        }
        return Ok(());
    }
    out.text(format!("appended {n} entries: {feed}@{}..{}", seqs.start, seqs.end - 1))
}

/// The feed FEED names: its key, a unique prefix of it, or its local name.
fn resolve_feed(db: &Db, spec: &str) -> Result<SharedFeed> {
    let infos = db.kappa.multifeed().feed_infos();
    if let Some((_, _, f)) = infos.iter().find(|(_, name, _)| name.as_deref() == Some(spec)) {
        return Ok(f.clone());
    }
    let lower = spec.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) || lower.len() > 64 {
        return Err(CliError::Usage(format!(
            "unknown feed {spec:?}: not a local feed name nor a hex key (see `kappa feeds`)"
        )));
    }
    let matches: Vec<&SharedFeed> =
        infos.iter().map(|(_, _, f)| f).filter(|f| f.public_key().to_hex().starts_with(&lower)).collect();
    match matches.as_slice() {
        [f] => Ok((*f).clone()),
        [] => Err(CliError::Usage(format!(
            "unknown feed {spec:?}: no feed's key starts with it (see `kappa feeds`)"
        ))),
        many => Err(CliError::Usage(format!(
            "ambiguous feed {spec:?}: {} feeds' keys start with it; give more digits",
            many.len()
        ))),
    }
}

/// `kappa log [FEED]`.
pub(crate) fn log(db: &Db, out: &Out, feed: Option<&str>) -> Result<()> {
    let feed = match feed {
        Some(spec) => resolve_feed(db, spec)?,
        None => {
            match db.kappa.multifeed().feed_infos().into_iter().find(|(_, n, _)| n.as_deref() == Some(WRITER))
            {
                Some((_, _, f)) => f,
                None => {
                    return out.text("(the local log is empty: nothing was written here yet)");
                }
            }
        }
    };
    let hex = feed.public_key().to_hex();
    let name = db.kappa.multifeed().name_of(feed.public_key());
    let len = feed.len();
    out.text(format!(
        "feed {hex} ({}{}), {len} entries",
        name.as_deref().unwrap_or("remote"),
        if feed.is_writable() { ", writable" } else { "" }
    ))?;
    for seq in 0..len {
        let stored = feed.get(seq).map_err(|e| CliError::Runtime(format!("reading {hex}@{seq}: {e}")))?;
        let id = format!("{hex}@{seq}");
        match stored {
            None => out.emit(
                format!("{seq:>6}  (not downloaded)"),
                || json!({"id": id, "feed": hex, "seq": seq, "downloaded": false}),
            )?,
            Some(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => out.emit(
                    format!("{seq:>6}  {}", compact(&v)),
                    || json!({"id": id, "feed": hex, "seq": seq, "value": v}),
                )?,
                Err(_) => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    out.emit(
                        format!("{seq:>6}  (not JSON) \"{}\"", crate::output::escape_bytes(&bytes)),
                        || json!({"id": id, "feed": hex, "seq": seq, "raw": text}),
                    )?
                }
            },
        }
    }
    Ok(())
}

/// `kappa feeds`.
pub(crate) fn feeds(db: &Db, out: &Out) -> Result<()> {
    let infos = db.kappa.multifeed().feed_infos();
    let damaged = db.kappa.multifeed().damaged_feeds();
    let blocked = db.kappa.multifeed().blocked_feeds();
    let policy = db.kappa.policy();
    let mut rows = vec![vec![
        "KEY".into(),
        "NAME".into(),
        "LENGTH".into(),
        "DOWNLOADED".into(),
        "STATE".into(),
        "POLICY".into(),
        "WRITABLE".into(),
    ]];
    for (_, name, feed) in &infos {
        let (len, have, state) = {
            let f = feed.lock();
            let r = f.recovery();
            let state = if let Some(signed) = r.unproven_length {
                format!("damaged: signed {signed}, proves {} (kappa repair)", f.len())
            } else if r.secret_key.is_some() {
                "damaged: secret key lost (read-only)".to_owned()
            } else if f.is_writable() && !f.is_complete() {
                "damaged: entries lost (kappa repair --from ADDR)".to_owned()
            } else {
                "ok".to_owned()
            };
            (f.len(), f.downloaded(0..f.len()), state)
        };
        let key = feed.public_key().to_hex();
        let writable = feed.is_writable();
        let feed_policy = policy.get(feed.public_key()).map(kappa_core::FeedPolicy::as_str);
        out.json_line(&json!({
            "key": key, "name": name, "length": len, "downloaded": have, "writable": writable, "state": state,
            "policy": feed_policy,
        }))?;
        rows.push(vec![
            key,
            name.as_deref().map(|n| escape(n).into_owned()).unwrap_or_else(|| "-".into()),
            len.to_string(),
            have.to_string(),
            state,
            feed_policy.unwrap_or("-").into(),
            if writable { "yes".into() } else { "no".into() },
        ]);
    }
    // Blocked feeds are not in the set: their key is all that is left.
    for (key, dir) in &blocked {
        let key = key.to_hex();
        let state = match dir {
            Some(d) => format!("blocked: entries deleted (folder {d} keeps the key)"),
            None => "blocked: never held here".to_owned(),
        };
        out.json_line(&json!({"key": key, "dir": dir, "state": state, "policy": "blocked"}))?;
        rows.push(vec![key, "-".into(), "-".into(), "-".into(), state, "blocked".into(), "no".into()]);
    }
    // Hidden feeds this database does not hold yet.
    for key in policy.hidden().iter().filter(|k| db.kappa.feed(k).is_none()) {
        let key = key.to_hex();
        let state = "hidden: not held here yet".to_owned();
        out.json_line(&json!({"key": key, "state": state, "policy": "hidden"}))?;
        rows.push(vec![key, "-".into(), "-".into(), "-".into(), state, "hidden".into(), "-".into()]);
    }
    for d in &damaged {
        let state = format!("damaged: cannot be opened ({})", d.error);
        out.json_line(&json!({"dir": d.dir, "name": d.name, "state": state}))?;
        rows.push(vec![
            format!("(folder {})", d.dir),
            d.name.as_deref().map(|n| escape(n).into_owned()).unwrap_or_else(|| "-".into()),
            "-".into(),
            "-".into(),
            state,
            "-".into(),
            "-".into(),
        ]);
    }
    if infos.is_empty() && damaged.is_empty() && policy.is_empty() {
        return out.text("(no feeds yet: `kappa put` creates the local one, `kappa sync` brings peers')");
    }
    for line in columns(&rows) {
        out.text(line)?;
    }
    Ok(())
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Idle => "idle",
        Status::Indexing => "indexing",
        Status::Paused => "paused",
        Status::Error => "error",
    }
}

/// One view's state as JSON.
fn view_json(name: &str, version: u64, st: &IndexState) -> Value {
    json!({
        "name": name,
        "version": version,
        "status": status_name(st.status),
        "indexed": st.indexed,
        "total": st.total,
        "error": st.error.as_ref().map(|e| e.to_string()),
        "rebuild": st.rebuild.as_ref().map(|r| json!({
            "reason": r.reason,
            "live_version": r.live_version,
            "live_indexed": r.live_indexed,
        })),
    })
}

/// The table rows of one view for `kappa views`: one row, or, while it is
/// rebuilt beside its live rows, the live version (what readers see) and
/// the rebuild under it.
fn view_rows(name: &str, version: u64, st: &IndexState) -> Vec<Vec<String>> {
    let pct = st.indexed.saturating_mul(100).checked_div(st.total).unwrap_or(100);
    let progress = format!("{}/{} ({pct}%)", st.indexed, st.total);
    let error = st.error.as_ref().map(|e| e.to_string()).unwrap_or_default();
    match &st.rebuild {
        None => {
            vec![vec![name.to_owned(), version.to_string(), status_name(st.status).into(), progress, error]]
        }
        Some(r) => vec![
            vec![
                name.to_owned(),
                r.live_version.map_or("?".to_owned(), |v| v.to_string()),
                "live".into(),
                format!("{} entries (readers see these until the swap)", r.live_indexed),
                String::new(),
            ],
            vec![
                String::new(),
                version.to_string(),
                format!("rebuilding ({})", status_name(st.status)),
                format!("{progress}: {}", r.reason),
                error,
            ],
        ],
    }
}

/// `kappa views`.
pub(crate) async fn views(db: &Db, out: &Out, no_wait: bool) -> Result<()> {
    let kv = db.kv()?;
    if !no_wait {
        progress::index(&kv, out.bars()).await?;
        // Everything is indexed; the indexer says so (idle) a moment later.
        for _ in 0..200 {
            if kv.state().status != Status::Indexing {
                break;
            }
            async_std::task::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let mut rows =
        vec![vec!["VIEW".into(), "VERSION".into(), "STATUS".into(), "INDEXED".into(), "ERROR".into()]];
    for (name, st) in db.kappa.view_states() {
        out.json_line(&view_json(&name, KV_VERSION, &st))?;
        rows.extend(view_rows(&name, KV_VERSION, &st));
    }
    for line in columns(&rows) {
        out.text(line)?;
    }
    Ok(())
}

/// `kappa key`.
pub(crate) fn key(db: &Db, out: &Out) -> Result<()> {
    let key = hex::encode(db.kappa.shared_key());
    out.emit(&key, || json!({"shared_key": key}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_if_they_parse() {
        assert_eq!(parse_value("5"), json!(5));
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(parse_value(r#""quoted""#), json!("quoted"));
        assert_eq!(parse_value("soup"), json!("soup"));
        assert_eq!(parse_value("{broken"), json!("{broken"));
        assert!(parse_entries("{broken").is_err());
        assert_eq!(parse_entries(r#"{ "a" : 1.0 }"#).unwrap().iter().collect::<Vec<_>>(), [b"{\"a\":1}\n"]);
    }

    #[test]
    fn lines_become_blocks_and_a_bad_line_is_named() {
        let text = "{\"a\": 1}\r\n\n   \n[2, 3.0]\n\"last, without a newline\"";
        let blocks = read_entries(text.as_bytes()).unwrap();
        let got: Vec<&[u8]> = blocks.iter().collect();
        assert_eq!(got, [&b"{\"a\":1}\n"[..], b"[2,3]\n", b"\"last, without a newline\"\n"]);
        let err = read_entries("1\n\n{\"a\":\n2\n".as_bytes()).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = read_entries(&b"1\n\xff\n"[..]).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
        assert!(read_entries("\n \n".as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn a_rebuild_shows_beside_the_live_version() {
        let st = IndexState {
            status: Status::Indexing,
            indexed: 40,
            total: 100,
            error: None,
            rebuild: Some(kappa_core::RebuildState {
                reason: "feed ab is blocked in this database".into(),
                live_version: Some(1),
                live_indexed: 100,
            }),
        };
        let rows = view_rows("kv", 2, &st);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0][..3], ["kv", "1", "live"]);
        assert!(rows[0][3].starts_with("100 entries"), "{rows:?}");
        assert_eq!(rows[1][1..3], ["2", "rebuilding (indexing)"]);
        assert_eq!(rows[1][3], "40/100 (40%): feed ab is blocked in this database");
        let j = view_json("kv", 2, &st);
        assert_eq!(j["rebuild"]["live_version"], 1);
        assert_eq!(j["rebuild"]["live_indexed"], 100);
        assert_eq!(j["indexed"], 40);
        let idle = IndexState { rebuild: None, status: Status::Idle, indexed: 100, ..st };
        assert_eq!(view_rows("kv", 2, &idle), vec![vec!["kv", "2", "idle", "100/100 (100%)", ""]]);
        assert!(view_json("kv", 2, &idle)["rebuild"].is_null());
    }

    #[test]
    fn heads_show_their_value_field() {
        let head = |v: &str| Head { key: "k".into(), id: "f@0".into(), value: v.as_bytes().to_vec() };
        assert_eq!(head_value(&head("{\"key\":\"k\",\"value\":[1],\"links\":[]}\n")), json!([1]));
        assert_eq!(head_value(&head("{\"key\":\"k\",\"other\":2}\n")), json!({"key": "k", "other": 2}));
        assert_eq!(head_value(&head("not json\n")), json!("not json"));
    }
}

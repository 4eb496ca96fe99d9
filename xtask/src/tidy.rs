//! `cargo xtask tidy`: docs/architecture.md's dependency diagram against
//! `cargo metadata`.
//!
//! The diagram is the first fenced block of docs/architecture.md. How it is
//! read (the page says the same above the block):
//!
//! - Text in parentheses is a comment; words that are not workspace crates
//!   are ignored.
//! - A line `├── B` or `└── B` draws an edge from the crate of the nearest
//!   line above whose crate starts further left (its parent) to `B`: the
//!   parent depends on `B`.
//! - On any line, `A ── B, C` says that `A` (the line's first crate) depends
//!   on `B` and on `C`.
//!
//! The check fails when a workspace crate has a normal or build dependency on
//! another workspace crate that the diagram does not show, when the diagram
//! shows an edge that is not a dependency, or when a crate is missing from it.
//! Dev-dependencies are not part of the architecture and are not drawn.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

/// A dependency edge: `(dependent, dependency)`.
pub(crate) type Edge = (String, String);

/// Crates the diagram leaves out (tooling, not part of the library).
const NOT_DRAWN: &[&str] = &["xtask"];

pub(crate) fn run() -> Result<(), String> {
    let output = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(crate::root())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata's output: {e}"))?;
    let (crates, edges) = workspace_edges(&metadata)?;
    let path = crate::root().join("docs/architecture.md");
    let doc = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let diagram = first_fenced_block(&doc).ok_or("docs/architecture.md has no ``` block (the diagram)")?;
    let drawn = parse_diagram(diagram, &crates);
    let problems = check(&crates, &edges, &drawn);
    if problems.is_empty() {
        eprintln!("tidy: the diagram in docs/architecture.md shows all {} dependency edges", edges.len());
        Ok(())
    } else {
        Err(format!(
            "docs/architecture.md's dependency diagram does not match `cargo metadata`:\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// The workspace's crates (less [`NOT_DRAWN`]) and the normal and build
/// dependency edges between them, from `cargo metadata --no-deps`.
pub(crate) fn workspace_edges(metadata: &Value) -> Result<(BTreeSet<String>, BTreeSet<Edge>), String> {
    let packages = metadata["packages"].as_array().ok_or("cargo metadata: no packages")?;
    let name = |p: &Value| p["name"].as_str().map(str::to_owned);
    let crates: BTreeSet<String> =
        packages.iter().filter_map(name).filter(|n| !NOT_DRAWN.contains(&n.as_str())).collect();
    let mut edges = BTreeSet::new();
    for p in packages {
        let Some(from) = name(p).filter(|n| crates.contains(n)) else { continue };
        for dep in p["dependencies"].as_array().into_iter().flatten() {
            // `kind` is null for normal dependencies, "dev" or "build" otherwise.
            if dep["kind"].as_str() == Some("dev") {
                continue;
            }
            if let Some(to) = dep["name"].as_str().filter(|n| crates.contains(*n)) {
                edges.insert((from.clone(), to.to_owned()));
            }
        }
    }
    Ok((crates, edges))
}

/// The text of the first ``` fenced block of a markdown page.
pub(crate) fn first_fenced_block(doc: &str) -> Option<&str> {
    let open = doc.find("```")?;
    let body = open + doc[open..].find('\n')? + 1;
    let close = body + doc[body..].find("```")?;
    Some(&doc[body..close])
}

/// What the diagram shows: the crates it names and its edges.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Drawn {
    pub(crate) crates: BTreeSet<String>,
    pub(crate) edges: BTreeSet<Edge>,
}

/// Reads the diagram (see the module's documentation); `crates` are the names
/// to look for.
pub(crate) fn parse_diagram(diagram: &str, crates: &BTreeSet<String>) -> Drawn {
    let mut drawn = Drawn::default();
    // The crates of the lines above, with the column each starts at.
    let mut above: Vec<(usize, String)> = Vec::new();
    for line in diagram.lines() {
        let line = strip_comments(line);
        let (branch, rest) = split_branch(&line);
        let mut segments = rest.split("──");
        let first = segments.next().unwrap_or("");
        let Some((offset, head)) = crate_names(first, crates).into_iter().next() else { continue };
        let column = line[..branch].chars().count() + rest[..offset].chars().count();
        drawn.crates.insert(head.clone());
        while above.last().is_some_and(|(c, _)| *c >= column) {
            above.pop();
        }
        if branch > 0 {
            if let Some((_, parent)) = above.last() {
                drawn.edges.insert((parent.clone(), head.clone()));
            }
        }
        for segment in segments {
            for (_, to) in crate_names(segment, crates) {
                drawn.crates.insert(to.clone());
                drawn.edges.insert((head.clone(), to));
            }
        }
        above.push((column, head));
    }
    drawn
}

/// What is wrong with the diagram, one line each (nothing when it is right).
pub(crate) fn check(crates: &BTreeSet<String>, edges: &BTreeSet<Edge>, drawn: &Drawn) -> Vec<String> {
    let mut problems = Vec::new();
    for (from, to) in edges.difference(&drawn.edges) {
        problems.push(format!("missing edge: {from} depends on {to}"));
    }
    for (from, to) in drawn.edges.difference(edges) {
        problems.push(format!("edge that is not a dependency: {from} ── {to}"));
    }
    for c in crates.difference(&drawn.crates) {
        problems.push(format!("crate not in the diagram: {c}"));
    }
    problems
}

/// The line without its parenthesized comments (which may hold crate names).
fn strip_comments(line: &str) -> String {
    let mut depth = 0usize;
    line.chars()
        .map(|c| {
            match c {
                '(' => depth += 1,
                ')' if depth > 0 => depth -= 1,
                _ if depth == 0 => return c,
                _ => {}
            }
            // Keep the columns: a comment becomes spaces.
            ' '
        })
        .collect()
}

/// Splits a tree line into the byte length of its branch prefix (`│   ├── `;
/// 0 when it has none) and the rest.
fn split_branch(line: &str) -> (usize, &str) {
    let lead = line.len() - line.trim_start_matches([' ', '│']).len();
    let after = &line[lead..];
    for glyph in ["├──", "└──"] {
        if let Some(rest) = after.strip_prefix(glyph) {
            let at = lead + glyph.len();
            return (at, rest);
        }
    }
    (0, line)
}

/// The crate names in `text`, with their byte offsets, in order.
fn crate_names(text: &str, crates: &BTreeSet<String>) -> Vec<(usize, String)> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut names = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        match (start, is_name(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                let word = text[s..i].trim_end_matches(['-', '_']);
                if crates.contains(word) {
                    names.push((s, word.to_owned()));
                }
                start = None;
            }
            _ => {}
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn edges(list: &[(&str, &str)]) -> BTreeSet<Edge> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    const CRATES: &[&str] = &["app", "core", "db", "db-file", "log", "storage", "testkit"];

    const DIAGRAM: &str = "\
app (binary `app`, uses log only through core)
└── core (facade)
    ├── db-file ── db (a db backend)
    └── log ── storage, db
        └── storage (bytes)
testkit ── log (test support)

core ── storage
";

    #[test]
    fn tree_lines_and_arrows_are_edges() {
        let drawn = parse_diagram(DIAGRAM, &set(CRATES));
        assert_eq!(drawn.crates, set(CRATES));
        assert_eq!(
            drawn.edges,
            edges(&[
                ("app", "core"),
                ("core", "db-file"),
                ("db-file", "db"),
                ("core", "log"),
                ("log", "storage"),
                ("log", "db"),
                ("testkit", "log"),
                ("core", "storage"),
            ])
        );
    }

    #[test]
    fn a_dependency_the_diagram_does_not_show_fails() {
        let crates = set(CRATES);
        let drawn = parse_diagram(DIAGRAM, &crates);
        let mut actual = drawn.edges.clone();
        assert!(check(&crates, &actual, &drawn).is_empty());
        actual.insert(("db".into(), "log".into()));
        assert_eq!(check(&crates, &actual, &drawn), ["missing edge: db depends on log"]);
        // An edge drawn that is not a dependency, and a crate left out.
        actual.remove(&("db".to_string(), "log".to_string()));
        actual.remove(&("core".to_string(), "storage".to_string()));
        let mut crates = crates;
        crates.insert("extra".into());
        assert_eq!(
            check(&crates, &actual, &drawn),
            ["edge that is not a dependency: core ── storage", "crate not in the diagram: extra"]
        );
    }

    #[test]
    fn a_diagram_without_a_line_misses_its_edges() {
        let crates = set(CRATES);
        let actual = parse_diagram(DIAGRAM, &crates).edges;
        let shorter = DIAGRAM.replace("    ├── db-file ── db (a db backend)\n", "");
        let drawn = parse_diagram(&shorter, &crates);
        assert_eq!(
            check(&crates, &actual, &drawn),
            [
                "missing edge: core depends on db-file",
                "missing edge: db-file depends on db",
                "crate not in the diagram: db-file"
            ]
        );
    }

    #[test]
    fn metadata_edges_leave_out_dev_dependencies() {
        let metadata = serde_json::json!({ "packages": [
            { "name": "a", "dependencies": [
                { "name": "b", "kind": null },
                { "name": "c", "kind": "dev" },
                { "name": "c", "kind": "build" },
                { "name": "serde", "kind": null },
            ] },
            { "name": "b", "dependencies": [] },
            { "name": "c", "dependencies": [] },
            { "name": "xtask", "dependencies": [{ "name": "a", "kind": null }] },
        ] });
        let (crates, found) = workspace_edges(&metadata).unwrap();
        assert_eq!(crates, set(&["a", "b", "c"]));
        assert_eq!(found, edges(&[("a", "b"), ("a", "c")]));
    }

    #[test]
    fn the_first_fenced_block_is_the_diagram() {
        let doc = "# T\n\ntext\n\n```\na ── b\n```\n\n```\nc ── d\n```\n";
        assert_eq!(first_fenced_block(doc), Some("a ── b\n"));
    }

    #[test]
    fn the_architecture_page_parses() {
        // The real page against the crates it names: at least parses into a
        // tree rooted at the CLI (the full check runs in `cargo xtask tidy`).
        let doc = std::fs::read_to_string(crate::root().join("docs/architecture.md")).unwrap();
        let crates = set(&["kappa-cli", "kappa-core", "kappa-log", "kappa-storage"]);
        let drawn = parse_diagram(first_fenced_block(&doc).unwrap(), &crates);
        assert!(drawn.edges.contains(&("kappa-cli".to_string(), "kappa-core".to_string())));
        assert!(drawn.edges.contains(&("kappa-log".to_string(), "kappa-storage".to_string())));
    }
}

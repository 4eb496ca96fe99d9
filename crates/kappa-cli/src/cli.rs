//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::db::{parse_key, parse_views_url};
use crate::error::EXIT_CODES_HELP;

/// A peer-to-peer database in the kappa architecture, over a directory.
///
/// Every write is an entry in this database's own signed, append-only log; the
/// kv view turns the logs into a table of keys. Databases replicate over TCP
/// with each other and with JS kappa-core 6 peers that use the same shared key.
#[derive(Debug, Parser)]
#[command(name = "kappa", version, after_help = EXIT_CODES_HELP, propagate_version = true)]
pub(crate) struct Cli {
    /// The database directory (created if missing).
    #[arg(long, global = true, value_name = "DIR", default_value = "kappa-data")]
    pub(crate) dir: PathBuf,

    /// The shared key peers must know to replicate (64 hex characters). Default:
    /// the directory's own key, generated at first use (see `kappa key`).
    #[arg(long, global = true, value_name = "HEX", value_parser = parse_key)]
    pub(crate) shared_key: Option<[u8; 32]>,

    /// Where the views live: a PostgreSQL URL (`postgres://user@host/db?schema=NAME`,
    /// one schema per database; this process then holds the schema's writer
    /// lock). Default: `DIR/views.redb`.
    #[arg(long, global = true, value_name = "URL", value_parser = parse_views_url)]
    pub(crate) views: Option<String>,

    /// Machine-readable output: one JSON value per line (errors as JSON on stderr).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Log what the libraries do to standard error: `-v` sessions, feed
    /// exchanges and failures with their cause; `-vv` channels, handshakes and
    /// commits; `-vvv` everything. `RUST_LOG` (e.g. `kappa_protocol=debug`),
    /// when set, overrides it. Never mixed into standard output.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Sets KEY to VALUE in the kv view (replacing every current head of KEY).
    ///
    /// Appends `{"key": KEY, "value": VALUE, "links": [ids of KEY's current heads]}`
    /// to the local log, the kappa-view-kv convention. VALUE is taken as JSON if it
    /// parses (`5`, `true`, `{"a":1}`, `"quoted"`), else as a string.
    Put {
        /// The key.
        key: String,
        /// The value (JSON, or any text).
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Prints KEY's value: every head, with its id (several when it is forked).
    ///
    /// With `--from ADDR`, first fetches from that peer, on demand, only the
    /// newest entries of each feed (`--newest`): a fresh database answers
    /// without downloading the history.
    Get {
        /// The key.
        key: String,
        /// A peer to fetch the newest entries from first, e.g. 192.0.2.7:7000.
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
        /// With `--from`: how many of the newest entries of each feed to fetch.
        #[arg(long, value_name = "N", default_value_t = 1000, requires = "from")]
        newest: u64,
        /// With `--from`: give up connecting after this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        connect_timeout_ms: u64,
    },
    /// Prints the whole kv view as a table.
    Table,
    /// Appends one raw JSON entry to the local log (or, with `-`, one entry per
    /// line of standard input, all or nothing).
    Append {
        /// The entry, as JSON; `-` reads JSON lines from standard input.
        #[arg(value_name = "JSON", allow_hyphen_values = true)]
        entry: String,
    },
    /// Prints the entries of a log: the local writer's, or FEED's.
    Log {
        /// A feed: its key (64 hex), a unique prefix of it, or its local name.
        feed: Option<String>,
    },
    /// Lists every feed: key, local name, length, downloaded, writable, state,
    /// and what the feed policy says of it (blocked, hidden).
    Feeds,
    /// Blocks FEED here: never offered to a peer, never accepted from one,
    /// never shown in a view; its entries are deleted (its key is kept, so it
    /// stays blocked). Peers keep their copies. Not for local writers.
    Block {
        /// A feed: its key (64 hex, also one this database never held), a
        /// unique prefix of it, or its local name.
        feed: String,
    },
    /// Undoes `kappa block FEED`: the next sync with a peer that holds it
    /// brings it back.
    Unblock {
        /// The feed: its key, or a unique prefix of it.
        feed: String,
    },
    /// Hides FEED from the views (`get`, `table`): it is still kept and
    /// replicated.
    Hide {
        /// A feed: its key (64 hex), a unique prefix of it, or its local name.
        feed: String,
    },
    /// Undoes `kappa hide FEED`: the views show its entries again.
    Unhide {
        /// The feed: its key, or a unique prefix of it.
        feed: String,
    },
    /// Clears FEED's entries (all, or those from SEQ `--from` to before
    /// `--to`): their data is deleted and its disk space given back (holes
    /// punched in the data file where the file system can), the views drop
    /// them; the feed still verifies what it keeps. A later sync may download
    /// them again from a peer that holds them. Not for local writers.
    Clear {
        /// A feed: its key (64 hex), a unique prefix of it, or its local name.
        feed: String,
        /// The first entry to clear (default 0).
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// The entry after the last one to clear (default: the feed's length).
        #[arg(long, value_name = "SEQ")]
        to: Option<u64>,
    },
    /// Prints the bytes each feed takes (the sum of its files' lengths, and
    /// what they take on disk with holes left out, of which the data file's
    /// is about what `kappa clear FEED` would free), the views file's, and
    /// the total.
    Du,
    /// Verifies every feed: every entry against its hash, every tree node,
    /// every signature. Reports holes, damage and what a repair would do;
    /// exits 4 if anything is damaged. Changes nothing.
    Check,
    /// Mends damaged feeds: from their own files (rebuilding what a redundant
    /// copy holds), then, with `--from`, by fetching what is lost from a peer
    /// that holds it. Exits 4 if anything is still damaged.
    Repair {
        /// A peer to fetch lost entries from, e.g. 192.0.2.7:7000.
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
        /// Give up the entries a writer signed but can no longer prove, so it
        /// can take writes again. Peers that hold them will refuse its new
        /// entries (a fork): prefer `--from`.
        #[arg(long)]
        accept_loss: bool,
        /// With `--from`: give up connecting after this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        connect_timeout_ms: u64,
    },
    /// Lists the views with their state and indexing progress.
    Views {
        /// Print the state as it is on opening, without waiting for indexing.
        #[arg(long)]
        no_wait: bool,
    },
    /// Shows what the database is doing: per peer what is being synced and how
    /// far, per view how far it is (entries indexed of those available), open
    /// files and memory. While `kappa serve` runs, its figures (it publishes
    /// them every second in DIR/kappa-status.json); else what is stored.
    Status,
    /// Prints the shared key to give peers (`--shared-key`, or a JS peer's
    /// `encryptionKey`).
    Key,
    /// Replicates live with every peer that connects, until Ctrl-C.
    Serve {
        /// Where to listen, e.g. 0.0.0.0:7000 or 127.0.0.1:0 (any free port). The
        /// first line printed is the bound address.
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// Exit after this many peer sessions have ended.
        #[arg(long, value_name = "N")]
        max_peers: Option<usize>,
        /// Exit once no peer has been connected for this long (milliseconds).
        #[arg(long, value_name = "MS")]
        exit_when_idle_ms: Option<u64>,
        /// Most peer sessions at once; a connection beyond is closed at once.
        #[arg(long, value_name = "N", default_value_t = 128)]
        max_connections: usize,
        /// Most peer sessions at once from one IP address.
        #[arg(long, value_name = "N", default_value_t = 16)]
        max_per_address: usize,
        /// Drop a peer that sends nothing (not even a keep-alive), or reads
        /// none of what we send, for this long (milliseconds); with
        /// `--discover`, the peers we dial as well as those that connect.
        #[arg(long, value_name = "MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
        peer_timeout_ms: u64,
        /// Wire generation: `6` (kappa-core 6: hypercore 8, hypercore-protocol
        /// 7), `7` (kappa-core 7: hypercore 9, hypercore-protocol 8) or `auto`:
        /// both, a new peer answered in kappa-core 6 and, if it hangs up on that
        /// answer, in kappa-core 7 when it connects again.
        #[arg(long, value_name = "auto|6|7", default_value = "auto")]
        wire: kappa_core::protocol::Wire,
        /// Also find peers on the LAN (hyperswarm 2's multicast DNS, as Cabal):
        /// announce this database's topic (the discovery key of the shared key,
        /// public on the LAN; the shared key is not) with the listening port,
        /// look it up, and replicate live with every peer found.
        #[arg(long)]
        discover: bool,
        /// Also find peers on hyperswarm 2's DHT (`@hyperswarm/dht` 4), starting
        /// from this bootstrap node (HOST:PORT, IPv4; repeat the flag for more):
        /// announce this database's topic there with the listening port, look it
        /// up, and replicate live with every peer found. Without `--discover`
        /// the LAN is not used.
        #[arg(long, value_name = "HOST:PORT")]
        dht: Vec<String>,
        /// Seed mode: replicate everything, index nothing (for a node that keeps
        /// a community's data available and answers no queries). The views
        /// catch up, each entry indexed once, when a command that uses them
        /// runs (`get`, `table`, `views`) or `serve` runs without this flag.
        #[arg(long)]
        no_views: bool,
    },
    /// Replicates once with the peer at ADDR (or, with `--discover` or `--dht`,
    /// with the first peer found on the LAN or the DHT): exits when both sides
    /// have everything, printing what moved.
    #[command(group(clap::ArgGroup::new("finding").multiple(true)))]
    Sync {
        /// The peer, e.g. 192.0.2.7:7000.
        #[arg(required_unless_present = "finding", conflicts_with = "finding")]
        addr: Option<String>,
        /// Find the peer on the LAN instead (hyperswarm 2's multicast DNS): look
        /// this database's topic up and sync with the first peer that answers.
        /// Exits 1 if none is found within `--discover-timeout-ms`.
        #[arg(long, group = "finding")]
        discover: bool,
        /// Find the peer on hyperswarm 2's DHT instead (or as well, with
        /// `--discover`), starting from this bootstrap node (HOST:PORT, IPv4;
        /// repeat the flag for more).
        #[arg(long, value_name = "HOST:PORT", group = "finding")]
        dht: Vec<String>,
        /// With `--discover` or `--dht`: how long to look for a peer, in
        /// milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 10_000, requires = "finding")]
        discover_timeout_ms: u64,
        /// Sparse: download only the newest N entries of each feed (the rest can
        /// follow in a later sync). Default: everything.
        #[arg(long, value_name = "N")]
        newest: Option<u64>,
        /// Give up connecting after this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        connect_timeout_ms: u64,
        /// Give up on a peer that sends nothing (not even a keep-alive), or
        /// reads none of what we send, for this long (milliseconds); a
        /// keep-alive goes out after half of it without sending.
        #[arg(long, value_name = "MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
        peer_timeout_ms: u64,
        /// Wire generation: `6` (kappa-core 6), `7` (kappa-core 7) or `auto`
        /// (whichever the peer answers in).
        #[arg(long, value_name = "auto|6|7", default_value = "auto")]
        wire: kappa_core::protocol::Wire,
    },
    /// Shows the whole system end to end in a temporary folder: two databases,
    /// writes, TCP replication on loopback, a fork and its merge, a view rebuilt
    /// by a version bump.
    Demo,
}

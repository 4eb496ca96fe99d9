//! Errors and the exit codes they map to.

use std::fmt;

/// Everything went well.
pub(crate) const EXIT_OK: u8 = 0;
/// A runtime failure: network, peer, storage.
pub(crate) const EXIT_RUNTIME: u8 = 1;
/// Usage or bad input (also clap's usage errors).
pub(crate) const EXIT_USAGE: u8 = 2;
/// The database is unavailable: locked by another process, or not a kappa
/// database.
pub(crate) const EXIT_UNAVAILABLE: u8 = 3;
/// `kappa check` or `kappa repair` found damage that is still there.
pub(crate) const EXIT_DAMAGED: u8 = 4;

/// The exit codes, as `kappa --help` shows them.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  runtime failure (network, peer, storage)
  2  usage or bad input (unknown command or option, malformed JSON, bad key, unknown feed)
  3  database unavailable (locked by another process, or not a kappa database)
  4  damage found (`kappa check`) or left (`kappa repair`)

Bad input changes nothing in the database directory.";

/// A failed command.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad input: exit 2.
    Usage(String),
    /// A runtime failure: exit 1.
    Runtime(String),
    /// The database is unavailable: exit 3.
    Unavailable(String),
    /// Damage found or left by `check` / `repair`: exit 4.
    Damaged(String),
    /// stdout was closed by the reader (e.g. `kappa log | head`): exit 0 quietly.
    BrokenPipe,
}

impl CliError {
    /// The process exit code.
    pub(crate) fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Runtime(_) => EXIT_RUNTIME,
            CliError::Unavailable(_) => EXIT_UNAVAILABLE,
            CliError::Damaged(_) => EXIT_DAMAGED,
            CliError::BrokenPipe => EXIT_OK,
        }
    }

    /// A short name of the kind, for `--json` errors.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::Runtime(_) => "runtime",
            CliError::Unavailable(_) => "unavailable",
            CliError::Damaged(_) => "damaged",
            CliError::BrokenPipe => "broken_pipe",
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Runtime(m) | CliError::Unavailable(m) | CliError::Damaged(m) => {
                f.write_str(m)
            }
            CliError::BrokenPipe => f.write_str("output closed"),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Runtime(format!("writing output: {e}"))
        }
    }
}

impl From<kappa_core::KappaError> for CliError {
    fn from(e: kappa_core::KappaError) -> Self {
        CliError::Runtime(e.to_string())
    }
}

/// Shorthand.
pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

//! The one error type of every driver.
//!
//! Each variant names the driver and, where there is one, the layer (snapshot key), so that a
//! message read in a report or a CI log says which backend failed on what. Backends keep their
//! private error detail as text or as a `source`; callers match on the variant.

use std::path::PathBuf;

/// Result of a driver operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend cannot run on this host (kernel feature, tool or device missing).
    #[error("{driver}: unavailable because {reason}")]
    Unavailable { driver: String, reason: String },

    #[error("{driver}: layer '{key}' does not exist")]
    NotFound { driver: String, key: String },

    #[error("{driver}: layer '{key}' already exists")]
    AlreadyExists { driver: String, key: String },

    /// `remove` of a layer that other layers are built on.
    #[error("{driver}: layer '{key}' has children ({}) and cannot be removed", children.join(", "))]
    HasChildren { driver: String, key: String, children: Vec<String> },

    /// The layer is of the wrong kind for the operation (commit of a committed layer, a parent
    /// that is still active, apply to a view ...).
    #[error("{driver}: layer '{key}': {message}")]
    InvalidState { driver: String, key: String, message: String },

    /// A layer tar was refused or could not be applied/exported. `entry` is the tar entry path
    /// (raw bytes; shown escaped, as a name in a hostile tar may hold any byte).
    #[error("{driver}: layer '{key}': archive entry {}: {message}", entry.as_ref().map(|p| format!("{p:?}")).unwrap_or_else(|| "(none)".into()))]
    Archive { driver: String, key: String, entry: Option<PathBuf>, message: String },

    /// The backing store is full (thin pool, zpool, filesystem). Reported, never a hang.
    #[error("{driver}: layer '{key}': out of space: {detail}")]
    NoSpace { driver: String, key: String, detail: String },

    /// A system call or file operation failed.
    #[error("{driver}: {}{context}: {source}", key.as_ref().map(|k| format!("layer '{k}': ")).unwrap_or_default())]
    Io {
        driver: String,
        key: Option<String>,
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// An external tool (zfs, zpool, unionfs, mkfs ...) failed.
    #[error("{driver}: `{command}` failed ({status}): {stderr}")]
    Command { driver: String, command: String, status: String, stderr: String },

    /// Bad configuration or argument.
    #[error("{driver}: invalid configuration: {message}")]
    Config { driver: String, message: String },

    /// The metadata database could not be read or written.
    #[error("{driver}: metadata {}: {message}", path.display())]
    Metadata { driver: String, path: PathBuf, message: String },
}

impl Error {
    pub fn io(driver: &str, key: Option<&str>, context: impl Into<String>, source: std::io::Error) -> Self {
        // ENOSPC and EDQUOT are the "full disk" cases that must be reported as such.
        if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            return Error::NoSpace {
                driver: driver.into(),
                key: key.unwrap_or("-").into(),
                detail: format!("{}: {source}", context.into()),
            };
        }
        Error::Io { driver: driver.into(), key: key.map(Into::into), context: context.into(), source }
    }

    pub fn not_found(driver: &str, key: &str) -> Self {
        Error::NotFound { driver: driver.into(), key: key.into() }
    }

    pub fn invalid(driver: &str, key: &str, message: impl Into<String>) -> Self {
        Error::InvalidState { driver: driver.into(), key: key.into(), message: message.into() }
    }

    pub fn unavailable(driver: &str, reason: impl Into<String>) -> Self {
        Error::Unavailable { driver: driver.into(), reason: reason.into() }
    }

    pub fn config(driver: &str, message: impl Into<String>) -> Self {
        Error::Config { driver: driver.into(), message: message.into() }
    }

    /// The io::ErrorKind-like classification used by tests (e.g. a view refusing writes).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Attach driver (and layer) context to `std::io::Result`s.
pub trait IoContext<T> {
    fn ctx(self, driver: &str, key: Option<&str>, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, driver: &str, key: Option<&str>, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(driver, key, context(), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, driver: &str, key: Option<&str>, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(driver, key, context(), std::io::Error::from(e)))
    }
}

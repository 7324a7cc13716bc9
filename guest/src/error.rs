//! The failure of a whole entry point (the WIT `plugin-error`), shared by
//! every module that implements one.

use std::fmt;

use crate::keyring::KeyringError;
use crate::ports::StoreError;

/// A failure of a whole entry point (the WIT `plugin-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The store failed; nothing was half-written.
    StoreUnavailable(String),
    /// The configuration is invalid.
    BadConfig(String),
    /// An event argument is invalid.
    InvalidArgument(String),
    /// Anything else.
    Internal(String),
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::StoreUnavailable(m) => write!(f, "store unavailable: {m}"),
            PluginError::BadConfig(m) => write!(f, "bad configuration: {m}"),
            PluginError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            PluginError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for PluginError {}

impl From<StoreError> for PluginError {
    fn from(e: StoreError) -> Self {
        match e {
            // Not a passing failure: sending the same event again would
            // fail the same way, so it is not reported as one.
            StoreError::TooLarge => PluginError::Internal(e.to_string()),
            other => PluginError::StoreUnavailable(other.to_string()),
        }
    }
}

impl From<KeyringError> for PluginError {
    fn from(e: KeyringError) -> Self {
        match e {
            KeyringError::Store(s) => s.into(),
            other => PluginError::BadConfig(other.to_string()),
        }
    }
}

//! The JMAP Web Push plugin.
pub mod crypto;

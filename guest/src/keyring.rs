//! The VAPID signing key in force (behaviour B8): from the configuration,
//! or generated on first use and kept in the store so every instance and
//! every host process sharing the store signs with the same key.

use std::fmt;

use crate::crypto::vapid::{VapidError, VapidKey, VapidSigner};
use serde::{Deserialize, Serialize};

use crate::json::{self, RecordError};
use crate::ports::{Condition, StoreError};
use crate::repo::VAPID_KEY;
use crate::Env;

/// The stored form of a generated key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    /// base64url 32-octet scalar.
    private: String,
    /// base64url 65-octet public key.
    public: String,
}

impl StoredKey {
    /// The record's JSON text (`{"private":…,"public":…}`, the `serde`
    /// form every version wrote).
    fn to_record(&self) -> Vec<u8> {
        json::to_record(self)
    }

    /// Reads a record written by [`StoredKey::to_record`].
    fn from_record(bytes: &[u8]) -> Result<StoredKey, RecordError> {
        json::from_record(bytes)
    }
}

/// Why the key could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringError {
    /// The store failed.
    Store(StoreError),
    /// The configured or stored key or contact is invalid.
    Vapid(String),
    /// Rotation was asked for but the host supplies the key.
    KeyFromConfig,
    /// Rotation was asked for but VAPID is not configured.
    NotConfigured,
}

impl fmt::Display for KeyringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringError::Store(e) => write!(f, "{e}"),
            KeyringError::Vapid(e) => write!(f, "VAPID key: {e}"),
            KeyringError::KeyFromConfig => f.write_str(
                "the VAPID key is set in the configuration; change it there (and restart)",
            ),
            KeyringError::NotConfigured => {
                f.write_str("VAPID is not configured (no vapid contact)")
            }
        }
    }
}

impl std::error::Error for KeyringError {}

impl From<StoreError> for KeyringError {
    fn from(e: StoreError) -> Self {
        KeyringError::Store(e)
    }
}

impl From<VapidError> for KeyringError {
    fn from(e: VapidError) -> Self {
        KeyringError::Vapid(e.to_string())
    }
}

struct Cached {
    /// Store version of `vapid/key`, `None` when the key comes from config.
    version: Option<u64>,
    contact: String,
    public: String,
    signer: VapidSigner,
}

/// Caches the signer (and its per-origin tokens) across calls of one
/// instance, re-reading the store's key record on every use so a rotation
/// by another instance is seen at once.
#[derive(Default)]
pub struct Keyring {
    cached: Option<Cached>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("public", &self.cached.as_ref().map(|c| &c.public))
            .finish()
    }
}

impl Keyring {
    /// The signer in force, or `None` when VAPID is not configured.
    /// Generates and stores a key on first use.
    pub fn signer(&mut self, env: &mut Env<'_>) -> Result<Option<&mut VapidSigner>, KeyringError> {
        let Some(contact) = env.config.vapid_contact.clone() else {
            self.cached = None;
            return Ok(None);
        };
        // Where the key comes from, and its store version (None: config).
        let (stored, version) = match &env.config.vapid_private_key {
            Some(_) => (None, None),
            None => match env.store.get(VAPID_KEY)? {
                Some(e) => {
                    let v = e.version;
                    (Some(e.value), Some(v))
                }
                None => {
                    let (key, v) = self.generate_and_store(env)?;
                    self.install(key, Some(v), contact, env)?;
                    return Ok(self.cached.as_mut().map(|c| &mut c.signer));
                }
            },
        };
        let fresh = self
            .cached
            .as_ref()
            .is_some_and(|c| c.version == version && c.contact == contact);
        if !fresh {
            let key = match (&env.config.vapid_private_key, stored) {
                (Some(k), _) => VapidKey::from_base64url(k)?,
                (None, Some(bytes)) => {
                    let s: StoredKey = StoredKey::from_record(&bytes).map_err(|err| {
                        KeyringError::Vapid(format!("stored key is corrupt: {err}"))
                    })?;
                    VapidKey::from_base64url(&s.private)?
                }
                (None, None) => return Err(KeyringError::NotConfigured),
            };
            self.install(key, version, contact, env)?;
        }
        Ok(self.cached.as_mut().map(|c| &mut c.signer))
    }

    fn install(
        &mut self,
        key: VapidKey,
        version: Option<u64>,
        contact: String,
        env: &Env<'_>,
    ) -> Result<(), KeyringError> {
        let public = key.public_key_base64url();
        let signer = VapidSigner::new(
            key,
            &contact,
            env.config.vapid_token_lifetime_secs,
            env.config.insecure_test_mode,
        )?;
        self.cached = Some(Cached {
            version,
            contact,
            public,
            signer,
        });
        Ok(())
    }

    /// The `applicationServerKey` (base64url public key), or `None` when
    /// VAPID is not configured.
    pub fn public_key(&mut self, env: &mut Env<'_>) -> Result<Option<String>, KeyringError> {
        if self.signer(env)?.is_none() {
            return Ok(None);
        }
        Ok(self.cached.as_ref().map(|c| c.public.clone()))
    }

    fn generate_and_store(&mut self, env: &mut Env<'_>) -> Result<(VapidKey, u64), KeyringError> {
        let key = VapidKey::generate()?;
        let record = StoredKey {
            private: key.to_base64url(),
            public: key.public_key_base64url(),
        };
        let bytes = record.to_record();
        match env.store.put(VAPID_KEY, &bytes, Condition::Absent) {
            Ok(v) => Ok((key, v)),
            // Another instance generated one first: use theirs.
            Err(StoreError::Conflict) => {
                let e = env
                    .store
                    .get(VAPID_KEY)?
                    .ok_or(KeyringError::Store(StoreError::Conflict))?;
                let s: StoredKey = StoredKey::from_record(&e.value)
                    .map_err(|err| KeyringError::Vapid(format!("stored key is corrupt: {err}")))?;
                Ok((VapidKey::from_base64url(&s.private)?, e.version))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the stored key with a fresh one; returns `(old public key,
    /// new public key)`.
    pub fn rotate(&mut self, env: &mut Env<'_>) -> Result<(Option<String>, String), KeyringError> {
        if env.config.vapid_contact.is_none() {
            return Err(KeyringError::NotConfigured);
        }
        if env.config.vapid_private_key.is_some() {
            return Err(KeyringError::KeyFromConfig);
        }
        let old = env.store.get(VAPID_KEY)?;
        let old_public = old
            .as_ref()
            .and_then(|e| StoredKey::from_record(&e.value).ok())
            .map(|s| s.public);
        let key = VapidKey::generate()?;
        let record = StoredKey {
            private: key.to_base64url(),
            public: key.public_key_base64url(),
        };
        let bytes = record.to_record();
        let cond = match &old {
            Some(e) => Condition::Version(e.version),
            None => Condition::Absent,
        };
        env.store.put(VAPID_KEY, &bytes, cond)?;
        self.cached = None;
        Ok((old_public, record.public))
    }
}

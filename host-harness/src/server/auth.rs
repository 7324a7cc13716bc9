//! Authentication of JMAP requests (Basic and Bearer against the users of
//! the configuration) and of the event intake (admin token).

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::settings::User;

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name.
    pub username: String,
    /// The credential used (subscriptions are tied to it).
    pub credential_id: String,
}

/// Checks `Authorization` headers against the configured users.
pub struct Authenticator {
    users: Vec<User>,
    /// SHA-256 of a verified Basic header → principal (Argon2 is slow by
    /// design; a verified header is not verified again).
    verified: Mutex<HashMap<[u8; 32], Principal>>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(data));
    out
}

/// Hex SHA-256 of a token, as `token_sha256` in the configuration wants it.
pub fn token_sha256(token: &str) -> String {
    sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares in time that depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Authenticator {
    /// An authenticator for `users`.
    pub fn new(users: Vec<User>) -> Self {
        Authenticator {
            users,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of an `Authorization` header value, or `None`.
    pub fn check(&self, header: &str) -> Option<Principal> {
        let (scheme, value) = header.split_once(' ')?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let key = sha256(header.as_bytes());
            if let Some(p) = self.verified.lock().ok()?.get(&key) {
                return Some(p.clone());
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (name, password) = decoded.split_once(':')?;
            let user = self.users.iter().find(|u| u.name == name)?;
            for c in &user.credentials {
                let Some(hash) = &c.password_hash else {
                    continue;
                };
                let Ok(parsed) = PasswordHash::new(hash) else {
                    continue;
                };
                if Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
                {
                    let p = Principal {
                        username: user.name.clone(),
                        credential_id: c.id.clone(),
                    };
                    if let Ok(mut v) = self.verified.lock() {
                        if v.len() > 10_000 {
                            v.clear();
                        }
                        v.insert(key, p.clone());
                    }
                    return Some(p);
                }
            }
            None
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let digest = token_sha256(value);
            let mut found = None;
            for u in &self.users {
                for c in &u.credentials {
                    if let Some(t) = &c.token_sha256 {
                        if ct_eq(t.to_ascii_lowercase().as_bytes(), digest.as_bytes()) {
                            found = Some(Principal {
                                username: u.name.clone(),
                                credential_id: c.id.clone(),
                            });
                        }
                    }
                }
            }
            found
        } else {
            None
        }
    }

    /// Whether `header` carries the admin token.
    pub fn is_admin(header: Option<&str>, admin_token: Option<&str>) -> bool {
        match (header.and_then(|h| h.strip_prefix("Bearer ")), admin_token) {
            (Some(given), Some(want)) => {
                ct_eq(&sha256(given.trim().as_bytes()), &sha256(want.as_bytes()))
            }
            _ => false,
        }
    }
}

/// An Argon2id PHC string for `password` (for the configuration file).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::PasswordHasher;
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Credential;

    #[test]
    fn basic_and_bearer() {
        let users = vec![User {
            name: "alice".into(),
            credentials: vec![
                Credential {
                    id: "laptop".into(),
                    password_hash: Some(hash_password("s3cret").unwrap()),
                    token_sha256: None,
                },
                Credential {
                    id: "phone".into(),
                    password_hash: None,
                    token_sha256: Some(token_sha256("tok-123")),
                },
            ],
        }];
        let a = Authenticator::new(users);
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let p = a.check(&basic("alice", "s3cret")).unwrap();
        assert_eq!(
            (p.username.as_str(), p.credential_id.as_str()),
            ("alice", "laptop")
        );
        assert_eq!(a.check(&basic("alice", "s3cret")), Some(p), "cached");
        assert_eq!(a.check(&basic("alice", "wrong")), None);
        assert_eq!(a.check(&basic("bob", "s3cret")), None);
        let p = a.check("Bearer tok-123").unwrap();
        assert_eq!(p.credential_id, "phone");
        assert_eq!(a.check("Bearer tok-124"), None);
        assert_eq!(a.check("Digest x"), None);
        assert!(Authenticator::is_admin(Some("Bearer adm"), Some("adm")));
        assert!(!Authenticator::is_admin(Some("Bearer adm2"), Some("adm")));
        assert!(!Authenticator::is_admin(None, Some("adm")));
        assert!(!Authenticator::is_admin(Some("Bearer adm"), None));
    }
}

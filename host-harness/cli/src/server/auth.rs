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
///
/// Bearer tokens and Basic headers verified before are checked at once
/// ([`Authenticator::quick`]); a new Basic header needs an Argon2
/// verification ([`Authenticator::verify_password`]), which takes tens of
/// milliseconds of CPU by design and belongs off the async runtime.
pub struct Authenticator {
    users: Vec<User>,
    /// SHA-256 of a verified Basic header → principal and the password
    /// hash it was verified against (Argon2 is slow by design; a verified
    /// header is not verified again).
    verified: Mutex<HashMap<[u8; 32], (Principal, String)>>,
    /// An Argon2id hash of a random password, verified in place of a
    /// missing one, so that an unknown user name takes as long to refuse
    /// as a wrong password.
    decoy: String,
}

/// What [`Authenticator::quick`] could tell without Argon2.
#[derive(Debug)]
pub enum Quick {
    /// Authenticated (a bearer token, or a Basic header verified before).
    Known(Principal),
    /// A Basic header never verified: [`Authenticator::verify_password`].
    NeedsPassword(PasswordCheck),
    /// Refused (malformed, unknown scheme, or a token nobody has).
    Refused {
        /// The Basic user name, when the header carried one.
        username: Option<String>,
    },
}

/// A Basic header waiting for its Argon2 verification.
#[derive(Debug)]
pub struct PasswordCheck {
    /// The user name as given.
    pub username: String,
    password: String,
    key: [u8; 32],
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

/// Compares in time that depends only on the lengths (`subtle`).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

impl Authenticator {
    /// An authenticator for `users`.
    pub fn new(users: Vec<User>) -> Self {
        let random: [u8; 16] = jmap_web_push_guest::crypto::random_array().unwrap_or([7; 16]);
        let decoy = hash_password(&base64::engine::general_purpose::STANDARD.encode(random))
            .unwrap_or_default();
        Authenticator {
            users,
            verified: Mutex::new(HashMap::new()),
            decoy,
        }
    }

    /// The principal of an `Authorization` header value, or `None`;
    /// verifies a new Basic password in the calling thread (blocking).
    pub fn check(&self, header: &str) -> Option<Principal> {
        match self.quick(header) {
            Quick::Known(p) => Some(p),
            Quick::NeedsPassword(c) => self.verify_password(&c),
            Quick::Refused { .. } => None,
        }
    }

    /// What can be decided about `header` without Argon2.
    pub fn quick(&self, header: &str) -> Quick {
        let refused = Quick::Refused { username: None };
        let Some((scheme, value)) = header.split_once(' ') else {
            return refused;
        };
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let key = sha256(header.as_bytes());
            if let Some(p) = self
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
            {
                return Quick::Known(p.0.clone());
            }
            let Some(decoded) = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
            else {
                return refused;
            };
            let Some((name, password)) = decoded.split_once(':') else {
                return refused;
            };
            Quick::NeedsPassword(PasswordCheck {
                username: name.to_string(),
                password: password.to_string(),
                key,
            })
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
            found.map_or(refused, Quick::Known)
        } else {
            refused
        }
    }

    /// Verifies a Basic password with Argon2 (blocking: tens of
    /// milliseconds). A user name nobody has, or a user without a
    /// password, is refused after verifying the decoy hash, so the answer
    /// takes as long as for a wrong password.
    pub fn verify_password(&self, check: &PasswordCheck) -> Option<Principal> {
        let verify = |hash: &str| {
            PasswordHash::new(hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(check.password.as_bytes(), &parsed)
                    .is_ok()
            })
        };
        let user = self.users.iter().find(|u| u.name == check.username);
        let hashes: Vec<(&str, &str)> = user
            .map(|u| {
                u.credentials
                    .iter()
                    .filter_map(|c| c.password_hash.as_deref().map(|h| (c.id.as_str(), h)))
                    .collect()
            })
            .unwrap_or_default();
        let Some(user) = user.filter(|_| !hashes.is_empty()) else {
            let _ = verify(&self.decoy);
            return None;
        };
        let (id, hash) = hashes.into_iter().find(|(_, h)| verify(h))?;
        let p = Principal {
            username: user.name.clone(),
            credential_id: id.to_string(),
        };
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(check.key, (p.clone(), hash.to_string()));
        Some(p)
    }

    /// An authenticator for `users` that keeps the verified Basic headers
    /// of this one whose credential is still there with the same password
    /// hash (a reload does not make every client pay Argon2 again).
    pub fn carry_over(&self, users: Vec<User>) -> Authenticator {
        let still_valid = |(p, hash): &(Principal, String)| {
            users.iter().any(|u| {
                u.name == p.username
                    && u.credentials.iter().any(|c| {
                        c.id == p.credential_id && c.password_hash.as_deref() == Some(hash)
                    })
            })
        };
        let verified = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, v)| still_valid(v))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        Authenticator {
            users,
            verified: Mutex::new(verified),
            decoy: self.decoy.clone(),
        }
    }

    /// Whether `header` carries the admin token.
    pub fn is_admin(header: Option<&str>, admin_token: Option<&str>) -> bool {
        let given = header
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
        match (given, admin_token) {
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
    fn a_reload_keeps_verified_passwords_only_while_their_hash_is_unchanged() {
        let user = |hash: &str| User {
            name: "alice".into(),
            credentials: vec![Credential {
                id: "laptop".into(),
                password_hash: Some(hash.into()),
                token_sha256: None,
            }],
        };
        let first = hash_password("old").unwrap();
        let a = Authenticator::new(vec![user(&first)]);
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:old")
        );
        assert!(a.check(&header).is_some());
        let same = a.carry_over(vec![user(&first)]);
        assert!(
            matches!(same.quick(&header), Quick::Known(_)),
            "kept: no Argon2 again"
        );
        let changed = a.carry_over(vec![user(&hash_password("new").unwrap())]);
        assert!(
            matches!(changed.quick(&header), Quick::NeedsPassword(_)),
            "dropped with the old password"
        );
        assert_eq!(changed.check(&header), None);
        assert!(
            matches!(
                a.carry_over(Vec::new()).quick(&header),
                Quick::NeedsPassword(_)
            ),
            "dropped with the user"
        );
    }

    #[test]
    fn an_unknown_user_is_refused_after_a_decoy_argon2_verification() {
        let a = Authenticator::new(Vec::new());
        // The decoy is a real Argon2id hash with the parameters of every
        // configured password (`hash-password`), so verifying it costs
        // what verifying a wrong password costs.
        let decoy = PasswordHash::new(&a.decoy).expect("a PHC string");
        let real_hash = hash_password("x").unwrap();
        let real = PasswordHash::new(&real_hash).unwrap();
        assert_eq!(decoy.algorithm, real.algorithm);
        assert_eq!(
            decoy.params.iter().collect::<Vec<_>>(),
            real.params.iter().collect::<Vec<_>>()
        );
        let Quick::NeedsPassword(check) = a.quick("Basic bWFsbG9yeTpndWVzcw==") else {
            panic!("a Basic header needs a password check");
        };
        assert_eq!(check.username, "mallory");
        assert_eq!(a.verify_password(&check), None);
    }

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
        assert!(Authenticator::is_admin(Some("bearer adm"), Some("adm")));
        assert!(!Authenticator::is_admin(Some("Basic adm"), Some("adm")));
        assert!(!Authenticator::is_admin(Some("Bearer adm2"), Some("adm")));
        assert!(!Authenticator::is_admin(None, Some("adm")));
        assert!(!Authenticator::is_admin(Some("Bearer adm"), None));
    }
}

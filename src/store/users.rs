//! The users file, `<state-dir>/users`: one user a line,
//! `name:role:argon2id-PHC-hash`, mode 0600, replaced atomically. Passwords
//! are only ever stored as memory-hard hashes and never logged.

use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};

use crate::vocab::Role;

/// Why the users file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading or writing failed.
    #[error("users file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line does not parse.
    #[error("users file line {line}: {reason}")]
    Corrupt {
        /// The line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The user exists already.
    #[error("user {0} exists already")]
    Exists(String),
    /// No such user.
    #[error("no user {0}")]
    Unknown(String),
    /// The name has characters outside `[A-Za-z0-9._-]` or is empty.
    #[error("user names use letters, digits, '.', '_' and '-' (1 to 64 characters): {0:?}")]
    BadName(String),
    /// An empty password.
    #[error("the password is empty")]
    EmptyPassword,
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

#[derive(Debug, Clone)]
struct User {
    name: String,
    role: Role,
    hash: String,
}

/// The users file, loaded.
#[derive(Debug, Clone)]
pub struct UsersFile {
    path: PathBuf,
    users: Vec<User>,
}

/// A PHC hash of a random password, verified against when a user is
/// unknown, so that unknown and known users cost the same time.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4E2JXVdGGTRA5Vd2n6gsRmi+aYrYk8Ykl1SxRtGsoUY";

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// argon2's working memory, kept between password checks.
#[derive(Debug, Default)]
pub struct Scratch(Vec<argon2::Block>);

/// Largest argon2 memory a users-file hash may ask for (256 MiB): beyond,
/// the hash is refused rather than allocated.
const MAX_BLOCKS: usize = 256 * 1024;

/// Does `password` hash to `hash` (a PHC string)? The hash is recomputed
/// with its own algorithm, version, parameters and salt in `scratch`, and
/// compared in constant time.
fn verify_into(hash: &str, password: &str, scratch: &mut Scratch) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        argon2::Algorithm::try_from(parsed.algorithm),
        argon2::Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return false;
    }
    if scratch.0.len() < blocks {
        scratch.0.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    if argon
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut out,
            &mut scratch.0[..blocks],
        )
        .is_err()
    {
        return false;
    }
    // password_hash's Output compares in constant time.
    argon2::password_hash::Output::new(&out).is_ok_and(|computed| computed == expected)
}

impl UsersFile {
    /// Load `<state_dir>/users`; a missing file is an empty one.
    pub fn load(state_dir: &Path) -> Result<UsersFile, UsersError> {
        let path = state_dir.join("users");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(UsersError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let mut users = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let corrupt = |reason: &str| UsersError::Corrupt {
                line: i + 1,
                reason: reason.to_owned(),
            };
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(corrupt("want name:role:hash"));
            };
            let role = role.parse::<Role>().map_err(|e| corrupt(&e))?;
            PasswordHash::new(hash).map_err(|_| corrupt("bad password hash"))?;
            users.push(User {
                name: name.to_owned(),
                role,
                hash: hash.to_owned(),
            });
        }
        Ok(UsersFile { path, users })
    }

    /// True when no user exists.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Every user and role.
    pub fn list(&self) -> Vec<(String, Role)> {
        self.users
            .iter()
            .map(|u| (u.name.clone(), u.role))
            .collect()
    }

    /// Add a user and save.
    pub fn add(&mut self, name: &str, role: Role, password: &str) -> Result<(), UsersError> {
        if !valid_name(name) {
            return Err(UsersError::BadName(name.to_owned()));
        }
        if password.is_empty() {
            return Err(UsersError::EmptyPassword);
        }
        if self.users.iter().any(|u| u.name == name) {
            return Err(UsersError::Exists(name.to_owned()));
        }
        let salt_bytes: [u8; 16] = rand::random();
        let salt =
            SaltString::encode_b64(&salt_bytes).map_err(|e| UsersError::Hash(e.to_string()))?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| UsersError::Hash(e.to_string()))?
            .to_string();
        self.users.push(User {
            name: name.to_owned(),
            role,
            hash,
        });
        self.save()
    }

    /// Remove a user and save.
    pub fn remove(&mut self, name: &str) -> Result<(), UsersError> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before {
            return Err(UsersError::Unknown(name.to_owned()));
        }
        self.save()
    }

    /// The role of `name` when `password` is right.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        self.verify_with(name, password, &mut Scratch::default())
    }

    /// [`UsersFile::verify`] with argon2's working memory taken from
    /// `scratch` (grown once to the hash's size, then reused), so that a
    /// thread checking passwords one after another allocates it once.
    pub fn verify_with(&self, name: &str, password: &str, scratch: &mut Scratch) -> Option<Role> {
        let user = self.users.iter().find(|u| u.name == name);
        let hash = user.map(|u| u.hash.as_str()).unwrap_or(DUMMY_HASH);
        let ok = verify_into(hash, password, scratch);
        user.filter(|_| ok).map(|u| u.role)
    }

    fn save(&self) -> Result<(), UsersError> {
        let mut text = String::from(
            "# pcipass users: name:role:argon2id hash (managed by `pcipass user-add`)\n",
        );
        for u in &self.users {
            text.push_str(&format!("{}:{}:{}\n", u.name, u.role, u.hash));
        }
        let io = |source| UsersError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            super::prepare_state_dir(dir).map_err(io)?;
        }
        super::write_private(&self.path, text.as_bytes()).map_err(io)
    }
}

/// A random password for generated accounts (demo).
pub fn random_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = UsersFile::load(dir.path()).unwrap();
        assert!(users.is_empty());
        users.add("alice", Role::PoolOperator, "s3cret").unwrap();
        let users = UsersFile::load(dir.path()).unwrap();
        assert_eq!(users.verify("alice", "s3cret"), Some(Role::PoolOperator));
        assert_eq!(users.verify("alice", "wrong"), None);
        assert_eq!(users.verify("bob", "s3cret"), None);
        let text = std::fs::read_to_string(dir.path().join("users")).unwrap();
        assert!(!text.contains("s3cret"), "only the hash is stored");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("users"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut users = users;
        assert!(matches!(
            users.add("alice", Role::ReadOnly, "x"),
            Err(UsersError::Exists(_))
        ));
        assert!(matches!(
            users.add("a:b", Role::ReadOnly, "x"),
            Err(UsersError::BadName(_))
        ));
        users.remove("alice").unwrap();
        assert!(matches!(users.remove("alice"), Err(UsersError::Unknown(_))));
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn reused_memory_verifies_as_argon2_itself_does() {
        use argon2::password_hash::PasswordVerifier;
        let mut scratch = Scratch::default();
        for (m, t) in [(19_456, 2), (8, 1), (65_536, 1)] {
            let params = argon2::Params::new(m, t, 1, None).unwrap();
            let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            let hash = argon.hash_password(b"s3cret", &salt).unwrap().to_string();
            for (password, right) in [("s3cret", true), ("s3cre", false), ("", false)] {
                let oracle = Argon2::default()
                    .verify_password(password.as_bytes(), &PasswordHash::new(&hash).unwrap())
                    .is_ok();
                assert_eq!(oracle, right);
                assert_eq!(
                    verify_into(&hash, password, &mut scratch),
                    right,
                    "m={m} {password}"
                );
            }
        }
        assert!(!verify_into("not a hash", "x", &mut scratch));
        assert!(!verify_into(DUMMY_HASH, "x", &mut scratch));
    }
}

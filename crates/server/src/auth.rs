//! Tokens and scopes.
//!
//! A token is `iw_<id>_<secret>`: an 8-byte public id (hex) that names it
//! in files and logs, and a random 256-bit secret (hex) shown once, when it
//! is created. The tokens file (`tokens.json` in the data directory, mode
//! 0600) keeps only the SHA-256 of each secret; a presented token is found
//! by its id and its secret's digest compared in constant time (`subtle`).
//! A fast hash is right here: the secret is 256 random bits, not a human
//! password, so there is nothing to guess offline.
//!
//! Scopes: `ingest` (optionally limited to one stream) may send events,
//! `read` may query, `admin` may do everything. The protocols' own header
//! conventions are all read: `Authorization: Bearer <token>`,
//! `ApiKey <token>` (or Elasticsearch's base64 of `id:token`), `Basic`
//! with the token as password, and `Splunk <token>`.
//!
//! The file is read again whenever it changes, so `inferwatch token create`
//! takes effect on a running server without a restart.
//!
//! A token may expire (`token create --expires 30d`): its record keeps the
//! wall-clock instant, and from then on it is refused with 401 and a reason
//! that says it expired (HEC: 403 code 4, HEC's invalid token), checked
//! only after its secret matched, so the answer tells nothing to someone
//! who does not hold it. A record whose expiry cannot be read is expired.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use inferwatch_query::scram::{PgLoginCandidate, PgLogins, ScramVerifier, SCRAM_ITERATIONS};

use crate::ratelimit::RateLimit;
use crate::ServerError;

/// The tokens file's name in the data directory.
pub const TOKENS_FILE: &str = "tokens.json";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send events (to one stream, or to any).
    Ingest,
    /// Query.
    Read,
    /// Everything.
    Admin,
}

impl std::str::FromStr for Scope {
    type Err = ServerError;

    fn from_str(text: &str) -> Result<Scope, ServerError> {
        match text {
            "ingest" => Ok(Scope::Ingest),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(ServerError::Config(format!(
                "unknown scope '{other}': use ingest, read or admin"
            ))),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        })
    }
}

/// One stored token: never the secret, only its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// The public id (16 hex digits).
    pub id: String,
    /// What it may do.
    pub scope: Scope,
    /// For `ingest`: the one stream it may send to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// SHA-256 of the secret's 32 bytes, hex.
    pub sha256: String,
    /// When it was made (RFC 3339, wall clock).
    pub created_at: String,
    /// When it stops working (RFC 3339, wall clock); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The token's SCRAM-SHA-256 verifier in Postgres' form
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`): the
    /// Postgres wire checks logins against it. Tokens made before verifiers
    /// were stored have none and cannot log in over the Postgres wire
    /// (HTTP still takes them); make a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram: Option<String>,
    /// Its own ingest rate limit, over the node's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

impl TokenRecord {
    /// Whether it has expired at `now` (fails closed on an unreadable time).
    pub fn is_expired_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        match &self.expires_at {
            None => false,
            Some(text) => {
                chrono::DateTime::parse_from_rfc3339(text).map_or(true, |expires| expires <= now)
            }
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenRecord>,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// Any valid token (protocol probes such as Elasticsearch's `GET /`).
    Any,
    /// Sending events to this stream.
    Ingest(&'a str),
    /// Sending events to some stream, before the body says which: checked
    /// first, so a request without the right to ingest at all is refused
    /// before its body is read (each stream is checked once known).
    IngestSomewhere,
    /// Queries.
    Read,
    /// Administration.
    Admin,
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials at all (401).
    Missing,
    /// An `Authorization` header that could not be read (401).
    Malformed,
    /// Unknown or wrong token (401; HEC says 403).
    Invalid,
    /// A right token past its expiry (401; HEC says 403).
    Expired,
    /// A valid token without the scope or stream (403).
    Forbidden,
}

impl Denied {
    /// The HTTP status that goes with it.
    pub fn status(self) -> u16 {
        match self {
            Denied::Missing | Denied::Malformed | Denied::Invalid | Denied::Expired => 401,
            Denied::Forbidden => 403,
        }
    }

    /// A reason for the client.
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Missing => {
                "a token is required (Authorization: Bearer, ApiKey, Basic or Splunk)"
            }
            Denied::Malformed => "the Authorization header could not be read",
            Denied::Invalid => "invalid token",
            Denied::Expired => "the token expired; create a new one with `inferwatch token create`",
            Denied::Forbidden => "the token's scope does not allow this",
        }
    }
}

/// The credential in an `Authorization` header value.
pub fn presented_token(header: Option<&str>) -> Result<String, Denied> {
    let Some(header) = header.map(str::trim).filter(|header| !header.is_empty()) else {
        return Err(Denied::Missing);
    };
    let (kind, value) = header.split_once(' ').ok_or(Denied::Malformed)?;
    let value = value.trim();
    let decode = |value: &str| -> Option<String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        String::from_utf8(bytes).ok()
    };
    match kind.to_ascii_lowercase().as_str() {
        "bearer" | "splunk" => Ok(value.to_string()),
        "apikey" => {
            if value.starts_with("iw_") {
                return Ok(value.to_string());
            }
            // Elasticsearch's own form: base64 of `id:api_key`.
            let decoded = decode(value).ok_or(Denied::Malformed)?;
            Ok(match decoded.split_once(':') {
                Some((_, key)) => key.to_string(),
                None => decoded,
            })
        }
        "basic" => {
            let decoded = decode(value).ok_or(Denied::Malformed)?;
            let (_, password) = decoded.split_once(':').ok_or(Denied::Malformed)?;
            Ok(password.to_string())
        }
        _ => Err(Denied::Malformed),
    }
}

fn split_token(token: &str) -> Option<(&str, [u8; 32])> {
    let rest = token.strip_prefix("iw_")?;
    let (id, secret) = rest.split_once('_')?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(secret, &mut bytes).ok()?;
    Some((id, bytes))
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Makes a token that expires after `lifetime` (never when `None`):
/// returns its text (shown once) and its record, whose SCRAM verifier uses
/// `scram_salt` and `scram_iterations`.
pub fn new_token(
    scope: Scope,
    stream: Option<String>,
    lifetime: Option<chrono::Duration>,
    scram_salt: &[u8],
    scram_iterations: u32,
) -> (String, TokenRecord) {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    // ThreadRng is a CSPRNG (ChaCha) seeded from the OS.
    let mut rng = rand::rng();
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let token = format!("iw_{id}_{}", hex::encode(secret));
    let now = chrono::Utc::now();
    let record = TokenRecord {
        id,
        scope,
        stream,
        sha256: hex::encode(digest(&secret)),
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        expires_at: lifetime
            .map(|lifetime| (now + lifetime).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        scram: Some(ScramVerifier::derive(&token, scram_salt, scram_iterations).to_string()),
        rate_limit: None,
    };
    (token, record)
}

fn read_file(path: &Path) -> Result<TokensFile, ServerError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
            ServerError::Config(format!(
                "{}:{}:{}: {error}",
                path.display(),
                error.line(),
                error.column()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(TokensFile::default()),
        Err(error) => Err(ServerError::io(path, error)),
    }
}

/// Creates a token in `data`'s tokens file, expiring after `lifetime`
/// (never when `None`); returns the token text, which is not stored
/// anywhere.
pub fn create_token(
    data: &Path,
    scope: Scope,
    stream: Option<String>,
    lifetime: Option<chrono::Duration>,
) -> Result<(String, TokenRecord), ServerError> {
    create_limited_token(data, scope, stream, lifetime, None)
}

/// [`create_token`] with the token's own ingest rate limit.
pub fn create_limited_token(
    data: &Path,
    scope: Scope,
    stream: Option<String>,
    lifetime: Option<chrono::Duration>,
    rate_limit: Option<RateLimit>,
) -> Result<(String, TokenRecord), ServerError> {
    if rate_limit.is_some() && !matches!(scope, Scope::Ingest | Scope::Admin) {
        return Err(ServerError::Config(
            "--rate-limit limits ingest, so only ingest and admin tokens take one".into(),
        ));
    }
    if stream.is_some() && scope != Scope::Ingest {
        return Err(ServerError::Config(
            "--stream limits ingest tokens only".into(),
        ));
    }
    if lifetime.is_some_and(|lifetime| lifetime <= chrono::Duration::zero()) {
        return Err(ServerError::Config(
            "a token's lifetime must be longer than zero".into(),
        ));
    }
    std::fs::create_dir_all(data).map_err(|error| ServerError::io(data, error))?;
    let path = data.join(TOKENS_FILE);
    let mut file = read_file(&path)?;
    // One salt for the whole file: a Postgres client proves it holds a
    // token before the server knows which token it is, so the server
    // announces one salt and tries the proof against every verifier.
    let (salt, iterations) = newest_verifier(&file.tokens)
        .map(|verifier| (verifier.salt, verifier.iterations))
        .unwrap_or_else(|| (ScramVerifier::random_salt(), SCRAM_ITERATIONS));
    let (token, mut record) = new_token(scope, stream, lifetime, &salt, iterations);
    record.rate_limit = rate_limit;
    file.tokens.push(record.clone());
    write_file(&path, &file)?;
    Ok((token, record))
}

/// The verifier of the newest token that has one.
fn newest_verifier(tokens: &[TokenRecord]) -> Option<ScramVerifier> {
    tokens
        .iter()
        .rev()
        .find_map(|record| ScramVerifier::parse(record.scram.as_deref()?).ok())
}

/// The tokens in `data`'s tokens file.
pub fn list_tokens(data: &Path) -> Result<Vec<TokenRecord>, ServerError> {
    Ok(read_file(&data.join(TOKENS_FILE))?.tokens)
}

/// Removes the token with `id`; returns whether there was one.
pub fn revoke_token(data: &Path, id: &str) -> Result<bool, ServerError> {
    let path = data.join(TOKENS_FILE);
    let mut file = read_file(&path)?;
    let before = file.tokens.len();
    file.tokens.retain(|token| token.id != id);
    if file.tokens.len() == before {
        return Ok(false);
    }
    write_file(&path, &file)?;
    Ok(true)
}

/// Writes the file whole, then renames it into place: a reader sees the
/// old list or the new one, never half of one.
fn write_file(path: &Path, file: &TokensFile) -> Result<(), ServerError> {
    let temporary = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(file)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let io = |error| ServerError::io(&temporary, error);
    let mut handle = options.open(&temporary).map_err(io)?;
    std::io::Write::write_all(&mut handle, &text).map_err(io)?;
    handle.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(|error| ServerError::io(path, error))
}

struct Cache {
    modified: Option<SystemTime>,
    tokens: Vec<TokenRecord>,
}

/// The tokens a server checks requests against.
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<Cache>,
}

impl TokenStore {
    /// Reads `data`'s tokens file (a missing file is no tokens).
    pub fn open(data: &Path) -> Result<TokenStore, ServerError> {
        let store = TokenStore {
            path: data.join(TOKENS_FILE),
            cache: Mutex::new(Cache {
                modified: None,
                tokens: Vec::new(),
            }),
        };
        store.refresh()?;
        Ok(store)
    }

    /// Reads the file again if it changed.
    fn refresh(&self) -> Result<(), ServerError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|meta| meta.modified())
            .ok();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.modified == modified && modified.is_some() {
            return Ok(());
        }
        cache.tokens = read_file(&self.path)?.tokens;
        cache.modified = modified;
        Ok(())
    }

    /// Checks the `Authorization` header value against `need`.
    pub fn check(&self, header: Option<&str>, need: Need<'_>) -> Result<TokenRecord, Denied> {
        let token = presented_token(header)?;
        let (id, secret) = split_token(&token).ok_or(Denied::Invalid)?;
        if let Err(error) = self.refresh() {
            // Keep the last good list: a half-edited file must not lock
            // everyone out, nor let anyone in.
            eprintln!("inferwatch serve: {error}");
        }
        let presented = digest(&secret);
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let record = cache
            .tokens
            .iter()
            .find(|record| record.id == id)
            .ok_or(Denied::Invalid)?;
        let mut stored = [0u8; 32];
        if hex::decode_to_slice(&record.sha256, &mut stored).is_err() {
            return Err(Denied::Invalid);
        }
        if !bool::from(stored.ct_eq(&presented)) {
            return Err(Denied::Invalid);
        }
        if record.is_expired_at(chrono::Utc::now()) {
            return Err(Denied::Expired);
        }
        let allowed = match (record.scope, need) {
            (Scope::Admin, _) | (_, Need::Any) => true,
            (Scope::Ingest, Need::Ingest(stream)) => {
                record.stream.as_deref().is_none_or(|only| only == stream)
            }
            (Scope::Ingest, Need::IngestSomewhere) => true,
            (Scope::Read, Need::Read) => true,
            _ => false,
        };
        if allowed {
            Ok(record.clone())
        } else {
            Err(Denied::Forbidden)
        }
    }
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TokenStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The Postgres wire's logins: every token with a verifier that shares the
/// newest one's salt. A token that is expired, or whose scope cannot read,
/// still matches (so the client hears why it was turned away) but is
/// refused; a revoked token is no longer in the file and matches nothing.
impl PgLogins for TokenStore {
    fn candidates(&self) -> Vec<PgLoginCandidate> {
        if let Err(error) = self.refresh() {
            eprintln!("inferwatch serve: {error}");
        }
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = chrono::Utc::now();
        let Some(newest) = newest_verifier(&cache.tokens) else {
            return Vec::new();
        };
        let mut candidates = Vec::new();
        for record in cache.tokens.iter().rev() {
            let Some(verifier) = record
                .scram
                .as_deref()
                .and_then(|text| ScramVerifier::parse(text).ok())
            else {
                continue;
            };
            if verifier.salt != newest.salt || verifier.iterations != newest.iterations {
                continue;
            }
            let refusal = if record.is_expired_at(now) {
                Some(Denied::Expired.reason().to_string())
            } else if record.scope == Scope::Ingest {
                Some(format!(
                    "token {} has scope ingest; SQL needs a read or admin token",
                    record.id
                ))
            } else {
                None
            };
            candidates.push(PgLoginCandidate { verifier, refusal });
        }
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_digest_scope_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, record) =
            create_token(dir.path(), Scope::Ingest, Some("gw".into()), None).unwrap();
        let (read, _) = create_token(dir.path(), Scope::Read, None, None).unwrap();
        let text = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!text.contains(&ingest[20..]), "the secret is not stored");
        assert!(text.contains(&record.sha256));
        let store = TokenStore::open(dir.path()).unwrap();
        let bearer = format!("Bearer {ingest}");
        assert!(store.check(Some(&bearer), Need::Ingest("gw")).is_ok());
        assert_eq!(
            store.check(Some(&bearer), Need::Ingest("inference")),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            store.check(Some(&bearer), Need::Read),
            Err(Denied::Forbidden)
        );
        assert!(store.check(Some(&bearer), Need::Any).is_ok());
        let read_header = format!("Splunk {read}");
        assert!(store.check(Some(&read_header), Need::Read).is_ok());
        // A wrong secret with a right id.
        let mut wrong = ingest.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            store.check(Some(&format!("Bearer {wrong}")), Need::Any),
            Err(Denied::Invalid)
        );
        assert_eq!(store.check(None, Need::Any), Err(Denied::Missing));
        assert_eq!(
            store.check(Some("Bearer"), Need::Any),
            Err(Denied::Malformed)
        );
        // Tokens made while serving are seen.
        let (admin, _) = create_token(dir.path(), Scope::Admin, None, None).unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("elastic:{admin}"));
        assert!(store
            .check(Some(&format!("Basic {basic}")), Need::Admin)
            .is_ok());
        let api_key = base64::engine::general_purpose::STANDARD.encode(format!("x:{admin}"));
        assert!(store
            .check(Some(&format!("ApiKey {api_key}")), Need::Ingest("any"))
            .is_ok());
        assert!(revoke_token(dir.path(), &record.id).unwrap());
    }

    #[test]
    fn an_expired_token_is_refused_as_expired_only_once_its_secret_matched() {
        let dir = tempfile::tempdir().unwrap();
        let (token, record) = create_token(
            dir.path(),
            Scope::Read,
            None,
            Some(chrono::Duration::days(30)),
        )
        .unwrap();
        let expires =
            chrono::DateTime::parse_from_rfc3339(record.expires_at.as_deref().unwrap()).unwrap();
        let in_29_days = chrono::Utc::now() + chrono::Duration::days(29);
        assert!(expires > in_29_days);
        assert!(!record.is_expired_at(in_29_days));
        assert!(record.is_expired_at(chrono::Utc::now() + chrono::Duration::days(31)));
        let store = TokenStore::open(dir.path()).unwrap();
        let bearer = format!("Bearer {token}");
        assert!(store.check(Some(&bearer), Need::Read).is_ok());
        // Expire it in the file (the server reads the file again).
        let path = dir.path().join(TOKENS_FILE);
        let mut file = read_file(&path).unwrap();
        file.tokens[0].expires_at = Some("2020-01-01T00:00:00Z".into());
        write_file(&path, &file).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(store.check(Some(&bearer), Need::Read), Err(Denied::Expired));
        assert_eq!(Denied::Expired.status(), 401);
        assert!(Denied::Expired.reason().contains("expired"));
        let mut wrong = token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            store.check(Some(&format!("Bearer {wrong}")), Need::Read),
            Err(Denied::Invalid),
            "a wrong secret learns nothing about the expiry"
        );
        // An unreadable expiry fails closed.
        file.tokens[0].expires_at = Some("soon".into());
        assert!(file.tokens[0].is_expired_at(chrono::Utc::now()));
        assert!(create_token(
            dir.path(),
            Scope::Read,
            None,
            Some(chrono::Duration::zero())
        )
        .is_err());
    }

    #[test]
    fn each_token_gets_a_scram_verifier_with_the_files_one_salt_and_logins_say_why_they_are_refused(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (read, read_record) = create_token(dir.path(), Scope::Read, None, None).unwrap();
        let (ingest, ingest_record) = create_token(dir.path(), Scope::Ingest, None, None).unwrap();
        let read_verifier = ScramVerifier::parse(read_record.scram.as_deref().unwrap()).unwrap();
        let ingest_verifier =
            ScramVerifier::parse(ingest_record.scram.as_deref().unwrap()).unwrap();
        assert_eq!(
            read_verifier.salt, ingest_verifier.salt,
            "one salt per file"
        );
        assert_eq!(read_verifier.iterations, SCRAM_ITERATIONS);
        assert_eq!(
            read_verifier,
            ScramVerifier::derive(&read, &read_verifier.salt, SCRAM_ITERATIONS),
            "the verifier is the token's"
        );
        assert_ne!(read_verifier.stored_key, ingest_verifier.stored_key);
        let text = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!text.contains(&ingest[20..]) && !text.contains(&read[20..]));
        // A token from before verifiers has none and is no Postgres login.
        let path = dir.path().join(TOKENS_FILE);
        let mut file = read_file(&path).unwrap();
        file.tokens[0].scram = None;
        write_file(&path, &file).unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let candidates = store.candidates();
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].verifier, ingest_verifier);
        assert!(
            candidates[0]
                .refusal
                .as_deref()
                .unwrap()
                .contains("scope ingest"),
            "{:?}",
            candidates[0].refusal
        );
        // It still works over HTTP, where its SHA-256 is checked.
        assert!(store
            .check(Some(&format!("Bearer {read}")), Need::Read)
            .is_ok());
    }
}

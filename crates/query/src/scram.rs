//! SCRAM-SHA-256 logins (RFC 5802, RFC 7677) checked against stored
//! verifiers: the Postgres wire's login when the node's tokens are on.
//!
//! A verifier is what Postgres keeps in `pg_authid`: the salt, the
//! iteration count, `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`, written as
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).
//! Whoever reads it can neither log in nor recover the password: the
//! client proves it knows `ClientKey`, and only `H(ClientKey)` is stored.
//!
//! Why the exchange is written here: pgwire 0.41's `ScramAuth` checks a
//! proof by recomputing it from the *salted password*, which its
//! `AuthSource` must hand over. A salted password is enough to log in
//! (it is the client's whole secret after PBKDF2), so storing it for each
//! token would make the tokens file a list of working credentials. pgwire
//! has no hook that takes `StoredKey`/`ServerKey` instead, so
//! `ScramStartup` runs the three messages itself and verifies as Postgres
//! does: `ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)`, then
//! `H(ClientKey) == StoredKey` in constant time.
//!
//! The password is a token; the user name does not say which one. The
//! server must send a salt before the client's proof arrives, so every
//! verifier a [`PgLogins`] offers for one login shares one salt and
//! iteration count (the tokens file keeps one), and the proof is tried
//! against each of them.
//!
//! With TLS on, a TLS connection is also offered `SCRAM-SHA-256-PLUS` with
//! `tls-server-end-point` channel binding (RFC 5929): the proof then covers
//! the hash of the server's certificate, so a man in the middle holding
//! another certificate cannot relay the login (`psql
//! channel_binding=require`). A client that could bind but was told the
//! server cannot (`y`) is refused on a connection that offered it, as
//! Postgres does: that is a downgrade.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use datafusion_postgres::pgwire::api::auth::sasl::scram::gen_salted_password;
use datafusion_postgres::pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, LoginInfo, StartupHandler,
};
use datafusion_postgres::pgwire::api::{
    ClientInfo, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::Authentication;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::{Sink, SinkExt};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::QueryError;

/// The iteration count new verifiers get (Postgres' default).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// The mechanism offered.
const MECHANISM: &str = "SCRAM-SHA-256";

/// The mechanism with channel binding, offered on TLS connections.
const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// The one channel-binding type offered (RFC 5929; what Postgres uses).
const BINDING_TYPE: &str = "tls-server-end-point";

/// `tls-server-end-point` data: the hash of the server's (first)
/// certificate, with the hash of its signature algorithm, SHA-256 for MD5
/// and SHA-1 (RFC 5929 section 4.1).
pub(crate) fn tls_server_end_point(certificates_pem: &[u8]) -> Result<Vec<u8>, QueryError> {
    use x509_certificate::{CapturedX509Certificate, SignatureAlgorithm};
    let certificates = CapturedX509Certificate::from_pem_multiple(certificates_pem)
        .map_err(|error| QueryError::Tls(format!("reading the certificate: {error}")))?;
    let certificate = certificates
        .first()
        .ok_or_else(|| QueryError::Tls("no certificate in the PEM".into()))?;
    let der = certificate.constructed_data();
    match certificate.signature_algorithm() {
        Some(SignatureAlgorithm::RsaSha384 | SignatureAlgorithm::EcdsaSha384) => {
            Ok(sha2::Sha384::digest(der).to_vec())
        }
        Some(SignatureAlgorithm::RsaSha512) => Ok(sha2::Sha512::digest(der).to_vec()),
        Some(
            SignatureAlgorithm::RsaSha1
            | SignatureAlgorithm::RsaSha256
            | SignatureAlgorithm::EcdsaSha256,
        ) => Ok(sha256(der).to_vec()),
        // Ed25519 signs without a separate hash: RFC 5929 names none.
        _ => Err(QueryError::Tls(
            "the certificate's signature algorithm names no hash for channel binding".into(),
        )),
    }
}

type HmacSha256 = hmac::Hmac<Sha256>;

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A SCRAM-SHA-256 verifier: what the server keeps instead of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 rounds the client runs.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// `H(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// Derives the verifier of `password` (SASLprep-normalised, as clients do).
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let salted = gen_salted_password(password, salt, iterations as usize);
        let client_key = hmac(&salted, b"Client Key");
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A fresh random 16-byte salt.
    pub fn random_salt() -> Vec<u8> {
        rand::random::<[u8; 16]>().to_vec()
    }

    /// Reads Postgres' form, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<ScramVerifier, QueryError> {
        let bad = || QueryError::Sql(format!("not a SCRAM-SHA-256 verifier: '{text}'"));
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (parameters, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = parameters.split_once(':').ok_or_else(bad)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(bad)?;
        let key = |text: &str| -> Option<[u8; 32]> { STANDARD.decode(text).ok()?.try_into().ok() };
        Ok(ScramVerifier {
            iterations: iterations.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
            salt: STANDARD.decode(salt).map_err(|_| bad())?,
            stored_key: key(stored_key).ok_or_else(bad)?,
            server_key: key(server_key).ok_or_else(bad)?,
        })
    }

    /// Checks a client's proof for `auth_message`; on success, the server's
    /// signature that proves to the client that the server knew the verifier.
    fn verify(&self, auth_message: &[u8], proof: &[u8]) -> Option<[u8; 32]> {
        if proof.len() != 32 {
            return None;
        }
        let signature = hmac(&self.stored_key, auth_message);
        let mut client_key = [0u8; 32];
        for (index, byte) in client_key.iter_mut().enumerate() {
            *byte = proof[index] ^ signature[index];
        }
        if bool::from(sha256(&client_key).ct_eq(&self.stored_key)) {
            Some(hmac(&self.server_key, auth_message))
        } else {
            None
        }
    }
}

impl std::fmt::Display for ScramVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl Debug for ScramVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// One credential a login may match.
#[derive(Debug, Clone)]
pub struct PgLoginCandidate {
    /// Its verifier.
    pub verifier: ScramVerifier,
    /// Why a client that proves it holds this credential is still turned
    /// away (expired, no read scope); `None` lets it in.
    pub refusal: Option<String>,
}

/// Where the Postgres wire finds the credentials it accepts (the node's
/// tokens file; see `inferwatch_server::auth`).
pub trait PgLogins: Send + Sync + Debug {
    /// The credentials a login may match, all with one salt and iteration
    /// count (the first one's; others are ignored). Read on every login, so
    /// new and revoked credentials take effect at once.
    fn candidates(&self) -> Vec<PgLoginCandidate>;
}

/// Where one connection's exchange stands.
enum Exchange {
    /// Waiting for the client's first message.
    Initial,
    /// The server's first message is sent; waiting for the proof.
    ServerFirstSent {
        /// What the client's `c=` must hold: the gs2 header, and with
        /// `p=` the certificate hash after it.
        channel_binding: Vec<u8>,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        candidates: Vec<PgLoginCandidate>,
    },
}

/// The startup handler of one connection for token logins.
pub(crate) struct ScramStartup {
    logins: Arc<dyn PgLogins>,
    /// The one user name accepted, or any when `None`.
    user: Option<String>,
    /// A salt to announce when there is no credential at all, so that the
    /// exchange looks the same and fails at its end.
    fallback_salt: Arc<Vec<u8>>,
    parameters: Arc<DefaultServerParameterProvider>,
    /// The certificate hash, when TLS is on (see [`tls_server_end_point`]).
    certificate_hash: Option<Arc<Vec<u8>>>,
    /// Whether this connection was offered channel binding.
    offered_plus: std::sync::atomic::AtomicBool,
    keys: RandomPidSecretKeyGenerator,
    exchange: tokio::sync::Mutex<Exchange>,
}

impl ScramStartup {
    pub(crate) fn new(
        logins: Arc<dyn PgLogins>,
        user: Option<String>,
        fallback_salt: Arc<Vec<u8>>,
        parameters: Arc<DefaultServerParameterProvider>,
        certificate_hash: Option<Arc<Vec<u8>>>,
    ) -> ScramStartup {
        ScramStartup {
            logins,
            user,
            fallback_salt,
            parameters,
            certificate_hash,
            offered_plus: std::sync::atomic::AtomicBool::new(false),
            keys: RandomPidSecretKeyGenerator::default(),
            exchange: tokio::sync::Mutex::new(Exchange::Initial),
        }
    }
}

/// A login refusal as Postgres words it: FATAL ends the connection.
fn refused(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message,
    )))
}

fn malformed(what: &str) -> PgWireError {
    refused("08P01", format!("malformed SCRAM message: {what}"))
}

/// How a client-first message asks to bind the channel.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Binding {
    /// `n`: the client does not bind.
    None,
    /// `y`: the client could, but believes the server cannot.
    ClientOnly,
    /// `p=tls-server-end-point`.
    ServerEndPoint,
}

/// `n,,n=user,r=nonce` → (gs2 header `n,,`, bare `n=user,r=nonce`, nonce,
/// binding).
fn parse_client_first(message: &str) -> PgWireResult<(String, String, String, Binding)> {
    let mut parts = message.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let authzid = parts.next().ok_or_else(|| malformed("no gs2 header"))?;
    let bare = parts.next().ok_or_else(|| malformed("no user and nonce"))?;
    let binding = match flag {
        "n" => Binding::None,
        "y" => Binding::ClientOnly,
        _ if flag == format!("p={BINDING_TYPE}") => Binding::ServerEndPoint,
        _ if flag.starts_with("p=") => {
            return Err(refused(
                "28000",
                format!(
                    "channel binding type {} is not supported; use {BINDING_TYPE}",
                    &flag[2..]
                ),
            ))
        }
        _ => return Err(malformed("unknown channel-binding flag")),
    };
    if bare.starts_with("m=") {
        return Err(malformed("unsupported mandatory extension"));
    }
    let nonce = bare
        .split(',')
        .find_map(|attribute| attribute.strip_prefix("r="))
        .filter(|nonce| !nonce.is_empty())
        .ok_or_else(|| malformed("no client nonce"))?;
    Ok((
        format!("{flag},{authzid},"),
        bare.to_string(),
        nonce.to_string(),
        binding,
    ))
}

impl ScramStartup {
    fn server_first(&self, mechanism: &str, data: &[u8]) -> PgWireResult<(String, Exchange)> {
        let message = std::str::from_utf8(data).map_err(|_| malformed("not UTF-8"))?;
        let (gs2_header, client_first_bare, client_nonce, binding) = parse_client_first(message)?;
        let offered_plus = self.offered_plus.load(std::sync::atomic::Ordering::Relaxed);
        let mut channel_binding = gs2_header.into_bytes();
        match (mechanism == MECHANISM_PLUS, binding) {
            (true, Binding::ServerEndPoint) => match (&self.certificate_hash, offered_plus) {
                (Some(hash), true) => channel_binding.extend_from_slice(hash),
                _ => {
                    return Err(refused(
                        "28000",
                        format!("{MECHANISM_PLUS} needs a TLS connection"),
                    ))
                }
            },
            (true, _) => {
                return Err(malformed(
                    "SCRAM-SHA-256-PLUS was chosen but the client does not bind the channel",
                ))
            }
            (false, Binding::ServerEndPoint) => {
                return Err(malformed(
                    "the client binds the channel but did not choose SCRAM-SHA-256-PLUS",
                ))
            }
            (false, Binding::ClientOnly) if offered_plus => return Err(refused(
                "28000",
                "SCRAM channel binding negotiation error: the server offered SCRAM-SHA-256-PLUS"
                    .into(),
            )),
            (false, _) => {}
        }
        let mut candidates = self.logins.candidates();
        let (salt, iterations) = match candidates.first() {
            Some(first) => (first.verifier.salt.clone(), first.verifier.iterations),
            None => (self.fallback_salt.to_vec(), SCRAM_ITERATIONS),
        };
        candidates.retain(|candidate| {
            candidate.verifier.salt == salt && candidate.verifier.iterations == iterations
        });
        let server_nonce = STANDARD.encode(rand::random::<[u8; 18]>());
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={iterations}", STANDARD.encode(&salt));
        Ok((
            server_first.clone(),
            Exchange::ServerFirstSent {
                channel_binding,
                client_first_bare,
                server_first,
                nonce,
                candidates,
            },
        ))
    }
}

/// Checks the client's final message; on success the server's final message.
fn server_final(
    exchange: &Exchange,
    data: &[u8],
    user: &str,
    required_user: Option<&str>,
) -> PgWireResult<String> {
    let Exchange::ServerFirstSent {
        channel_binding,
        client_first_bare,
        server_first,
        nonce,
        candidates,
    } = exchange
    else {
        return Err(malformed("unexpected message"));
    };
    let message = std::str::from_utf8(data).map_err(|_| malformed("not UTF-8"))?;
    let (without_proof, proof) = message
        .rsplit_once(",p=")
        .ok_or_else(|| malformed("no proof"))?;
    let mut attributes = without_proof.split(',');
    let binding = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("c="))
        .ok_or_else(|| malformed("no channel binding"))?;
    let final_nonce = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("r="))
        .ok_or_else(|| malformed("no nonce"))?;
    if binding != STANDARD.encode(channel_binding) {
        return Err(malformed("channel binding does not match"));
    }
    if final_nonce != nonce {
        return Err(malformed("nonce does not match"));
    }
    let proof = STANDARD
        .decode(proof)
        .map_err(|_| malformed("proof is not base64"))?;
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    // Try every candidate, so the time taken does not say which matched.
    let mut matched: Option<(&PgLoginCandidate, [u8; 32])> = None;
    for candidate in candidates {
        if let Some(signature) = candidate.verifier.verify(auth_message.as_bytes(), &proof) {
            matched.get_or_insert((candidate, signature));
        }
    }
    let wrong_user = required_user.is_some_and(|required| required != user);
    match matched {
        None => Err(refused(
            "28P01",
            format!(
                "password authentication failed for user \"{user}\": the password must be a valid inferwatch token with read scope (`inferwatch token create --scope read`)"
            ),
        )),
        Some(_) if wrong_user => Err(refused(
            "28P01",
            format!(
                "password authentication failed for user \"{user}\": this server accepts only user \"{}\"",
                required_user.unwrap_or_default()
            ),
        )),
        Some((candidate, _)) if candidate.refusal.is_some() => Err(refused(
            "28000",
            format!(
                "token refused for user \"{user}\": {}",
                candidate.refusal.as_deref().unwrap_or_default()
            ),
        )),
        Some((_, signature)) => Ok(format!("v={}", STANDARD.encode(signature))),
    }
}

#[async_trait]
impl StartupHandler for ScramStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let plus = client.is_secure() && self.certificate_hash.is_some();
                self.offered_plus
                    .store(plus, std::sync::atomic::Ordering::Relaxed);
                let mut mechanisms = vec![MECHANISM.to_string()];
                if plus {
                    // Postgres' order: the stronger one first.
                    mechanisms.insert(0, MECHANISM_PLUS.to_string());
                }
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        mechanisms,
                    )))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let mut exchange = self.exchange.lock().await;
                match &*exchange {
                    Exchange::Initial => {
                        let initial = message.into_sasl_initial_response()?;
                        if initial.auth_method != MECHANISM && initial.auth_method != MECHANISM_PLUS
                        {
                            return Err(refused(
                                "28000",
                                format!(
                                    "SASL mechanism {} is not offered; use {MECHANISM}",
                                    initial.auth_method
                                ),
                            ));
                        }
                        let data = initial
                            .data
                            .as_ref()
                            .ok_or_else(|| malformed("empty client-first message"))?;
                        let (server_first, next) = self.server_first(&initial.auth_method, data)?;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into_bytes().into()),
                            ))
                            .await?;
                        *exchange = next;
                    }
                    Exchange::ServerFirstSent { .. } => {
                        let response = message.into_sasl_response()?;
                        let user = LoginInfo::from_client_info(client)
                            .user()
                            .unwrap_or_default()
                            .to_string();
                        let outcome =
                            server_final(&exchange, &response.data, &user, self.user.as_deref());
                        *exchange = Exchange::Initial;
                        let server_final = outcome?;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(server_final.into_bytes().into()),
                            ))
                            .await?;
                        let (pid, secret_key) = self.keys.generate(client);
                        client.set_pid_and_secret_key(pid, secret_key);
                        finish_authentication(client, self.parameters.as_ref()).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example: user "user", password "pencil".
    #[test]
    fn the_rfc_7677_exchange_verifies_and_a_wrong_proof_does_not() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = ScramVerifier::derive("pencil", &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let signature = verifier.verify(auth_message.as_bytes(), &proof).unwrap();
        assert_eq!(
            STANDARD.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let mut wrong = proof.clone();
        wrong[0] ^= 1;
        assert!(verifier.verify(auth_message.as_bytes(), &wrong).is_none());
        let text = verifier.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
        assert_eq!(ScramVerifier::parse(&text).unwrap(), verifier);
        assert!(ScramVerifier::parse("SCRAM-SHA-256$0:AA==$AA==:AA==").is_err());
        assert!(!format!("{verifier:?}").contains(&STANDARD.encode(verifier.stored_key)));
    }

    #[test]
    fn the_client_first_message_is_read_with_its_channel_binding() {
        let (header, bare, nonce, binding) = parse_client_first("n,,n=,r=abc").unwrap();
        assert_eq!(
            (header.as_str(), bare.as_str(), nonce.as_str(), binding),
            ("n,,", "n=,r=abc", "abc", Binding::None)
        );
        let (header, _, _, binding) =
            parse_client_first("p=tls-server-end-point,,n=,r=abc").unwrap();
        assert_eq!(
            (header.as_str(), binding),
            ("p=tls-server-end-point,,", Binding::ServerEndPoint)
        );
        assert_eq!(
            parse_client_first("y,,n=,r=abc").unwrap().3,
            Binding::ClientOnly
        );
        assert!(parse_client_first("p=tls-unique,,n=,r=abc").is_err());
        assert!(parse_client_first("n,,m=x,n=,r=abc").is_err());
        assert!(parse_client_first("n,,n=").is_err());
    }

    #[derive(Debug)]
    struct OneToken(ScramVerifier);

    impl PgLogins for OneToken {
        fn candidates(&self) -> Vec<PgLoginCandidate> {
            vec![PgLoginCandidate {
                verifier: self.0.clone(),
                refusal: None,
            }]
        }
    }

    /// A client's final message for `exchange`, binding `channel_binding`.
    fn client_final(password: &str, exchange: &Exchange, channel_binding: &[u8]) -> String {
        let Exchange::ServerFirstSent {
            client_first_bare,
            server_first,
            nonce,
            candidates,
            ..
        } = exchange
        else {
            panic!("no server-first message");
        };
        let verifier = &candidates[0].verifier;
        let salted = gen_salted_password(password, &verifier.salt, verifier.iterations as usize);
        let client_key = hmac(&salted, b"Client Key");
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(channel_binding));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }

    #[test]
    fn a_tls_login_binds_the_certificate_hash_and_a_downgrade_is_refused() {
        let verifier = ScramVerifier::derive("iw_token", &ScramVerifier::random_salt(), 4096);
        let hash = vec![7u8; 32];
        let startup = ScramStartup::new(
            Arc::new(OneToken(verifier)),
            None,
            Arc::new(ScramVerifier::random_salt()),
            Arc::new(DefaultServerParameterProvider::default()),
            Some(Arc::new(hash.clone())),
        );
        startup
            .offered_plus
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let header = "p=tls-server-end-point,,";
        let (_, exchange) = startup
            .server_first(MECHANISM_PLUS, format!("{header}n=,r=abc").as_bytes())
            .unwrap();
        let bound = [header.as_bytes(), &hash].concat();
        let good = client_final("iw_token", &exchange, &bound);
        assert!(server_final(&exchange, good.as_bytes(), "me", None)
            .unwrap()
            .starts_with("v="));
        // A relay that terminated TLS with another certificate hashes another one.
        let relayed = client_final(
            "iw_token",
            &exchange,
            &[header.as_bytes(), &[8u8; 32]].concat(),
        );
        assert!(server_final(&exchange, relayed.as_bytes(), "me", None).is_err());
        let wrong = client_final("other", &exchange, &bound);
        assert!(server_final(&exchange, wrong.as_bytes(), "me", None).is_err());
        // The mechanism and the client's flag must agree, and a client told
        // (by someone in between) that the server cannot bind is refused.
        assert!(startup
            .server_first(MECHANISM_PLUS, b"n,,n=,r=abc")
            .is_err());
        assert!(startup
            .server_first(MECHANISM, format!("{header}n=,r=abc").as_bytes())
            .is_err());
        assert!(startup.server_first(MECHANISM, b"y,,n=,r=abc").is_err());
        let (_, plain) = startup.server_first(MECHANISM, b"n,,n=,r=abc").unwrap();
        let good = client_final("iw_token", &plain, b"n,,");
        assert!(server_final(&plain, good.as_bytes(), "me", None).is_ok());
        // Without TLS on the connection, PLUS was not offered: `y` is fine
        // and PLUS is refused.
        startup
            .offered_plus
            .store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(startup.server_first(MECHANISM, b"y,,n=,r=abc").is_ok());
        assert!(startup
            .server_first(MECHANISM_PLUS, format!("{header}n=,r=abc").as_bytes())
            .is_err());
    }
}

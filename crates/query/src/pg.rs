//! The Postgres wire server: psql, psycopg, pandas and Grafana connect here.
//!
//! Query handling (simple and extended protocol, type mapping, `pg_catalog`
//! for client introspection) comes from `datafusion-postgres`. This module
//! adds what a port facing a network needs:
//!
//! - **Read-only SQL.** [`ReadOnlyHook`] runs before `datafusion-postgres`'s
//!   own hooks and sees every statement of both protocols. Queries, `EXPLAIN`,
//!   `SHOW`, cursors over queries and transaction brackets pass; every other
//!   statement is refused by name before it is planned (`COPY`, `CREATE
//!   EXTERNAL TABLE`, `INSERT`, `DROP`, …), and the plans of those that pass
//!   are checked again with DataFusion's [`SQLOptions`](datafusion::execution::context::SQLOptions)
//!   guard. `SET` is allowed for the few session settings clients send on
//!   connect ([`HARMLESS_SETTINGS`](crate::HARMLESS_SETTINGS)); a `SET` of
//!   anything else, `datafusion.*` above all, would change the engine that
//!   every client shares, and is refused. Simple-protocol queries are executed
//!   here, from the plan that was checked, never re-parsed.
//! - **Limits.** The session's query planner gives each statement its own
//!   memory pool and deadline (see [`StatementLimits`](crate::StatementLimits)).
//! - **SCRAM-SHA-256** password authentication (the salted password is
//!   derived once, with a random salt from `rand`), and optional **TLS**
//!   (rustls), with SCRAM channel binding when TLS is on. With
//!   [`PgOptions::with_logins`] (the node with tokens on) the password is
//!   instead a read token, checked against its stored SCRAM verifier
//!   ([`crate::scram`]), with channel binding on TLS connections too.
//! - **No default password.** [`PgOptions::new`] without a password generates
//!   a random one, and only for a loopback address; a wider address without a
//!   configured password is refused.
//!
//! A failing query is answered with a Postgres error message (with the
//! SQLSTATE Postgres would use: `25006` read-only, `42501` refused setting,
//! `57014` timeout, `53200` memory); it never ends the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement};
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    gen_salted_password, ScramAuth, SCRAM_ITERATIONS,
};
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::query::SimpleQueryHandler;
use datafusion_postgres::pgwire::api::results::{QueryResponse, Response, Tag};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::ParameterStatus;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls;
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::StreamExt;
use rand::Rng;
use tokio::net::TcpListener;

use crate::read_only::{
    is_harmless_setting, is_query, statement_keywords, verify_read_only, HARMLESS_SETTINGS,
};
use crate::scram::{PgLogins, ScramStartup, ScramVerifier};
use crate::QueryError;

/// Who may connect, where, and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The one user name accepted.
    pub user: String,
    /// Its password.
    pub password: String,
    /// True when [`PgOptions::new`] made the password up; print it once.
    pub password_generated: bool,
    /// PEM certificate chain and private key; TLS is offered when set.
    pub tls: Option<PgTls>,
    /// Token logins: when set, the password is a credential these
    /// verifiers accept (see [`crate::scram`]), not `password`, and `user`
    /// is the one user name accepted (any when empty).
    pub logins: Option<Arc<dyn PgLogins>>,
}

/// Files for TLS.
#[derive(Debug, Clone)]
pub struct PgTls {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Length of a generated password (alphanumeric: ~143 bits).
const GENERATED_PASSWORD_LENGTH: usize = 24;

impl PgOptions {
    /// Options for `listen`. Without a password (`None` or empty) a random
    /// one is generated — only on a loopback address, where the person who
    /// started the server is the one who reads it from the terminal. On any
    /// other address a password must be configured: a guessable or printed
    /// default on a network port is how SQL ports get read by strangers.
    pub fn new(
        listen: SocketAddr,
        user: impl Into<String>,
        password: Option<String>,
    ) -> Result<PgOptions, QueryError> {
        let configured = password.filter(|password| !password.is_empty());
        let (password, password_generated) = match configured {
            Some(password) => (password, false),
            None if listen.ip().is_loopback() => (generate_password(), true),
            None => return Err(QueryError::PasswordRequired { listen }),
        };
        Ok(PgOptions {
            listen,
            user: user.into(),
            password,
            password_generated,
            tls: None,
            logins: None,
        })
    }

    /// Options for `listen` where clients log in with a credential that
    /// `logins` knows as the password (the node's read tokens), under
    /// `user` only, or any user name when `None`. No password is generated
    /// or needed, on any address.
    pub fn with_logins(
        listen: SocketAddr,
        user: Option<String>,
        logins: Arc<dyn PgLogins>,
    ) -> PgOptions {
        PgOptions {
            listen,
            user: user.unwrap_or_default(),
            password: String::new(),
            password_generated: false,
            tls: None,
            logins: Some(logins),
        }
    }

    /// Offers TLS with this certificate chain and key.
    pub fn with_tls(mut self, certificate: PathBuf, key: PathBuf) -> PgOptions {
        self.tls = Some(PgTls { certificate, key });
        self
    }
}

fn generate_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(GENERATED_PASSWORD_LENGTH)
        .map(char::from)
        .collect()
}

/// The one user's SCRAM secret, derived once at start: PBKDF2 with 4096
/// rounds per login would cost more than the query.
struct ScramSecret {
    user: String,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl ScramSecret {
    fn new(user: &str, password: &str) -> ScramSecret {
        let salt: [u8; 16] = rand::rng().random();
        ScramSecret {
            user: user.to_string(),
            salted_password: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            salt: salt.to_vec(),
        }
    }
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("ScramSecret")
            .field("user", &self.user)
            .finish()
    }
}

#[async_trait]
impl AuthSource for ScramSecret {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if login.user() == Some(self.user.as_str()) {
            return Ok(Password::new(
                Some(self.salt.clone()),
                self.salted_password.clone(),
            ));
        }
        // An unknown user gets a random secret, so the exchange runs to the
        // end and fails like a wrong password: no user-name oracle.
        let mut random = rand::rng();
        let salt: [u8; 16] = random.random();
        let secret: [u8; 32] = random.random();
        Ok(Password::new(Some(salt.to_vec()), secret.to_vec()))
    }
}

/// The simple protocol in front of `datafusion-postgres`: its Postgres
/// parser cannot read DataFusion's own `CREATE EXTERNAL TABLE … STORED AS
/// CSV` and would answer with a syntax error; name the refusal instead.
struct ReadOnlySimple {
    inner: Arc<DfSessionService>,
}

#[async_trait]
impl SimpleQueryHandler for ReadOnlySimple {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(refusal) = refuse_datafusion_extensions(query) {
            return Err(pg_error(refusal));
        }
        self.inner.do_query(client, query).await
    }
}

/// DataFusion's own write statements, which only its parser knows.
fn refuse_datafusion_extensions(query: &str) -> Option<QueryError> {
    use datafusion::sql::parser::{DFParser, Statement as DfStatement};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    let statements = DFParser::parse_sql_with_dialect(query, &PostgreSqlDialect {}).ok()?;
    statements.iter().find_map(|statement| match statement {
        DfStatement::CreateExternalTable(_) => Some(QueryError::ReadOnly(
            "CREATE EXTERNAL TABLE is refused".into(),
        )),
        DfStatement::CopyTo(_) => Some(QueryError::ReadOnly("COPY is refused".into())),
        _ => None,
    })
}

/// How a connection logs in: one configured password (pgwire's SCRAM), or
/// the node's tokens ([`ScramStartup`], against stored verifiers).
enum Startup {
    Password(SASLAuthStartupHandler<DefaultServerParameterProvider>),
    Tokens(ScramStartup),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Password(handler) => handler.on_startup(client, message).await,
            Startup::Tokens(handler) => handler.on_startup(client, message).await,
        }
    }
}

/// Per-connection handlers: the SASL handler keeps the exchange's state, so
/// it is never shared between connections.
struct Handlers {
    simple: Arc<ReadOnlySimple>,
    session: Arc<DfSessionService>,
    startup: Arc<Startup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        self.simple.clone()
    }

    fn extended_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }
}

/// Token logins: where the verifiers come from, the one user accepted
/// (any when `None`), and the salt announced while there are no tokens.
struct TokenLogins {
    logins: Arc<dyn PgLogins>,
    user: Option<String>,
    fallback_salt: Arc<Vec<u8>>,
}

/// What the server shares between connections.
struct Shared {
    session: Arc<DfSessionService>,
    secret: Arc<ScramSecret>,
    /// Token logins instead of the one password, when on.
    logins: Option<TokenLogins>,
    parameters: Arc<DefaultServerParameterProvider>,
    /// PEM of the certificate chain, for SCRAM channel binding.
    certificate_pem: Option<Vec<u8>>,
    /// Its `tls-server-end-point` hash, for token logins' channel binding.
    certificate_hash: Option<Arc<Vec<u8>>>,
}

impl Shared {
    fn handlers(&self) -> PgWireResult<Handlers> {
        let startup = match &self.logins {
            Some(tokens) => Startup::Tokens(ScramStartup::new(
                tokens.logins.clone(),
                tokens.user.clone(),
                tokens.fallback_salt.clone(),
                self.parameters.clone(),
                self.certificate_hash.clone(),
            )),
            None => {
                let mut scram = ScramAuth::new(self.secret.clone());
                if let Some(pem) = &self.certificate_pem {
                    scram.configure_certificate(pem)?;
                }
                Startup::Password(
                    SASLAuthStartupHandler::new(self.parameters.clone()).with_scram(scram),
                )
            }
        };
        Ok(Handlers {
            simple: Arc::new(ReadOnlySimple {
                inner: self.session.clone(),
            }),
            session: self.session.clone(),
            startup: Arc::new(startup),
        })
    }
}

/// Binds `options.listen` and serves read-only SQL until the task is dropped.
///
/// `ready` receives the bound address (useful with port 0).
pub async fn serve_postgres(
    context: Arc<SessionContext>,
    options: PgOptions,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), QueryError> {
    setup_pg_catalog(&context, "datafusion", AuthManager::new())
        .map_err(|e| QueryError::Internal(format!("setting up pg_catalog: {e}")))?;
    let (tls, certificate_pem) = match &options.tls {
        Some(tls) => {
            let (acceptor, pem) = tls_acceptor(tls)?;
            (Some(acceptor), Some(pem))
        }
        None => (None, None),
    };
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnlyHook),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let mut parameters = DefaultServerParameterProvider::default();
    // Tell clients up front: nothing here can be written.
    parameters.default_transaction_read_only = true;
    parameters.is_superuser = false;
    let shared = Shared {
        session: Arc::new(DfSessionService::new_with_hooks(context, hooks)),
        secret: Arc::new(ScramSecret::new(&options.user, &options.password)),
        logins: options.logins.clone().map(|logins| {
            let user = Some(options.user.clone()).filter(|user| !user.is_empty());
            TokenLogins {
                logins,
                user,
                fallback_salt: Arc::new(ScramVerifier::random_salt()),
            }
        }),
        parameters: Arc::new(parameters),
        certificate_hash: match certificate_pem
            .as_deref()
            .map(crate::scram::tls_server_end_point)
        {
            Some(Ok(hash)) => Some(Arc::new(hash)),
            Some(Err(error)) if options.logins.is_some() => {
                eprintln!("postgres: token logins are offered without channel binding: {error}");
                None
            }
            _ => None,
        },
        certificate_pem,
    };
    // Fail at start, not on the first connection, if the certificate is unusable.
    shared
        .handlers()
        .map_err(|error| QueryError::Tls(format!("channel binding: {error}")))?;
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| QueryError::Io {
            context: format!("listening on {}", options.listen),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| QueryError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    if let Some(ready) = ready {
        let _ = ready.send(bound);
    }
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("inferwatch: accepting a Postgres connection failed: {error}");
                continue;
            }
        };
        let handlers = match shared.handlers() {
            Ok(handlers) => Arc::new(handlers),
            Err(error) => {
                eprintln!("inferwatch: refusing a Postgres connection from {peer}: {error}");
                continue;
            }
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(error) =
                datafusion_postgres::pgwire::tokio::process_socket(socket, tls, handlers).await
            {
                eprintln!("inferwatch: Postgres connection from {peer} ended: {error}");
            }
        });
    }
}

/// A rustls acceptor for the PEM files, and the certificate PEM itself.
fn tls_acceptor(tls: &PgTls) -> Result<(TlsAcceptor, Vec<u8>), QueryError> {
    // Postgres 17 clients may open with TLS directly; they negotiate this.
    let (config, certificate_pem) =
        rustls_server_config(&tls.certificate, &tls.key, vec![b"postgresql".to_vec()])?;
    Ok((TlsAcceptor::from(config), certificate_pem))
}

/// A rustls server configuration (ring, safe default protocol versions,
/// no client certificates) from a PEM certificate chain (leaf first) and a
/// PEM private key (PKCS#8, PKCS#1 or SEC1), offering `alpn`; also returns
/// the certificate chain's PEM. Shared by the Postgres wire and the node's
/// HTTP listener.
pub fn rustls_server_config(
    certificate: &Path,
    key: &Path,
    alpn: Vec<Vec<u8>>,
) -> Result<(Arc<rustls::ServerConfig>, Vec<u8>), QueryError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| QueryError::Io {
            context: format!("reading {}", path.display()),
            source,
        })
    };
    let certificate_pem = read(certificate)?;
    let key_pem = read(key)?;
    let chain = CertificateDer::pem_slice_iter(&certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| QueryError::Tls(format!("{}: {error}", certificate.display())))?;
    if chain.is_empty() {
        return Err(QueryError::Tls(format!(
            "{}: no PEM certificate found",
            certificate.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|error| QueryError::Tls(format!("{}: {error}", key.display())))?;
    // An explicit provider: the process may link more than one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| QueryError::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| QueryError::Tls(error.to_string()))?;
    config.alpn_protocols = alpn;
    Ok((Arc::new(config), certificate_pem))
}

/// What [`ReadOnlyHook`] does with a statement.
enum Verdict {
    /// A query: plan it, check the plan, run it here (simple protocol) or
    /// hand the checked plan to `datafusion-postgres` (extended protocol).
    Query,
    /// A harmless `SET` that a later hook records for the session.
    DelegateSet,
    /// A harmless `SET` with nothing to record: answer `SET` here, so that
    /// `datafusion-postgres`'s fallback (which would run it against the
    /// shared engine) never sees it.
    AcknowledgeSet,
    /// `SET timezone = …`: per session, never the shared engine's time zone.
    SetTimeZone(String),
    /// A cursor over a query: check the query, then let the cursor hook run it.
    Declare,
    /// `SHOW`, `FETCH`, `CLOSE`, `BEGIN`/`COMMIT`/`ROLLBACK`: later hooks.
    Delegate,
    /// Refused.
    Refuse(QueryError),
}

fn judge(statement: &Statement) -> Verdict {
    if is_query(statement) {
        return Verdict::Query;
    }
    match statement {
        Statement::Declare { .. } => Verdict::Declare,
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Verdict::Delegate,
        Statement::Set(set) => judge_set(set),
        other => Verdict::Refuse(QueryError::ReadOnly(format!(
            "{} is refused",
            statement_keywords(other)
        ))),
    }
}

fn judge_set(set: &Set) -> Verdict {
    match set {
        Set::SingleAssignment {
            scope,
            hivevar: false,
            variable,
            values,
        } => {
            let name = variable.to_string();
            if !is_harmless_setting(&name) {
                return Verdict::Refuse(QueryError::SettingRefused { name });
            }
            let name = name.to_ascii_lowercase();
            if name == "timezone" {
                let value = values
                    .first()
                    .map(|value| value.to_string())
                    .unwrap_or_default();
                return Verdict::SetTimeZone(value.trim_matches(['\'', '"']).to_string());
            }
            // These `SetShowHook` records per session when given as a plain
            // value without a scope; anything else would reach its fallback.
            let recorded = matches!(
                name.as_str(),
                "statement_timeout"
                    | "datestyle"
                    | "bytea_output"
                    | "intervalstyle"
                    | "application_name"
                    | "extra_float_digits"
                    | "search_path"
            );
            let plain_value = matches!(values.as_slice(), [Expr::Value(_)]);
            if recorded && scope.is_none() && (plain_value || name == "statement_timeout") {
                Verdict::DelegateSet
            } else {
                Verdict::AcknowledgeSet
            }
        }
        Set::SetTimeZone { local: false, .. } => Verdict::DelegateSet,
        Set::SetTimeZone { local: true, value } => {
            Verdict::SetTimeZone(value.to_string().trim_matches(['\'', '"']).to_string())
        }
        // `SET [SESSION CHARACTERISTICS AS] TRANSACTION READ ONLY …`: true anyway.
        Set::SetTransaction { .. } => Verdict::AcknowledgeSet,
        other => Verdict::Refuse(QueryError::SettingRefused {
            name: statement_keywords(&Statement::Set(other.clone())),
        }),
    }
}

/// The read-only gate in front of `datafusion-postgres`'s hooks.
#[derive(Debug)]
pub struct ReadOnlyHook;

impl ReadOnlyHook {
    /// Plans `statement` and checks the plan.
    async fn checked_plan(
        statement: &Statement,
        context: &SessionContext,
    ) -> PgWireResult<LogicalPlan> {
        let state = context.state();
        let plan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                statement.clone(),
            )))
            .await
            .map_err(|error| pg_error(QueryError::from(error)))?;
        verify_read_only(&plan).map_err(pg_error)?;
        Ok(plan)
    }

    /// Runs a checked plan and streams its rows as text (the simple protocol).
    async fn run(
        plan: LogicalPlan,
        context: &SessionContext,
        client: &dyn HookClient,
    ) -> PgWireResult<Response> {
        let frame = DataFrame::new(context.state(), plan);
        let format_options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(
            frame.schema().as_arrow(),
            &Format::UnifiedText,
            Some(format_options),
        )?);
        let batches = frame
            .execute_stream()
            .await
            .map_err(|error| pg_error(QueryError::from(error)))?;
        let row_fields = fields.clone();
        let rows = batches
            .map(move |batch| {
                let rows: Box<dyn Iterator<Item = _> + Send + Sync> = match batch {
                    Ok(batch) => encode_recordbatch(row_fields.clone(), batch),
                    Err(error) => Box::new(std::iter::once(Err(pg_error(QueryError::from(error))))),
                };
                futures::stream::iter(rows)
            })
            .flatten();
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    /// Checks the query behind each cursor of a `DECLARE`.
    async fn check_declare(statement: &Statement, context: &SessionContext) -> PgWireResult<()> {
        let Statement::Declare { stmts } = statement else {
            return Ok(());
        };
        for declare in stmts {
            if let Some(query) = &declare.for_query {
                Self::checked_plan(&Statement::Query(query.clone()), context).await?;
            }
        }
        Ok(())
    }

    /// Records the session's time zone and tells the client.
    async fn set_time_zone(client: &mut dyn HookClient, zone: &str) -> PgWireResult<Response> {
        client
            .metadata_mut()
            .insert("timezone".to_string(), zone.to_string());
        client
            .send_message(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                "TimeZone".to_string(),
                zone.to_string(),
            )))
            .await?;
        Ok(Response::Execution(Tag::new("SET")))
    }
}

/// The plan a `SET` answers with in the extended protocol: no columns.
fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match judge(statement) {
            Verdict::Query => Some(match Self::checked_plan(statement, context).await {
                Ok(plan) => Self::run(plan, context, client).await,
                Err(error) => Err(error),
            }),
            Verdict::Declare => match Self::check_declare(statement, context).await {
                Ok(()) => None,
                Err(error) => Some(Err(error)),
            },
            Verdict::AcknowledgeSet => Some(Ok(Response::Execution(Tag::new("SET")))),
            Verdict::SetTimeZone(zone) => Some(Self::set_time_zone(client, &zone).await),
            Verdict::DelegateSet | Verdict::Delegate => None,
            Verdict::Refuse(error) => Some(Err(pg_error(error))),
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match judge(statement) {
            // `datafusion-postgres` keeps this checked plan and runs exactly it.
            Verdict::Query => Some(Self::checked_plan(statement, context).await),
            Verdict::Declare => match Self::check_declare(statement, context).await {
                Ok(()) => None,
                Err(error) => Some(Err(error)),
            },
            Verdict::AcknowledgeSet | Verdict::SetTimeZone(_) => Some(Ok(empty_plan())),
            Verdict::DelegateSet | Verdict::Delegate => None,
            Verdict::Refuse(error) => Some(Err(pg_error(error))),
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match judge(statement) {
            Verdict::AcknowledgeSet => Some(Ok(Response::Execution(Tag::new("SET")))),
            Verdict::SetTimeZone(zone) => Some(Self::set_time_zone(client, &zone).await),
            // Refused statements never got a plan; queries run from theirs.
            _ => None,
        }
    }
}

/// A query error as the Postgres error a client expects.
fn pg_error(error: QueryError) -> PgWireError {
    let code = match &error {
        QueryError::ReadOnly(_) => "25006",
        QueryError::SettingRefused { .. } => "42501",
        QueryError::StatementTimeout { .. } => "57014",
        QueryError::MemoryLimit(_) => "53200",
        QueryError::Sql(_) => "42000",
        _ => "XX000",
    };
    let message = match &error {
        QueryError::SettingRefused { .. } => {
            format!("{error} (allowed: {})", HARMLESS_SETTINGS.join(", "))
        }
        _ => error.to_string(),
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser::new()
            .parse(sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn writes_are_refused_by_name() {
        for (sql, name) in [
            ("COPY (SELECT 42) TO '/tmp/x.csv'", "COPY"),
            ("INSERT INTO inference VALUES (1)", "INSERT INTO"),
            ("DROP TABLE inference", "DROP TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
        ] {
            match judge(&parse(sql)) {
                Verdict::Refuse(error) => assert!(error.to_string().contains(name), "{error}"),
                _ => panic!("{sql} was not refused"),
            }
        }
    }

    #[test]
    fn datafusion_only_writes_are_refused_by_name() {
        let refusal =
            refuse_datafusion_extensions("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/'")
                .unwrap();
        assert!(
            refusal.to_string().contains("CREATE EXTERNAL TABLE"),
            "{refusal}"
        );
        assert!(refuse_datafusion_extensions("SELECT 1").is_none());
    }

    #[test]
    fn only_harmless_settings_pass() {
        for sql in [
            "SET application_name = 'psql'",
            "SET extra_float_digits = 3",
            "SET DateStyle = 'ISO, MDY'",
            "SET client_encoding = 'UTF8'",
            "SET TIME ZONE 'UTC'",
            "SET timezone = 'UTC'",
        ] {
            assert!(
                !matches!(judge(&parse(sql)), Verdict::Refuse(_)),
                "{sql} was refused"
            );
        }
        for sql in [
            "SET datafusion.execution.target_partitions = 1",
            "SET datafusion.runtime.memory_limit = '100G'",
        ] {
            assert!(
                matches!(
                    judge(&parse(sql)),
                    Verdict::Refuse(QueryError::SettingRefused { .. })
                ),
                "{sql} passed"
            );
        }
    }

    #[test]
    fn no_password_means_generated_on_loopback_and_refused_elsewhere() {
        let loopback = PgOptions::new("127.0.0.1:5433".parse().unwrap(), "u", None).unwrap();
        assert!(loopback.password_generated);
        assert_eq!(loopback.password.len(), GENERATED_PASSWORD_LENGTH);
        let again =
            PgOptions::new("[::1]:5433".parse().unwrap(), "u", Some(String::new())).unwrap();
        assert_ne!(loopback.password, again.password);
        assert!(matches!(
            PgOptions::new("0.0.0.0:5433".parse().unwrap(), "u", None),
            Err(QueryError::PasswordRequired { .. })
        ));
        let configured =
            PgOptions::new("0.0.0.0:5433".parse().unwrap(), "u", Some("pw".into())).unwrap();
        assert!(!configured.password_generated);
        assert_eq!(configured.password, "pw");
    }
}

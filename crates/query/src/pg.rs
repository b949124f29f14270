//! The Postgres wire server: psql, psycopg, pandas and Grafana connect here.
//!
//! Query handling (simple and extended protocol, type mapping, `pg_catalog`
//! for client introspection) comes from `datafusion-postgres`; this module
//! adds MD5 password authentication and the accept loop. A failing query is
//! answered with a Postgres error message; it never ends the server.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire::api::auth::md5pass::{
    hash_md5_password, Md5PasswordAuthStartupHandler,
};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password,
};
use datafusion_postgres::pgwire::api::PgWireServerHandlers;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::DfSessionService;
use tokio::net::TcpListener;

use crate::QueryError;

/// Who may connect, and where.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The one user name accepted.
    pub user: String,
    /// Its password.
    pub password: String,
}

struct SinglePassword {
    user: String,
    password: String,
}

impl std::fmt::Debug for SinglePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("SinglePassword")
            .field("user", &self.user)
            .finish()
    }
}

#[async_trait]
impl AuthSource for SinglePassword {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        if user != self.user {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                format!("password authentication failed for user \"{user}\""),
            ))));
        }
        let salt: [u8; 4] = rand_salt();
        let hashed = hash_md5_password(&self.user, &self.password, &salt);
        Ok(Password::new(Some(salt.to_vec()), hashed.into_bytes()))
    }
}

/// A per-connection salt; it need not be cryptographic, only varying.
fn rand_salt() -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (hasher.finish() as u32).to_le_bytes()
}

struct Handlers {
    session: Arc<DfSessionService>,
    startup: Arc<Md5PasswordAuthStartupHandler<SinglePassword, DefaultServerParameterProvider>>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
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

/// Binds `options.listen` and serves SQL until the task is dropped.
///
/// `ready` receives the bound address (useful with port 0).
pub async fn serve_postgres(
    context: Arc<SessionContext>,
    options: PgOptions,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), QueryError> {
    setup_pg_catalog(&context, "datafusion", AuthManager::new())
        .map_err(|e| QueryError::Internal(format!("setting up pg_catalog: {e}")))?;
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
    let handlers = Arc::new(Handlers {
        session: Arc::new(DfSessionService::new(context)),
        startup: Arc::new(Md5PasswordAuthStartupHandler::new(
            Arc::new(SinglePassword {
                user: options.user.clone(),
                password: options.password.clone(),
            }),
            Arc::new(DefaultServerParameterProvider::default()),
        )),
    });
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("inferwatch: accepting a Postgres connection failed: {error}");
                continue;
            }
        };
        let handlers = handlers.clone();
        tokio::spawn(async move {
            if let Err(error) =
                datafusion_postgres::pgwire::tokio::process_socket(socket, None, handlers).await
            {
                eprintln!("inferwatch: Postgres connection from {peer} ended: {error}");
            }
        });
    }
}

//! `inferwatch token`: the tokens `serve` checks requests against.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use inferwatch_server::auth::{create_limited_token, list_tokens, revoke_token, Scope};
use inferwatch_server::ratelimit::RateLimit;

/// `inferwatch token …`
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and only its SHA-256 and its
    /// SCRAM-SHA-256 verifier (for the Postgres wire) are kept.
    Create {
        /// Data directory (its `tokens.json`).
        #[arg(long)]
        data: PathBuf,
        /// ingest, read or admin.
        #[arg(long)]
        scope: Scope,
        /// For ingest tokens: the one stream it may send to.
        #[arg(long)]
        stream: Option<String>,
        /// It stops working after this long (e.g. `30d`, `12h`); never
        /// when omitted. Requests with it then get 401 "the token expired".
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Its own ingest rate limit, over the node's default: `events=N`,
        /// `requests=N` (per second), optional `events_burst=N`,
        /// `requests_burst=N`, comma separated. Over it: 429 (HEC: 503
        /// code 9) with Retry-After, and nothing of the request is stored.
        #[arg(long, value_name = "LIMIT")]
        rate_limit: Option<RateLimit>,
    },
    /// List tokens (ids and scopes, never secrets).
    List {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Revoke a token by its id.
    Revoke {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// The token's id (the hex after `iw_`).
        #[arg(long)]
        id: String,
    },
}

/// Runs `inferwatch token …`.
pub fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            data,
            scope,
            stream,
            expires,
            rate_limit,
        } => {
            let lifetime = expires
                .as_deref()
                .map(|text| {
                    inferwatch_core::parse_duration(text)
                        .map(chrono::Duration::nanoseconds)
                        .with_context(|| format!("--expires {text}"))
                })
                .transpose()?;
            let (token, record) = create_limited_token(&data, scope, stream, lifetime, rate_limit)?;
            eprintln!(
                "inferwatch token: created {} (scope {}{}{}{}); it is shown once:",
                record.id,
                record.scope,
                record
                    .stream
                    .as_deref()
                    .map(|stream| format!(", stream {stream}"))
                    .unwrap_or_default(),
                record
                    .expires_at
                    .as_deref()
                    .map(|at| format!(", expires {at}"))
                    .unwrap_or_default(),
                record
                    .rate_limit
                    .map(|limit| format!(", rate limit {limit}"))
                    .unwrap_or_default()
            );
            println!("{token}");
        }
        TokenCommand::List { data } => {
            for record in list_tokens(&data)? {
                let expiry = match &record.expires_at {
                    None => "never".to_string(),
                    Some(at) if record.is_expired_at(chrono::Utc::now()) => format!("expired {at}"),
                    Some(at) => at.clone(),
                };
                // Tokens made before SCRAM verifiers were stored cannot
                // log in over the Postgres wire.
                let postgres = if record.scram.is_some() {
                    "pg"
                } else {
                    "no-pg (re-create it for the Postgres wire)"
                };
                println!(
                    "{}\t{}\t{}\t{}\t{expiry}\t{postgres}",
                    record.id,
                    record.scope,
                    record.stream.as_deref().unwrap_or("*"),
                    record.created_at
                );
            }
        }
        TokenCommand::Revoke { data, id } => {
            if !revoke_token(&data, &id)? {
                anyhow::bail!("no token with id {id}");
            }
            eprintln!("inferwatch token: revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

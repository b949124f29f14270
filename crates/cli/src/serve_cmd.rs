//! `inferwatch serve`: the Postgres wire over a data directory, and with
//! `--listen` the node itself: HTTP ingest (NDJSON, Elasticsearch `_bulk`,
//! Splunk HEC, OTLP logs, and NATS JetStream with `--nats-url`) into the store, with `--rules` checked on what
//! arrives, the REST API under `/api/v1/` and `/metrics`. The runtime is `inferwatch_server::serve`; this module parses
//! flags and prints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use inferwatch_query::{serve_postgres, QueryEngine};
use inferwatch_server::api::ApiOptions;
use inferwatch_server::http::HttpOptions;
use inferwatch_server::nats::{NatsOptions, Target};
use inferwatch_server::one_pass::parse_size;
use inferwatch_server::serve::{serve, ServeOptions, TlsFiles};

use crate::ingest_cmd::StoreArgs;
use crate::query_cmd::{alert_history, runtime, LimitArgs, PgArgs};

/// Arguments of `inferwatch serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// A YAML config (see `examples/serve.yaml`): each key is the flag of
    /// the same name. Flags given here win over INFERWATCH_* variables,
    /// which win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (or `data:` in --config, or INFERWATCH_DATA).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Address of the Postgres wire listener.
    #[arg(long, default_value = "127.0.0.1:5433")]
    pub pg: SocketAddr,
    /// Do not start the Postgres wire listener.
    #[arg(long)]
    pub no_pg: bool,
    /// A `detect --state-dir`: its alert history (alert-history.jsonl)
    /// becomes the `alerts` table, one row per alert transition.
    #[arg(long, value_name = "STATE_DIR")]
    pub alerts: Option<PathBuf>,
    #[command(flatten)]
    pub auth: PgArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// The HTTP ingest node's flags (`--listen` turns it on).
#[derive(clap::Args)]
pub struct NodeArgs {
    /// Listen for HTTP ingest here (e.g. 127.0.0.1:9200).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first): --listen serves HTTPS only
    /// (with --tls-key); the Postgres wire offers TLS with it too unless
    /// --pg-tls-cert is given.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Rules to run on the ingested inference events; alerts print as
    /// JSON lines, as `run` prints them.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// With --rules: SLOs (YAML file or directory) to evaluate beside the
    /// rules; their burn-rate alerts go where the rules' go and their
    /// budgets show in `GET /api/v1/slos` and the dashboard.
    #[arg(long, value_name = "PATH")]
    pub slos: Option<PathBuf>,
    /// With --rules: Sigma correlations (YAML file or directory) over the
    /// rules' and SLOs' alerts, the inference events, and the other streams
    /// sent to this node (rows posted to `/api/v1/ingest/auth` are the
    /// `auth` stream of `logsource.service: auth`).
    #[arg(long, value_name = "PATH")]
    pub correlations: Option<PathBuf>,
    /// Field mapping (YAML) for the inference stream.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Also append alert transitions here instead of printing them.
    #[arg(long, value_name = "FILE")]
    pub alerts_file: Option<PathBuf>,
    /// Deliver firing and resolved alerts to the actions in this YAML file
    /// (webhook, alertmanager, slack, pagerduty, command, rollback), through
    /// the notification pipeline whose acknowledgements and silences the
    /// REST API manages; state and the delivery journal live under the data
    /// directory's `notify/`.
    #[arg(long, value_name = "FILE")]
    pub actions: Option<PathBuf>,
    /// Grouping, inhibition, flapping and risk settings for notifications
    /// (YAML); Alertmanager-like defaults apply when omitted.
    #[arg(long, value_name = "FILE")]
    pub notify: Option<PathBuf>,
    /// Silences (YAML, as `detect --silences`) in force from the start:
    /// matching alerts are recorded but not notified. Added to the
    /// silences the notification state already holds (the REST API's).
    #[arg(long, value_name = "FILE")]
    pub silences: Option<PathBuf>,
    /// Let `command` actions run programs (off unless given).
    #[arg(long)]
    pub allow_commands: bool,
    /// At shutdown, wait this long for deliveries in flight; whatever is
    /// left is delivered by the next start.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub delivery_grace: String,
    /// Accept requests without a token (for a trusted network only).
    #[arg(long)]
    pub open: bool,
    /// Ingest rate limit of tokens without their own (`token create
    /// --rate-limit`): `events=N`, `requests=N` (per second), optional
    /// `events_burst=N`, `requests_burst=N`, comma separated. Over it:
    /// 429 (HEC: 503 code 9) with Retry-After. None when omitted.
    #[arg(long, value_name = "LIMIT")]
    pub rate_limit: Option<String>,
    /// Requests waiting for the store before new ones get 429.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// The Elasticsearch version `GET /` reports.
    #[arg(long, default_value = "8.17.0")]
    pub elasticsearch_version: String,
    /// Largest request body as sent (compressed or not).
    #[arg(long, default_value = "32MB", value_name = "SIZE")]
    pub max_request_size: String,
    /// Largest request body once decompressed.
    #[arg(long, default_value = "128MB", value_name = "SIZE")]
    pub max_decompressed_size: String,
    /// How far ahead of the clock the events agree on an event may be.
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub max_future: String,
    /// With --correlations: how far behind the inference events' clock a
    /// side-stream row (auth, feature store…) may arrive and still be
    /// correlated; later rows are dropped as late.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub correlation_lateness: String,
    /// With --rules: when no event has arrived for this long, move
    /// detection's clock on by the wall time since the last one, and again
    /// every such period (so `volume-drop` fires during an outage);
    /// `off` never does.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub idle_after: String,
    /// Longest a REST query may run.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub query_timeout: String,
    /// Most rows a REST query returns.
    #[arg(long, default_value_t = 100_000)]
    pub query_max_rows: usize,
    /// Slow every store append by this many milliseconds (to test
    /// back-pressure; never in production).
    #[arg(long, default_value_t = 0, hide = true)]
    pub test_append_delay_ms: u64,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The NATS JetStream input (`--nats-url` turns it on).
#[derive(clap::Args)]
pub struct NatsArgs {
    /// Also consume NATS JetStream here (e.g. nats://127.0.0.1:4222): each
    /// message is NDJSON lines, acked once durable.
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// The JetStream stream to consume (created over --nats-subject if missing).
    #[arg(long, default_value = "INFERWATCH", value_name = "NAME")]
    pub nats_stream: String,
    /// The consumer's subject filter.
    #[arg(long, default_value = "inferwatch.>", value_name = "SUBJECT")]
    pub nats_subject: String,
    /// The durable consumer's name (a restart resumes after its last ack).
    #[arg(long, default_value = "inferwatch", value_name = "NAME")]
    pub nats_consumer: String,
    /// The inferwatch stream the events go to, or `@last-token` for the
    /// subject's last token (`inferwatch.gateway` → `gateway`).
    #[arg(long, default_value = "inference", value_name = "STREAM")]
    pub nats_into: String,
    /// How long JetStream waits for an ack before redelivering a message
    /// (after a crash, unacked messages come again after this).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub nats_ack_wait: String,
}

impl ServeArgs {
    /// The data directory, from the flag, the environment or the config.
    pub fn data(&self) -> anyhow::Result<&std::path::Path> {
        self.data
            .as_deref()
            .context("no data directory: give --data, INFERWATCH_DATA or data: in --config")
    }
}

/// Fills in what the command line did not give, from the INFERWATCH_*
/// environment and then the `--config` file (a flag wins over a variable,
/// a variable over the file, the file over the flag's default).
fn apply_config(args: &mut ServeArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    use inferwatch_server::serve_config::ServeConfig;
    let mut config = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    config.apply_env(|name| std::env::var(name).ok())?;
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    macro_rules! fill {
        ($target:expr, $id:literal, $value:expr) => {
            if let (false, Some(value)) = (given($id), $value) {
                $target = value;
            }
        };
    }
    let postgres = config.postgres()?;
    fill!(args.data, "data", config.data.map(Some));
    if !given("pg") && !given("no_pg") {
        match postgres {
            Some(None) => args.no_pg = true,
            Some(Some(address)) => args.pg = address,
            None => {}
        }
    }
    let node = &mut args.node;
    fill!(node.listen, "listen", config.listen.map(Some));
    fill!(node.tls_cert, "tls_cert", config.tls_cert.map(Some));
    fill!(node.tls_key, "tls_key", config.tls_key.map(Some));
    fill!(node.rules, "rules", config.rules.map(Some));
    fill!(node.slos, "slos", config.slos.map(Some));
    fill!(
        node.correlations,
        "correlations",
        config.correlations.map(Some)
    );
    fill!(node.mapping, "mapping", config.mapping.map(Some));
    fill!(
        node.alerts_file,
        "alerts_file",
        config.alerts_file.map(Some)
    );
    fill!(node.actions, "actions", config.actions.map(Some));
    fill!(node.notify, "notify", config.notify.map(Some));
    fill!(node.silences, "silences", config.silences.map(Some));
    fill!(node.rate_limit, "rate_limit", config.rate_limit.map(Some));
    fill!(node.allow_commands, "allow_commands", config.allow_commands);
    fill!(node.open, "open", config.open);
    fill!(node.queue, "queue", config.queue);
    fill!(
        node.elasticsearch_version,
        "elasticsearch_version",
        config.elasticsearch_version
    );
    fill!(
        node.max_request_size,
        "max_request_size",
        config.max_request_size
    );
    fill!(
        node.max_decompressed_size,
        "max_decompressed_size",
        config.max_decompressed_size
    );
    fill!(node.max_future, "max_future", config.max_future);
    fill!(
        node.correlation_lateness,
        "correlation_lateness",
        config.correlation_lateness
    );
    fill!(node.idle_after, "idle_after", config.idle_after);
    fill!(node.query_timeout, "query_timeout", config.query_timeout);
    fill!(node.query_max_rows, "query_max_rows", config.query_max_rows);
    fill!(node.delivery_grace, "delivery_grace", config.delivery_grace);
    let nats = &mut node.nats;
    fill!(nats.nats_url, "nats_url", config.nats_url.map(Some));
    fill!(nats.nats_stream, "nats_stream", config.nats_stream);
    fill!(nats.nats_subject, "nats_subject", config.nats_subject);
    fill!(nats.nats_consumer, "nats_consumer", config.nats_consumer);
    fill!(nats.nats_into, "nats_into", config.nats_into);
    fill!(nats.nats_ack_wait, "nats_ack_wait", config.nats_ack_wait);
    let store = &mut node.store;
    fill!(store.node_id, "node_id", config.node_id.map(Some));
    fill!(store.fsync, "fsync", config.store.fsync);
    fill!(store.flush_rows, "flush_rows", config.store.flush_rows);
    fill!(
        store.flush_interval,
        "flush_interval",
        config.store.flush_interval
    );
    fill!(
        store.retention_age,
        "retention_age",
        config.store.retention_age.map(Some)
    );
    fill!(
        store.retention_size,
        "retention_size",
        config.store.retention_size.map(Some)
    );
    Ok(())
}

/// What only makes sense with another setting, checked once the flags,
/// the environment and the config file are merged.
fn check_node_settings(node: &NodeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        node.tls_cert.is_some() == node.tls_key.is_some(),
        "tls_cert and tls_key go together (--tls-cert FILE --tls-key FILE)"
    );
    if node.listen.is_none() {
        for (set, name) in [
            (node.rules.is_some(), "rules"),
            (node.mapping.is_some(), "mapping"),
            (node.open, "open"),
            (node.tls_cert.is_some(), "tls_cert"),
            (node.rate_limit.is_some(), "rate_limit"),
            (node.nats.nats_url.is_some(), "nats_url"),
        ] {
            anyhow::ensure!(
                !set,
                "{name} needs listen (--listen or listen: in --config)"
            );
        }
    }
    if node.rules.is_none() {
        for (set, name) in [
            (node.alerts_file.is_some(), "alerts_file"),
            (node.slos.is_some(), "slos"),
            (node.correlations.is_some(), "correlations"),
            (node.actions.is_some(), "actions"),
            (node.notify.is_some(), "notify"),
            (node.silences.is_some(), "silences"),
        ] {
            anyhow::ensure!(!set, "{name} needs rules (--rules or rules: in --config)");
        }
    }
    anyhow::ensure!(
        !node.allow_commands || node.actions.is_some(),
        "allow_commands needs actions"
    );
    Ok(())
}

/// Runs `inferwatch serve`.
pub fn run(mut args: ServeArgs, given: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
    apply_config(&mut args, given)?;
    check_node_settings(&args.node)?;
    let data = args.data()?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let postgres = if args.no_pg {
            None
        } else {
            Some(start_postgres(&args).await?)
        };
        match args.node.listen {
            Some(listen) => serve_node(&args, listen).await?,
            None => {
                let Some(server) = postgres else {
                    anyhow::bail!("nothing to serve: give --listen, or drop --no-pg");
                };
                tokio::select! {
                    result = server => result.context("the server task failed")??,
                    _ = shutdown_signal() => eprintln!("inferwatch serve: stopping"),
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

type PgTask = tokio::task::JoinHandle<Result<(), inferwatch_query::QueryError>>;

/// Starts the Postgres wire and prints where it listens.
async fn start_postgres(args: &ServeArgs) -> anyhow::Result<PgTask> {
    let history = alert_history(args.alerts.as_deref());
    let limits = args.limits.limits()?;
    let engine = QueryEngine::open_with_limits(args.data()?, true, history.as_deref(), limits)?;
    // With tokens on, the password is a read token, checked against the
    // SCRAM verifier stored with it (the file is read again on change).
    let tokens = args.node.listen.is_some() && !args.node.open;
    let logins: Option<std::sync::Arc<dyn inferwatch_query::scram::PgLogins>> = if tokens {
        Some(std::sync::Arc::new(
            inferwatch_server::auth::TokenStore::open(args.data()?)?,
        ))
    } else {
        None
    };
    let mut options = args.auth.options(args.pg, logins)?;
    // The node's certificate serves the Postgres wire too, unless it has its own.
    if let (None, Some(certificate), Some(key)) =
        (&options.tls, &args.node.tls_cert, &args.node.tls_key)
    {
        options = options.with_tls(certificate.clone(), key.clone());
    }
    let generated = options.password_generated.then(|| options.password.clone());
    let tls = options.tls.is_some();
    if !tls && !args.pg.ip().is_loopback() {
        eprintln!(
            "inferwatch serve: warning: {} is not loopback and TLS is off; pass --pg-tls-cert and --pg-tls-key",
            args.pg
        );
    }
    let (ready_sender, ready) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(serve_postgres(
        engine.context(),
        options,
        Some(ready_sender),
    ));
    if let Ok(address) = ready.await {
        if let Some(password) = generated {
            // Shown once, here; it is not stored anywhere.
            eprintln!(
                "inferwatch serve: no --pg-password given; password for this run: {password}"
            );
        }
        let user = args
            .auth
            .pg_user
            .as_deref()
            .unwrap_or(crate::query_cmd::DEFAULT_PG_USER);
        let login = match (tokens, &args.auth.pg_user) {
            (false, _) => format!("user '{user}'"),
            (true, Some(user)) => format!("user '{user}', password: a read token"),
            (true, None) => "any user, password: a read token".to_string(),
        };
        eprintln!(
            "inferwatch serve: Postgres wire on {address} ({login}, read-only{}, statements limited to {:?} and {} MiB); try: {}psql -h {} -p {} -U {user} -c 'SELECT count(*) FROM inference'",
            if tls { ", TLS offered" } else { "" },
            limits.timeout,
            limits.memory_bytes >> 20,
            if tokens { "PGPASSWORD=<read token> " } else { "" },
            address.ip(),
            address.port(),
        );
    }
    Ok(server)
}

/// The node: HTTP ingest (and detection) until a signal.
async fn serve_node(args: &ServeArgs, listen: SocketAddr) -> anyhow::Result<()> {
    let open = args.node.open;
    let tls = args.node.tls_cert.is_some();
    serve_node_until(
        args,
        listen,
        move |address| {
            eprintln!(
                "inferwatch serve: HTTP ingest on {address}{}{} (REST API under /api/v1/, /metrics)",
                if tls {
                    format!(" (TLS only: https://{address}/)")
                } else {
                    String::new()
                },
                if open {
                    " (open: no tokens checked)"
                } else {
                    ""
                }
            )
        },
        async {
            shutdown_signal().await;
            eprintln!("inferwatch serve: stopping");
        },
    )
    .await
}

/// The node until `shutdown` completes; `listening` hears the bound
/// address once requests can be sent (`serve --listen` and `demo`).
pub(crate) async fn serve_node_until(
    args: &ServeArgs,
    listen: SocketAddr,
    listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let node = &args.node;
    let size = |text: &str, flag: &str| -> anyhow::Result<usize> {
        let bytes = parse_size(text).with_context(|| format!("{flag} {text}"))?;
        Ok(usize::try_from(bytes).unwrap_or(usize::MAX).max(1))
    };
    let duration = |text: &str, flag: &str| -> anyhow::Result<Duration> {
        let nanos =
            inferwatch_core::parse_duration(text).with_context(|| format!("{flag} {text}"))?;
        anyhow::ensure!(nanos > 0, "{flag} must be longer than zero");
        Ok(Duration::from_nanos(nanos as u64))
    };
    let options = ServeOptions {
        data: args.data()?.to_path_buf(),
        listen,
        rules: node.rules.clone(),
        slos: node.slos.clone(),
        correlations: node.correlations.clone(),
        mapping: node.mapping.clone(),
        alerts: node.alerts_file.clone(),
        store: node.store.settings(),
        queue: node.queue.max(1),
        open: node.open,
        max_future: node.max_future.clone(),
        correlation_lateness: node.correlation_lateness.clone(),
        http: HttpOptions {
            elasticsearch_version: node.elasticsearch_version.clone(),
            max_request_bytes: size(&node.max_request_size, "--max-request-size")?,
            max_decompressed_bytes: size(&node.max_decompressed_size, "--max-decompressed-size")?,
            rate_limit: node
                .rate_limit
                .as_deref()
                .map(|text| text.parse().with_context(|| format!("--rate-limit {text}")))
                .transpose()?,
            ..HttpOptions::default()
        },
        append_delay: Duration::from_millis(node.test_append_delay_ms),
        idle_after: match node.idle_after.as_str() {
            "off" => None,
            text => Some(duration(text, "--idle-after")?),
        },
        api: ApiOptions {
            max_rows: node.query_max_rows.max(1),
            default_rows: node.query_max_rows.clamp(1, 10_000),
            query_timeout: duration(&node.query_timeout, "--query-timeout")?,
        },
        actions: node.actions.clone(),
        notify: node.notify.clone(),
        silences: node.silences.clone(),
        allow_commands: node.allow_commands,
        delivery_grace: duration(&node.delivery_grace, "--delivery-grace")?,
        tls: match (&node.tls_cert, &node.tls_key) {
            (Some(certificate), Some(key)) => Some(TlsFiles {
                certificate: certificate.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
        nats: match &node.nats.nats_url {
            Some(url) => Some(NatsOptions {
                url: url.clone(),
                stream: node.nats.nats_stream.clone(),
                subject: node.nats.nats_subject.clone(),
                consumer: node.nats.nats_consumer.clone(),
                into: Target::parse(&node.nats.nats_into)?,
                ack_wait: duration(&node.nats.nats_ack_wait, "--nats-ack-wait")?,
                in_flight: node.queue.max(1),
            }),
            None => None,
        },
    };
    if !node.open
        && inferwatch_server::auth::list_tokens(args.data()?)
            .map(|tokens| tokens.is_empty())
            .unwrap_or(true)
    {
        eprintln!(
            "inferwatch serve: no tokens yet: every request will get 401; create one with `inferwatch token create --data {} --scope ingest`",
            args.data()?.display()
        );
    }
    let printer: Box<dyn std::io::Write + Send> =
        Box::new(std::io::LineWriter::new(std::io::stdout()));
    let summary = serve(options, Some(printer), listening, shutdown).await?;
    eprintln!(
        "inferwatch serve: {} events stored, {} lines refused, {} requests answered 429, {} alert transitions",
        summary.stored, summary.refused, summary.busy, summary.alerts
    );
    if let Some(totals) = &summary.deliveries {
        crate::detect_cmd::print_deliveries("serve", &node.delivery_grace, totals);
    }
    Ok(())
}

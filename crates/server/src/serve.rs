//! `inferwatch serve`: the long-running node. HTTP ingest into the store,
//! with the same detection as `run` on what arrives, the REST API and
//! `/metrics` over the same data, and live time: heartbeats while the
//! inputs are silent (see [`crate::live`]).
//!
//! Start-up opens the store (recovering from a crash), puts back on hold
//! the rows the event-time guard held when the last run stopped, rebuilds
//! detection from the stored events (replay = live), opens the notifier
//! (the notification pipeline and, with `actions`, the dispatcher; state
//! under [`NOTIFY_STATE_DIR`], shared with the REST API), starts the
//! writer thread and then listens. Shutdown stops accepting, lets requests in
//! flight finish (each answered once durable), then closes the store and
//! waits up to `delivery_grace` for deliveries in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use inferwatch_core::DEFAULT_STREAM;
use inferwatch_ingest::Decoder;
use inferwatch_store::StoreWriter;

use crate::api::ApiOptions;
use crate::auth::TokenStore;
use crate::correlator::Correlator;
use crate::http::{router, AppState, HttpOptions, NodeShared};
use crate::live::{DetectionShare, LiveState, RuleInfo, RulesSource};
use crate::metrics::Metrics;
use crate::nats::NatsOptions;
use crate::notify::{DeliveryTotals, Notifier, NotifyOptions};
use crate::one_pass::{
    load_engine_and_rules, load_mapping, resume_position, AlertOutputs, Detection, StoreSettings,
};
use crate::tls::TlsListener;
use crate::writer::{IngestWriter, WriterOptions};
use crate::ServerError;

/// What `serve` runs with.
pub struct ServeOptions {
    /// The data directory.
    pub data: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Rules to run on the inference stream (none: store only).
    pub rules: Option<PathBuf>,
    /// With rules: SLOs (file or directory) whose budgets and burn-rate
    /// alerts run beside them.
    pub slos: Option<PathBuf>,
    /// With rules: Sigma correlations (file or directory) over their
    /// alerts, the inference events and the other streams sent to the node
    /// (an `auth` stream's rows for `logsource.service: auth`).
    pub correlations: Option<PathBuf>,
    /// Field mapping for the inference stream.
    pub mapping: Option<PathBuf>,
    /// Alerts JSONL file (appended); printed when absent.
    pub alerts: Option<PathBuf>,
    /// Store settings.
    pub store: StoreSettings,
    /// Requests the store queue holds before 429s.
    pub queue: usize,
    /// Accept requests without tokens.
    pub open: bool,
    /// How far ahead of the agreed clock an event may be (e.g. `2m`).
    pub max_future: String,
    /// With correlations: how far behind the inference events' clock a
    /// side-stream row may arrive and still be correlated (e.g. `30s`).
    pub correlation_lateness: String,
    /// HTTP settings.
    pub http: HttpOptions,
    /// Slows each store append (back-pressure tests only).
    pub append_delay: Duration,
    /// Heartbeats after this much silence of every input (`None`: never).
    pub idle_after: Option<Duration>,
    /// REST API settings.
    pub api: ApiOptions,
    /// With rules: deliver notifications to the actions in this file
    /// (state under the data directory's [`NOTIFY_STATE_DIR`]).
    pub actions: Option<PathBuf>,
    /// With rules: grouping, inhibition, flapping and risk settings.
    pub notify: Option<PathBuf>,
    /// With rules: silences (YAML, as `detect --silences`) in force from
    /// the start, added to those the notification state already holds.
    pub silences: Option<PathBuf>,
    /// Let `command` actions run programs.
    pub allow_commands: bool,
    /// At shutdown, how long to wait for deliveries in flight; the rest
    /// stay journaled for the next start.
    pub delivery_grace: Duration,
    /// Serve HTTPS only, with this PEM certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// Also consume this NATS JetStream stream (see [`crate::nats`]).
    pub nats: Option<NatsOptions>,
}

/// A PEM certificate chain (leaf first) and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub certificate: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The notification pipeline's state directory in a data directory
/// (acknowledgements, silences and the notification history).
pub const NOTIFY_STATE_DIR: &str = "notify";

/// What a `serve` did, at its end.
#[derive(Debug, Default)]
pub struct ServeSummary {
    /// Rows stored.
    pub stored: u64,
    /// Lines refused.
    pub refused: u64,
    /// Requests answered 429.
    pub busy: u64,
    /// Alert transitions written.
    pub alerts: u64,
    /// What the actions had delivered at the end (with actions only).
    pub deliveries: Option<DeliveryTotals>,
}

/// Runs the node until `shutdown` completes. `listening` hears the bound
/// address once requests can be sent.
pub async fn serve(
    options: ServeOptions,
    printer: Option<Box<dyn std::io::Write + Send>>,
    listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServeSummary, ServerError> {
    let writer = StoreWriter::open(&options.data, options.store.options()?)?;
    let mapping = load_mapping(options.mapping.as_ref())?;
    let decoder = Decoder::new(mapping);
    let max_future = inferwatch_core::parse_duration(&options.max_future)?;
    let correlation_lateness = inferwatch_core::parse_duration(&options.correlation_lateness)
        .map_err(|error| ServerError::Config(format!("correlation_lateness: {error}")))?;
    let mut live = LiveState::default();
    let dead_letter_path = options.data.join(inferwatch_query::STORE_DEAD_LETTERS_FILE);
    let detection = match &options.rules {
        Some(rules) => {
            let (engine, loaded) = load_engine_and_rules(rules, &decoder)?;
            let engine = engine.with_max_future(max_future);
            let slos = options
                .slos
                .as_ref()
                .map(|path| crate::one_pass::load_slo_evaluator(path, &decoder))
                .transpose()?;
            let correlations = options
                .correlations
                .as_ref()
                .map(|path| {
                    Correlator::load_beside(path, &[], &engine, slos.as_ref(), &dead_letter_path)
                        .map(|correlator| correlator.follow_clock(correlation_lateness))
                })
                .transpose()?;
            // One notifier for detection and the REST API, so that
            // acknowledgements and silences made over HTTP are honoured.
            let notifier = Arc::new(Notifier::open(&NotifyOptions {
                actions: options.actions.clone(),
                notify: options.notify.clone(),
                silences: options.silences.clone(),
                allow_commands: options.allow_commands,
                state_dir: options.data.join(NOTIFY_STATE_DIR),
            })?);
            live.detection = Some(DetectionShare {
                rules: std::sync::Mutex::new(loaded.iter().map(RuleInfo::of).collect()),
                reload: RulesSource {
                    path: rules.clone(),
                    max_future,
                    slos: options.slos.clone(),
                    correlations: options.correlations.clone(),
                    correlation_lateness,
                    dead_letter_path: dead_letter_path.clone(),
                },
                snapshot: Default::default(),
                board: Default::default(),
                notifier: notifier.clone(),
                slos: std::sync::Mutex::new(
                    slos.iter()
                        .flat_map(|slos| slos.slos().map(crate::live::SloInfo::of))
                        .collect(),
                ),
            });
            Some((engine, slos, correlations, notifier))
        }
        None if options.actions.is_some()
            || options.notify.is_some()
            || options.slos.is_some()
            || options.correlations.is_some()
            || options.silences.is_some() =>
        {
            return Err(ServerError::Config(
                "SLOs, correlations, actions, notification settings and silences need rules: give rules too"
                    .into(),
            ))
        }
        None => None,
    };
    let notifier = detection
        .as_ref()
        .map(|(_, _, _, notifier)| notifier.clone());
    let live = Arc::new(live);
    let detection = match detection {
        Some((engine, slos, correlations, notifier)) => {
            let printer = if options.alerts.is_none() {
                printer
            } else {
                None
            };
            let outputs = AlertOutputs::open(&options.data, options.alerts.as_deref(), printer)?;
            let mut detection = Detection::new(engine, outputs)
                .with_live(live.clone())
                .with_notifier(notifier);
            if let Some(slos) = slos {
                detection = detection.with_slos(slos);
            }
            if let Some(correlations) = correlations {
                detection = detection.with_correlations(correlations);
            }
            detection.replay(&options.data, DEFAULT_STREAM, &decoder.schema())?;
            Some(detection)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let resume = resume_position(writer.recovered_position())?;
    let tokens = if options.open {
        None
    } else {
        Some(TokenStore::open(&options.data)?)
    };
    let (ingest_writer, writer_thread) = IngestWriter::start(
        writer,
        detection,
        WriterOptions {
            queue: options.queue,
            dead_letter_path: dead_letter_path.clone(),
            max_future,
            resume,
            decoder: decoder.clone(),
            append_delay: options.append_delay,
            metrics: metrics.clone(),
            live: live.clone(),
            idle_after: options.idle_after,
        },
    )?;
    let counters = ingest_writer.counters.clone();
    let query = Arc::new(inferwatch_query::QueryEngine::open_with_limits(
        &options.data,
        true,
        None,
        inferwatch_query::StatementLimits {
            timeout: options.api.query_timeout,
            ..inferwatch_query::StatementLimits::default()
        },
    )?);
    let state = Arc::new(AppState::new(
        ingest_writer,
        decoder,
        tokens,
        options.http.clone(),
        NodeShared {
            query,
            metrics: metrics.clone(),
            live,
            api: options.api.clone(),
            queue_capacity: options.queue.max(1),
        },
    ));
    // Rates for /api/v1/health: one sample of the totals a second.
    let sampler = tokio::spawn({
        let metrics = metrics.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                metrics.sample_rates(std::time::Instant::now());
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Listen {
            address: options.listen.to_string(),
            source,
        })?;
    let address = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            address: options.listen.to_string(),
            source,
        })?;
    // With TLS, the certificate is read before anything is announced, so
    // a bad file fails the start, not the first request.
    enum Bound {
        Plain(tokio::net::TcpListener),
        Tls(TlsListener),
    }
    let listener = match &options.tls {
        Some(files) => Bound::Tls(TlsListener::new(listener, &files.certificate, &files.key)?),
        None => Bound::Plain(listener),
    };
    // The consumer binds before the node is announced, so a wrong URL or
    // stream fails the start.
    let nats = match &options.nats {
        Some(nats) => {
            let consumer = crate::nats::connect(nats).await?;
            let state = state.clone();
            let nats = nats.clone();
            Some(tokio::spawn(crate::nats::run(consumer, state, nats)))
        }
        None => None,
    };
    listening(address);
    let served = match listener {
        Bound::Plain(plain) => {
            axum::serve(plain, router(state))
                .with_graceful_shutdown(shutdown)
                .await
        }
        Bound::Tls(tls) => {
            axum::serve(tls, router(state))
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    sampler.abort();
    // Messages in flight stay unacked and come again; the jobs they queued
    // are answered by the writer before it closes.
    if let Some(nats) = nats {
        nats.abort();
        let _ = nats.await;
    }
    // The router and its state are gone: the writer thread sees its queue
    // close, answers what is durable and closes the store.
    let closed = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(|error| ServerError::Internal(format!("joining the store writer: {error}")))?
        .map_err(|_| ServerError::Internal("the store writer panicked".into()))?;
    served.map_err(|source| ServerError::Listen {
        address: address.to_string(),
        source,
    })?;
    closed?;
    let deliveries = notifier.and_then(|notifier| notifier.settle(options.delivery_grace));
    use std::sync::atomic::Ordering;
    Ok(ServeSummary {
        stored: counters.stored.load(Ordering::Relaxed),
        refused: counters.refused.load(Ordering::Relaxed),
        busy: counters.busy.load(Ordering::Relaxed),
        alerts: counters.alerts.load(Ordering::Relaxed),
        deliveries,
    })
}

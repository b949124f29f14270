//! The HTTP ingest API: the protocols log shippers speak.
//!
//! | route | protocol |
//! |---|---|
//! | `POST /api/v1/ingest/{stream}` | NDJSON, one event per line |
//! | `POST`/`PUT /_bulk`, `/{index}/_bulk` | Elasticsearch bulk |
//! | `GET`/`HEAD /`, `/_license`, `/_ilm/*`, `/_index_template/*`, `/_ingest/*`, `/_nodes*`, `/_cluster/health` | the probes Elasticsearch shippers make at start |
//! | `POST /services/collector[/event]`, `/services/collector/raw`, `GET /services/collector/health` | Splunk HEC |
//! | `POST /v1/logs` | OTLP/HTTP logs, protobuf or JSON |
//! | `GET /healthz` | liveness, no token |
//! | `GET /ui/`, `/ui/{*path}` | the dashboard's embedded assets, no token ([`crate::ui`]); a browser's `GET /` is sent there |
//! | `/api/v1/…` (query, series, alerts, rules, silences, health, openapi.json), `GET /metrics` | the REST API ([`crate::api`]) |
//!
//! [`route_table`] lists every route with its methods; the OpenAPI
//! document served at `/api/v1/openapi.json` is checked against it.
//!
//! Every request body may be gzip-compressed; the raw body and the
//! decompressed body each have a size limit (413 beyond, so a gzip bomb
//! stops at the limit: decompression is streamed and reading stops there).
//! Those layers answer without a reason of their own, so
//! `explain_body_failures` gives each refusal (413 too large, 415 unknown
//! `Content-Encoding`, 400 truncated or corrupt compressed body) a JSON
//! reason in the route's protocol shape (Elasticsearch, HEC, plain). Each protocol frames its items into JSON lines
//! ([`crate::protocol`]), decodes them with the same decoder as files, and
//! queues them to the store writer ([`crate::writer`]); the answer comes
//! once they are durable, with one verdict per item. A full queue answers
//! 429 (HEC: 503 with code 9) and `Retry-After`; nothing of that request
//! was stored, so the retry stores it once.
//!
//! Every response carries `X-Elastic-Product: Elasticsearch`: the official
//! Elasticsearch clients refuse a server without it, and it costs the
//! others nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, MethodRouter};
use axum::Router;
use inferwatch_core::DEFAULT_STREAM;
use inferwatch_ingest::{Chunk, Decoder};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;
use serde_json::json;

use crate::api::ApiOptions;
use crate::auth::{Denied, Need, TokenRecord, TokenStore};
use crate::live::{LiveState, HEARTBEAT_STREAM};
use crate::metrics::Metrics;
use crate::protocol::{
    frame_bulk, frame_hec_events, frame_hec_raw, frame_otlp, stream_name, BulkAction, BulkVerb,
    Framed, HecDefaults, Item,
};
use crate::ratelimit::{RateLimit, RateLimiter, Throttled};
use crate::writer::{IngestWriter, Job, Part, Payload, Refusal, Submit, WriterCounters};

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The Elasticsearch version `GET /` reports (Filebeat refuses an
    /// Elasticsearch older than itself).
    pub elasticsearch_version: String,
    /// Largest request body as sent (compressed or not).
    pub max_request_bytes: usize,
    /// Largest body once decompressed.
    pub max_decompressed_bytes: usize,
    /// Seconds clients are told to wait after a 429.
    pub retry_after_seconds: u64,
    /// The ingest rate limit of tokens without their own.
    pub rate_limit: Option<RateLimit>,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            elasticsearch_version: "8.17.0".into(),
            max_request_bytes: 32 << 20,
            max_decompressed_bytes: 128 << 20,
            retry_after_seconds: 1,
            rate_limit: None,
        }
    }
}

/// What the REST API and the metrics share with ingest.
pub struct NodeShared {
    /// The read-only SQL session over the data directory.
    pub query: Arc<inferwatch_query::QueryEngine>,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
    /// What the writer thread publishes.
    pub live: Arc<LiveState>,
    /// REST settings.
    pub api: ApiOptions,
    /// Jobs the store queue holds.
    pub queue_capacity: usize,
}

/// What the handlers share.
pub struct AppState {
    writer: IngestWriter,
    decoder: Decoder,
    /// Decoders between requests: a new one allocates its scratch record
    /// and column builders and learns the key order again, as file ingest's
    /// per-thread decoders do not.
    idle_decoders: std::sync::Mutex<Vec<Decoder>>,
    /// `None`: the server was configured open (no tokens checked).
    tokens: Option<TokenStore>,
    options: HttpOptions,
    limits: RateLimiter,
    requests: AtomicU64,
    pub(crate) query: Arc<inferwatch_query::QueryEngine>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) live: Arc<LiveState>,
    pub(crate) api: ApiOptions,
    pub(crate) queue_capacity: usize,
    pub(crate) started: Instant,
}

impl AppState {
    /// The state over a running writer; `tokens` is `None` only when the
    /// server is configured open.
    pub fn new(
        writer: IngestWriter,
        decoder: Decoder,
        tokens: Option<TokenStore>,
        options: HttpOptions,
        shared: NodeShared,
    ) -> AppState {
        AppState {
            writer,
            decoder,
            idle_decoders: std::sync::Mutex::new(Vec::new()),
            tokens,
            limits: RateLimiter::new(options.rate_limit),
            options,
            requests: AtomicU64::new(0),
            query: shared.query,
            metrics: shared.metrics,
            live: shared.live,
            api: shared.api,
            queue_capacity: shared.queue_capacity,
            started: Instant::now(),
        }
    }

    fn authorize(&self, headers: &HeaderMap, need: Need<'_>) -> Result<(), Denied> {
        self.authorize_token(headers, need).map(|_| ())
    }

    /// Checks the request's token against `need`; the token's record, or
    /// `None` when the server is open.
    pub(crate) fn authorize_token(
        &self,
        headers: &HeaderMap,
        need: Need<'_>,
    ) -> Result<Option<TokenRecord>, Denied> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let header = headers
            .get(header::AUTHORIZATION)
            .map(|value| value.to_str().map_err(|_| Denied::Malformed))
            .transpose()?;
        tokens.check(header, need).map(Some)
    }

    /// The store writer (for control requests such as a rules swap).
    pub(crate) fn writer(&self) -> &IngestWriter {
        &self.writer
    }

    /// The inference stream's decoder (rules compile against its schema).
    pub(crate) fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The store writer's counters.
    pub(crate) fn writer_counters(&self) -> Arc<WriterCounters> {
        self.writer.counters.clone()
    }
}

/// Who may call a route with a given method. Declared beside the route, so
/// the auth-matrix test covers every route the router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (liveness, HEC health, the dashboard's files).
    Open,
    /// Any valid token (protocol probes such as Elasticsearch's `GET /`).
    AnyToken,
    /// An `ingest` token (for the stream) or `admin`.
    Ingest,
    /// A `read` token or `admin`.
    Read,
    /// An `admin` token.
    Admin,
}

/// Builds the router and lists what it serves: one place registers a
/// route, its methods and who may call each, so the list cannot drift from
/// the router.
struct Routes {
    router: Router<Arc<AppState>>,
    table: Vec<RouteEntry>,
}

/// One route of the table.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// The path, axum syntax.
    pub path: &'static str,
    /// Its methods (lowercase) and who may call each.
    pub methods: &'static [(&'static str, Access)],
}

impl Routes {
    fn add(
        mut self,
        path: &'static str,
        methods: &'static [(&'static str, Access)],
        handler: MethodRouter<Arc<AppState>>,
    ) -> Routes {
        self.router = self.router.route(path, handler);
        self.table.push(RouteEntry { path, methods });
        self
    }
}

fn routes() -> Routes {
    let routes = Routes {
        router: Router::new(),
        table: Vec::new(),
    };
    routes
        .add("/healthz", &[("get", Access::Open)], get(healthz))
        .add(
            "/api/v1/ingest/{stream}",
            &[("post", Access::Ingest)],
            post(ingest_ndjson),
        )
        .add(
            "/_bulk",
            &[("post", Access::Ingest), ("put", Access::Ingest)],
            post(bulk).put(bulk),
        )
        .add(
            "/{index}/_bulk",
            &[("post", Access::Ingest), ("put", Access::Ingest)],
            post(bulk_index).put(bulk_index),
        )
        .add(
            "/",
            &[("get", Access::AnyToken), ("head", Access::AnyToken)],
            get(elastic_root),
        )
        .add(
            "/_license",
            &[("get", Access::AnyToken)],
            get(elastic_license),
        )
        .add(
            "/_cluster/health",
            &[("get", Access::AnyToken)],
            get(elastic_health),
        )
        .add(
            "/_cluster/health/{*rest}",
            &[("get", Access::AnyToken)],
            get(elastic_health),
        )
        .add("/_nodes", &[("get", Access::AnyToken)], get(elastic_nodes))
        .add(
            "/_nodes/{*rest}",
            &[("get", Access::AnyToken)],
            get(elastic_nodes),
        )
        .add(
            "/_ilm/{*rest}",
            &[
                ("get", Access::AnyToken),
                ("put", Access::AnyToken),
                ("post", Access::AnyToken),
            ],
            any(elastic_empty),
        )
        .add(
            "/_index_template/{*rest}",
            &[
                ("get", Access::AnyToken),
                ("put", Access::AnyToken),
                ("post", Access::AnyToken),
            ],
            any(elastic_empty),
        )
        .add(
            "/_ingest/{*rest}",
            &[
                ("get", Access::AnyToken),
                ("put", Access::AnyToken),
                ("post", Access::AnyToken),
            ],
            any(elastic_empty),
        )
        .add(
            "/services/collector",
            &[("post", Access::Ingest)],
            post(hec_event),
        )
        .add(
            "/services/collector/event",
            &[("post", Access::Ingest)],
            post(hec_event),
        )
        .add(
            "/services/collector/event/1.0",
            &[("post", Access::Ingest)],
            post(hec_event),
        )
        .add(
            "/services/collector/raw",
            &[("post", Access::Ingest)],
            post(hec_raw),
        )
        .add(
            "/services/collector/raw/1.0",
            &[("post", Access::Ingest)],
            post(hec_raw),
        )
        .add(
            "/services/collector/health",
            &[("get", Access::Open)],
            get(hec_health),
        )
        .add(
            "/services/collector/health/1.0",
            &[("get", Access::Open)],
            get(hec_health),
        )
        .add("/v1/logs", &[("post", Access::Ingest)], post(otlp_logs))
        .add(
            "/api/v1/query",
            &[("post", Access::Read)],
            post(crate::api::query),
        )
        .add(
            "/api/v1/series",
            &[("get", Access::Read)],
            get(crate::api::series),
        )
        .add(
            "/api/v1/series/overview",
            &[("get", Access::Read)],
            get(crate::api::series_overview),
        )
        .add(
            "/api/v1/compare",
            &[("get", Access::Read)],
            get(crate::compare::compare),
        )
        .add(
            "/api/v1/alerts",
            &[("get", Access::Read)],
            get(crate::api::alerts),
        )
        .add(
            "/api/v1/alerts/{fingerprint}/ack",
            &[("post", Access::Admin)],
            post(crate::api::acknowledge),
        )
        .add(
            "/api/v1/silences",
            &[("get", Access::Read), ("post", Access::Admin)],
            get(crate::api::list_silences).post(crate::api::create_silence),
        )
        .add(
            "/api/v1/silences/{id}",
            &[("delete", Access::Admin)],
            delete(crate::api::delete_silence),
        )
        .add(
            "/api/v1/rules",
            &[("get", Access::Read)],
            get(crate::api::rules),
        )
        .add(
            "/api/v1/rules/coverage",
            &[("get", Access::Read)],
            get(crate::api_rules::coverage),
        )
        .add(
            "/api/v1/rules/validation",
            &[("get", Access::Read)],
            get(crate::api_rules::validation),
        )
        .add(
            "/api/v1/slos",
            &[("get", Access::Read)],
            get(crate::api_rules::slos),
        )
        .add(
            "/api/v1/rules/reload",
            &[("post", Access::Admin)],
            post(crate::api::reload_rules),
        )
        .add(
            "/api/v1/notifications",
            &[("get", Access::Read)],
            get(crate::api::notifications),
        )
        .add(
            "/api/v1/ingest/dead-letters",
            &[("get", Access::Read)],
            get(crate::api::dead_letters),
        )
        .add(
            "/api/v1/health",
            &[("get", Access::Read)],
            get(crate::api::health),
        )
        .add(
            "/api/v1/openapi.json",
            &[("get", Access::Read)],
            get(crate::api::openapi),
        )
        .add(
            "/metrics",
            &[("get", Access::Read)],
            get(crate::api::metrics),
        )
        .add("/ui/", &[("get", Access::Open)], get(crate::ui::index))
        .add(
            "/ui/{*path}",
            &[("get", Access::Open)],
            get(crate::ui::file),
        )
}

/// Every route the router serves (axum path syntax) with its methods.
pub fn route_table() -> Vec<(&'static str, Vec<&'static str>)> {
    routes()
        .table
        .into_iter()
        .map(|entry| {
            let methods = entry.methods.iter().map(|(method, _)| *method).collect();
            (entry.path, methods)
        })
        .collect()
}

/// Every route with who may call each of its methods: what the auth
/// matrix test walks.
pub fn route_access_table() -> Vec<RouteEntry> {
    routes().table
}

/// Counts every request by route template, method and status.
async fn count_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    state
        .metrics
        .request(&route, &method, response.status().as_u16());
    response
}

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let raw_limit = state.options.max_request_bytes;
    let decompressed_limit = state.options.max_decompressed_bytes;
    routes()
        .router
        .fallback(crate::api::no_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_request,
        ))
        .layer(DefaultBodyLimit::max(decompressed_limit))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(raw_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            explain_body_failures,
        ))
        .layer(axum::middleware::map_response(elastic_product))
        .with_state(state)
}

/// The body layers (raw-size limit, decompression, the decompressed-size
/// limit when a handler reads the body) answer in plain text or with an
/// empty body; this gives those answers a reason, in the shape of the
/// route's protocol. Answers the handlers made (JSON) pass untouched.
async fn explain_body_failures(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    // Read before the await: the request is not Sync, so no borrow of it
    // may live across one.
    let (encoding, sent_length) = {
        let header_text = |name: header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(|value| value.trim().to_ascii_lowercase())
        };
        let encoding = header_text(header::CONTENT_ENCODING).filter(|e| e != "identity");
        let sent_length: Option<usize> =
            header_text(header::CONTENT_LENGTH).and_then(|length| length.parse().ok());
        (encoding, sent_length)
    };
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json
        || !matches!(
            status,
            StatusCode::BAD_REQUEST
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
        )
    {
        return response;
    }
    let detail = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let options = &state.options;
    let reason = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            let within_raw = sent_length.is_some_and(|length| length <= options.max_request_bytes);
            if encoding.is_some() && within_raw {
                format!(
                    "the decompressed request body is larger than {} bytes (--max-decompressed-size)",
                    options.max_decompressed_bytes
                )
            } else {
                format!(
                    "the request body is larger than {} bytes as sent (--max-request-size)",
                    options.max_request_bytes
                )
            }
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => format!(
            "Content-Encoding '{}' is not supported: send the body as is or with gzip",
            encoding.as_deref().unwrap_or("")
        ),
        _ => {
            let detail = detail
                .strip_prefix("Failed to buffer the request body: ")
                .unwrap_or(&detail);
            match &encoding {
                Some(encoding) => {
                    format!("the {encoding} request body could not be decompressed: {detail}")
                }
                None => format!("the request body could not be read: {detail}"),
            }
        }
    };
    body_failure_response(&path, status, &reason)
}

/// A refusal of the body, shaped as the route's protocol answers.
fn body_failure_response(path: &str, status: StatusCode, reason: &str) -> Response {
    if path.starts_with("/services/collector") {
        // HEC's code 6: invalid data format.
        return json_response(status, &json!({"text": reason, "code": 6}));
    }
    let elastic = path == "/_bulk" || path.ends_with("/_bulk") || path.starts_with("/_");
    if elastic {
        let kind = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "request_entity_too_large_exception",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "media_type_header_exception",
            _ => "parse_exception",
        };
        return elastic_error(status, kind, reason);
    }
    json_response(status, &json!({"error": reason}))
}

async fn elastic_product(mut response: Response) -> Response {
    response.headers_mut().insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    response
}

pub(crate) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    // Compact: Vector looks for the substring `"errors":true`.
    json_text_response(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A response whose body is JSON text already written.
fn json_text_response(status: StatusCode, text: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response()
}

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn status_of(denied: Denied) -> StatusCode {
    StatusCode::from_u16(denied.status()).unwrap_or(StatusCode::UNAUTHORIZED)
}

/// A 401/403 in the plain shape (`{"error": ...}`).
pub(crate) fn denied_plain(denied: Denied) -> Response {
    let response = json_response(status_of(denied), &json!({"error": denied.reason()}));
    with_challenge(response, denied, "Bearer realm=\"inferwatch\"")
}

/// A 401 names the schemes it takes (`WWW-Authenticate`); a 403 does not.
fn with_challenge(mut response: Response, denied: Denied, schemes: &'static str) -> Response {
    if denied.status() == 401 {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(schemes));
    }
    response
}

/// A 401/403 as Elasticsearch says it.
fn denied_elastic(denied: Denied) -> Response {
    let status = status_of(denied);
    let response = json_response(
        status,
        &json!({
            "error": {"type": "security_exception", "reason": denied.reason()},
            "status": status.as_u16(),
        }),
    );
    with_challenge(
        response,
        denied,
        "Basic realm=\"inferwatch\", ApiKey, Bearer",
    )
}

/// A 401/403 with HEC's codes: 2 token required, 3 invalid authorization,
/// 4 invalid token (403).
fn denied_hec(denied: Denied) -> Response {
    let (status, text, code) = match denied {
        Denied::Missing => (StatusCode::UNAUTHORIZED, "Token is required", 2),
        Denied::Malformed => (StatusCode::UNAUTHORIZED, "Invalid authorization", 3),
        Denied::Invalid | Denied::Forbidden => (StatusCode::FORBIDDEN, "Invalid token", 4),
        Denied::Expired => (StatusCode::FORBIDDEN, "Invalid token (expired)", 4),
    };
    json_response(status, &json!({"text": text, "code": code}))
}

/// Why a framed request was not stored.
pub(crate) enum Failure {
    /// The queue is full.
    Busy,
    /// The token is over its rate limit.
    Throttled(Throttled),
    /// The store refused or the writer stopped; the message says why.
    Store(String),
    /// The request names a stream clients may not write (400).
    Reserved(String),
}

/// The verdict on one item.
enum Verdict {
    Stored,
    Refused(Refusal),
}

/// Decodes and queues a framed request and waits until it is durable.
/// Returns one verdict per item.
async fn store_framed(
    state: &AppState,
    protocol: &str,
    framed: &mut Framed,
    token: Option<&TokenRecord>,
) -> Result<Vec<Verdict>, Failure> {
    let request = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let protocol_label = crate::metrics::labels(&[("protocol", protocol)]);
    state
        .metrics
        .ingest_requests
        .get_or_create(&protocol_label)
        .inc();
    if let Some(group) = framed
        .groups
        .iter()
        .find(|group| group.stream == HEARTBEAT_STREAM)
    {
        return Err(Failure::Reserved(format!(
            "the stream '{}' is reserved for the server's heartbeats",
            group.stream
        )));
    }
    // Before any work: a throttled request is neither decoded nor stored.
    let events = framed
        .items
        .iter()
        .filter(|item| matches!(item, Item::Line { .. }))
        .count() as u64;
    if let Err(throttled) = state.limits.admit(
        token.map_or("", |token| token.id.as_str()),
        token.and_then(|token| token.rate_limit),
        events,
    ) {
        return Err(Failure::Throttled(throttled));
    }
    // A source per request: the guard's refusals of this request's rows are
    // told apart by it, and a dead letter names the request.
    let source: Arc<str> = Arc::from(match protocol {
        "nats" => format!("nats:{request}"),
        _ => format!("http:{protocol}:{request}"),
    });
    let mut parts = Vec::new();
    for group in &mut framed.groups {
        let chunk = Chunk {
            source: source.clone(),
            first_line: 1,
            first_offset: 0,
            // Moved, not copied: nothing reads a group's lines after this.
            data: std::mem::take(&mut group.data),
            skipped_bytes: 0,
        };
        let payload = if group.stream == DEFAULT_STREAM {
            let mut decoder = state
                .idle_decoders
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .unwrap_or_else(|| state.decoder.clone());
            let (decoder, decoded) = tokio::task::spawn_blocking(move || {
                let decoded = decoder.decode(&chunk);
                (decoder, decoded)
            })
            .await
            .map_err(|error| Failure::Store(format!("decoding: {error}")))?;
            {
                let mut idle = state
                    .idle_decoders
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                // As many as requests decode at once, within reason.
                if idle.len() < 64 {
                    idle.push(decoder);
                }
            }
            Payload::Decoded(decoded)
        } else {
            Payload::Lines(chunk)
        };
        parts.push(Part {
            stream: group.stream.clone(),
            payload,
        });
    }
    let mut verdicts: Vec<Verdict> = framed
        .items
        .iter()
        .map(|item| match item {
            Item::Line { .. } => Verdict::Stored,
            Item::Refused { reason } => Verdict::Refused(Refusal {
                line: 0,
                reason: reason.clone(),
                kind: Some("unsupported".into()),
            }),
        })
        .collect();
    if parts.is_empty() {
        return Ok(verdicts);
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    match state.writer.submit(Job { parts, reply }) {
        Ok(()) => {}
        Err(Submit::Busy(_)) => {
            state
                .metrics
                .ingest_busy
                .get_or_create(&protocol_label)
                .inc();
            return Err(Failure::Busy);
        }
        Err(Submit::Stopped(_)) => return Err(Failure::Store("the store writer stopped".into())),
    }
    let outcome = match answer.await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(message)) => return Err(Failure::Store(message)),
        Err(_) => return Err(Failure::Store("the store writer stopped".into())),
    };
    for (group, part) in framed.groups.iter().zip(outcome.parts) {
        for refusal in part.refused {
            let index = usize::try_from(refusal.line).unwrap_or(0);
            // Blank NDJSON lines map to no item (usize::MAX).
            if let Some(verdict) = index
                .checked_sub(1)
                .and_then(|i| group.items.get(i))
                .and_then(|&item| verdicts.get_mut(item))
            {
                *verdict = Verdict::Refused(refusal);
            }
        }
    }
    for group in &framed.groups {
        let stored = group
            .items
            .iter()
            .filter(|&&item| matches!(verdicts.get(item), Some(Verdict::Stored)))
            .count();
        state.metrics.stored(protocol, &group.stream, stored as u64);
    }
    let refused = verdicts
        .iter()
        .filter(|verdict| matches!(verdict, Verdict::Refused(_)))
        .count();
    if refused > 0 {
        state
            .metrics
            .ingest_refused
            .get_or_create(&protocol_label)
            .inc_by(refused as u64);
    }
    Ok(verdicts)
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// The column a decoder's reason mentions (`… column 17 …`), if any.
fn column_of(reason: &str) -> Option<u64> {
    let at = reason.find("column ")? + "column ".len();
    let digits: String = reason[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn failure_plain(failure: Failure, retry_after: u64) -> Response {
    match failure {
        Failure::Busy => with_retry_after(
            json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": "the store is busy; retry later"}),
            ),
            retry_after,
        ),
        Failure::Throttled(throttled) => with_retry_after(
            json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": throttled.reason}),
            ),
            throttled.retry_after,
        ),
        Failure::Store(message) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": format!("not stored: {message}")}),
        ),
        Failure::Reserved(message) => {
            json_response(StatusCode::BAD_REQUEST, &json!({"error": message}))
        }
    }
}

/// An NDJSON body framed as one group, the lines as they came, so line
/// numbers are the client's own; blank lines are not items. memchr finds
/// the line ends (SIMD): a byte-by-byte split was the largest cost of an
/// NDJSON request in a profile. The body becomes the group's data as is.
fn ndjson_framed(stream: &str, body: Vec<u8>) -> Framed {
    let mut framed = Framed::default();
    let mut items = Vec::new();
    let ends = memchr::memchr_iter(b'\n', &body).chain(std::iter::once(body.len()));
    let mut start = 0;
    for (index, end) in ends.enumerate() {
        let text = &body[start..end];
        start = end + 1;
        if text.trim_ascii().is_empty() {
            // Blank lines are skipped by the decoder; they are not items.
            items.push(usize::MAX);
            continue;
        }
        items.push(framed.items.len());
        let line = index as u64 + 1;
        framed.items.push(Item::Line { group: 0, line });
    }
    framed.groups.push(crate::protocol::Group {
        stream: stream.to_string(),
        data: body,
        items,
    });
    framed
}

/// Stores NDJSON `body` into `stream` as `protocol` (the NATS input) and
/// waits until it is durable; returns the lines refused (dead-lettered).
pub(crate) async fn store_lines(
    state: &AppState,
    protocol: &str,
    stream: &str,
    body: &[u8],
) -> Result<usize, Failure> {
    let mut framed = ndjson_framed(stream, body.to_vec());
    if framed.items.is_empty() {
        return Ok(0);
    }
    let verdicts = store_framed(state, protocol, &mut framed, None).await?;
    Ok(verdicts
        .iter()
        .filter(|verdict| matches!(verdict, Verdict::Refused(_)))
        .count())
}

/// `POST /api/v1/ingest/{stream}`: NDJSON. Answers
/// `{accepted, rejected, errors: [{line, column, reason}]}`.
async fn ingest_ndjson(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match state.authorize_token(&headers, Need::Ingest(&stream)) {
        Ok(token) => token,
        Err(denied) => return denied_plain(denied),
    };
    if stream_name(&stream) != stream {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("invalid stream name '{stream}': use letters, digits, '_' and '-'")}),
        );
    }
    // The body becomes the chunk without a copy when nothing else holds it.
    let mut framed = ndjson_framed(&stream, Vec::from(body));
    if framed.items.is_empty() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"accepted": 0, "rejected": 0, "errors": [], "error": "no data"}),
        );
    }
    let lines_of_items: Vec<u64> = framed
        .items
        .iter()
        .map(|item| match item {
            Item::Line { line, .. } => *line,
            Item::Refused { .. } => 0,
        })
        .collect();
    let verdicts = match store_framed(&state, "ndjson", &mut framed, token.as_ref()).await {
        Ok(verdicts) => verdicts,
        Err(failure) => return failure_plain(failure, state.options.retry_after_seconds),
    };
    let mut errors = Vec::new();
    for (verdict, line) in verdicts.iter().zip(lines_of_items) {
        if let Verdict::Refused(refusal) = verdict {
            errors.push(json!({
                "line": line,
                "column": column_of(&refusal.reason),
                "reason": refusal.reason,
            }));
        }
    }
    let rejected = errors.len();
    json_response(
        StatusCode::OK,
        &json!({
            "accepted": verdicts.len() - rejected,
            "rejected": rejected,
            "errors": errors,
        }),
    )
}

async fn bulk(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    bulk_request(&state, None, &headers, &body).await
}

async fn bulk_index(
    State(state): State<Arc<AppState>>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bulk_request(&state, Some(&index), &headers, &body).await
}

fn elastic_error(status: StatusCode, kind: &str, reason: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"type": kind, "reason": reason}, "status": status.as_u16()}),
    )
}

/// Elasticsearch `_bulk`: one item per action, in order, each with a
/// numeric status; `errors` is true when any item failed.
async fn bulk_request(
    state: &AppState,
    index: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let started = Instant::now();
    // Who is asking comes before what the body says.
    let token = match state.authorize_token(headers, Need::IngestSomewhere) {
        Ok(token) => token,
        Err(denied) => return denied_elastic(denied),
    };
    let (mut framed, actions) = match frame_bulk(index, body) {
        Ok(framed) => framed,
        Err(reason) => {
            return elastic_error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                &reason,
            )
        }
    };
    if actions.is_empty() {
        return elastic_error(
            StatusCode::BAD_REQUEST,
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;",
        );
    }
    // Every stream the request writes to must be allowed.
    for group in &framed.groups {
        if let Err(denied) = state.authorize(headers, Need::Ingest(&group.stream)) {
            return denied_elastic(denied);
        }
    }
    if framed.groups.is_empty() {
        if let Err(denied) = state.authorize(headers, Need::Any) {
            return denied_elastic(denied);
        }
    }
    let verdicts = match store_framed(state, "bulk", &mut framed, token.as_ref()).await {
        Ok(verdicts) => verdicts,
        Err(Failure::Busy) => {
            return with_retry_after(
                elastic_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "es_rejected_execution_exception",
                    "the store is busy; retry later",
                ),
                state.options.retry_after_seconds,
            )
        }
        Err(Failure::Throttled(throttled)) => {
            return with_retry_after(
                elastic_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "es_rejected_execution_exception",
                    &throttled.reason,
                ),
                throttled.retry_after,
            )
        }
        Err(Failure::Store(message)) => {
            return elastic_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_exception",
                &format!("not stored: {message}"),
            )
        }
        Err(Failure::Reserved(message)) => {
            return elastic_error(
                StatusCode::BAD_REQUEST,
                "invalid_index_name_exception",
                &message,
            )
        }
    };
    json_text_response(StatusCode::OK, bulk_answer(started, &actions, &verdicts))
}

/// The `_bulk` answer, compact (Vector looks for the substring
/// `"errors":true`): `{"took":…,"errors":…,"items":[…]}`, one item per
/// action, `{"index":{"_index":…,"_id":…,"status":201,"result":"created"}}`
/// or the item's `status` 400 and `error`. A stored item without `_id`
/// repeats the previous one's text when its action and index are the same
/// (the usual request), so it is written once, not serialised per item.
fn bulk_answer(started: Instant, actions: &[BulkAction], verdicts: &[Verdict]) -> Vec<u8> {
    let errors = verdicts
        .iter()
        .any(|verdict| matches!(verdict, Verdict::Refused(_)));
    let mut text = Vec::with_capacity(64 + actions.len() * 64);
    text.extend_from_slice(b"{\"took\":");
    // Taken when the answer is written, as Elasticsearch reports it.
    text.extend_from_slice(started.elapsed().as_millis().to_string().as_bytes());
    text.extend_from_slice(if errors {
        b",\"errors\":true,\"items\":["
    } else {
        b",\"errors\":false,\"items\":["
    });
    // The previous stored item without `_id`: its action, index and text.
    let mut repeated: Option<(BulkVerb, &Arc<str>, std::ops::Range<usize>)> = None;
    for (number, (action, verdict)) in actions.iter().zip(verdicts).enumerate() {
        if number > 0 {
            text.push(b',');
        }
        let plain = action.id.is_none() && matches!(verdict, Verdict::Stored);
        if plain {
            if let Some((verb, index, range)) = &repeated {
                if *verb == action.action && Arc::ptr_eq(index, &action.index) {
                    let range = range.clone();
                    text.extend_from_within(range);
                    continue;
                }
            }
        }
        let start = text.len();
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut text, &BulkItem { action, verdict });
        if plain {
            repeated = Some((action.action, &action.index, start..text.len()));
        }
    }
    text.extend_from_slice(b"]}");
    text
}

/// One item of a `_bulk` answer.
struct BulkItem<'a> {
    action: &'a BulkAction,
    verdict: &'a Verdict,
}

impl serde::Serialize for BulkItem<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Body<'a>(&'a BulkItem<'a>);
        impl serde::Serialize for Body<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let BulkItem { action, verdict } = self.0;
                let mut item = serializer.serialize_map(None)?;
                item.serialize_entry("_index", &*action.index)?;
                if let Some(id) = &action.id {
                    item.serialize_entry("_id", id)?;
                }
                match verdict {
                    Verdict::Stored => {
                        item.serialize_entry("status", &201)?;
                        item.serialize_entry("result", "created")?;
                    }
                    Verdict::Refused(refusal) => {
                        let kind = match refusal.kind.as_deref() {
                            Some("unsupported") => "action_request_validation_exception",
                            _ => "document_parsing_exception",
                        };
                        item.serialize_entry("status", &400)?;
                        item.serialize_entry(
                            "error",
                            &json!({"type": kind, "reason": refusal.reason}),
                        )?;
                    }
                }
                item.end()
            }
        }
        let mut outer = serializer.serialize_map(Some(1))?;
        outer.serialize_entry(self.action.action.as_str(), &Body(self))?;
        outer.end()
    }
}

async fn elastic_root(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if crate::ui::wants_html(&headers) {
        return crate::ui::to_dashboard();
    }
    if let Err(denied) = state.authorize(&headers, Need::Any) {
        return denied_elastic(denied);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "name": "inferwatch",
            "cluster_name": "inferwatch",
            "cluster_uuid": "inferwatch",
            "version": {
                "number": state.options.elasticsearch_version,
                "build_flavor": "default",
                "build_type": "inferwatch",
                "lucene_version": "9.12.0",
                "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0",
            },
            "tagline": "You Know, for Search",
        }),
    )
}

async fn elastic_license(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize(&headers, Need::Any) {
        return denied_elastic(denied);
    }
    json_response(
        StatusCode::OK,
        &json!({"license": {
            "status": "active",
            "uid": "inferwatch",
            "type": "basic",
            "issue_date_in_millis": 0,
            "max_nodes": 1000,
            "issued_to": "inferwatch",
            "issuer": "inferwatch",
            "start_date_in_millis": -1,
        }}),
    )
}

async fn elastic_health(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize(&headers, Need::Any) {
        return denied_elastic(denied);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "cluster_name": "inferwatch",
            "status": "green",
            "timed_out": false,
            "number_of_nodes": 1,
            "number_of_data_nodes": 1,
        }),
    )
}

async fn elastic_nodes(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize(&headers, Need::Any) {
        return denied_elastic(denied);
    }
    json_response(
        StatusCode::OK,
        &json!({"_nodes": {"total": 1, "successful": 1, "failed": 0}, "cluster_name": "inferwatch", "nodes": {}}),
    )
}

/// Templates, ILM policies and ingest pipelines: accepted and ignored
/// (inferwatch keeps its own schema and retention).
async fn elastic_empty(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize(&headers, Need::Any) {
        return denied_elastic(denied);
    }
    json_response(StatusCode::OK, &json!({"acknowledged": true}))
}

/// HEC metadata from the query string (`?index=…&sourcetype=…`).
fn hec_defaults(query: Option<&str>) -> HecDefaults {
    let mut defaults = HecDefaults::default();
    for pair in query.unwrap_or("").split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "index" => defaults.index = Some(value),
            "host" => defaults.host = Some(value),
            "source" => defaults.source = Some(value),
            "sourcetype" => defaults.sourcetype = Some(value),
            _ => {}
        }
    }
    defaults
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

async fn hec_event(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let defaults = hec_defaults(query.as_deref());
    let (framed, fault) = frame_hec_events(&body, &defaults, now_nanos());
    hec_request(&state, &headers, framed, fault).await
}

async fn hec_raw(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let defaults = hec_defaults(query.as_deref());
    let (framed, fault) = frame_hec_raw(&body, &defaults, now_nanos());
    hec_request(&state, &headers, framed, fault).await
}

/// HEC: `{"text":"Success","code":0}`, or the first bad event's code and
/// number (the good events of the request are stored all the same).
async fn hec_request(
    state: &AppState,
    headers: &HeaderMap,
    mut framed: Framed,
    fault: Option<crate::protocol::HecFault>,
) -> Response {
    // Checked before the body is judged: a client without a token learns
    // nothing about its data.
    let token = match state.authorize_token(headers, Need::IngestSomewhere) {
        Ok(token) => token,
        Err(denied) => return denied_hec(denied),
    };
    for group in &framed.groups {
        if let Err(denied) = state.authorize(headers, Need::Ingest(&group.stream)) {
            return denied_hec(denied);
        }
    }
    if let Some(fault) = fault.as_ref().filter(|fault| fault.code == 5) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"text": fault.text, "code": fault.code}),
        );
    }
    let verdicts = match store_framed(state, "hec", &mut framed, token.as_ref()).await {
        Ok(verdicts) => verdicts,
        Err(Failure::Busy) => {
            return with_retry_after(
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"text": "Server is busy", "code": 9}),
                ),
                state.options.retry_after_seconds,
            )
        }
        // HEC has no code of its own for a rate limit: clients back off on
        // its busy answer.
        Err(Failure::Throttled(throttled)) => {
            return with_retry_after(
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"text": "Server is busy", "code": 9}),
                ),
                throttled.retry_after,
            )
        }
        Err(Failure::Store(message)) => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"text": format!("Internal server error: {message}"), "code": 8}),
            )
        }
        Err(Failure::Reserved(message)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"text": format!("Incorrect index: {message}"), "code": 7}),
            )
        }
    };
    let first_refused = verdicts
        .iter()
        .position(|verdict| matches!(verdict, Verdict::Refused(_)));
    let fault = match (fault, first_refused) {
        (Some(fault), Some(refused)) if refused < fault.event => {
            Some((6, "Invalid data format", refused))
        }
        (Some(fault), _) => Some((fault.code, fault.text, fault.event)),
        (None, Some(refused)) => Some((6, "Invalid data format", refused)),
        (None, None) => None,
    };
    match fault {
        None => json_response(StatusCode::OK, &json!({"text": "Success", "code": 0})),
        Some((code, text, event)) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"text": text, "code": code, "invalid-event-number": event}),
        ),
    }
}

async fn hec_health() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"text": "HEC is healthy", "code": 17}),
    )
}

/// OTLP/HTTP logs, protobuf or JSON; the answer is in the request's
/// encoding, with `partialSuccess` counting the refused records.
async fn otlp_logs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match state.authorize_token(&headers, Need::Ingest(DEFAULT_STREAM)) {
        Ok(token) => token,
        Err(denied) => return denied_plain(denied),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let protobuf = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => true,
        "application/json" => false,
        other => {
            return json_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &json!({"code": 3, "message": format!("unsupported content type '{other}': use application/x-protobuf or application/json")}),
            )
        }
    };
    let request = if protobuf {
        ExportLogsServiceRequest::decode(body.as_ref()).map_err(|error| error.to_string())
    } else {
        serde_json::from_slice::<ExportLogsServiceRequest>(&body).map_err(|error| error.to_string())
    };
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": 3, "message": format!("invalid OTLP logs request: {message}")}),
            )
        }
    };
    let mut framed = frame_otlp(&request, now_nanos());
    let verdicts = match store_framed(&state, "otlp", &mut framed, token.as_ref()).await {
        Ok(verdicts) => verdicts,
        Err(Failure::Busy) => {
            return with_retry_after(
                json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &json!({"code": 8, "message": "the store is busy; retry later"}),
                ),
                state.options.retry_after_seconds,
            )
        }
        Err(Failure::Throttled(throttled)) => {
            return with_retry_after(
                json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &json!({"code": 8, "message": throttled.reason}),
                ),
                throttled.retry_after,
            )
        }
        Err(Failure::Store(message)) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"code": 14, "message": format!("not stored: {message}")}),
            )
        }
        Err(Failure::Reserved(message)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": 3, "message": message}),
            )
        }
    };
    let refused: Vec<&Refusal> = verdicts
        .iter()
        .filter_map(|verdict| match verdict {
            Verdict::Refused(refusal) => Some(refusal),
            Verdict::Stored => None,
        })
        .collect();
    let response = ExportLogsServiceResponse {
        partial_success: (!refused.is_empty()).then(|| ExportLogsPartialSuccess {
            rejected_log_records: refused.len() as i64,
            error_message: refused
                .iter()
                .take(3)
                .map(|refusal| refusal.reason.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        }),
    };
    if protobuf {
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            )],
            response.encode_to_vec(),
        )
            .into_response()
    } else {
        match serde_json::to_value(&response) {
            Ok(mut value) => {
                // OTLP/JSON leaves unset fields out; the serde derive writes null.
                if let Some(object) = value.as_object_mut() {
                    object.retain(|_, field| !field.is_null());
                }
                json_response(StatusCode::OK, &value)
            }
            Err(error) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"code": 13, "message": error.to_string()}),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_read_from_reasons() {
        assert_eq!(column_of("invalid JSON at line 1 column 17: x"), Some(17));
        assert_eq!(column_of("missing timestamp"), None);
    }

    #[test]
    fn bulk_answers_repeat_items_as_serialised_one_by_one() {
        let body = b"{\"index\":{}}\n{}\n{\"index\":{}}\n{}\n{\"index\":{\"_id\":\"x\"}}\n{}\n\
{\"index\":{}}\n{}\n{\"index\":{}}\n{}\n{\"create\":{\"_index\":\"q\\\"\"}}\n{}\n\
{\"create\":{\"_index\":\"q\\\"\"}}\n{}\n{\"delete\":{}}\n{\"index\":{}}\n{}\n";
        let (_, actions) = frame_bulk(Some("path"), body).unwrap();
        assert_eq!(actions.len(), 9);
        let refused = |reason: &str| {
            Verdict::Refused(Refusal {
                line: 0,
                reason: reason.to_string(),
                kind: None,
            })
        };
        let verdicts = vec![
            Verdict::Stored,
            Verdict::Stored,
            Verdict::Stored,
            refused("bad \"line\""),
            Verdict::Stored,
            Verdict::Stored,
            Verdict::Stored,
            refused("delete is not supported"),
            Verdict::Stored,
        ];
        let answer: serde_json::Value =
            serde_json::from_slice(&bulk_answer(Instant::now(), &actions, &verdicts)).unwrap();
        let expected: Vec<serde_json::Value> = actions
            .iter()
            .zip(&verdicts)
            .map(|(action, verdict)| serde_json::to_value(BulkItem { action, verdict }).unwrap())
            .collect();
        assert_eq!(answer["items"], serde_json::Value::Array(expected));
        assert_eq!(answer["errors"], true);
        assert!(answer["took"].is_u64());
        assert_eq!(answer["items"][0]["index"]["status"], 201);
        assert_eq!(answer["items"][5]["create"]["_index"], "q\"");
        assert_eq!(
            answer["items"][3]["index"]["error"]["reason"],
            "bad \"line\""
        );
        let stored = [Verdict::Stored, Verdict::Stored];
        let text = bulk_answer(Instant::now(), &actions[..2], &stored);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("\"errors\":false,\"items\":[{\"index\":{\"_index\":\"path\",\"status\":201,\"result\":\"created\"}},{\"index\""), "{text}");
    }

    #[test]
    fn hec_query_strings_give_metadata() {
        let defaults = hec_defaults(Some("index=gw&sourcetype=my%20type&x=1"));
        assert_eq!(defaults.index.as_deref(), Some("gw"));
        assert_eq!(defaults.sourcetype.as_deref(), Some("my type"));
    }
}

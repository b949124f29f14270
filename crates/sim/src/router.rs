//! The live simulator's traffic router: a small HTTP service that an
//! orchestrator-facing action (inferwatch's `rollback`) calls, and that the
//! simulated fleet honours from its next simulated second.
//!
//! - `GET /routes`: every deployment and whether it takes traffic;
//! - `POST /models/{model_id}/rollback`: send that model's canary traffic to
//!   its baseline. Answers 200 with the versions rolled back (an empty list
//!   when there was nothing left to roll back) or 404 for an unknown model.
//!
//! When a deployments log (JSONL) is given, it starts with one simulated
//! `deploy` record per deployment (at the run's start), and each rollback
//! is appended, stamped with the simulated (event) time it takes effect:
//! the records `inferwatch dora report` computes DORA metrics from.
//!
//! It lives with the simulator because it is the simulated fleet's control
//! plane: `inferwatch simulate --live --router` and `inferwatch demo` both
//! drive the fleet through it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::{Routing, SimError, DEPLOYMENTS, MODELS};

/// A router error with what it was doing.
fn router_error(context: String) -> impl FnOnce(std::io::Error) -> SimError {
    move |source| SimError::Router { context, source }
}

/// What the router and the generator share.
pub struct RouterState {
    routing: Mutex<Routing>,
    /// Event time (ns) of the simulated second being generated.
    now_ns: AtomicI64,
    deployments_log: Mutex<Option<BufWriter<File>>>,
}

impl RouterState {
    /// Every deployment live; when `deployments_log` is given, it gets the
    /// deploy records of a run starting at `start_ns`, then the rollbacks.
    pub fn new(deployments_log: Option<&Path>, start_ns: i64) -> Result<Arc<Self>, SimError> {
        let log = match deployments_log {
            Some(path) => {
                let context = || format!("cannot write deployments log {}", path.display());
                let mut log = BufWriter::new(File::create(path).map_err(router_error(context()))?);
                for record in crate::deploy_records(start_ns) {
                    serde_json::to_writer(&mut log, &record)
                        .map_err(std::io::Error::other)
                        .map_err(router_error(context()))?;
                    log.write_all(b"\n").map_err(router_error(context()))?;
                }
                log.flush().map_err(router_error(context()))?;
                Some(log)
            }
            None => None,
        };
        Ok(Arc::new(RouterState {
            routing: Mutex::new(Routing::default()),
            now_ns: AtomicI64::new(0),
            deployments_log: Mutex::new(log),
        }))
    }

    /// The routing for the simulated second starting at `second_ns`.
    pub fn routing_at(&self, second_ns: i64) -> Routing {
        self.now_ns.store(second_ns, Ordering::SeqCst);
        *self
            .routing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn roll_back(&self, model_id: &str) -> (StatusCode, Value) {
        if !MODELS.iter().any(|model| model.model_id == model_id) {
            let known: Vec<&str> = MODELS.iter().map(|model| model.model_id).collect();
            return (
                StatusCode::NOT_FOUND,
                json!({"error": format!("unknown model {model_id:?}; models: {}", known.join(", "))}),
            );
        }
        let versions = self
            .routing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .roll_back(model_id);
        // The generator picks the new routing up at its next second.
        let effective_ns = self.now_ns.load(Ordering::SeqCst) + inferwatch_core::NANOS_PER_SECOND;
        let effective = inferwatch_core::format_timestamp(effective_ns);
        if !versions.is_empty() {
            eprintln!("router: rolled back {model_id} {versions:?} from {effective}");
            let mut log = self
                .deployments_log
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(log) = log.as_mut() {
                for version in &versions {
                    let record = json!({"timestamp": effective, "event": "rollback",
                        "model_id": model_id, "model_version": version});
                    // A log write failure must not fail the rollback itself.
                    let _ = writeln!(log, "{record}").and_then(|()| log.flush());
                }
            }
        }
        (
            StatusCode::OK,
            json!({"model_id": model_id, "rolled_back": versions, "effective_from": effective}),
        )
    }

    fn routes(&self) -> Value {
        let routing = *self
            .routing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let routes: Vec<Value> = DEPLOYMENTS
            .iter()
            .enumerate()
            .map(|(index, deployment)| {
                json!({"model_id": MODELS[deployment.model].model_id,
                       "model_version": deployment.model_version,
                       "ab_group": deployment.ab_group,
                       "share": deployment.share,
                       "live": routing.is_live(index)})
            })
            .collect();
        json!({"routes": routes})
    }
}

/// Serves the router on `address` from a background thread; returns the
/// bound address (port 0 picks a free port).
pub fn serve(address: &str, state: Arc<RouterState>) -> Result<SocketAddr, SimError> {
    let context = || format!("cannot listen on {address}");
    let listener = std::net::TcpListener::bind(address).map_err(router_error(context()))?;
    listener
        .set_nonblocking(true)
        .map_err(router_error(context()))?;
    let bound = listener.local_addr().map_err(router_error(context()))?;
    let app = Router::new()
        .route("/routes", get(routes))
        .route("/models/{model_id}/rollback", post(roll_back))
        .with_state(state);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(router_error("runtime".to_string()))?;
    std::thread::Builder::new()
        .name("router".to_string())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        if let Err(error) = axum::serve(listener, app).await {
                            eprintln!("router: stopped: {error}");
                        }
                    }
                    Err(error) => eprintln!("router: cannot listen: {error}"),
                }
            })
        })
        .map_err(router_error("thread".to_string()))?;
    Ok(bound)
}

async fn routes(State(state): State<Arc<RouterState>>) -> Json<Value> {
    Json(state.routes())
}

async fn roll_back(
    State(state): State<Arc<RouterState>>,
    UrlPath(model_id): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
    let (status, body) = state.roll_back(&model_id);
    (status, Json(body))
}

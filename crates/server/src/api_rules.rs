//! The REST routes behind the dashboard's rules and SLOs view, apart from
//! [`crate::api`] so that each stays short:
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /api/v1/slos` | read | each SLO with its error budget and burn rates per group |
//! | `GET /api/v1/rules/coverage` | read | the MITRE ATLAS matrix of the running rules ([`inferwatch_detect::atlas`]) |
//! | `GET /api/v1/rules/validation` | read | the rules directory checked as a reload would load it, without swapping |

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use inferwatch_detect::atlas::{self, Evidence};
use serde_json::{json, Value};

use crate::api::{error, rfc3339};
use crate::auth::Need;
use crate::http::{denied_plain, json_response, AppState};

/// `GET /api/v1/slos`: every SLO the node evaluates, each with its budget
/// per group as of its last evaluated boundary (no groups before the first
/// boundary passes).
pub async fn slos(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let Some(share) = state.live.detection.as_ref() else {
        return json_response(StatusCode::OK, &json!({"slos": [], "detection": false}));
    };
    let snapshot = share
        .snapshot
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let infos = share.slos.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let slos: Vec<Value> = infos
        .iter()
        .map(|slo| {
            let mut value = serde_json::to_value(slo).unwrap_or(Value::Null);
            let groups: Vec<&inferwatch_detect::BudgetReport> = snapshot
                .slos
                .iter()
                .filter(|report| report.slo_id == slo.id)
                .collect();
            // The group with the least budget left speaks for the SLO.
            let worst = groups
                .iter()
                .filter_map(|report| report.budget_remaining)
                .fold(None, |low: Option<f64>, left| {
                    Some(low.map_or(left, |low| low.min(left)))
                });
            let fastest = groups
                .iter()
                .flat_map(|report| report.burn_rates.iter().map(|rate| rate.burn_rate))
                .fold(None, |high: Option<f64>, rate| {
                    Some(high.map_or(rate, |high| high.max(rate)))
                });
            let firing = groups.iter().any(|report| !report.firing.is_empty());
            if let Some(object) = value.as_object_mut() {
                object.insert("budget_remaining".into(), json!(worst));
                object.insert("max_burn_rate".into(), json!(fastest));
                object.insert("firing".into(), json!(firing));
                object.insert("groups".into(), json!(groups));
            }
            value
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "slos": slos,
            "detection": true,
            "clock": snapshot.clock.map(rfc3339),
        }),
    )
}

/// `GET /api/v1/rules/coverage`: which ATLAS techniques the running rules
/// cover, judged from their `atlas.*` tags and what their fixtures declare
/// (not run: `inferwatch rules coverage --run` runs them), in the JSON
/// shape of `inferwatch rules coverage --format json`.
pub async fn coverage(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let Some(share) = state.live.detection.as_ref() else {
        return error(
            StatusCode::CONFLICT,
            "no rules are running on this node (start serve with --rules)",
        );
    };
    let rules = share
        .rules
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut outside = std::collections::BTreeMap::<String, Vec<String>>::new();
    let mut evidence = Vec::new();
    for rule in &rules {
        for id in &rule.atlas {
            if atlas::technique(id).is_none() {
                outside.entry(id.clone()).or_default().push(rule.id.clone());
            }
        }
        if rule.atlas.iter().any(|id| atlas::technique(id).is_some()) {
            evidence.push(rule.evidence.clone());
        }
    }
    let mut report = atlas::classify(evidence, Evidence::Declared);
    report.rule_count = rules.len();
    report.outside = outside;
    let mut value = atlas::coverage_json(&report);
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "tactics".into(),
            json!(atlas::TACTICS
                .iter()
                .map(|tactic| json!({"id": tactic.id, "name": tactic.name}))
                .collect::<Vec<_>>()),
        );
    }
    json_response(StatusCode::OK, &value)
}

/// `GET /api/v1/rules/validation`: loads and compiles the rules directory
/// the node runs from, as `POST /api/v1/rules/reload` would, and lists
/// every error (file:line:column) without swapping anything in. The
/// running rules passed this check when they were loaded; an edit since
/// may not.
pub async fn validation(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let Some(share) = state.live.detection.as_ref() else {
        return error(
            StatusCode::CONFLICT,
            "no rules are running on this node (start serve with --rules)",
        );
    };
    let path = share.reload.path.clone();
    let decoder = state.decoder().clone();
    let shown = path.display().to_string();
    let checked = tokio::task::spawn_blocking(move || {
        crate::one_pass::load_engine_and_rules(&path, &decoder).map(|(_, rules)| rules.len())
    })
    .await;
    let (valid, rules, errors) = match checked {
        Ok(Ok(count)) => (true, count, Vec::new()),
        Ok(Err(crate::ServerError::Rules { messages, .. })) => (false, 0, messages),
        Ok(Err(other)) => (false, 0, vec![other.to_string()]),
        Err(failure) => {
            eprintln!("inferwatch serve: checking rules: {failure}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "checking the rules failed",
            );
        }
    };
    json_response(
        StatusCode::OK,
        &json!({"path": shown, "valid": valid, "rules": rules, "errors": errors}),
    )
}

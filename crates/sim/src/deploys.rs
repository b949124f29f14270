//! Deploy records for the fleet, the input of DORA metrics
//! (`inferwatch dora report`): one `deploy` line per entry of
//! [`DEPLOYMENTS`], in the deployment-record format of
//! `inferwatch_alert::dora` (this crate does not depend on it).
//!
//! The commit times are **simulated**: every deployment goes live at the
//! run's start, with a fixed lead time from commit to deploy
//! ([`SIMULATED_LEAD_TIMES_S`]).

use serde::Serialize;

use crate::fleet::{DEPLOYMENTS, MODELS};

/// Simulated commit-to-deploy lead time of each entry of [`DEPLOYMENTS`],
/// seconds: the recsys 2.1 canary shipped 26 h after its commit, the
/// baselines took a few days.
pub const SIMULATED_LEAD_TIMES_S: [i64; DEPLOYMENTS.len()] = [
    3 * 86_400, // recsys 2.0 baseline
    26 * 3_600, // recsys 2.1 canary
    4 * 86_400, // fraud 1.3
    5 * 86_400, // chat-llm 4.0
    2 * 86_400, // vision 3.2
];

/// One `deploy` line of a deployments log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployRecord {
    /// When the version went live (RFC 3339).
    pub timestamp: String,
    /// Always `deploy`.
    pub event: &'static str,
    /// The model.
    pub model_id: &'static str,
    /// The version.
    pub model_version: &'static str,
    /// Simulated commit time (RFC 3339).
    pub commit_time: String,
    /// `baseline` or `canary`.
    pub ab_group: &'static str,
}

/// The deploy records of a run that starts at `start_ns` (UTC ns): every
/// deployment live from the start, in [`DEPLOYMENTS`] order.
pub fn deploy_records(start_ns: i64) -> Vec<DeployRecord> {
    DEPLOYMENTS
        .iter()
        .zip(SIMULATED_LEAD_TIMES_S)
        .map(|(deployment, lead_time_s)| DeployRecord {
            timestamp: inferwatch_core::format_timestamp(start_ns),
            event: "deploy",
            model_id: MODELS[deployment.model].model_id,
            model_version: deployment.model_version,
            commit_time: inferwatch_core::format_timestamp(
                start_ns.saturating_sub(lead_time_s * inferwatch_core::NANOS_PER_SECOND),
            ),
            ab_group: deployment.ab_group,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_deploy_per_deployment_with_its_lead_time() {
        let records = deploy_records(1_767_225_600 * inferwatch_core::NANOS_PER_SECOND);
        assert_eq!(records.len(), DEPLOYMENTS.len());
        let canary = &records[crate::fleet::RECSYS_CANARY];
        assert_eq!(
            serde_json::to_string(canary).unwrap(),
            r#"{"timestamp":"2026-01-01T00:00:00Z","event":"deploy","model_id":"recsys","model_version":"2.1","commit_time":"2025-12-30T22:00:00Z","ab_group":"canary"}"#
        );
        assert_eq!(records[4].model_id, "vision");
        assert_eq!(records[4].commit_time, "2025-12-30T00:00:00Z");
    }
}

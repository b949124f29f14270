//! Scenarios, their targets, and when their incidents happen.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{SimConfig, SimError};

/// One kind of fault or attack that the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// No incident: the fleet behaves normally for the whole run.
    Baseline,
    /// `fraud` latency ×3 (every version).
    LatencyRegression,
    /// `vision` error rate rises to 15 % (HTTP 500 and 503).
    ErrorSpike,
    /// The `recsys` 2.1 canary becomes slower (×2.2 by default,
    /// [`SimConfig::canary_latency_factor`]) and fails more often (6 % by
    /// default, [`SimConfig::canary_error_rate`]).
    CanaryRegression,
    /// Source `src-07` sends inputs on which the classifiers are unsure
    /// (flat Dirichlet) and whose predicted class skews to the last class.
    PoisonedSource,
    /// `recsys` inputs become 4× longer; latency follows through the input
    /// elasticity (×4^0.3 ≈ 1.5).
    InputLengthShift,
    /// A new client `c-31337` (203.0.113.77) sweeps `vision` with unique
    /// inputs at 10 % of the fleet rate.
    Extraction,
    /// 40 new clients flood `chat-llm` with ~8k-token prompts (its volume ×3);
    /// the model overloads: latency ×2.5 on top of the long prompts, 20 % of
    /// requests answered 429 or 503.
    Dos,
    /// `fraud` loses 98 % of its traffic (a load balancer dropping most
    /// backends): the rest keeps arriving, so it is not an outage to
    /// zero-traffic rules.
    PartialOutage,
    /// The key of ordinary client `c-00002` is also used from 60 addresses
    /// in 60 networks it never used (ATLAS AML.T0012, valid accounts), at
    /// 2 % of the fleet rate, with ordinary requests.
    StolenKey,
    /// Ordinary client `c-00008` sends `chat-llm` twice its own rate again
    /// in 16k-token prompts asking for long answers (AML.T0034, cost
    /// harvesting).
    CostHarvesting,
    /// A new client `c-8000001` probes `vision` with small variations of
    /// 40 inputs, each answered at the decision boundary (top two classes
    /// within 0.02; AML.T0043, adversarial crafting).
    AdversarialProbing,
    /// A new client `c-8000002` queries `fraud` with one record over and
    /// over, getting the same probabilities back (AML.T0024.000, membership
    /// inference).
    MembershipInference,
    /// A new client `c-8000003` sends `vision` unique inputs that all steer
    /// to class 3, each answer more confident than the last (AML.T0024.001,
    /// model inversion: reconstructing what a class looks like).
    Inversion,
    /// `vision` loses confidence slowly: its answers' true-class weight
    /// falls linearly to 15 % over the incident (AML.T0031, eroding
    /// the model's integrity; no single minute looks wrong).
    SlowDrift,
}

impl Scenario {
    /// Every scenario, in a stable order.
    pub const ALL: [Scenario; 15] = [
        Scenario::Baseline,
        Scenario::LatencyRegression,
        Scenario::ErrorSpike,
        Scenario::CanaryRegression,
        Scenario::PoisonedSource,
        Scenario::InputLengthShift,
        Scenario::Extraction,
        Scenario::Dos,
        Scenario::PartialOutage,
        Scenario::StolenKey,
        Scenario::CostHarvesting,
        Scenario::AdversarialProbing,
        Scenario::MembershipInference,
        Scenario::Inversion,
        Scenario::SlowDrift,
    ];

    /// The name used on the command line and in labels.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::LatencyRegression => "latency-regression",
            Scenario::ErrorSpike => "error-spike",
            Scenario::CanaryRegression => "canary-regression",
            Scenario::PoisonedSource => "poisoned-source",
            Scenario::InputLengthShift => "input-length-shift",
            Scenario::Extraction => "extraction",
            Scenario::Dos => "dos",
            Scenario::PartialOutage => "partial-outage",
            Scenario::StolenKey => "stolen-key",
            Scenario::CostHarvesting => "cost-harvesting",
            Scenario::AdversarialProbing => "adversarial-probing",
            Scenario::MembershipInference => "membership-inference",
            Scenario::Inversion => "inversion",
            Scenario::SlowDrift => "slow-drift",
        }
    }

    /// The label key: the dimensions that identify the affected slice.
    pub fn key(self) -> BTreeMap<String, String> {
        let pairs: &[(&str, &str)] = match self {
            Scenario::Baseline => &[],
            Scenario::LatencyRegression => &[("model_id", targets::LATENCY_REGRESSION_MODEL)],
            Scenario::ErrorSpike => &[("model_id", targets::ERROR_SPIKE_MODEL)],
            Scenario::CanaryRegression => &[
                ("model_id", targets::CANARY_MODEL),
                ("model_version", targets::CANARY_VERSION),
            ],
            Scenario::PoisonedSource => &[("source_id", targets::POISONED_SOURCE)],
            Scenario::InputLengthShift => &[("model_id", targets::INPUT_LENGTH_SHIFT_MODEL)],
            Scenario::Extraction => &[("client_id", targets::EXTRACTION_CLIENT_ID)],
            Scenario::Dos => &[("model_id", targets::DOS_MODEL)],
            Scenario::PartialOutage => &[("model_id", targets::PARTIAL_OUTAGE_MODEL)],
            Scenario::StolenKey => &[("client_id", targets::STOLEN_KEY_CLIENT_ID)],
            Scenario::CostHarvesting => &[("client_id", targets::COST_HARVESTING_CLIENT_ID)],
            Scenario::AdversarialProbing => &[("client_id", targets::PROBING_CLIENT_ID)],
            Scenario::MembershipInference => &[("client_id", targets::MEMBERSHIP_CLIENT_ID)],
            Scenario::Inversion => &[("client_id", targets::INVERSION_CLIENT_ID)],
            Scenario::SlowDrift => &[("model_id", targets::SLOW_DRIFT_MODEL)],
        };
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// Reads a comma-separated list such as `latency-regression,dos`.
    /// Duplicates are dropped; the order of first appearance is kept (it
    /// decides the order of the incidents).
    pub fn parse_list(text: &str) -> Result<Vec<Scenario>, SimError> {
        let mut scenarios = Vec::new();
        for part in text.split(',') {
            let scenario: Scenario = part.parse()?;
            if !scenarios.contains(&scenario) {
                scenarios.push(scenario);
            }
        }
        Ok(scenarios)
    }

    /// The valid names, comma separated, for error messages and help.
    pub fn valid_names() -> String {
        Scenario::ALL.map(Scenario::name).join(", ")
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = SimError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim();
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == wanted)
            .ok_or_else(|| SimError::UnknownScenario {
                name: wanted.to_string(),
                valid: Scenario::valid_names(),
            })
    }
}

impl Serialize for Scenario {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Scenario {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Who or what each scenario hits, and how hard. Fixed, so that labels and
/// rules can name them.
pub mod targets {
    /// Model that loses most of its traffic in `partial-outage`.
    pub const PARTIAL_OUTAGE_MODEL: &str = "fraud";
    /// Share of its traffic that still arrives during `partial-outage`.
    pub const PARTIAL_OUTAGE_KEPT: f64 = 0.02;
    /// Model slowed down by `latency-regression`.
    pub const LATENCY_REGRESSION_MODEL: &str = "fraud";
    /// Latency factor of `latency-regression`.
    pub const LATENCY_REGRESSION_FACTOR: f64 = 3.0;
    /// Model failing in `error-spike`.
    pub const ERROR_SPIKE_MODEL: &str = "vision";
    /// Error rate during `error-spike`.
    pub const ERROR_SPIKE_RATE: f64 = 0.15;
    /// Model of the regressing canary.
    pub const CANARY_MODEL: &str = "recsys";
    /// Version of the regressing canary.
    pub const CANARY_VERSION: &str = "2.1";
    /// Default latency factor of `canary-regression`
    /// ([`SimConfig::canary_latency_factor`](crate::SimConfig::canary_latency_factor)).
    pub const CANARY_LATENCY_FACTOR: f64 = 2.2;
    /// Default error rate of the canary during `canary-regression`
    /// ([`SimConfig::canary_error_rate`](crate::SimConfig::canary_error_rate)).
    pub const CANARY_ERROR_RATE: f64 = 0.06;
    /// Source whose data is poisoned.
    pub const POISONED_SOURCE: &str = "src-07";
    /// Index of [`POISONED_SOURCE`].
    pub const POISONED_SOURCE_INDEX: usize = 7;
    /// Dirichlet parameter of the true class for poisoned inputs (instead of
    /// the model's own, 9 to 30).
    pub const POISONED_CONCENTRATION: f64 = 2.5;
    /// Share of poisoned inputs whose true class is forced to the last class.
    pub const POISONED_CLASS_SKEW: f64 = 0.6;
    /// Model whose inputs grow in `input-length-shift`.
    pub const INPUT_LENGTH_SHIFT_MODEL: &str = "recsys";
    /// Input token factor of `input-length-shift`.
    pub const INPUT_LENGTH_FACTOR: f64 = 4.0;
    /// The extraction attacker.
    pub const EXTRACTION_CLIENT_ID: &str = "c-31337";
    /// The number in [`EXTRACTION_CLIENT_ID`]; ordinary clients skip it.
    pub const EXTRACTION_CLIENT_NUMBER: usize = 31_337;
    /// The extraction attacker's only address.
    pub const EXTRACTION_CLIENT_IP: &str = "203.0.113.77";
    /// Model swept by the extraction attacker.
    pub const EXTRACTION_MODEL: &str = "vision";
    /// Extraction traffic as a share of the fleet rate (+30 ev/s at 300 ev/s).
    pub const EXTRACTION_RATE_SHARE: f64 = 0.1;
    /// Model flooded in `dos`.
    pub const DOS_MODEL: &str = "chat-llm";
    /// Number of flooding clients (`c-20000` ..), at `198.51.100.10` ..
    pub const DOS_CLIENT_COUNT: usize = 40;
    /// The number in the first flooder's id (`c-20000`); ordinary clients
    /// skip the flooders' numbers.
    pub const DOS_FIRST_CLIENT_NUMBER: usize = 20_000;
    /// Address of the first flooder: `198.51.100.` and this, then one more
    /// per flooder.
    pub const DOS_FIRST_CLIENT_HOST: usize = 10;
    /// The flood adds this many times the model's normal volume.
    pub const DOS_EXTRA_VOLUME: f64 = 2.0;
    /// Median input tokens of a flooding request.
    pub const DOS_INPUT_TOKENS: f64 = 8_000.0;
    /// Latency factor of the overloaded model (for every request to it).
    pub const DOS_OVERLOAD_FACTOR: f64 = 2.5;
    /// Error rate (429 and 503) of the overloaded model.
    pub const DOS_ERROR_RATE: f64 = 0.2;
    /// Ordinary client whose key is stolen in `stolen-key`.
    pub const STOLEN_KEY_INDEX: usize = 2;
    /// Its id.
    pub const STOLEN_KEY_CLIENT_ID: &str = "c-00002";
    /// Networks (each a /16 in `45.60.0.0` ..) that use the stolen key.
    pub const STOLEN_KEY_NETWORKS: u64 = 60;
    /// Traffic on the stolen key, as a share of the fleet rate.
    pub const STOLEN_KEY_RATE_SHARE: f64 = 0.02;
    /// Ordinary client that harvests tokens in `cost-harvesting`.
    pub const COST_HARVESTING_INDEX: usize = 8;
    /// Its id.
    pub const COST_HARVESTING_CLIENT_ID: &str = "c-00008";
    /// Harvesting traffic as a multiple of the client's own rate.
    pub const COST_HARVESTING_EXTRA_FACTOR: f64 = 2.0;
    /// Median input tokens of a harvesting request.
    pub const COST_HARVESTING_INPUT_TOKENS: f64 = 16_000.0;
    /// Output token factor of a harvesting request.
    pub const COST_HARVESTING_OUTPUT_FACTOR: f64 = 4.0;
    /// The adversarial prober (far above every ordinary client number).
    pub const PROBING_CLIENT_ID: &str = "c-8000001";
    /// Its only address.
    pub const PROBING_CLIENT_IP: &str = "198.18.0.5";
    /// Model probed in `adversarial-probing`.
    pub const PROBING_MODEL: &str = "vision";
    /// Base inputs the prober varies (3 variations each).
    pub const PROBING_BASE_INPUTS: u64 = 40;
    /// Probing traffic as a share of the fleet rate.
    pub const PROBING_RATE_SHARE: f64 = 0.01;
    /// Largest gap between the top two probabilities of a probe's answer.
    pub const PROBING_MAX_MARGIN: f64 = 0.02;
    /// The membership-inference attacker.
    pub const MEMBERSHIP_CLIENT_ID: &str = "c-8000002";
    /// Its only address.
    pub const MEMBERSHIP_CLIENT_IP: &str = "198.18.0.6";
    /// Model queried in `membership-inference`.
    pub const MEMBERSHIP_MODEL: &str = "fraud";
    /// The record queried over and over (its input hash is this, mixed).
    pub const MEMBERSHIP_RECORD: u64 = 0x3E3B_0000;
    /// Membership traffic as a share of the fleet rate.
    pub const MEMBERSHIP_RATE_SHARE: f64 = 0.005;
    /// The inversion attacker.
    pub const INVERSION_CLIENT_ID: &str = "c-8000003";
    /// Its only address.
    pub const INVERSION_CLIENT_IP: &str = "198.18.0.7";
    /// Model inverted in `inversion`.
    pub const INVERSION_MODEL: &str = "vision";
    /// The class whose inputs the attacker reconstructs.
    pub const INVERSION_CLASS: usize = 3;
    /// Inversion traffic as a share of the fleet rate.
    pub const INVERSION_RATE_SHARE: f64 = 0.01;
    /// The target class's Dirichlet weight grows from ×1 to ×this over the
    /// incident (the answers grow more confident).
    pub const INVERSION_CONFIDENCE_GROWTH: f64 = 10.0;
    /// Model whose confidence erodes in `slow-drift`.
    pub const SLOW_DRIFT_MODEL: &str = "vision";
    /// The true-class weight at the end of `slow-drift` (from 1 at its start).
    pub const SLOW_DRIFT_FINAL_WEIGHT: f64 = 0.15;
}

/// One injected incident: what, when (event time, `[start, end)`), and which
/// slice. Serialises to the labels line
/// `{"scenario":"dos","start":"2026-01-01T00:24:00Z","end":"…","key":{"model_id":"chat-llm"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The scenario that caused it.
    pub scenario: Scenario,
    /// First affected instant, UTC nanoseconds.
    #[serde(rename = "start", with = "rfc3339")]
    pub start_ns: i64,
    /// First instant after the incident, UTC nanoseconds.
    #[serde(rename = "end", with = "rfc3339")]
    pub end_ns: i64,
    /// The affected slice, e.g. `{"model_id": "fraud"}`.
    pub key: BTreeMap<String, String>,
}

impl Incident {
    /// Whether `timestamp_ns` falls inside the incident.
    pub fn contains(&self, timestamp_ns: i64) -> bool {
        self.start_ns <= timestamp_ns && timestamp_ns < self.end_ns
    }
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(nanos: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&inferwatch_core::format_timestamp(*nanos))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = String::deserialize(deserializer)?;
        inferwatch_core::parse_timestamp_text(&text).map_err(serde::de::Error::custom)
    }
}

const MINUTE_NS: f64 = 60e9;

/// When the incidents of `config` happen.
///
/// The rule, deterministic from the duration `D`:
/// * each incident lasts `L = min(20 min, 30 % of D)`, and consecutive
///   incidents are separated by a quiet gap of `L / 2`;
/// * the first starts at 40 % of `D`, or earlier (never before 10 % of `D`)
///   when the incidents would otherwise run past 95 % of `D`;
/// * when they do not fit between 10 % and 95 % of `D`, lengths and gaps
///   shrink in proportion, but an incident stays at least
///   `min(5 min, L)` long; past that, incidents are spread evenly over the
///   same span and may overlap;
/// * starts and lengths are rounded to whole minutes when `D ≥ 10 min`
///   (whole seconds otherwise).
///
/// For a 1 h run with one scenario the incident is `[24 min, 42 min)`.
/// Incidents follow the order of the scenarios in the config; `baseline`
/// contributes none.
pub fn incidents(config: &SimConfig) -> Vec<Incident> {
    let mut scenarios: Vec<Scenario> = Vec::new();
    for scenario in &config.scenarios {
        if *scenario != Scenario::Baseline && !scenarios.contains(scenario) {
            scenarios.push(*scenario);
        }
    }
    if scenarios.is_empty() || config.duration_ns <= 0 {
        return Vec::new();
    }
    let duration = config.duration_ns as f64;
    let count = scenarios.len() as f64;
    let unit = if duration >= 10.0 * MINUTE_NS {
        MINUTE_NS
    } else {
        1e9
    };
    let mut length = (0.3 * duration).min(20.0 * MINUTE_NS);
    let mut gap = length / 2.0;
    let available = 0.85 * duration;
    let span = count * length + (count - 1.0) * gap;
    if span > available {
        let scale = available / span;
        let shortest = length.min(5.0 * MINUTE_NS);
        if length * scale >= shortest {
            length *= scale;
            gap *= scale;
        } else {
            length = shortest;
            gap = (available - count * length) / (count - 1.0);
        }
    }
    // Too many to fit: they overlap, but still start a time unit apart.
    gap = gap.max(unit - length);
    let span = count * length + (count - 1.0) * gap;
    let first = (0.4 * duration)
        .min(0.95 * duration - span)
        .max(0.1 * duration);
    let round = |value: f64| (value / unit).round() * unit;
    let rounded_length = round(length).max(unit);
    scenarios
        .iter()
        .enumerate()
        .map(|(index, scenario)| {
            let offset = round(first + index as f64 * (length + gap)).max(0.0);
            let end = (offset + rounded_length).min(duration);
            Incident {
                scenario: *scenario,
                start_ns: config.start_ns + offset as i64,
                end_ns: config.start_ns + end as i64,
                key: scenario.key(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scenarios: &[Scenario], duration: &str) -> SimConfig {
        SimConfig {
            scenarios: scenarios.to_vec(),
            duration_ns: inferwatch_core::parse_duration(duration).unwrap(),
            ..SimConfig::default()
        }
    }

    fn minutes(incident: &Incident, start_ns: i64) -> (f64, f64) {
        (
            (incident.start_ns - start_ns) as f64 / MINUTE_NS,
            (incident.end_ns - start_ns) as f64 / MINUTE_NS,
        )
    }

    #[test]
    fn one_scenario_in_an_hour_runs_from_24_to_42_minutes() {
        let config = config(&[Scenario::LatencyRegression], "1h");
        let found = incidents(&config);
        assert_eq!(found.len(), 1);
        assert_eq!(minutes(&found[0], config.start_ns), (24.0, 42.0));
        let label = serde_json::to_string(&found[0]).unwrap();
        assert_eq!(
            label,
            r#"{"scenario":"latency-regression","start":"2026-01-01T00:24:00Z","end":"2026-01-01T00:42:00Z","key":{"model_id":"fraud"}}"#
        );
        let back: Incident = serde_json::from_str(&label).unwrap();
        assert_eq!(back, found[0]);
    }

    #[test]
    fn long_runs_cap_incidents_at_twenty_minutes() {
        let config = config(&[Scenario::Dos], "1d");
        let (start, end) = minutes(&incidents(&config)[0], config.start_ns);
        assert_eq!((start, end - start), (576.0, 20.0));
    }

    #[test]
    fn baseline_has_no_incident_and_is_ignored_in_combinations() {
        assert!(incidents(&config(&[Scenario::Baseline], "1h")).is_empty());
        let combined = incidents(&config(&[Scenario::Baseline, Scenario::Dos], "1h"));
        assert_eq!(combined.len(), 1);
        assert_eq!(combined[0].scenario, Scenario::Dos);
    }

    #[test]
    fn combined_scenarios_do_not_overlap_when_the_duration_allows() {
        for duration in ["10m", "1h", "2h", "1d"] {
            for count in 2..Scenario::ALL.len() {
                let config = config(&Scenario::ALL[1..=count], duration);
                let found = incidents(&config);
                assert_eq!(found.len(), count);
                let duration_ns = config.duration_ns as f64;
                let shortest = (0.3 * duration_ns).min(5.0 * MINUTE_NS);
                let fits = count as f64 * shortest + (count as f64 - 1.0) * MINUTE_NS
                    <= 0.85 * duration_ns;
                for pair in found.windows(2) {
                    assert!(pair[0].start_ns < pair[1].start_ns);
                    if fits {
                        assert!(
                            pair[0].end_ns < pair[1].start_ns,
                            "{duration} {count}: {found:?}"
                        );
                    }
                }
                // Five-minute incidents a minute apart: two fit in 10 min,
                // eight in an hour, every scenario in two hours.
                let fit_at_most = match duration {
                    "10m" => 2,
                    "1h" => 8,
                    _ => usize::MAX,
                };
                assert_eq!(fits, count <= fit_at_most, "{duration} {count}");
                let last = found.last().unwrap();
                assert!(last.end_ns <= config.start_ns + config.duration_ns);
                assert!(found[0].start_ns >= config.start_ns + config.duration_ns / 10);
                // Past fitting, the last of many incidents a minute apart may
                // be cut short by the end of the run.
                for incident in found.iter().filter(|_| fits) {
                    let length = (incident.end_ns - incident.start_ns) as f64;
                    assert!(length >= shortest - MINUTE_NS, "{duration} {count}");
                }
            }
        }
    }

    #[test]
    fn two_scenarios_in_an_hour_are_staggered() {
        let config = config(&[Scenario::ErrorSpike, Scenario::Extraction], "1h");
        let found = incidents(&config);
        assert_eq!(minutes(&found[0], config.start_ns), (12.0, 30.0));
        assert_eq!(minutes(&found[1], config.start_ns), (39.0, 57.0));
    }

    #[test]
    fn short_runs_round_to_seconds() {
        let config = config(&[Scenario::ErrorSpike], "2m");
        let found = incidents(&config);
        let start = (found[0].start_ns - config.start_ns) / 1_000_000_000;
        let end = (found[0].end_ns - config.start_ns) / 1_000_000_000;
        assert_eq!((start, end), (48, 84));
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for scenario in Scenario::ALL {
            assert_eq!(scenario.name().parse::<Scenario>().unwrap(), scenario);
            assert_eq!(scenario == Scenario::Baseline, scenario.key().is_empty());
        }
        let list = Scenario::parse_list("dos, extraction,dos").unwrap();
        assert_eq!(list, vec![Scenario::Dos, Scenario::Extraction]);
        let error = Scenario::parse_list("dos,meteor").unwrap_err().to_string();
        assert!(error.contains("meteor"), "{error}");
        assert!(error.contains("latency-regression") && error.contains("poisoned-source"));
    }
}

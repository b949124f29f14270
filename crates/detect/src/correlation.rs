//! Correlation across streams: Sigma v2.1 correlation rules (plus an
//! `absence` extension) over findings from any stream, in event time.
//!
//! # What it consumes
//!
//! A correlation consumes *findings*: named, timestamped facts with fields.
//! They come from two places:
//!
//! * inferwatch rule alerts in state `firing` ([`Finding::from_alert`]): the
//!   finding is named by the alert's `rule_id`, its fields are the alert's
//!   `group` values and its time is `starts_at`;
//! * **Sigma detection rules** (`logsource` / `detection` / `condition`)
//!   applied to raw JSON events of any stream — gateway logs, feature-store
//!   errors, auth logs — through [`CorrelationEngine::observe_event`]. A
//!   Sigma rule reads the stream named by its `logsource.service` (or
//!   `logsource.category`); with neither it reads every stream. Matching is
//!   done by the `rsigma-eval` crate, so every Sigma modifier it implements
//!   works (`contains`, `startswith`, `endswith`, `re`, `cidr`, `all`,
//!   `gt`…); `expand` is refused because placeholders need a pipeline
//!   inferwatch does not have. The event time is read from the first of
//!   [`CorrelationConfig::timestamp_fields`] present (RFC 3339 or epoch).
//!
//! # Rule files
//!
//! A file holds YAML documents separated by `---`; each is a Sigma
//! detection rule or a correlation rule ([`CorrelationRules`]). Rules refer
//! to each other by `name` (or `id`); a name that is neither a Sigma rule
//! nor a correlation in the loaded files is taken to be an inferwatch rule
//! id whose alerts the caller feeds in. Correlations may consume other
//! correlations (chaining).
//!
//! ```yaml
//! title: Auth failures
//! name: auth-failure
//! logsource: {service: auth}
//! detection:
//!   selection: {outcome: failure}
//!   condition: selection
//! ---
//! title: Brute force, then inference from the same client
//! name: brute-force-then-inference
//! level: high
//! tags: [atlas.aml.t0040]
//! correlation:
//!   type: temporal_ordered
//!   rules: [auth-failure, inference-ok]
//!   group-by: [client]
//!   aliases:
//!     client: {auth-failure: src_ip, inference-ok: client_ip}
//!   timespan: 5m
//! ```
//!
//! Types: `event_count` and `value_count` (with `condition: {gte: 5}`, and
//! `field` for value_count; conditions `gt`, `gte`, `lt`, `lte`, `eq`,
//! `neq`, several combine with *and*), `temporal` (all rules, any order,
//! within the timespan), `temporal_ordered` (in the listed order by event
//! time; equal times count as in order), and the inferwatch extension
//! **`absence`**:
//!
//! ```yaml
//! correlation:
//!   type: absence
//!   rules: [canary-deployed]          # a finding of one of these starts a wait
//!   expected: [canary-health-ok]      # a finding of one of these, same group, ends it
//!   group-by: [model_id]
//!   timespan: 10m                     # fires at trigger time + 10m if nothing came
//! ```
//!
//! Triggers that arrive while a wait is open join it (one alert per
//! episode, counting them). What the engine does not evaluate —
//! `value_sum`, `value_avg`, `value_percentile`, a `condition` on temporal
//! types, unknown keys — is an error naming the file, line and column, as
//! the Sigma specification asks of a backend.
//!
//! # Event time and late data
//!
//! Findings arrive roughly in time order, up to `allowed_lateness` (30 s by
//! default) behind the newest one. The watermark is the newest event time
//! seen minus that lateness (or higher, when the caller advances it). A
//! finding older than the watermark is dropped and counted. Findings are
//! buffered until the watermark passes them and are then evaluated in
//! timestamp order, so a late-arriving earlier event neither makes an
//! ordered sequence fire early nor makes it miss, and the alerts do not
//! depend on arrival order within the lateness. An absence, or a count
//! whose condition can only be judged once its window closes (`lt`,
//! `lte`, `eq`, `neq`, counted over the timespan from the group's first
//! finding), is decided once the watermark passes its deadline. Growing
//! counts (`gt`, `gte`) fire at the completing finding over the sliding
//! window ending there.
//!
//! After a match the group's state is cleared, so one burst raises one
//! alert; the next alert needs fresh findings. Per group the state holds
//! only what the timespan needs (a `temporal_ordered` group keeps one
//! chain per prefix, an absence group one wait) and older findings are
//! evicted; groups beyond `max_groups` are counted and skipped.
//!
//! # Output
//!
//! Each match is an [`Alert`] in state `firing`: `rule_id` is the
//! correlation's `name` (else `id`), `group` the group-by values,
//! `starts_at` the time of the completing finding (or of the deadline for
//! absence and window-closing counts), `atlas` the union of the
//! correlation's `atlas.*` tags and its members' techniques, and the
//! fingerprint is stable over correlation and group. The explanation lists
//! the contributing findings, one entry per member rule: `dimension` is the
//! rule, `value` when its findings happened, and `lift` — which for
//! correlation alerts carries no ratio — is the number of that rule's
//! findings in the match (0 for the rule an absence waited for in vain).
//!
//! ```
//! use std::path::Path;
//! use inferwatch_detect::correlation::{CorrelationConfig, CorrelationEngine, CorrelationRules, Finding};
//! let rules = CorrelationRules::from_yaml_str(Path::new("c.yaml"), "
//! title: Low confidence and feature-store errors on one model
//! name: confidence-and-feature-store
//! correlation:
//!   type: temporal
//!   rules: [low-confidence, feature-store-error]
//!   group-by: [model_id]
//!   timespan: 5m
//! ").unwrap();
//! let mut engine = CorrelationEngine::new(rules, CorrelationConfig::default()).unwrap();
//! let second = 1_000_000_000;
//! engine.observe_finding(Finding::new("low-confidence", 100 * second).with_field("model_id", "fraud"));
//! engine.observe_finding(Finding::new("feature-store-error", 160 * second).with_field("model_id", "fraud"));
//! let alerts = engine.flush();
//! assert_eq!(alerts.len(), 1);
//! assert_eq!(alerts[0].starts_at, "1970-01-01T00:02:40Z");
//! ```

mod rules;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use inferwatch_core::{
    epoch_to_nanos, fingerprint, format_timestamp, parse_duration, parse_timestamp_text, Alert,
    AlertState, Contributor, Impact,
};
use serde_json::Value;

pub use rules::{
    Comparison, CorrelationKind, CorrelationRule, CorrelationRules, FilePosition, RuleReference,
    SigmaDetectionRule,
};
pub use state::CorrelationCounters;
use state::{CorrelationRuntime, Match, Slot};

use crate::DetectError;

/// A named, timestamped fact a correlation can consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule that produced it (an inferwatch rule id, a Sigma rule's
    /// name or id, or a correlation's).
    pub rule: String,
    /// Event time (UTC ns).
    pub time: i64,
    /// Field values: group keys and anything a correlation reads.
    pub fields: BTreeMap<String, String>,
    /// MITRE ATLAS technique ids, carried into correlation alerts.
    pub atlas: Vec<String>,
}

impl Finding {
    /// A finding with no fields.
    pub fn new(rule: impl Into<String>, time: i64) -> Finding {
        Finding {
            rule: rule.into(),
            time,
            fields: BTreeMap::new(),
            atlas: Vec::new(),
        }
    }

    /// Adds a field.
    pub fn with_field(mut self, name: impl Into<String>, value: impl Into<String>) -> Finding {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// The finding an inferwatch alert stands for: only `firing` transitions
    /// are findings, timed at `starts_at`, with the alert's group as fields.
    pub fn from_alert(alert: &Alert) -> Option<Finding> {
        if alert.state != AlertState::Firing {
            return None;
        }
        let time = parse_timestamp_text(&alert.starts_at).ok()?;
        Some(Finding {
            rule: alert.rule_id.clone(),
            time,
            fields: alert.group.clone(),
            atlas: alert.atlas.clone(),
        })
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct CorrelationConfig {
    /// How far behind the newest event time a finding may arrive and still count (ns).
    pub allowed_lateness: i64,
    /// Fields of raw events that may hold the event time, first present wins.
    pub timestamp_fields: Vec<String>,
    /// Most groups one correlation tracks at once.
    pub max_groups: usize,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            allowed_lateness: parse_duration(crate::DEFAULT_ALLOWED_LATENESS)
                .unwrap_or(30 * inferwatch_core::NANOS_PER_SECOND),
            timestamp_fields: vec!["timestamp".into(), "@timestamp".into(), "time".into()],
            max_groups: 100_000,
        }
    }
}

/// What became of an observed finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Buffered for at least one correlation (or a `generate` alert).
    Buffered,
    /// Older than the watermark: dropped and counted.
    Late,
    /// No loaded rule consumes it.
    Unused,
}

/// Counters of one correlation, for tests and the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationState {
    /// The correlation's `rule_id`.
    pub rule_id: String,
    /// Its counters.
    pub counters: CorrelationCounters,
}

/// Where a finding of one rule goes.
#[derive(Debug, Clone, Default)]
struct Consumers {
    /// (correlation index, input slot).
    slots: Vec<(usize, usize)>,
    /// Group fields of the `generate` alerts this rule raises, when a
    /// correlation with `generate: true` consumes it (Sigma rules only).
    generate_fields: Option<Vec<String>>,
}

/// A `generate` alert for a Sigma detection match, waiting for the watermark.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PendingDetectionAlert {
    time: i64,
    rule_index: usize,
    group: BTreeMap<String, String>,
}

/// Evaluates correlation rules over findings and raw events, in event time.
#[derive(Debug)]
pub struct CorrelationEngine {
    config: CorrelationConfig,
    detection_rules: Vec<SigmaDetectionRule>,
    /// Fields each Sigma rule's findings must carry (what its consumers read).
    detection_fields: Vec<Vec<String>>,
    /// In dependency order: a correlation comes after those it consumes.
    correlations: Vec<CorrelationRuntime>,
    /// Canonical rule name → where its findings go.
    consumers: HashMap<String, Consumers>,
    /// For each correlation, the consumers of its own matches (chaining).
    correlation_consumers: Vec<Consumers>,
    pending_detection_alerts: BTreeSet<PendingDetectionAlert>,
    newest_time: Option<i64>,
    released_before: i64,
    late_dropped: u64,
}

impl CorrelationEngine {
    /// Resolves references between the rules and prepares their state.
    ///
    /// Fails on a reference cycle, on two references to the same rule in one
    /// list, and on a rule used both as a trigger and as expected by an absence.
    pub fn new(
        rules: CorrelationRules,
        config: CorrelationConfig,
    ) -> Result<CorrelationEngine, DetectError> {
        let CorrelationRules {
            detection_rules,
            correlations,
        } = rules;
        // Every name (and id) a reference may use → the canonical name findings carry.
        let mut canonical: HashMap<String, String> = HashMap::new();
        for (identifier, other) in detection_rules
            .iter()
            .map(|r| (&r.identifier, &r.other_identifier))
            .chain(
                correlations
                    .iter()
                    .map(|r| (&r.identifier, &r.other_identifier)),
            )
        {
            canonical.insert(identifier.clone(), identifier.clone());
            if let Some(other) = other {
                canonical.insert(other.clone(), identifier.clone());
            }
        }
        let resolve =
            |name: &str| -> String { canonical.get(name).map_or(name, String::as_str).to_string() };
        let correlation_index: HashMap<String, usize> = correlations
            .iter()
            .enumerate()
            .map(|(index, rule)| (rule.identifier.clone(), index))
            .collect();

        let order = dependency_order(&correlations, &resolve, &correlation_index)?;
        let mut position_in_order = vec![0; correlations.len()];
        for (position, index) in order.iter().enumerate() {
            position_in_order[*index] = position;
        }

        let mut runtimes = Vec::with_capacity(correlations.len());
        let mut consumers: HashMap<String, Consumers> = HashMap::new();
        let mut correlation_consumers = vec![Consumers::default(); correlations.len()];
        let mut by_index: Vec<Option<CorrelationRule>> =
            correlations.into_iter().map(Some).collect();
        for (position, index) in order.iter().enumerate() {
            let rule = by_index[*index]
                .take()
                .ok_or_else(|| DetectError::Internal("correlation ordered twice".into()))?;
            let slots = build_slots(&rule, &resolve)?;
            for (slot_index, slot) in slots.iter().enumerate() {
                match correlation_index.get(slot.rule.as_str()) {
                    Some(upstream) => correlation_consumers[position_in_order[*upstream]]
                        .slots
                        .push((position, slot_index)),
                    None => consumers
                        .entry(slot.rule.clone())
                        .or_default()
                        .slots
                        .push((position, slot_index)),
                }
            }
            if rule.generate {
                for slot in &slots {
                    if detection_rules.iter().any(|d| d.identifier == slot.rule) {
                        let fields = consumers
                            .entry(slot.rule.clone())
                            .or_default()
                            .generate_fields
                            .get_or_insert_with(Vec::new);
                        for field in &slot.group_fields {
                            if !fields.contains(field) {
                                fields.push(field.clone());
                            }
                        }
                    }
                }
            }
            runtimes.push(CorrelationRuntime::new(rule, slots, config.max_groups));
        }

        let detection_fields = detection_rules
            .iter()
            .map(|rule| {
                let mut fields = BTreeSet::new();
                if let Some(consumer) = consumers.get(&rule.identifier) {
                    for (correlation, slot) in &consumer.slots {
                        let slot = &runtimes[*correlation].slots[*slot];
                        fields.extend(slot.group_fields.iter().cloned());
                        fields.extend(slot.value_field.iter().cloned());
                    }
                    fields.extend(consumer.generate_fields.iter().flatten().cloned());
                }
                fields.into_iter().collect()
            })
            .collect();

        Ok(CorrelationEngine {
            config,
            detection_rules,
            detection_fields,
            correlations: runtimes,
            consumers,
            correlation_consumers,
            pending_detection_alerts: BTreeSet::new(),
            newest_time: None,
            released_before: i64::MIN,
            late_dropped: 0,
        })
    }

    /// The current watermark: findings before it are settled (ns).
    pub fn watermark(&self) -> i64 {
        let from_data = self.newest_time.map_or(i64::MIN, |newest| {
            newest.saturating_sub(self.config.allowed_lateness)
        });
        self.released_before.max(from_data)
    }

    /// Changes how late a finding may arrive (before the first one comes:
    /// a serving node sets it from its configuration).
    pub fn set_allowed_lateness(&mut self, lateness: i64) {
        self.config.allowed_lateness = lateness;
    }

    /// Findings dropped because they arrived after the watermark passed them.
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// Rule names whose findings the caller must feed in: those that are
    /// neither Sigma rules nor correlations of the loaded files (inferwatch
    /// rule ids, normally), with where each is first referenced.
    pub fn external_rules(&self) -> Vec<(String, FilePosition)> {
        let mut external: BTreeMap<String, FilePosition> = BTreeMap::new();
        for runtime in &self.correlations {
            let references = runtime.rule.rules.iter().chain(match &runtime.rule.kind {
                CorrelationKind::Absence { expected } => expected.as_slice(),
                _ => &[],
            });
            for (reference, slot) in references.zip(&runtime.slots) {
                let internal = self
                    .detection_rules
                    .iter()
                    .any(|rule| rule.identifier == slot.rule)
                    || self
                        .correlations
                        .iter()
                        .any(|other| other.rule.identifier == slot.rule);
                if !internal {
                    external
                        .entry(slot.rule.clone())
                        .or_insert_with(|| reference.position.clone());
                }
            }
        }
        external.into_iter().collect()
    }

    /// Whether a Sigma detection rule reads `stream` (one without a
    /// `logsource` stream reads every stream), so a caller can skip turning
    /// events into JSON that nothing would look at.
    pub fn reads_stream(&self, stream: &str) -> bool {
        self.detection_rules
            .iter()
            .any(|rule| rule.stream.as_deref().is_none_or(|s| s == stream))
    }

    /// The event time of a raw event: the first of the configured
    /// timestamp fields present, RFC 3339 or epoch; `None` when none is
    /// present or it does not parse.
    pub fn event_time(&self, event: &Value) -> Option<i64> {
        self.time_field(event).flatten()
    }

    /// The first timestamp field present (outer `None`: none is), parsed
    /// (inner `None`: it does not parse).
    fn time_field(&self, event: &Value) -> Option<Option<i64>> {
        self.config
            .timestamp_fields
            .iter()
            .find_map(|field| lookup(event, field))
            .map(|value| match value {
                Value::String(text) => parse_timestamp_text(text).ok(),
                Value::Number(number) => number.as_f64().and_then(epoch_to_nanos),
                _ => None,
            })
    }

    /// Counters per correlation, in dependency order.
    pub fn observable_state(&self) -> Vec<CorrelationState> {
        self.correlations
            .iter()
            .map(|runtime| {
                let mut counters = runtime.counters.clone();
                (counters.groups, counters.buffered) = runtime.sizes();
                CorrelationState {
                    rule_id: runtime.rule.identifier.clone(),
                    counters,
                }
            })
            .collect()
    }

    /// Takes in one finding (e.g. [`Finding::from_alert`] of an inferwatch alert).
    pub fn observe_finding(&mut self, finding: Finding) -> Observed {
        if finding.time < self.watermark() {
            self.late_dropped += 1;
            return Observed::Late;
        }
        self.newest_time = Some(
            self.newest_time
                .map_or(finding.time, |t| t.max(finding.time)),
        );
        let Some(consumers) = self.consumers.get(&finding.rule) else {
            return Observed::Unused;
        };
        for (correlation, slot) in &consumers.slots {
            self.correlations[*correlation].buffer(
                *slot,
                finding.time,
                &finding.fields,
                &finding.atlas,
            );
        }
        if let Some(fields) = &consumers.generate_fields {
            if let Some(rule_index) = self
                .detection_rules
                .iter()
                .position(|rule| rule.identifier == finding.rule)
            {
                let group = fields
                    .iter()
                    .filter_map(|field| {
                        finding
                            .fields
                            .get(field)
                            .map(|value| (field.clone(), value.clone()))
                    })
                    .collect();
                self.pending_detection_alerts.insert(PendingDetectionAlert {
                    time: finding.time,
                    rule_index,
                    group,
                });
            }
        }
        Observed::Buffered
    }

    /// Takes in an inferwatch alert; only `firing` transitions are findings.
    pub fn observe_alert(&mut self, alert: &Alert) -> Observed {
        match Finding::from_alert(alert) {
            Some(finding) => self.observe_finding(finding),
            None => Observed::Unused,
        }
    }

    /// Runs the Sigma detection rules that read `stream` over one raw JSON
    /// event and takes in a finding per match. Returns how many matched.
    ///
    /// The event's time moves the watermark even when nothing matches. An
    /// event that matches but has no readable time is an error.
    pub fn observe_event(&mut self, stream: &str, event: &Value) -> Result<usize, DetectError> {
        let event_error = |message: String| DetectError::Event {
            stream: stream.to_string(),
            message,
        };
        let Some(object) = event.as_object() else {
            return Err(event_error("an event must be a JSON object".into()));
        };
        let time = self.time_field(event);
        let sigma_event = rsigma_eval::JsonEvent::borrow(event);
        let matched: Vec<usize> = self
            .detection_rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.stream.as_deref().is_none_or(|s| s == stream))
            .filter(|(_, rule)| rsigma_eval::evaluate_rule(&rule.compiled, &sigma_event).is_some())
            .map(|(index, _)| index)
            .collect();
        let time = match time {
            Some(Some(time)) => time,
            _ if matched.is_empty() => return Ok(0),
            Some(None) => {
                return Err(event_error(format!(
                    "unreadable timestamp in '{}', expected RFC 3339 or epoch",
                    self.config
                        .timestamp_fields
                        .iter()
                        .find(|field| lookup(event, field).is_some())
                        .map_or("", String::as_str)
                )))
            }
            None => {
                return Err(event_error(format!(
                    "no event time: none of {} is present ({} fields)",
                    self.config.timestamp_fields.join(", "),
                    object.len()
                )))
            }
        };
        if matched.is_empty() {
            // Time still passes: an absence can only be decided by later events.
            if time >= self.watermark() {
                self.newest_time = Some(self.newest_time.map_or(time, |t| t.max(time)));
            }
            return Ok(0);
        }
        for index in &matched {
            let rule = &self.detection_rules[*index];
            let mut finding = Finding::new(rule.identifier.clone(), time);
            finding.atlas = rule.atlas.clone();
            for field in &self.detection_fields[*index] {
                if let Some(value) = lookup(event, field).and_then(field_text) {
                    finding.fields.insert(field.clone(), value);
                }
            }
            self.observe_finding(finding);
        }
        Ok(matched.len())
    }

    /// Raises the watermark to at least `watermark` (never lowers it) and
    /// evaluates everything before it. Returns the alerts, in event-time order.
    ///
    /// Call it with [`i64::MIN`] to evaluate up to the watermark the data
    /// implies (newest time minus the allowed lateness).
    pub fn advance_watermark(&mut self, watermark: i64) -> Vec<Alert> {
        let watermark = self.watermark().max(watermark);
        self.released_before = watermark;
        // (time, dependency position, alert): sorting gives event-time order;
        // every alert of one call lies between the previous watermark and
        // this one, so the concatenation over calls is in order too.
        let mut raised: Vec<(i64, usize, Alert)> = Vec::new();
        for position in 0..self.correlations.len() {
            let mut matches = Vec::new();
            self.correlations[position].advance(watermark, &mut matches);
            for matched in matches {
                let runtime = &self.correlations[position];
                let alert = correlation_alert(&runtime.rule, &runtime.slots, &matched);
                let derived = Finding {
                    rule: runtime.rule.identifier.clone(),
                    time: matched.time,
                    fields: alert.group.clone(),
                    atlas: alert.atlas.clone(),
                };
                for (downstream, slot) in self.correlation_consumers[position].slots.clone() {
                    debug_assert!(downstream > position, "dependency order");
                    self.correlations[downstream].buffer(
                        slot,
                        derived.time,
                        &derived.fields,
                        &derived.atlas,
                    );
                }
                raised.push((matched.time, position, alert));
            }
        }
        while self
            .pending_detection_alerts
            .first()
            .is_some_and(|pending| pending.time < watermark)
        {
            let Some(pending) = self.pending_detection_alerts.pop_first() else {
                break;
            };
            let rule = &self.detection_rules[pending.rule_index];
            raised.push((
                pending.time,
                self.correlations.len(),
                detection_alert(rule, pending.time, pending.group),
            ));
        }
        raised.sort_by(|a, b| (a.0, a.1, &a.2.fingerprint).cmp(&(b.0, b.1, &b.2.fingerprint)));
        raised.into_iter().map(|(_, _, alert)| alert).collect()
    }

    /// Evaluates up to the watermark the data implies.
    pub fn poll(&mut self) -> Vec<Alert> {
        self.advance_watermark(i64::MIN)
    }

    /// End of input: evaluates every finding seen, without waiting for
    /// lateness. Absences still need their whole timespan to have been seen.
    pub fn flush(&mut self) -> Vec<Alert> {
        match self.newest_time {
            Some(newest) => self.advance_watermark(newest.saturating_add(1)),
            None => Vec::new(),
        }
    }
}

/// Correlations ordered so that each comes after the correlations it consumes.
fn dependency_order(
    correlations: &[CorrelationRule],
    resolve: &dyn Fn(&str) -> String,
    correlation_index: &HashMap<String, usize>,
) -> Result<Vec<usize>, DetectError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        index: usize,
        correlations: &[CorrelationRule],
        resolve: &dyn Fn(&str) -> String,
        correlation_index: &HashMap<String, usize>,
        marks: &mut [Mark],
        order: &mut Vec<usize>,
    ) -> Result<(), DetectError> {
        marks[index] = Mark::Visiting;
        let rule = &correlations[index];
        let references = rule.rules.iter().chain(match &rule.kind {
            CorrelationKind::Absence { expected } => expected.as_slice(),
            _ => &[],
        });
        for reference in references {
            let Some(&upstream) = correlation_index.get(resolve(&reference.name).as_str()) else {
                continue;
            };
            match marks[upstream] {
                Mark::Done => {}
                Mark::Visiting => {
                    return Err(reference.position.error(
                        "correlations consume each other in a cycle".into(),
                        Some(reference.name.clone()),
                    ))
                }
                Mark::New => visit(
                    upstream,
                    correlations,
                    resolve,
                    correlation_index,
                    marks,
                    order,
                )?,
            }
        }
        marks[index] = Mark::Done;
        order.push(index);
        Ok(())
    }
    let mut marks = vec![Mark::New; correlations.len()];
    let mut order = Vec::with_capacity(correlations.len());
    for index in 0..correlations.len() {
        if marks[index] == Mark::New {
            visit(
                index,
                correlations,
                resolve,
                correlation_index,
                &mut marks,
                &mut order,
            )?;
        }
    }
    Ok(order)
}

/// One input slot per `rules` entry, then per absence `expected` entry.
fn build_slots(
    rule: &CorrelationRule,
    resolve: &dyn Fn(&str) -> String,
) -> Result<Vec<Slot>, DetectError> {
    let references = rule.rules.iter().chain(match &rule.kind {
        CorrelationKind::Absence { expected } => expected.as_slice(),
        _ => &[],
    });
    let mut slots: Vec<Slot> = Vec::new();
    for reference in references {
        let canonical = resolve(&reference.name);
        if slots.iter().any(|slot| slot.rule == canonical) {
            return Err(reference.position.error(
                "this correlation already consumes this rule (by its name or id)".into(),
                Some(reference.name.clone()),
            ));
        }
        if canonical == rule.identifier {
            return Err(reference.position.error(
                "a correlation cannot consume its own alerts".into(),
                Some(reference.name.clone()),
            ));
        }
        let value_field = match &rule.kind {
            CorrelationKind::ValueCount { field } => {
                Some(rule.field_for(&reference.name, field).to_string())
            }
            _ => None,
        };
        slots.push(Slot {
            rule: canonical,
            group_fields: rule
                .group_by
                .iter()
                .map(|name| rule.field_for(&reference.name, name).to_string())
                .collect(),
            value_field,
        });
    }
    Ok(slots)
}

/// A field of a raw event: a flat key first, then a dotted path into nested objects.
fn lookup<'v>(event: &'v Value, field: &str) -> Option<&'v Value> {
    let object = event.as_object()?;
    if let Some(value) = object.get(field) {
        return Some(value);
    }
    let mut current = event;
    for part in field.split('.') {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

fn correlation_alert(rule: &CorrelationRule, slots: &[Slot], matched: &Match) -> Alert {
    let group: BTreeMap<String, String> = rule
        .group_by
        .iter()
        .cloned()
        .zip(matched.group.iter().cloned())
        .collect();
    let starts_at = format_timestamp(matched.time);
    let mut identity: Vec<&str> = vec![rule.identifier.as_str()];
    for (name, value) in rule.group_by.iter().zip(&matched.group) {
        identity.push(name);
        identity.push(value);
    }
    let alert_fingerprint = fingerprint(identity.iter().copied());
    identity.push(&starts_at);
    let alert_id = fingerprint(identity.iter().copied());

    let mut atlas: BTreeSet<String> = rule.atlas.iter().cloned().collect();
    for member in &matched.members {
        atlas.extend(member.atlas.iter().cloned());
    }

    let mut explanation = Vec::new();
    let trigger_slots = rule.rules.len();
    for (slot_index, slot) in slots.iter().enumerate() {
        let times: Vec<i64> = matched
            .members
            .iter()
            .filter(|member| member.slot == slot_index)
            .map(|member| member.time)
            .collect();
        let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
            continue;
        };
        // A window-closing count lists a sample; its count is `events`.
        let count = if matched.events as usize > matched.members.len() && slots.len() == 1 {
            matched.events
        } else {
            times.len() as u64
        };
        let value = if count == 1 {
            format!("at {}", format_timestamp(*first))
        } else {
            format!(
                "{count} findings from {} to {}",
                format_timestamp(*first),
                format_timestamp(*last)
            )
        };
        explanation.push(Contributor {
            dimension: slot.rule.clone(),
            value,
            lift: count as f64,
            share: None,
        });
    }
    if let CorrelationKind::Absence { .. } = &rule.kind {
        if let Some(first) = explanation.first_mut() {
            if matched.events > 1 {
                first.value = format!(
                    "{} (and {} more trigger(s) in the wait)",
                    first.value,
                    matched.events - 1
                );
                first.lift = matched.events as f64;
            }
        }
        for slot in &slots[trigger_slots..] {
            explanation.push(Contributor {
                dimension: slot.rule.clone(),
                value: format!("not seen by {starts_at}"),
                lift: 0.0,
                share: None,
            });
        }
    }
    if let CorrelationKind::ValueCount { field } = &rule.kind {
        const LISTED: usize = 10;
        let mut listed: Vec<&str> = matched
            .distinct_values
            .iter()
            .take(LISTED)
            .map(String::as_str)
            .collect();
        if matched.distinct_values.len() > LISTED {
            listed.push("…");
        }
        explanation.push(Contributor {
            dimension: field.clone(),
            value: listed.join(", "),
            lift: matched.distinct_values.len() as f64,
            share: None,
        });
    }

    let mut labels = BTreeMap::new();
    labels.insert("correlation".to_string(), rule.kind.type_name().to_string());
    Alert {
        alert_id,
        fingerprint: alert_fingerprint,
        rule_id: rule.identifier.clone(),
        title: rule.title.clone(),
        severity: rule.severity,
        state: AlertState::Firing,
        starts_at,
        ends_at: None,
        group,
        value: matched.value,
        threshold: rule.condition.first().map(|(_, threshold)| *threshold),
        condition: rule.describe(),
        atlas: atlas.into_iter().collect(),
        impact: Impact {
            events: matched.events,
            ..Impact::default()
        },
        summary: String::new(),
        explanation,
        labels,
        evidence: None,
    }
}

/// The alert a Sigma detection match raises when a `generate: true` correlation consumes its rule.
fn detection_alert(rule: &SigmaDetectionRule, time: i64, group: BTreeMap<String, String>) -> Alert {
    let starts_at = format_timestamp(time);
    let mut identity: Vec<&str> = vec![rule.identifier.as_str()];
    for (name, value) in &group {
        identity.push(name);
        identity.push(value);
    }
    let alert_fingerprint = fingerprint(identity.iter().copied());
    identity.push(&starts_at);
    let alert_id = fingerprint(identity.iter().copied());
    let mut labels = BTreeMap::new();
    labels.insert("sigma".to_string(), "detection".to_string());
    Alert {
        alert_id,
        fingerprint: alert_fingerprint,
        rule_id: rule.identifier.clone(),
        title: rule.title.clone(),
        severity: rule.severity,
        state: AlertState::Firing,
        starts_at,
        ends_at: None,
        group,
        value: None,
        threshold: None,
        condition: format!(
            "sigma detection on stream {}",
            rule.stream.as_deref().unwrap_or("*")
        ),
        atlas: rule.atlas.clone(),
        impact: Impact {
            events: 1,
            ..Impact::default()
        },
        summary: String::new(),
        explanation: Vec::new(),
        labels,
        evidence: None,
    }
}

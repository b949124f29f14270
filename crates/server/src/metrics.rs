//! The node's counters: `/metrics` (Prometheus/OpenMetrics text, through
//! `prometheus-client`) and the rates `GET /api/v1/health` reports.
//!
//! The counters are `prometheus-client`'s own atomics, shared by the HTTP
//! handlers (ingest per protocol and stream, requests per route template
//! and status) and the store-writer thread (dead letters by reason,
//! heartbeats); gauges that mirror state owned elsewhere (queue depth, WAL
//! lag, alerts by state) are set when `/metrics` is scraped. HTTP requests
//! are labelled by the route *template* (`/api/v1/ingest/{stream}`), never
//! the path, so a client cannot grow the label set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The ingest protocols, as labelled.
pub const PROTOCOLS: [&str; 5] = ["ndjson", "bulk", "hec", "otlp", "nats"];

type Labels = Vec<(String, String)>;

/// Every metric of the node.
pub struct Metrics {
    registry: Registry,
    /// Events stored, by protocol and stream.
    pub ingest_events: Family<Labels, Counter>,
    /// Items refused (decode, guard, unsupported), by protocol.
    pub ingest_refused: Family<Labels, Counter>,
    /// Ingest requests answered, by protocol.
    pub ingest_requests: Family<Labels, Counter>,
    /// Ingest requests refused because the queue was full, by protocol.
    pub ingest_busy: Family<Labels, Counter>,
    /// Dead letters written, by reason.
    pub dead_letters: Family<Labels, Counter>,
    /// HTTP requests by route template, method and status.
    pub http_requests: Family<Labels, Counter>,
    /// Heartbeats recorded (live time while inputs are silent).
    pub heartbeats: Counter,
    /// Jobs waiting for the store writer.
    pub queue_depth: Gauge,
    /// Jobs the queue holds before 429s.
    pub queue_capacity: Gauge,
    /// WAL records written but not yet durable.
    pub wal_unsynced_records: Gauge,
    /// Rows appended but not yet flushed to Parquet.
    pub store_buffered_rows: Gauge,
    /// Alerts by state (resolved: those the board keeps).
    pub alerts: Family<Labels, Gauge>,
    /// Detection's clock, Unix seconds.
    pub detection_clock_seconds: Gauge,
    /// Findings the correlations dropped as late since they were loaded.
    pub correlation_late_findings: Gauge,
    /// Per protocol: events stored, for rates.
    events_by_protocol: [AtomicU64; PROTOCOLS.len()],
    rates: Mutex<RateWindow>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// The ten newest one-second samples of the per-protocol totals.
#[derive(Default)]
struct RateWindow {
    samples: std::collections::VecDeque<(Instant, [u64; PROTOCOLS.len()])>,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("inferwatch");
        let ingest_events = Family::<Labels, Counter>::default();
        let ingest_refused = Family::<Labels, Counter>::default();
        let ingest_requests = Family::<Labels, Counter>::default();
        let ingest_busy = Family::<Labels, Counter>::default();
        let dead_letters = Family::<Labels, Counter>::default();
        let http_requests = Family::<Labels, Counter>::default();
        let heartbeats = Counter::default();
        let queue_depth = Gauge::default();
        let queue_capacity = Gauge::default();
        let wal_unsynced_records = Gauge::default();
        let store_buffered_rows = Gauge::default();
        let alerts = Family::<Labels, Gauge>::default();
        let detection_clock_seconds = Gauge::default();
        let correlation_late_findings = Gauge::default();
        registry.register(
            "ingest_events",
            "Events stored, by ingest protocol and stream",
            ingest_events.clone(),
        );
        registry.register(
            "ingest_refused",
            "Items refused by the decoder or the event-time guard, by protocol",
            ingest_refused.clone(),
        );
        registry.register(
            "ingest_requests",
            "Ingest requests, by protocol",
            ingest_requests.clone(),
        );
        registry.register(
            "ingest_busy",
            "Ingest requests refused with 429 (HEC 503) because the store queue was full",
            ingest_busy.clone(),
        );
        registry.register(
            "dead_letters",
            "Lines written to the dead-letter file, by reason",
            dead_letters.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests, by route template, method and status",
            http_requests.clone(),
        );
        registry.register(
            "heartbeats",
            "Idle heartbeats that moved detection's clock while live inputs were silent",
            heartbeats.clone(),
        );
        registry.register(
            "queue_depth",
            "Ingest jobs waiting for the store writer or for durability",
            queue_depth.clone(),
        );
        registry.register(
            "queue_capacity",
            "Ingest jobs the queue holds before requests get 429",
            queue_capacity.clone(),
        );
        registry.register(
            "wal_unsynced_records",
            "WAL records written but not yet durable",
            wal_unsynced_records.clone(),
        );
        registry.register(
            "store_buffered_rows",
            "Rows in the WAL not yet flushed to Parquet segments",
            store_buffered_rows.clone(),
        );
        registry.register("alerts", "Alerts by state", alerts.clone());
        registry.register(
            "detection_clock_seconds",
            "Detection's event-time clock, Unix seconds",
            detection_clock_seconds.clone(),
        );
        registry.register(
            "correlation_late_findings",
            "Side-stream rows and alerts the correlations dropped as later than --correlation-lateness, since they were loaded",
            correlation_late_findings.clone(),
        );
        Metrics {
            registry,
            ingest_events,
            ingest_refused,
            ingest_requests,
            ingest_busy,
            dead_letters,
            http_requests,
            heartbeats,
            queue_depth,
            queue_capacity,
            wal_unsynced_records,
            store_buffered_rows,
            alerts,
            detection_clock_seconds,
            correlation_late_findings,
            events_by_protocol: Default::default(),
            rates: Mutex::new(RateWindow::default()),
        }
    }

    /// Counts `events` stored through `protocol` into `stream`.
    pub fn stored(&self, protocol: &str, stream: &str, events: u64) {
        if events == 0 {
            return;
        }
        self.ingest_events
            .get_or_create(&labels(&[("protocol", protocol), ("stream", stream)]))
            .inc_by(events);
        if let Some(index) = PROTOCOLS.iter().position(|known| *known == protocol) {
            self.events_by_protocol[index].fetch_add(events, Ordering::Relaxed);
        }
    }

    /// Counts one dead letter of `reason`.
    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    /// Dead letters by reason so far.
    pub fn dead_letters_by_reason(&self) -> Vec<(String, u64)> {
        inferwatch_ingest::DeadLetterKind::ALL
            .iter()
            .filter_map(|kind| {
                let reason = kind.as_str();
                let count = self
                    .dead_letters
                    .get(&labels(&[("reason", reason)]))
                    .map(|counter| counter.get())?;
                Some((reason.to_string(), count))
            })
            .collect()
    }

    /// Events stored through `protocol` so far.
    pub fn events_of(&self, protocol: &str) -> u64 {
        PROTOCOLS
            .iter()
            .position(|known| *known == protocol)
            .map_or(0, |index| {
                self.events_by_protocol[index].load(Ordering::Relaxed)
            })
    }

    /// Takes a sample of the per-protocol totals (call about once a second).
    pub fn sample_rates(&self, now: Instant) {
        let totals =
            std::array::from_fn(|index| self.events_by_protocol[index].load(Ordering::Relaxed));
        let mut window = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        window.samples.push_back((now, totals));
        while window.samples.len() > 11 {
            window.samples.pop_front();
        }
    }

    /// Events per second per protocol over the sampled window (up to ten
    /// seconds); zeros until two samples exist.
    pub fn rates(&self) -> Vec<(&'static str, f64)> {
        let window = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(first), Some(last)) = (window.samples.front(), window.samples.back()) else {
            return PROTOCOLS.iter().map(|protocol| (*protocol, 0.0)).collect();
        };
        let seconds = last.0.saturating_duration_since(first.0).as_secs_f64();
        PROTOCOLS
            .iter()
            .enumerate()
            .map(|(index, protocol)| {
                let events = last.1[index].saturating_sub(first.1[index]) as f64;
                (
                    *protocol,
                    if seconds > 0.0 { events / seconds } else { 0.0 },
                )
            })
            .collect()
    }

    /// Counts one HTTP request.
    pub fn request(&self, route: &str, method: &str, status: u16) {
        self.http_requests
            .get_or_create(&labels(&[
                ("route", route),
                ("method", method),
                ("status", &status.to_string()),
            ]))
            .inc();
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4), for
/// clients that do not ask for OpenMetrics (curl, `promtool check
/// metrics`): a counter's `# HELP`/`# TYPE` name its `_total` samples, and
/// there is no `# EOF`.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(renamed) => text.push_str(&renamed),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// A label set from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_text_with_their_labels() {
        let metrics = Metrics::new();
        metrics.stored("ndjson", "inference", 5);
        metrics.dead_letter("invalid_json");
        metrics.request("/api/v1/ingest/{stream}", "POST", 200);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"inferwatch_ingest_events_total{protocol="ndjson",stream="inference"} 5"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"inferwatch_dead_letters_total{reason="invalid_json"} 1"#));
        assert!(text.contains(r#"route="/api/v1/ingest/{stream}""#));
        assert!(text.ends_with("# EOF\n"));
        let classic = classic_text(&text);
        assert!(classic.contains("# TYPE inferwatch_dead_letters_total counter\n"));
        assert!(classic.contains("# HELP inferwatch_heartbeats_total "));
        assert!(classic.contains("# TYPE inferwatch_queue_depth gauge\n"));
        assert!(!classic.contains("# EOF"));
        assert_eq!(metrics.events_of("ndjson"), 5);
        assert_eq!(
            metrics.dead_letters_by_reason(),
            vec![("invalid_json".to_string(), 1)]
        );
    }

    #[test]
    fn rates_are_the_difference_over_the_sampled_window() {
        let metrics = Metrics::new();
        let start = Instant::now();
        metrics.sample_rates(start);
        metrics.stored("hec", "inference", 30);
        metrics.sample_rates(start + std::time::Duration::from_secs(3));
        let rates = metrics.rates();
        let hec = rates.iter().find(|(p, _)| *p == "hec").unwrap().1;
        assert!((hec - 10.0).abs() < 1e-9, "{hec}");
    }
}

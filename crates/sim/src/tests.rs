//! Properties of the generated stream: determinism, schema, baseline quiet,
//! and each scenario doing what its label says.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use crate::{generate, incidents, targets, Incident, Scenario, SimConfig, DEPLOYMENTS, MODELS};

const MINUTE_NS: i64 = 60_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    timestamp: String,
    model_id: String,
    model_version: String,
    ab_group: String,
    request_id: String,
    client_id: String,
    client_ip: String,
    source_id: String,
    status: String,
    error_type: Option<String>,
    http_status: u16,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    input_tokens: u64,
    output_tokens: u64,
    input_hash: String,
    predicted_class: Option<usize>,
    confidence: Option<f64>,
    probabilities: Option<Vec<f64>>,
    #[serde(skip)]
    nanos: i64,
}

fn config(scenarios: &str, duration: &str, rate: f64) -> SimConfig {
    SimConfig {
        scenarios: Scenario::parse_list(scenarios).unwrap(),
        duration_ns: inferwatch_core::parse_duration(duration).unwrap(),
        rate,
        ..SimConfig::default()
    }
}

fn bytes_of(config: &SimConfig) -> Vec<u8> {
    let mut output = Vec::new();
    let summary = generate(config, &mut output).unwrap();
    assert_eq!(summary.bytes, output.len() as u64);
    assert_eq!(summary.incidents, incidents(config));
    output
}

fn events_of(config: &SimConfig) -> Vec<Event> {
    let output = bytes_of(config);
    let text = std::str::from_utf8(&output).unwrap();
    text.lines()
        .map(|line| {
            let mut event: Event = serde_json::from_str(line).unwrap_or_else(|error| {
                panic!("{error}: {line}");
            });
            event.nanos = inferwatch_core::parse_timestamp_text(&event.timestamp).unwrap();
            event
        })
        .collect()
}

fn quantile(values: &[f64], q: f64) -> f64 {
    assert!(!values.is_empty());
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn error_rate(events: &[&Event]) -> f64 {
    events
        .iter()
        .filter(|event| event.status == "error")
        .count() as f64
        / events.len() as f64
}

fn latencies(events: &[&Event]) -> Vec<f64> {
    events.iter().map(|event| event.latency_ms).collect()
}

/// Runs one scenario and splits the events into inside / outside its incident.
fn split(scenario: &str, rate: f64) -> (Incident, Vec<Event>) {
    let config = config(scenario, "10m", rate);
    let found = incidents(&config);
    assert_eq!(found.len(), 1);
    (found[0].clone(), events_of(&config))
}

fn inside_outside<'a>(
    incident: &Incident,
    events: &'a [Event],
    keep: impl Fn(&Event) -> bool,
) -> (Vec<&'a Event>, Vec<&'a Event>) {
    events
        .iter()
        .filter(|event| keep(event))
        .partition(|event| incident.contains(event.nanos))
}

#[test]
fn same_seed_gives_the_same_bytes_whatever_the_thread_count() {
    let mut config = config("latency-regression,extraction,dos", "3m", 60.0);
    config.threads = 1;
    let single = bytes_of(&config);
    config.threads = 3;
    assert!(single == bytes_of(&config));
    config.threads = 0;
    assert!(single == bytes_of(&config));
    config.seed = 43;
    let other = bytes_of(&config);
    assert!(single != other);
    assert!(!single.is_empty() && !other.is_empty());
}

#[test]
fn every_line_is_a_sorted_canonical_event() {
    let all: Vec<&str> = Scenario::ALL
        .iter()
        .map(|scenario| scenario.name())
        .collect();
    let config = config(&all.join(","), "12m", 80.0);
    let output = bytes_of(&config);
    let schema = inferwatch_core::canonical_schema();
    let text = std::str::from_utf8(&output).unwrap();
    for line in text.lines().take(5_000) {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).unwrap();
        for name in object.keys() {
            assert!(
                schema.field_with_name(name).is_ok(),
                "{name} is not canonical"
            );
        }
    }
    let events = events_of(&config);
    let mut request_ids = HashSet::new();
    let mut seen_errors = HashSet::new();
    for pair in events.windows(2) {
        assert!(
            pair[0].nanos <= pair[1].nanos,
            "{} > {}",
            pair[0].timestamp,
            pair[1].timestamp
        );
    }
    for event in &events {
        assert_eq!(event.timestamp.len(), 24, "{}", event.timestamp);
        assert!(event.timestamp.ends_with('Z'));
        assert!(
            event.nanos >= config.start_ns && event.nanos < config.start_ns + config.duration_ns
        );
        assert!(
            request_ids.insert(event.request_id.clone()),
            "duplicate request id"
        );
        assert!(event.request_id.starts_with("r-") && event.request_id.len() == 18);
        assert_eq!(event.input_hash.len(), 16);
        assert!(event
            .input_hash
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit()));
        // Five digits for ordinary clients, seven for the attackers and the
        // noise's clients far above them.
        let number = event.client_id.strip_prefix("c-").unwrap();
        assert!(
            number.bytes().all(|byte| byte.is_ascii_digit()) && (5..=7).contains(&number.len()),
            "{}",
            event.client_id
        );
        assert_eq!(event.client_ip.split('.').count(), 4);
        assert!(event.source_id.starts_with("src-") && event.source_id.len() == 6);
        assert!(event.latency_ms > 0.0 && event.input_tokens > 0);
        assert!(matches!(event.ab_group.as_str(), "baseline" | "canary"));
        let profile = MODELS
            .iter()
            .find(|model| model.model_id == event.model_id)
            .unwrap();
        assert!(DEPLOYMENTS.iter().any(|deployment| {
            MODELS[deployment.model].model_id == event.model_id
                && deployment.model_version == event.model_version
                && deployment.ab_group == event.ab_group
        }));
        if event.status == "ok" {
            assert_eq!(event.http_status, 200);
            assert!(event.error_type.is_none());
            assert_eq!(event.ttft_ms.is_some(), profile.logs_ttft);
            let classes = profile.class_prior.len();
            if classes == 0 {
                assert!(event.probabilities.is_none() && event.confidence.is_none());
                continue;
            }
            let probabilities = event.probabilities.as_ref().unwrap();
            assert_eq!(probabilities.len(), classes);
            let total: f64 = probabilities.iter().sum();
            assert!(
                (total - 1.0).abs() < 0.001 * classes as f64,
                "{probabilities:?}"
            );
            let predicted = event.predicted_class.unwrap();
            let confidence = event.confidence.unwrap();
            assert_eq!(confidence, probabilities[predicted]);
            assert!(probabilities.iter().all(|&value| value <= confidence));
        } else {
            assert_eq!(event.status, "error");
            let error_type = event.error_type.clone().unwrap();
            let expected_status = match error_type.as_str() {
                "timeout" => 504,
                "internal" => 500,
                "unavailable" => 503,
                "rate_limited" => 429,
                other => panic!("unexpected error type {other}"),
            };
            assert_eq!(event.http_status, expected_status);
            assert_eq!(event.output_tokens, 0);
            assert!(event.probabilities.is_none() && event.ttft_ms.is_none());
            seen_errors.insert(error_type);
        }
    }
    assert_eq!(seen_errors.len(), 4, "{seen_errors:?}");
}

#[test]
fn event_count_follows_the_rate() {
    let config = config("baseline", "5m", 200.0);
    let events = events_of(&config);
    let expected = 200.0 * 300.0;
    let count = events.len() as f64;
    assert!((count - expected).abs() < 0.02 * expected, "{count} events");
    for deployment in &DEPLOYMENTS {
        let slice = events
            .iter()
            .filter(|event| event.model_version == deployment.model_version)
            .count() as f64;
        let share = slice / count;
        assert!((share - deployment.share).abs() < 0.15 * deployment.share + 0.002);
    }
}

#[test]
fn baseline_stays_quiet_at_the_default_rate() {
    let config = config("baseline", "10m", 300.0);
    let events = events_of(&config);
    let cycle = crate::daily_cycle(config.start_ns);
    for deployment in &DEPLOYMENTS {
        let profile = &MODELS[deployment.model];
        for window in 0..2 {
            let slice: Vec<&Event> = events
                .iter()
                .filter(|event| {
                    event.model_id == profile.model_id
                        && (event.nanos - config.start_ns) / (5 * MINUTE_NS) == window
                })
                .collect();
            let latencies = latencies(&slice);
            let median = quantile(&latencies, 0.5);
            let p99 = quantile(&latencies, 0.99);
            assert!(
                p99 / median < 2.5,
                "{} p99 / median {}",
                profile.model_id,
                p99 / median
            );
            let expected_median = profile.median_latency_ms * cycle;
            assert!(
                (median / expected_median - 1.0).abs() < 0.1,
                "{} median {median} vs {expected_median}",
                profile.model_id
            );
            let version: Vec<&Event> = slice
                .iter()
                .copied()
                .filter(|event| event.model_version == deployment.model_version)
                .collect();
            assert!(error_rate(&version) < 0.02, "{}", deployment.model_version);
        }
        let mut minutes = [0_u32; 10];
        for event in &events {
            if event.model_version == deployment.model_version {
                minutes[((event.nanos - config.start_ns) / MINUTE_NS) as usize] += 1;
            }
        }
        assert!(minutes.iter().all(|&count| count > 100), "{minutes:?}");
    }
    let confidence: Vec<f64> = events.iter().filter_map(|event| event.confidence).collect();
    let typical = confidence
        .iter()
        .filter(|&&value| (0.55..=0.995).contains(&value))
        .count();
    assert!(typical as f64 > 0.9 * confidence.len() as f64);
    assert!(events
        .iter()
        .all(|event| event.client_id != targets::EXTRACTION_CLIENT_ID));
}

#[test]
fn busy_clients_repeat_their_inputs() {
    let events = events_of(&config("baseline", "5m", 300.0));
    let mut by_client: HashMap<&str, (usize, HashSet<&str>)> = HashMap::new();
    for event in &events {
        let entry = by_client.entry(&event.client_id).or_default();
        entry.0 += 1;
        entry.1.insert(&event.input_hash);
    }
    let busiest = &by_client["c-00000"];
    assert!(busiest.0 > 3_000, "{}", busiest.0);
    let ratio = busiest.1.len() as f64 / busiest.0 as f64;
    assert!((0.3..0.5).contains(&ratio), "unique-input ratio {ratio}");
    assert!(by_client.len() > 1_500);
}

#[test]
fn latency_regression_triples_fraud_latency() {
    let (incident, events) = split("latency-regression", 100.0);
    assert_eq!(incident.key["model_id"], "fraud");
    let (inside, outside) = inside_outside(&incident, &events, |event| event.model_id == "fraud");
    let ratio = quantile(&latencies(&inside), 0.5) / quantile(&latencies(&outside), 0.5);
    assert!(ratio >= 2.5, "fraud median ratio {ratio}");
    let (inside, outside) = inside_outside(&incident, &events, |event| event.model_id == "vision");
    let ratio = quantile(&latencies(&inside), 0.5) / quantile(&latencies(&outside), 0.5);
    assert!((0.9..1.1).contains(&ratio), "vision median ratio {ratio}");
}

#[test]
fn error_spike_fails_vision() {
    let (incident, events) = split("error-spike", 100.0);
    let (inside, outside) = inside_outside(&incident, &events, |event| event.model_id == "vision");
    assert!(error_rate(&inside) >= 0.1, "{}", error_rate(&inside));
    assert!(error_rate(&outside) < 0.02);
    let (inside, _) = inside_outside(&incident, &events, |event| event.model_id == "fraud");
    assert!(error_rate(&inside) < 0.02);
}

#[test]
fn canary_regression_hurts_only_the_canary() {
    let (incident, events) = split("canary-regression", 100.0);
    let expected: BTreeMap<String, String> = [("model_id", "recsys"), ("model_version", "2.1")]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    assert_eq!(incident.key, expected);
    let canary = |event: &Event| event.model_version == "2.1";
    let (inside, outside) = inside_outside(&incident, &events, canary);
    let ok_latencies = |events: &[&Event]| -> Vec<f64> {
        events
            .iter()
            .filter(|event| event.status == "ok")
            .map(|event| event.latency_ms)
            .collect()
    };
    let ratio = quantile(&ok_latencies(&inside), 0.5) / quantile(&ok_latencies(&outside), 0.5);
    assert!(ratio >= 1.8, "canary median ratio {ratio}");
    assert!(quantile(&latencies(&inside), 0.99) > 500.0);
    assert!(quantile(&latencies(&outside), 0.99) < 400.0);
    assert!(error_rate(&inside) >= 0.04, "{}", error_rate(&inside));
    let (inside, _) = inside_outside(&incident, &events, |event| event.model_version == "2.0");
    assert!(error_rate(&inside) < 0.02);
    assert!(quantile(&latencies(&inside), 0.99) < 400.0);
}

#[test]
fn poisoned_source_lowers_confidence_and_skews_the_class() {
    let (incident, events) = split("poisoned-source", 100.0);
    assert_eq!(incident.key["source_id"], "src-07");
    let (inside, outside) = inside_outside(&incident, &events, |event| event.source_id == "src-07");
    let confidence = |events: &[&Event]| -> Vec<f64> {
        events.iter().filter_map(|event| event.confidence).collect()
    };
    let drop = mean(&confidence(&outside)) - mean(&confidence(&inside));
    assert!(drop > 0.2, "confidence drop {drop}");
    let last_class_share = |events: &[&Event]| {
        let classified: Vec<&&Event> = events
            .iter()
            .filter(|event| event.model_id == "recsys" && event.predicted_class.is_some())
            .collect();
        classified
            .iter()
            .filter(|event| event.predicted_class == Some(4))
            .count() as f64
            / classified.len() as f64
    };
    assert!(
        last_class_share(&inside) > 0.4,
        "{}",
        last_class_share(&inside)
    );
    assert!(last_class_share(&outside) < 0.2);
    let (others, _) = inside_outside(&incident, &events, |event| event.source_id == "src-08");
    let others_outside = inside_outside(&incident, &events, |event| event.source_id == "src-08").1;
    let difference = (mean(&confidence(&others)) - mean(&confidence(&others_outside))).abs();
    assert!(difference < 0.03, "{difference}");
}

#[test]
fn input_length_shift_lengthens_inputs_and_with_them_latency() {
    let (incident, events) = split("input-length-shift", 100.0);
    let (inside, outside) = inside_outside(&incident, &events, |event| event.model_id == "recsys");
    let tokens = |events: &[&Event]| -> Vec<f64> {
        events
            .iter()
            .map(|event| event.input_tokens as f64)
            .collect()
    };
    let token_ratio = quantile(&tokens(&inside), 0.5) / quantile(&tokens(&outside), 0.5);
    assert!(
        (3.5..4.5).contains(&token_ratio),
        "token ratio {token_ratio}"
    );
    let latency_ratio = quantile(&latencies(&inside), 0.5) / quantile(&latencies(&outside), 0.5);
    assert!(
        (1.35..1.7).contains(&latency_ratio),
        "latency ratio {latency_ratio}"
    );
}

#[test]
fn extraction_client_sweeps_unique_inputs_from_one_address() {
    let (incident, events) = split("extraction", 100.0);
    let attacker: Vec<&Event> = events
        .iter()
        .filter(|event| event.client_id == targets::EXTRACTION_CLIENT_ID)
        .collect();
    assert!(attacker.iter().all(|event| incident.contains(event.nanos)));
    assert!(attacker
        .iter()
        .all(|event| event.client_ip == targets::EXTRACTION_CLIENT_IP));
    assert!(attacker.iter().all(|event| event.model_id == "vision"));
    let seconds = (incident.end_ns - incident.start_ns) as f64 / 1e9;
    let expected = 100.0 * targets::EXTRACTION_RATE_SHARE * seconds;
    assert!((attacker.len() as f64 - expected).abs() < 0.1 * expected);
    let unique: HashSet<&str> = attacker
        .iter()
        .map(|event| event.input_hash.as_str())
        .collect();
    assert_eq!(unique.len(), attacker.len());
}

#[test]
fn a_stolen_key_appears_in_sixty_new_networks_during_the_incident_only() {
    let (incident, events) = split("stolen-key", 300.0);
    let networks = |inside: bool| -> HashSet<String> {
        events
            .iter()
            .filter(|event| {
                event.client_id == targets::STOLEN_KEY_CLIENT_ID
                    && incident.contains(event.nanos) == inside
            })
            .map(|event| {
                let octets: Vec<&str> = event.client_ip.split('.').collect();
                format!("{}.{}", octets[0], octets[1])
            })
            .collect()
    };
    assert_eq!(networks(false).len(), 1, "{:?}", networks(false));
    assert_eq!(
        networks(true).len(),
        1 + targets::STOLEN_KEY_NETWORKS as usize
    );
}

#[test]
fn attack_answers_have_the_shape_their_rules_read() {
    let events = events_of(&config(
        "cost-harvesting,adversarial-probing,membership-inference,inversion",
        "1h",
        100.0,
    ));
    let of = |client: &str| -> Vec<&Event> {
        events
            .iter()
            .filter(|event| event.client_id == client && event.status == "ok")
            .collect()
    };
    let probes = of(targets::PROBING_CLIENT_ID);
    assert!(probes.len() > 100);
    for probe in &probes {
        let mut top: Vec<f64> = probe.probabilities.clone().unwrap();
        top.sort_by(|a, b| b.total_cmp(a));
        assert!(
            top[0] - top[1] <= targets::PROBING_MAX_MARGIN + 2e-4,
            "{top:?}"
        );
    }
    let distinct: HashSet<&str> = probes.iter().map(|e| e.input_hash.as_str()).collect();
    assert!(distinct.len() <= 3 * targets::PROBING_BASE_INPUTS as usize);

    let members = of(targets::MEMBERSHIP_CLIENT_ID);
    assert!(members.len() > 50);
    let hashes: HashSet<&str> = members.iter().map(|e| e.input_hash.as_str()).collect();
    assert_eq!(hashes.len(), 1);
    let confidences: Vec<f64> = members.iter().map(|e| e.confidence.unwrap()).collect();
    let spread = confidences.iter().cloned().fold(f64::MIN, f64::max)
        - confidences.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread < 0.01, "{spread}");

    let inverted = of(targets::INVERSION_CLIENT_ID);
    let steered = inverted
        .iter()
        .filter(|e| e.predicted_class == Some(targets::INVERSION_CLASS))
        .count();
    assert!(steered as f64 > 0.95 * inverted.len() as f64);

    let harvester: Vec<&Event> = events
        .iter()
        .filter(|e| e.client_id == targets::COST_HARVESTING_CLIENT_ID && e.input_tokens > 10_000)
        .collect();
    assert!(harvester.len() > 100);
    assert!(harvester.iter().all(|e| e.model_id == "chat-llm"));
}

#[test]
fn benign_noise_is_there_and_leaves_the_quiet_fleet_alone() {
    let quiet = config("baseline", "2h", 50.0);
    let noisy = SimConfig {
        noise: true,
        ..quiet.clone()
    };
    let events = events_of(&noisy);
    let qa = events
        .iter()
        .filter(|e| e.client_id == crate::noise::QA_CLIENT_ID)
        .count();
    let expected = 50.0 * crate::noise::QA_RATE_SHARE * 7_200.0;
    assert!((qa as f64 - expected).abs() < 0.1 * expected, "{qa}");
    let mobile: HashSet<&str> = events
        .iter()
        .filter(|e| e.client_id == "c-00007")
        .map(|e| e.client_ip.as_str())
        .collect();
    assert!(mobile.len() > 20 && mobile.iter().all(|ip| ip.starts_with("100.")));
    assert!(events.iter().any(|e| e.client_id == "c-9100020"));
    // Noise off: not one byte of it.
    let plain = bytes_of(&quiet);
    assert!(!std::str::from_utf8(&plain)
        .unwrap()
        .contains(crate::noise::QA_CLIENT_ID));
}

#[test]
fn dos_floods_chat_with_long_prompts() {
    let (incident, events) = split("dos", 100.0);
    let (inside, outside) =
        inside_outside(&incident, &events, |event| event.model_id == "chat-llm");
    let inside_seconds = (incident.end_ns - incident.start_ns) as f64 / 1e9;
    let outside_seconds = 600.0 - inside_seconds;
    let volume_ratio =
        (inside.len() as f64 / inside_seconds) / (outside.len() as f64 / outside_seconds);
    assert!(
        (2.6..3.4).contains(&volume_ratio),
        "volume ratio {volume_ratio}"
    );
    let tokens: Vec<f64> = inside
        .iter()
        .map(|event| event.input_tokens as f64)
        .collect();
    assert!(quantile(&tokens, 0.5) > 5_000.0);
    let p99_ratio = quantile(&latencies(&inside), 0.99) / quantile(&latencies(&outside), 0.99);
    assert!(p99_ratio > 3.0, "p99 ratio {p99_ratio}");
    assert!(error_rate(&inside) > 0.15);
    let statuses: HashSet<u16> = inside.iter().map(|event| event.http_status).collect();
    assert!(statuses.contains(&429) && statuses.contains(&503));
    let clients: HashSet<&str> = inside
        .iter()
        .map(|event| event.client_id.as_str())
        .collect();
    assert!(
        clients
            .iter()
            .filter(|client| client.starts_with("c-2"))
            .count()
            >= 30
    );
}

/// The number in an id `c-NNNNN`.
fn client_number_of(event: &Event) -> usize {
    event.client_id["c-".len()..].parse().unwrap()
}

#[test]
fn more_clients_reach_past_c01999_and_leave_the_attackers_alone() {
    let mut few = config("extraction,dos", "10m", 100.0);
    few.threads = 2;
    let mut many = few.clone();
    many.clients = 10_000;
    let (few_events, many_events) = (events_of(&few), events_of(&many));
    // Only the client fields change: the attackers' events stay the same,
    // ids and addresses included.
    assert_eq!(few_events.len(), many_events.len());
    let attackers = |events: &[Event]| -> Vec<(String, String, String, String)> {
        events
            .iter()
            .filter(|event| !event.client_ip.starts_with("10."))
            .map(|event| {
                (
                    event.timestamp.clone(),
                    event.client_id.clone(),
                    event.client_ip.clone(),
                    event.input_hash.clone(),
                )
            })
            .collect()
    };
    let attacker_events = attackers(&many_events);
    assert_eq!(attacker_events, attackers(&few_events));
    let extraction = attacker_events
        .iter()
        .filter(|(_, id, _, _)| id == targets::EXTRACTION_CLIENT_ID)
        .inspect(|(_, _, ip, _)| assert_eq!(ip, targets::EXTRACTION_CLIENT_IP))
        .count();
    assert!(extraction > 1_000, "{extraction} extraction events");
    for (_, id, ip, _) in &attacker_events {
        if id != targets::EXTRACTION_CLIENT_ID {
            let number: usize = id["c-".len()..].parse().unwrap();
            assert!((20_000..20_040).contains(&number), "{id}");
            assert_eq!(*ip, format!("198.51.100.{}", 10 + number - 20_000));
        }
    }

    let ordinary: Vec<&Event> = many_events
        .iter()
        .filter(|event| event.client_ip.starts_with("10."))
        .collect();
    let numbers: HashSet<usize> = ordinary
        .iter()
        .map(|event| client_number_of(event))
        .collect();
    assert!(numbers.iter().all(|&number| number < 10_000));
    assert!(numbers.len() > 5_000, "{} distinct clients", numbers.len());
    let beyond = ordinary
        .iter()
        .filter(|event| client_number_of(event) > 1_999)
        .count();
    // Zipf(0.8) over 10 000 ranks: ranks above 2 000 send about 30 %.
    let share = beyond as f64 / ordinary.len() as f64;
    assert!(
        (0.25..0.4).contains(&share),
        "share beyond c-01999: {share}"
    );
    assert!(few_events
        .iter()
        .filter(|event| event.client_ip.starts_with("10."))
        .all(|event| client_number_of(event) < 2_000));
}

#[test]
fn ordinary_clients_never_take_an_attackers_id() {
    let mut config = config("extraction,dos", "4m", 100.0);
    config.clients = 40_000;
    let events = events_of(&config);
    let mut past_the_attacker = 0;
    for event in &events {
        let number = client_number_of(event);
        if event.client_ip.starts_with("10.") {
            assert!(number < 40_041, "{}", event.client_id);
            assert!(!(20_000..20_040).contains(&number), "{}", event.client_id);
            assert_ne!(event.client_id, targets::EXTRACTION_CLIENT_ID);
            past_the_attacker += usize::from(number > 31_337);
        } else if event.client_id == targets::EXTRACTION_CLIENT_ID {
            assert_eq!(event.client_ip, targets::EXTRACTION_CLIENT_IP);
        } else {
            assert!(event.client_ip.starts_with("198.51.100."));
        }
    }
    assert!(past_the_attacker > 100, "{past_the_attacker}");
}

#[test]
fn one_client_sends_all_the_ordinary_traffic() {
    let mut config = config("baseline", "1m", 50.0);
    config.clients = 1;
    let events = events_of(&config);
    assert!(events.len() > 2_000);
    assert!(events.iter().all(|event| event.client_id == "c-00000"));
}

#[test]
fn out_of_range_knobs_are_refused_with_their_value() {
    let refused = |change: &dyn Fn(&mut SimConfig), needle: &str| {
        let mut config = SimConfig::default();
        change(&mut config);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(needle), "{error} lacks {needle}");
        assert!(generate(&config, std::io::sink()).is_err());
    };
    refused(&|config| config.clients = 0, "clients 0");
    refused(&|config| config.clients = 2_000_001, "clients 2000001");
    refused(&|config| config.canary_latency_factor = 0.0, "factor 0");
    refused(&|config| config.canary_latency_factor = -1.2, "factor -1.2");
    refused(
        &|config| config.canary_latency_factor = f64::NAN,
        "factor NaN",
    );
    refused(
        &|config| config.canary_latency_factor = f64::INFINITY,
        "factor inf",
    );
    refused(
        &|config| config.canary_error_rate = -0.01,
        "error rate -0.01",
    );
    refused(&|config| config.canary_error_rate = 1.5, "error rate 1.5");
    refused(
        &|config| config.canary_error_rate = f64::NAN,
        "error rate NaN",
    );
    for accepted in [
        SimConfig {
            clients: 1,
            canary_latency_factor: 1.0,
            canary_error_rate: 0.0,
            ..SimConfig::default()
        },
        SimConfig {
            clients: crate::MAX_CLIENTS,
            canary_latency_factor: 0.5,
            canary_error_rate: 1.0,
            ..SimConfig::default()
        },
    ] {
        accepted.validate().unwrap();
    }
}

/// OK latencies of the canary (2.1) and of the baseline arm (2.0) inside the
/// canary-regression incident, and the canary's error rate there.
fn canary_arms(factor: f64, canary_error_rate: f64) -> (Vec<f64>, Vec<f64>, f64) {
    let mut config = config("canary-regression", "10m", 300.0);
    config.canary_latency_factor = factor;
    config.canary_error_rate = canary_error_rate;
    let incident = incidents(&config).remove(0);
    let events = events_of(&config);
    let (canary, _) = inside_outside(&incident, &events, |event| event.model_version == "2.1");
    let (baseline, _) = inside_outside(&incident, &events, |event| event.model_version == "2.0");
    let ok = |events: &[&Event]| -> Vec<f64> {
        events
            .iter()
            .filter(|event| event.status == "ok")
            .map(|event| event.latency_ms)
            .collect()
    };
    assert!(canary.len() > 2_000, "{} canary events", canary.len());
    (ok(&canary), ok(&baseline), error_rate(&canary))
}

#[test]
fn canary_factor_one_without_errors_matches_the_baseline_arm() {
    let (canary, baseline, errors) = canary_arms(1.0, 0.0);
    for q in [0.25, 0.5, 0.75, 0.9] {
        let ratio = quantile(&canary, q) / quantile(&baseline, q);
        assert!((0.97..1.03).contains(&ratio), "q{q} ratio {ratio}");
    }
    // Only the background errors are left.
    assert!(errors < 0.012, "canary error rate {errors}");
}

#[test]
fn canary_factor_sets_the_latency_shift() {
    let (canary, baseline, errors) = canary_arms(1.2, 0.0);
    for q in [0.25, 0.5, 0.75] {
        let ratio = quantile(&canary, q) / quantile(&baseline, q);
        assert!((1.16..1.24).contains(&ratio), "q{q} ratio {ratio}");
    }
    assert!(errors < 0.012, "canary error rate {errors}");
    let (canary, baseline, errors) = canary_arms(1.2, 0.3);
    let ratio = quantile(&canary, 0.5) / quantile(&baseline, 0.5);
    assert!((1.16..1.24).contains(&ratio), "median ratio {ratio}");
    assert!((0.27..0.33).contains(&errors), "canary error rate {errors}");
}

#[test]
fn a_rollback_moves_canary_traffic_to_the_baseline_from_the_next_second() {
    let config = config("canary-regression", "2m", 200.0);
    let rollback_at = config.start_ns + 60 * 1_000_000_000;
    let mut live = Vec::new();
    crate::generate_live(&config, &mut live, 1e9, |second_ns| {
        let mut routing = crate::Routing::default();
        if second_ns >= rollback_at {
            assert_eq!(routing.roll_back("recsys"), vec!["2.1"]);
            assert!(
                routing.roll_back("recsys").is_empty(),
                "already rolled back"
            );
        }
        routing
    })
    .unwrap();
    let whole = bytes_of(&config);
    let first_minute_end = |bytes: &[u8]| {
        let text = std::str::from_utf8(bytes).unwrap();
        text.lines()
            .take_while(|line| !line.contains("\"timestamp\":\"2026-01-01T00:01:00"))
            .map(|line| line.len() + 1)
            .sum::<usize>()
    };
    // Before the rollback: byte for byte the ordinary output.
    let cut = first_minute_end(&whole);
    assert_eq!(&live[..cut], &whole[..cut]);
    let events: Vec<Event> = std::str::from_utf8(&live[cut..])
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(events.len() > 10_000);
    assert!(events.iter().all(|event| event.ab_group != "canary"));
    let recsys = events
        .iter()
        .filter(|event| event.model_id == "recsys")
        .count();
    let share = recsys as f64 / events.len() as f64;
    // The canary's 4.5 % now lands on recsys 2.0: 45 % of the fleet.
    assert!((share - 0.45).abs() < 0.02, "recsys share {share}");
    // And the output is the same event count as without the rollback.
    assert_eq!(
        live.iter().filter(|b| **b == b'\n').count(),
        whole.iter().filter(|b| **b == b'\n').count()
    );
}

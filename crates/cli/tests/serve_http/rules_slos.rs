//! The rules and SLOs behind the dashboard: `serve --rules --slos` answers
//! `GET /api/v1/slos` (budgets and burn rates from the posted events),
//! `GET /api/v1/rules/coverage` (the ATLAS matrix of the running rules) and
//! `GET /api/v1/rules/validation` (the rules directory checked as a reload
//! would); and in headless Chromium (`dashboard_rules.py`) the overview's
//! SLO gauges and ingest-health panel, and the rules view with statuses,
//! SLOs, the matrix and a validation error appearing after an edit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::common::{self, available, python};
use super::{curl, eventually, token, Answer, Node};

/// Rule files of the shipped pack taken into the test's rules directory:
/// ATLAS-tagged, with simulated fixtures only.
const PACK: [&str; 3] = [
    "model-extraction.yaml",
    "adversarial-probing.yaml",
    "error-rate.yaml",
];

/// A rules directory: part of the shipped pack and a rule the posted slow
/// requests fire.
fn rules_dir(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    for name in PACK {
        std::fs::copy(shipped.join(name), rules.join(name)).unwrap();
    }
    std::fs::write(
        rules.join("slow.yaml"),
        "id: dashboard-slow-p99\ntitle: p99 latency above 100 ms\nseverity: high\ngroup_by: [model_id, model_version]\nwindow: 1m\nevery: 30s\ncondition: p99(latency_ms) > 100 and count() >= 20\n",
    )
    .unwrap();
    rules
}

/// Two SLOs over every model: availability at 95 % and latency within
/// 200 ms at 90 %.
fn slos_file(dir: &Path) -> PathBuf {
    let path = dir.join("slos.yaml");
    std::fs::write(
        &path,
        "slos:\n  - id: fleet-availability\n    title: the fleet answers\n    group_by: [model_id]\n    sli: availability\n    objective: 95\n    period: 1d\n  - id: fleet-latency\n    title: the fleet answers within 200 ms\n    group_by: [model_id]\n    sli:\n      latency:\n        threshold_ms: 200\n    objective: 90\n    period: 1d\n",
    )
    .unwrap();
    path
}

/// `count` events ending `ago_ms` before now over `span_ms`, alternating two
/// models; every 17th is slow (300-900 ms), 2 in 100 are errors (one of
/// each model).
fn events(count: usize, span_ms: i64, ago_ms: i64) -> String {
    let now = chrono::Utc::now() - chrono::Duration::milliseconds(ago_ms);
    (0..count)
        .map(|i| {
            let back = chrono::Duration::milliseconds(span_ms * (count - i) as i64 / count as i64);
            let at = (now - back).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let (model, version) = if i % 2 == 0 {
                ("fraud", "1.0")
            } else {
                ("recsys", "2.1")
            };
            let latency = if i % 17 == 0 {
                300 + (i * 37) % 600
            } else {
                10 + (i * 13) % 50
            };
            let status = if i % 100 < 2 { "error" } else { "ok" };
            format!(
                "{{\"timestamp\":\"{at}\",\"model_id\":\"{model}\",\"model_version\":\"{version}\",\"latency_ms\":{latency},\"status\":\"{status}\",\"client_id\":\"c{}\"}}\n",
                i % 40
            )
        })
        .collect()
}

fn post(node: &Node, ingest: &str, body: &str, file: &Path) -> Answer {
    std::fs::write(file, body).unwrap();
    curl(&[
        "-H",
        &format!("Authorization: Bearer {ingest}"),
        "--data-binary",
        &format!("@{}", file.display()),
        &node.url("/api/v1/ingest/inference"),
    ])
}

fn get(node: &Node, read: &str, path: &str) -> Answer {
    curl(&[
        "-H",
        &format!("Authorization: Bearer {read}"),
        &node.url(path),
    ])
}

/// A node with the rules and SLOs and five minutes of events stored.
fn started(dir: &Path) -> (Node, PathBuf, String, String) {
    let data = dir.join("data");
    let rules = rules_dir(dir);
    let slos = slos_file(dir);
    let ingest = token(&data, "ingest", None);
    let read = token(&data, "read", None);
    let node = Node::start(
        &data,
        &[
            "--rules",
            rules.to_str().unwrap(),
            "--slos",
            slos.to_str().unwrap(),
        ],
    );
    let answer = post(
        &node,
        &ingest,
        &events(3_000, 300_000, 0),
        &dir.join("events.ndjson"),
    );
    assert_eq!(answer.json()["accepted"], 3_000, "{}", answer.body);
    (node, rules, ingest, read)
}

#[test]
fn slos_coverage_and_validation_answer_from_the_running_rules_and_slos() {
    if !available("curl", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, rules, _, read) = started(dir.path());

    // Budgets: 2 % of each model's events are errors, so the availability
    // SLO (5 % budget) has spent about 2/5 of it, burning at about 0.4.
    let slos = eventually(60, "SLO budgets", || {
        let answer = get(&node, &read, "/api/v1/slos").json();
        let slos = answer["slos"].as_array()?.clone();
        (slos.len() == 2
            && slos
                .iter()
                .all(|slo| slo["groups"].as_array().is_some_and(|g| g.len() == 2)))
        .then_some(slos)
    });
    let availability = &slos[0];
    assert_eq!(availability["id"], "fleet-availability");
    assert_eq!(availability["objective"], 95.0);
    assert_eq!(availability["period_seconds"], 86_400.0);
    for group in availability["groups"].as_array().unwrap() {
        let events = group["events"].as_f64().unwrap();
        let bad = group["bad_events"].as_f64().unwrap();
        assert!(events >= 500.0, "{group}");
        let left = group["budget_remaining"].as_f64().unwrap();
        // The budget left is what the bad events leave of 5 % of the events.
        let expected = 100.0 * (1.0 - bad / (events * 0.05));
        assert!(
            (left - expected).abs() < 1e-6,
            "{left} vs {expected}: {group}"
        );
        assert!(left > 40.0 && left < 100.0, "{group}");
        assert!(
            group["burn_rates"].as_array().unwrap().len() >= 2,
            "{group}"
        );
    }
    // The SLO's own figures are its worst group's.
    let worst = availability["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["budget_remaining"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(availability["budget_remaining"].as_f64().unwrap(), worst);
    assert!(availability["max_burn_rate"].as_f64().unwrap() > 0.0);
    // Every 17th event takes 300 ms or more: the latency SLO's 10 % budget
    // is more than half spent.
    let latency = &slos[1];
    assert_eq!(latency["sli"], "latency <= 200 ms");
    assert!(
        latency["budget_remaining"].as_f64().unwrap() < 50.0,
        "{latency}"
    );

    // The ATLAS matrix of the running rules, in the CLI's JSON shape.
    let coverage = get(&node, &read, "/api/v1/rules/coverage").json();
    assert_eq!(coverage["rule_count"], 4, "{coverage}");
    assert_eq!(coverage["evidence"], "declared");
    let status_of = |id: &str| {
        coverage["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .find(|technique| technique["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {coverage}"))
            .clone()
    };
    let extraction = status_of("AML.T0024.002");
    assert_eq!(extraction["status"], "covered", "{extraction}");
    assert_eq!(extraction["rules"][0], "model-extraction-sweep");
    // A technique no running rule names.
    assert_eq!(status_of("AML.T0024.000")["status"], "not_covered");
    assert!(coverage["summary"]["covered"].as_u64().unwrap() >= 2);
    assert!(!coverage["tactics"].as_array().unwrap().is_empty());

    // The directory loads as it is; after a broken edit the check names
    // the file and line, and the running rules stay.
    let valid = get(&node, &read, "/api/v1/rules/validation").json();
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["rules"], 4);
    std::fs::write(
        rules.join("slow.yaml"),
        "id: dashboard-slow-p99\ntitle: p99\nseverity: high\nwindow: 1m\ncondition: p99(latency_ms) >\n",
    )
    .unwrap();
    let broken = get(&node, &read, "/api/v1/rules/validation").json();
    assert_eq!(broken["valid"], false, "{broken}");
    let errors = broken["errors"].to_string();
    assert!(errors.contains("slow.yaml:5:"), "{broken}");
    let running = get(&node, &read, "/api/v1/rules").json();
    assert_eq!(running["rules"].as_array().unwrap().len(), 4, "{running}");

    // A node without rules: no SLOs, and no matrix to draw.
    let plain_data = dir.path().join("plain");
    let plain_read = token(&plain_data, "read", None);
    let plain = Node::start(&plain_data, &[]);
    let none = get(&plain, &plain_read, "/api/v1/slos").json();
    assert_eq!(none["detection"], false);
    assert_eq!(
        get(&plain, &plain_read, "/api/v1/rules/coverage").status,
        409
    );
    assert_eq!(
        get(&plain, &plain_read, "/api/v1/rules/validation").status,
        409
    );
    plain.stop();
    node.stop();
}

#[test]
fn slos_without_rules_or_with_a_bad_file_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let slos = slos_file(dir.path());
    let output = Command::new(common::binary())
        .args(["serve", "--no-pg", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--slos")
        .arg(&slos)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("slos needs rules"), "{stderr}");

    let rules = rules_dir(dir.path());
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "id: x\ntitle: x\nsli: availability\nobjective: 120\n").unwrap();
    let output = Command::new(common::binary())
        .args(["serve", "--no-pg", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--rules")
        .arg(&rules)
        .arg("--slos")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SLO error") && stderr.contains("bad.yaml:4"),
        "{stderr}"
    );
}

#[test]
fn the_rules_view_slo_gauges_and_ingest_health_in_chromium() {
    if !available("curl", &["--version"])
        || !available(&python(), &["-c", "import playwright.sync_api"])
        || !available("/usr/bin/chromium", &["--version"])
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, rules, ingest, read) = started(dir.path());
    eventually(60, "the slow-p99 alert", || {
        let alerts = get(&node, &read, "/api/v1/alerts?state=firing").json();
        alerts["alerts"]
            .as_array()?
            .iter()
            .any(|alert| alert["rule_id"] == "dashboard-slow-p99")
            .then_some(())
    });
    // Live traffic while the browser looks, so that the ingest rate is not zero.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let url = node.url("/api/v1/ingest/inference");
        let file = dir.path().join("live.ndjson");
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::fs::write(&file, events(100, 400, 0)).unwrap();
                curl(&[
                    "-H",
                    &format!("Authorization: Bearer {ingest}"),
                    "--data-binary",
                    &format!("@{}", file.display()),
                    &url,
                ]);
                std::thread::sleep(std::time::Duration::from_millis(400));
            }
        })
    };
    let shots = std::env::var("INFERWATCH_SCREENSHOTS")
        .map_or_else(|_| dir.path().to_path_buf(), PathBuf::from);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard_rules.py");
    let output = Command::new(python())
        .arg(&script)
        .args([&node.url(""), &read])
        .arg(&rules)
        .arg(&shots)
        .output()
        .expect("running dashboard_rules.py");
    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dashboard_rules.py failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // Overview: both SLOs' gauges drew a value, as the API gives it.
    let gauges = seen["gauges"].as_object().unwrap();
    for id in [
        "fleet-availability/budget",
        "fleet-availability/burn",
        "fleet-latency/budget",
        "fleet-latency/burn",
    ] {
        assert!(gauges[id]["value"].as_f64().is_some(), "{id}: {seen}");
        assert!(
            gauges[id]["arc"].as_bool().unwrap(),
            "{id} drew no arc: {seen}"
        );
    }
    let budget = gauges["fleet-availability/budget"]["value"]
        .as_f64()
        .unwrap();
    assert!(budget > 40.0 && budget < 100.0, "{seen}");
    assert!(seen["ndjson_rate"].as_f64().unwrap() > 0.0, "{seen}");
    // Rules: every running rule with a status, the slow rule firing.
    let statuses = seen["statuses"].as_object().unwrap();
    assert_eq!(statuses.len(), 4, "{seen}");
    assert_eq!(statuses["dashboard-slow-p99"], "firing", "{seen}");
    assert_eq!(statuses["model-extraction-sweep"], "ok", "{seen}");
    assert!(
        seen["covered"]
            .as_array()
            .unwrap()
            .iter()
            .any(|id| id == "AML.T0024.002"),
        "{seen}"
    );
    assert!(
        seen["technique_detail"]
            .as_str()
            .unwrap()
            .contains("model-extraction-sweep"),
        "{seen}"
    );
    assert_eq!(seen["slo_rows"], 4, "{seen}");
    // The broken edit shows, and the edited rule turns to error.
    assert!(
        seen["validation"]
            .as_str()
            .unwrap()
            .contains("slow.yaml:5:"),
        "{seen}"
    );
    assert_eq!(seen["status_after_edit"], "error", "{seen}");
    for name in ["dashboard-rules.png", "dashboard-overview-slos.png"] {
        assert!(shots.join(name).exists(), "{name}");
    }
    node.stop();
}

/// `metric=latency` (the overview's one request for its latency chart)
/// gives p50, p95 and p99 on one x, equal to the three separate requests.
#[test]
fn the_latency_series_equals_its_three_quantile_series() {
    if !available("curl", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _, read) = started(dir.path());
    let range = "model_id=fraud&model_version=1.0&points=500";
    let all = get(
        &node,
        &read,
        &format!("/api/v1/series?metric=latency&{range}"),
    )
    .json();
    assert_eq!(all["metric"], "latency", "{all}");
    let timestamps = all["timestamps"].as_array().unwrap();
    assert!(timestamps.len() >= 5, "{all}");
    for name in ["p50", "p95", "p99"] {
        let one = get(
            &node,
            &read,
            &format!("/api/v1/series?metric={name}&{range}"),
        )
        .json();
        assert_eq!(
            &one["timestamps"], &all["timestamps"],
            "{name}: {one} vs {all}"
        );
        assert_eq!(
            &one["values"], &all["series"][name],
            "{name}: {one} vs {all}"
        );
    }
    assert_eq!(all["values"], all["series"]["p99"]);
    // Every 17th request is slow: p99 is far above p50 in every whole
    // minute. The first and last minutes hold only part of the traffic
    // (where it starts and ends depends on the clock), perhaps no slow one.
    let p50 = all["series"]["p50"].as_array().unwrap();
    let p99 = all["series"]["p99"].as_array().unwrap();
    let whole_minutes = p50.len() - 2;
    for (low, high) in p50.iter().zip(p99).skip(1).take(whole_minutes) {
        assert!(
            low.as_f64().unwrap() < 100.0 && high.as_f64().unwrap() > 250.0,
            "{all}"
        );
    }
    // A bad metric names the new one among the choices.
    let refused = get(&node, &read, "/api/v1/series?metric=p42");
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("p99 or latency"), "{}", refused.body);
    node.stop();
}

/// `GET /api/v1/series/overview` (the overview's one request) answers, for
/// every model version, exactly what the per-metric series answer for it,
/// downsampling included, and its events add up to what was stored.
#[test]
fn the_overview_series_equals_each_versions_per_metric_series() {
    if !available("curl", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _, read) = started(dir.path());
    // Fewer points than minutes (the events span 5 minutes), so both
    // sides downsample.
    let range = "points=4";
    let overview = get(&node, &read, &format!("/api/v1/series/overview?{range}")).json();
    assert_eq!(overview["source"], "rollups", "{overview}");
    let groups = overview["groups"].as_array().unwrap();
    assert!(groups.len() >= 2, "{overview}");
    let events: u64 = groups.iter().map(|g| g["events"].as_u64().unwrap()).sum();
    assert_eq!(events, 3_000, "{overview}");
    for group in groups {
        let model = group["model_id"].as_str().unwrap();
        let version = group["model_version"].as_str().unwrap();
        let filter = format!("model_id={model}&model_version={version}&{range}");
        for (name, metric) in [
            ("count", "count"),
            ("error_rate", "error_rate"),
            ("latency", "latency"),
        ] {
            let one = get(
                &node,
                &read,
                &format!("/api/v1/series?metric={metric}&{filter}"),
            )
            .json();
            assert!(
                one["minutes"].as_u64().unwrap() > 4,
                "the range has more minutes than points: {one}"
            );
            for field in ["minutes", "timestamps", "values"] {
                assert_eq!(
                    one[field], group[name][field],
                    "{model} {version} {name} {field}: {one} vs {group}"
                );
            }
            if name == "latency" {
                assert_eq!(one["series"], group[name]["series"], "{one} vs {group}");
            }
        }
    }
    let refused = get(&node, &read, "/api/v1/series/overview?metric=count");
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains("use from, to, points"),
        "{}",
        refused.body
    );
    node.stop();
}

/// `POST /api/v1/rules/reload` loads the SLOs again with the rules: a broken
/// SLO file is refused with its file and line and the running SLOs stay; a
/// changed one is swapped in and replayed over the stored events.
#[test]
fn a_reload_swaps_the_slos_too_and_a_bad_slo_file_keeps_the_running_ones() {
    if !available("curl", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = token(&data, "admin", None);
    let (node, _, _, read) = started(dir.path());
    let slo_ids = || -> Vec<String> {
        let answer = get(&node, &read, "/api/v1/slos").json();
        answer["slos"]
            .as_array()
            .map(|slos| {
                slos.iter()
                    .map(|slo| slo["id"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Events per model as the running availability SLO counted them live.
    let live_events = |answer: &serde_json::Value, index: usize| -> Vec<f64> {
        answer["slos"][index]["groups"]
            .as_array()
            .map(|groups| groups.iter().filter_map(|g| g["events"].as_f64()).collect())
            .unwrap_or_default()
    };
    let before = eventually(60, "the SLOs' budgets", || {
        let answer = get(&node, &read, "/api/v1/slos").json();
        let counted = live_events(&answer, 0);
        (counted.len() == 2 && counted.iter().sum::<f64>() >= 2_000.0).then_some(counted)
    });
    assert_eq!(slo_ids(), ["fleet-availability", "fleet-latency"]);
    let reload = || {
        curl(&[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {admin}"),
            &node.url("/api/v1/rules/reload"),
        ])
    };

    let slos = dir.path().join("slos.yaml");
    std::fs::write(
        &slos,
        "slos:\n  - id: strict\n    title: strict\n    group_by: [model_id]\n    sli: availability\n    objective: 250\n    period: 1d\n",
    )
    .unwrap();
    let refused = reload();
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("slos.yaml:"), "{}", refused.body);
    assert_eq!(slo_ids(), ["fleet-availability", "fleet-latency"]);

    std::fs::write(
        &slos,
        "slos:\n  - id: strict-availability\n    title: the fleet answers, strictly\n    group_by: [model_id]\n    sli: availability\n    objective: 99\n    period: 1d\n",
    )
    .unwrap();
    let swapped = reload();
    assert_eq!(swapped.status, 200, "{}", swapped.body);
    assert_eq!(
        swapped.json()["slos"][0],
        "strict-availability",
        "{}",
        swapped.body
    );
    assert_eq!(slo_ids(), ["strict-availability"]);
    // Replayed over the store: it counts the events the running SLO counted
    // live, and their 2 % errors spend more than its whole 1 % budget.
    let answer = get(&node, &read, "/api/v1/slos").json();
    assert_eq!(live_events(&answer, 0), before, "{answer}");
    for group in answer["slos"][0]["groups"].as_array().unwrap() {
        assert!(group["budget_remaining"].as_f64().unwrap() < 0.0, "{group}");
    }
    node.stop();
}

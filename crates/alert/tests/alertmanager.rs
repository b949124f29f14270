//! The `alertmanager` action against a real Prometheus Alertmanager
//! (Debian's `prometheus-alertmanager`, installed by `scripts/test-deps`)
//! started on a loopback port: firing alerts appear in its v2 API with our
//! labels and annotations, and the resolution resolves them.
//!
//! Without the binary the test fails when `CI=true`, and otherwise prints a
//! notice and passes. `INFERWATCH_ALERTMANAGER` overrides the binary path.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use inferwatch_alert::{ActionsFile, BuildContext, Dispatcher, DispatcherConfig};
use inferwatch_core::{Alert, AlertState, Contributor, Impact, Severity};
use serde_json::Value;

const DEFAULT_BINARY: &str = "/usr/bin/prometheus-alertmanager";
const DEADLINE: Duration = Duration::from_secs(60);

struct RunningAlertmanager {
    child: Child,
    base_url: String,
    log: PathBuf,
    _directory: tempfile::TempDir,
}

impl Drop for RunningAlertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RunningAlertmanager {
    fn get(&self, path: &str) -> Value {
        let text = ureq::get(&format!("{}{path}", self.base_url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("INFERWATCH_ALERTMANAGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "prometheus-alertmanager not found at {}: install it with scripts/test-deps \
         (apt-get install prometheus-alertmanager) or set INFERWATCH_ALERTMANAGER",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping the real-Alertmanager test: {message}");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(binary: &Path) -> RunningAlertmanager {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let log = directory.path().join("alertmanager.log");
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            directory.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Alertmanager logs to stderr; kept for failure messages.
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut running = RunningAlertmanager {
        child,
        base_url: format!("http://127.0.0.1:{port}"),
        log,
        _directory: directory,
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("alertmanager exited with {status}:\n{}", running.log());
        }
        let ready = ureq::get(&format!("{}/-/ready", running.base_url)).call();
        if matches!(ready, Ok(response) if response.status() == 200) {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "alertmanager not ready:\n{}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rfc3339(time: chrono::DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn alert(model: &str, started: chrono::DateTime<Utc>) -> Alert {
    Alert {
        alert_id: format!("canary-{model}@{}", rfc3339(started)),
        fingerprint: format!("fp-canary-{model}"),
        rule_id: "canary-regression".to_string(),
        title: "Canary slower than baseline".to_string(),
        severity: Severity::Critical,
        state: AlertState::Firing,
        starts_at: rfc3339(started),
        ends_at: None,
        group: BTreeMap::from([
            ("model_id".to_string(), model.to_string()),
            ("model_version".to_string(), "v2.1".to_string()),
        ]),
        value: Some(640.0),
        threshold: Some(500.0),
        condition: "canary.p99(latency_ms) > 500".to_string(),
        atlas: vec!["AML.T0010.003".to_string(), "AML.T0029".to_string()],
        impact: Impact {
            events: 1200,
            share_of_traffic: 0.1,
            distinct_clients: Some(3412),
        },
        summary: String::new(),
        explanation: vec![Contributor {
            dimension: "source_id".to_string(),
            value: "s3".to_string(),
            lift: 6.1,
            share: None,
        }],
        labels: BTreeMap::from([("team".to_string(), "ml-platform".to_string())]),
        evidence: None,
    }
}

/// Alertmanager's alerts for one model, polled until `wanted` holds.
fn poll_alerts(
    alertmanager: &RunningAlertmanager,
    path: &str,
    model: &str,
    wanted: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = alertmanager.get(path);
        let matching: Vec<Value> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|alert| alert["labels"]["model_id"] == model)
            .cloned()
            .collect();
        if wanted(&matching) {
            return matching;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting on {path} for {model}: {listed}\n{}",
            alertmanager.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn alerts_appear_in_a_real_alertmanager_and_resolve() {
    let Some(binary) = binary() else {
        return;
    };
    let alertmanager = start(&binary);
    let config = format!(
        "actions:\n  - name: am\n    kind: alertmanager\n    url: {}\n    generator_url: \"http://inferwatch.test/alerts/{{{{alert_id}}}}\"\n",
        alertmanager.base_url
    );
    let actions = ActionsFile::from_yaml_str(Path::new("am.yaml"), &config)
        .unwrap()
        .build(&BuildContext::new())
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let dispatcher = Dispatcher::start(DispatcherConfig::new(state.path()), actions).unwrap();

    let started = Utc::now() - chrono::Duration::minutes(10);
    let recsys = alert("recsys", started);
    let fraud = alert("fraud", started);
    assert_eq!(
        dispatcher
            .submit_all(&[recsys.clone(), fraud.clone()])
            .unwrap()
            .enqueued,
        2
    );
    assert!(dispatcher.wait_idle(DEADLINE));
    let stats = dispatcher.stats();
    assert_eq!((stats.delivered, stats.dead), (2, 0), "{stats:?}");

    let listed = poll_alerts(&alertmanager, "/api/v2/alerts", "recsys", |alerts| {
        alerts.len() == 1 && alerts[0]["status"]["state"] == "active"
    });
    let shown = &listed[0];
    assert_eq!(
        shown["labels"],
        serde_json::json!({
            "alertname": "canary-regression",
            "severity": "critical",
            "model_id": "recsys",
            "model_version": "v2.1",
            "team": "ml-platform",
        })
    );
    let annotations = &shown["annotations"];
    assert_eq!(annotations["summary"], "Canary slower than baseline");
    assert_eq!(
        annotations["description"],
        "canary.p99(latency_ms) > 500: value 640 (threshold 500). Impact: 1200 events, 10% of traffic, 3412 clients. Top contributors: source_id=s3 (lift 6.1)"
    );
    assert_eq!(annotations["atlas"], "AML.T0010.003,AML.T0029");
    assert_eq!(annotations["value"], "640");
    assert_eq!(annotations["threshold"], "500");
    assert_eq!(annotations["alert_id"], recsys.alert_id);
    assert_eq!(annotations["event_starts_at"], recsys.starts_at);
    assert_eq!(
        shown["generatorURL"],
        format!(
            "http://inferwatch.test/alerts/canary-recsys%40{}",
            recsys.starts_at.replace(':', "%3A")
        )
    );
    let shown_start =
        chrono::DateTime::parse_from_rfc3339(shown["startsAt"].as_str().unwrap()).unwrap();
    assert_eq!(
        shown_start.timestamp(),
        started.timestamp(),
        "startsAt is the event start"
    );
    let shown_end =
        chrono::DateTime::parse_from_rfc3339(shown["endsAt"].as_str().unwrap()).unwrap();
    assert!(
        shown_end > Utc::now() + chrono::Duration::hours(3),
        "firing: endsAt is now + firing_ttl"
    );

    // The resolution: same labels, endsAt in the past.
    let mut resolved = recsys.clone();
    resolved.state = AlertState::Resolved;
    resolved.ends_at = Some(rfc3339(Utc::now() - chrono::Duration::minutes(1)));
    assert_eq!(dispatcher.submit(&resolved).unwrap().enqueued, 1);
    assert!(dispatcher.wait_idle(DEADLINE));
    poll_alerts(
        &alertmanager,
        "/api/v2/alerts?active=true",
        "recsys",
        |alerts| alerts.is_empty(),
    );
    poll_alerts(&alertmanager, "/api/v2/alerts", "recsys", |alerts| {
        alerts.is_empty()
    });
    // The other model's alert is untouched.
    poll_alerts(
        &alertmanager,
        "/api/v2/alerts?active=true",
        "fraud",
        |alerts| alerts.len() == 1,
    );
}

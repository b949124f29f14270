//! The dispatcher against real HTTP receivers on loopback: retries, the
//! signature, idempotency, dead letters, a receiver that is down or slow,
//! restarts, and rollback records.
//!
//! No test measures time: waits are bounded by generous deadlines that only
//! turn a hang into a failure.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use inferwatch_alert::action::command::CommandAction;
use inferwatch_alert::action::webhook::{verify_signature, WebhookAction, DEFAULT_TOLERANCE};
use inferwatch_alert::{
    idempotency_key, ActionFilter, ActionsFile, BuildContext, ConfiguredAction, DeliveryReport,
    DeliverySettings, DeliveryStatus, Dispatcher, DispatcherConfig,
};
use inferwatch_core::{Alert, AlertState, Impact, Severity};

const DEADLINE: Duration = Duration::from_secs(60);
const SECRET: &[u8] = b"webhook-test-secret";

/// One request as the receiver saw it, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

type Responder = Box<dyn FnMut(usize, &Received) -> (u16, Vec<(String, String)>) + Send>;

/// A tiny HTTP/1.1 server: one connection at a time, `Connection: close`.
struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(responder: Responder) -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), responder)
    }

    fn start_on(listener: TcpListener, mut responder: Responder) -> Receiver {
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = Arc::clone(&received);
            let stopping = Arc::clone(&stopping);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let Some(mut request) = read_request(&stream) else {
                        continue;
                    };
                    let index = received.lock().unwrap().len();
                    let (status, headers) = responder(index, &request);
                    request.answered = status;
                    received.lock().unwrap().push(request);
                    let mut response = format!(
                        "HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n"
                    );
                    for (name, value) in headers {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    let mut stream = stream;
                    let _ = stream.write_all(response.as_bytes());
                }
            })
        };
        Receiver {
            address,
            received,
            stopping,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let path = request_line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body,
        answered: 0,
    })
}

fn alert(fingerprint: &str, state: AlertState) -> Alert {
    Alert {
        alert_id: format!("{fingerprint}@2026-01-01T00:00:00Z"),
        fingerprint: fingerprint.to_string(),
        rule_id: "canary-regression".to_string(),
        title: "Canary slower than baseline".to_string(),
        severity: Severity::High,
        state,
        starts_at: "2026-01-01T00:00:00Z".to_string(),
        ends_at: (state == AlertState::Resolved).then(|| "2026-01-01T00:10:00Z".to_string()),
        group: BTreeMap::from([
            ("model_id".to_string(), "recsys".to_string()),
            ("model_version".to_string(), "v2.1".to_string()),
        ]),
        value: Some(640.0),
        threshold: Some(500.0),
        condition: "canary.p99(latency_ms) > 500".to_string(),
        atlas: vec!["AML.T0029".to_string()],
        impact: Impact::default(),
        summary: String::new(),
        explanation: Vec::new(),
        labels: BTreeMap::new(),
        evidence: None,
    }
}

fn fast_settings(max_attempts: u32) -> DeliverySettings {
    DeliverySettings {
        max_attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        queue_capacity: 1024,
        workers: 2,
    }
}

fn webhook(name: &str, url: String) -> ConfiguredAction {
    let action = WebhookAction::new(
        url,
        Some(SECRET.to_vec()),
        Vec::new(),
        Duration::from_secs(30),
    );
    ConfiguredAction::new(name, ActionFilter::default(), Arc::new(action))
}

fn start(
    state_dir: &Path,
    settings: DeliverySettings,
    actions: Vec<ConfiguredAction>,
) -> Dispatcher {
    Dispatcher::start(
        DispatcherConfig::new(state_dir).with_settings(settings),
        actions,
    )
    .unwrap()
}

/// Polls `condition` until it holds or the deadline passes.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn answered_ok_per_key(received: &[Received]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in received.iter().filter(|r| r.answered == 200) {
        *counts
            .entry(request.header("Idempotency-Key").unwrap().to_string())
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn webhook_is_signed_retried_after_a_500_and_delivered_once_per_key() {
    let receiver = Receiver::start(Box::new(|index, _| {
        (if index == 0 { 500 } else { 200 }, vec![])
    }));
    let state = tempfile::tempdir().unwrap();
    let dispatcher = start(
        state.path(),
        fast_settings(5),
        vec![webhook("hook", receiver.url())],
    );
    let alerts: Vec<Alert> = ["fp-a", "fp-b", "fp-c"]
        .iter()
        .map(|fingerprint| alert(fingerprint, AlertState::Firing))
        .collect();
    let first = dispatcher.submit_all(&alerts).unwrap();
    assert_eq!(first.enqueued, 3);
    let again = dispatcher.submit(&alerts[0]).unwrap();
    assert_eq!(
        (again.enqueued, again.duplicates),
        (0, 1),
        "same transition is not enqueued twice"
    );
    assert!(dispatcher.wait_idle(DEADLINE));

    let received = receiver.received();
    assert_eq!(received.len(), 4, "three deliveries and one retry");
    assert_eq!(received.iter().filter(|r| r.answered == 500).count(), 1);
    for request in &received {
        assert_eq!(request.path, "/hook");
        // What a receiver does: the signature covers the timestamp and the
        // exact body, and the timestamp is fresh.
        verify_signature(
            SECRET,
            request.header("X-Inferwatch-Timestamp").unwrap(),
            request.header("X-Inferwatch-Signature").unwrap(),
            &request.body,
            std::time::SystemTime::now(),
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        let body: Alert = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            request.header("Idempotency-Key"),
            Some(idempotency_key(&body).as_str())
        );
    }
    let retried_key = received[0].header("Idempotency-Key").unwrap().to_string();
    let retry = received[1..]
        .iter()
        .find(|r| r.header("Idempotency-Key") == Some(retried_key.as_str()))
        .expect("the delivery that got a 500 is retried");
    assert_eq!(retry.header("X-Inferwatch-Attempt"), Some("2"));
    let per_key = answered_ok_per_key(&received);
    assert_eq!(per_key.len(), 3);
    assert!(per_key.values().all(|count| *count == 1), "{per_key:?}");
    let stats = dispatcher.stats();
    assert_eq!((stats.delivered, stats.retries, stats.dead), (3, 1, 0));
}

#[test]
fn a_slow_receiver_does_not_block_submit() {
    let (holding_sender, holding) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let receiver = Receiver::start(Box::new(move |index, _| {
        if index == 0 {
            // Hold the first request until the test has submitted everything.
            holding_sender.send(()).unwrap();
            released.lock().unwrap().recv_timeout(DEADLINE).unwrap();
        }
        (200, vec![])
    }));
    let state = tempfile::tempdir().unwrap();
    let settings = DeliverySettings {
        queue_capacity: 8,
        workers: 1,
        ..fast_settings(3)
    };
    let dispatcher = Arc::new(start(
        state.path(),
        settings,
        vec![webhook("hook", receiver.url())],
    ));
    dispatcher
        .submit(&alert("fp-first", AlertState::Firing))
        .unwrap();
    holding
        .recv_timeout(DEADLINE)
        .expect("receiver got the first request");

    // The only worker is stuck in the receiver; submit must still return.
    let (done_sender, done) = mpsc::channel();
    let submitter = {
        let dispatcher = Arc::clone(&dispatcher);
        std::thread::spawn(move || {
            let mut enqueued = 0;
            let mut spilled = 0;
            for index in 0..100 {
                let report = dispatcher
                    .submit(&alert(&format!("fp-{index}"), AlertState::Firing))
                    .unwrap();
                enqueued += report.enqueued;
                spilled += report.spilled;
            }
            done_sender.send((enqueued, spilled)).unwrap();
        })
    };
    let (enqueued, spilled) = done
        .recv_timeout(DEADLINE)
        .expect("submit returned while the receiver held a request");
    submitter.join().unwrap();
    assert_eq!(enqueued, 100);
    assert!(
        spilled >= 100 - 8,
        "beyond the memory queue, deliveries wait on disk ({spilled})"
    );
    assert_eq!(
        receiver.received().len(),
        0,
        "the first request is still held"
    );

    release.send(()).unwrap();
    assert!(dispatcher.wait_idle(DEADLINE));
    let per_key = answered_ok_per_key(&receiver.received());
    assert_eq!(per_key.len(), 101);
    assert!(per_key.values().all(|count| *count == 1));
}

#[test]
fn a_down_receiver_gets_everything_dead_lettered_after_max_attempts() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let state = tempfile::tempdir().unwrap();
    let settings = DeliverySettings {
        queue_capacity: 8,
        ..fast_settings(3)
    };
    let dispatcher = start(
        state.path(),
        settings.clone(),
        vec![webhook("hook", url.clone())],
    );
    let alerts: Vec<Alert> = (0..100)
        .map(|index| alert(&format!("fp-{index}"), AlertState::Firing))
        .collect();
    for alert in &alerts {
        assert_eq!(dispatcher.submit(alert).unwrap().enqueued, 1);
    }
    assert!(dispatcher.wait_idle(DEADLINE));
    let stats = dispatcher.stats();
    assert_eq!((stats.dead, stats.retries, stats.delivered), (100, 200, 0));
    assert_eq!(stats.storage_errors, 0, "{:?}", stats.last_storage_error);
    drop(dispatcher);

    let text = std::fs::read_to_string(state.path().join("dead-letter.jsonl")).unwrap();
    let letters: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(letters.len(), 100);
    for letter in &letters {
        assert_eq!(letter["action"], "hook");
        assert_eq!(letter["attempts"], 3);
        let reason = letter["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!("request to {url} failed")),
            "{reason}"
        );
        let alert: Alert = serde_json::from_value(letter["alert"].clone()).unwrap();
        assert_eq!(letter["idempotency_key"], idempotency_key(&alert));
    }
    // Dead is finished: a restart has nothing to deliver.
    let restarted = start(state.path(), settings, vec![webhook("hook", url)]);
    assert_eq!(restarted.stats().pending, 0);
}

#[test]
fn client_errors_are_dead_lettered_without_retry() {
    let receiver = Receiver::start(Box::new(|_, _| (400, vec![])));
    let state = tempfile::tempdir().unwrap();
    let dispatcher = start(
        state.path(),
        fast_settings(5),
        vec![webhook("hook", receiver.url())],
    );
    dispatcher
        .submit(&alert("fp-a", AlertState::Firing))
        .unwrap();
    assert!(dispatcher.wait_idle(DEADLINE));
    assert_eq!(receiver.received().len(), 1);
    let letter: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(state.path().join("dead-letter.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["reason"], "HTTP 400 from webhook");
}

#[test]
fn a_restart_loses_no_pending_delivery_and_sends_no_duplicate() {
    // The receiver's port is reserved, then closed: "down" until we listen again.
    let reserved = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{address}/hook");
    let state = tempfile::tempdir().unwrap();
    let settings = DeliverySettings {
        queue_capacity: 4,
        ..fast_settings(1_000_000)
    };
    let mut alerts: Vec<Alert> = (0..5)
        .map(|index| alert(&format!("fp-{index}"), AlertState::Firing))
        .collect();
    alerts.push(alert("fp-0", AlertState::Resolved));
    alerts.push(alert("fp-3", AlertState::Resolved));

    let first = start(
        state.path(),
        settings.clone(),
        vec![webhook("hook", url.clone())],
    );
    assert_eq!(first.submit_all(&alerts).unwrap().enqueued, 7);
    eventually("failed attempts while the receiver is down", || {
        first.stats().retries >= 4
    });
    drop(first);

    let receiver = Receiver::start_on(
        TcpListener::bind(address).unwrap(),
        Box::new(|_, _| (200, vec![])),
    );
    let second = start(
        state.path(),
        settings.clone(),
        vec![webhook("hook", url.clone())],
    );
    assert_eq!(second.stats().pending, 7, "everything survived the restart");
    assert!(second.wait_idle(DEADLINE));
    drop(second);
    let received = receiver.received();
    let per_key = answered_ok_per_key(&received);
    assert_eq!(per_key.len(), 7);
    assert!(per_key.values().all(|count| *count == 1), "{per_key:?}");
    assert_eq!(received.len(), 7);
    // A resolution never overtakes its firing.
    let order: Vec<(String, AlertState)> = received
        .iter()
        .map(|request| {
            let alert: Alert = serde_json::from_slice(&request.body).unwrap();
            (alert.fingerprint, alert.state)
        })
        .collect();
    for fingerprint in ["fp-0", "fp-3"] {
        let firing = order
            .iter()
            .position(|(f, s)| f == fingerprint && *s == AlertState::Firing);
        let resolved = order
            .iter()
            .position(|(f, s)| f == fingerprint && *s == AlertState::Resolved);
        assert!(firing.unwrap() < resolved.unwrap(), "{order:?}");
    }

    let third = start(state.path(), settings, vec![webhook("hook", url)]);
    assert_eq!(third.stats().pending, 0);
    let report = third.submit_all(&alerts).unwrap();
    assert_eq!(
        (report.enqueued, report.duplicates),
        (0, 7),
        "delivered keys are remembered"
    );
    drop(third);
    assert_eq!(receiver.received().len(), 7, "nothing was sent again");
}

#[test]
fn rollback_sends_the_rendered_request_on_firing_and_records_the_remediation() {
    let receiver = Receiver::start(Box::new(|_, _| (202, vec![])));
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "actions:\n  - name: canary-rollback\n    kind: rollback\n    rules: [canary-regression]\n    request:\n      method: POST\n      url: http://{}/models/{{{{group.model_id}}}}/rollback\n      headers: {{Authorization: Bearer t0ken}}\n      body: '{{\"version\": \"{{{{group.model_version}}}}\", \"rule\": \"{{{{rule_id}}}}\", \"alert\": \"{{{{alert_id}}}}\"}}'\n",
        receiver.address
    );
    let file = ActionsFile::from_yaml_str(Path::new("rollback.yaml"), &config).unwrap();
    let reports: Arc<Mutex<Vec<DeliveryReport>>> = Arc::default();
    let observer = {
        let reports = Arc::clone(&reports);
        Arc::new(move |report: &DeliveryReport| reports.lock().unwrap().push(report.clone()))
    };
    let dispatcher = Dispatcher::start(
        DispatcherConfig::new(state.path())
            .with_settings(fast_settings(3))
            .with_observer(observer),
        file.build(&BuildContext::new()).unwrap(),
    )
    .unwrap();
    let report = dispatcher
        .submit_all(&[
            alert("fp-a", AlertState::Firing),
            alert("fp-a", AlertState::Resolved),
        ])
        .unwrap();
    assert_eq!(
        (report.enqueued, report.unmatched),
        (1, 1),
        "rollback acts on firing only"
    );
    assert!(dispatcher.wait_idle(DEADLINE));

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/models/recsys/rollback");
    assert_eq!(received[0].header("Authorization"), Some("Bearer t0ken"));
    assert_eq!(
        String::from_utf8(received[0].body.clone()).unwrap(),
        r#"{"version": "v2.1", "rule": "canary-regression", "alert": "fp-a@2026-01-01T00:00:00Z"}"#
    );
    let stored = std::fs::read_to_string(state.path().join("remediations.jsonl")).unwrap();
    let remediation: serde_json::Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(remediation["action"], "canary-rollback");
    assert_eq!(remediation["alert_id"], "fp-a@2026-01-01T00:00:00Z");
    assert_eq!(remediation["dry_run"], false);
    assert_eq!(remediation["response_status"], 202);
    assert_eq!(
        remediation["request"]["headers"]["Authorization"],
        "<redacted>"
    );
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].status, DeliveryStatus::Delivered);
    assert_eq!(
        reports[0].remediation.as_ref().unwrap().response_status,
        Some(202)
    );
}

#[test]
fn deliveries_of_an_action_removed_from_the_config_are_dead_lettered_on_restart() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let state = tempfile::tempdir().unwrap();
    let first = start(
        state.path(),
        fast_settings(1_000_000),
        vec![webhook("old-hook", url)],
    );
    first.submit(&alert("fp-a", AlertState::Firing)).unwrap();
    drop(first);

    let receiver = Receiver::start(Box::new(|_, _| (200, vec![])));
    let second = start(
        state.path(),
        fast_settings(3),
        vec![webhook("new-hook", receiver.url())],
    );
    assert!(second.wait_idle(DEADLINE));
    assert_eq!(second.stats().dead, 1);
    let letter: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(state.path().join("dead-letter.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(letter["action"], "old-hook");
    assert_eq!(
        letter["reason"],
        "action 'old-hook' is no longer configured"
    );
    assert!(
        receiver.received().is_empty(),
        "never sent to another action"
    );
}

#[test]
fn a_repeat_reaches_the_webhook_again_but_never_rolls_back_twice() {
    let receiver = Receiver::start(Box::new(|_, _| (200, vec![])));
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "actions:\n  - name: hook\n    kind: webhook\n    url: http://{0}/hook\n  - name: canary-rollback\n    kind: rollback\n    request:\n      method: POST\n      url: http://{0}/rollback\n",
        receiver.address
    );
    let file = ActionsFile::from_yaml_str(Path::new("actions.yaml"), &config).unwrap();
    let dispatcher = Dispatcher::start(
        DispatcherConfig::new(state.path()).with_settings(fast_settings(3)),
        file.build(&BuildContext::new()).unwrap(),
    )
    .unwrap();
    let firing = alert("fp-a", AlertState::Firing);
    assert_eq!(dispatcher.submit(&firing).unwrap().enqueued, 2);
    // The same transition again (a group change re-listing it): nothing new.
    assert_eq!(dispatcher.submit(&firing).unwrap().duplicates, 2);
    let four_hours_later = inferwatch_core::parse_timestamp_text("2026-01-01T04:00:30Z").unwrap();
    let repeat = dispatcher
        .submit_repeat(std::slice::from_ref(&firing), four_hours_later)
        .unwrap();
    assert_eq!((repeat.enqueued, repeat.duplicates), (1, 0), "webhook only");
    // A restarted pipeline offering the same repeat again is a duplicate.
    let again = dispatcher
        .submit_repeat(std::slice::from_ref(&firing), four_hours_later)
        .unwrap();
    assert_eq!((again.enqueued, again.duplicates), (0, 1));
    assert!(dispatcher.wait_idle(DEADLINE));

    let received = receiver.received();
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths.iter().filter(|p| **p == "/rollback").count(),
        1,
        "{paths:?}"
    );
    let hook_keys: Vec<&str> = received
        .iter()
        .filter(|r| r.path == "/hook")
        .map(|r| r.header("Idempotency-Key").unwrap())
        .collect();
    let first_key = idempotency_key(&firing);
    assert_eq!(hook_keys.len(), 2, "{hook_keys:?}");
    assert!(hook_keys.contains(&first_key.as_str()));
    assert!(hook_keys.contains(&format!("{first_key}:repeat:2026-01-01T04:00:30Z").as_str()));
}

#[test]
fn issue_16_command_with_a_nul_in_a_value_is_dead_lettered_at_once() {
    let state = tempfile::tempdir().unwrap();
    let ran = state.path().join("ran");
    let command = CommandAction::new(
        "/bin/sh".to_string(),
        vec![
            "-c".to_string(),
            format!(
                "echo \"$INFERWATCH_GROUP_CLIENT_ID\" >> '{}'",
                ran.display()
            ),
        ],
        Duration::from_secs(30),
    );
    let dispatcher = start(
        state.path(),
        fast_settings(5),
        vec![ConfiguredAction::new(
            "ticket",
            ActionFilter::default(),
            Arc::new(command),
        )],
    );
    // A client id from a log line: an environment variable can't hold a NUL.
    let mut poisoned = alert("fp-nul", AlertState::Firing);
    poisoned
        .group
        .insert("client_id".to_string(), "evil\0client".to_string());
    let mut clean = alert("fp-clean", AlertState::Firing);
    clean
        .group
        .insert("client_id".to_string(), "c-17".to_string());
    dispatcher.submit_all(&[poisoned, clean]).unwrap();
    assert!(dispatcher.wait_idle(DEADLINE));
    let stats = dispatcher.stats();
    assert_eq!(
        (stats.delivered, stats.dead, stats.retries),
        (1, 1, 0),
        "the poisoned delivery is not retried"
    );
    drop(dispatcher);
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "c-17\n");
    let letter: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(state.path().join("dead-letter.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(letter["attempts"], 1);
    assert_eq!(
        letter["reason"],
        "cannot start /bin/sh: INFERWATCH_GROUP_CLIENT_ID holds a NUL byte, which an environment variable cannot carry"
    );
}

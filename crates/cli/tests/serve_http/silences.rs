//! `serve --silences FILE` (and `silences:` in the config): the silences of
//! a file, in the form `detect --silences` reads, apply from the start: a
//! silenced alert is recorded but not notified, the REST API lists the
//! silence, and a bad file stops the start with its file:line.

use super::{available, curl, event_clock, eventually, token, Answer, Node};

const BURST: &str = "id: burst\ntitle: A burst of requests\nseverity: high\ngroup_by: [model_id]\nwindow: 10s\nevery: 10s\nallowed_lateness: 1s\ncondition: count() >= 20\n";

fn get(node: &Node, token: &str, path: &str) -> Answer {
    curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        &node.url(path),
    ])
}

#[test]
fn silences_from_a_file_hold_back_their_alerts_from_the_start() {
    if !available("curl", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("burst.yaml"), BURST).unwrap();
    let notify = dir.path().join("notify.yaml");
    std::fs::write(&notify, "route:\n  group_wait: 0s\n  group_interval: 1s\n").unwrap();
    let at = event_clock(120);
    let silences = dir.path().join("silences.yaml");
    std::fs::write(
        &silences,
        format!(
            "silences:\n  - id: quiet-maintenance\n    matchers: [\"model_id=quiet\"]\n    starts_at: \"{}\"\n    ends_at: \"{}\"\n    created_by: ops\n    comment: planned work\n",
            at(-600),
            at(3600)
        ),
    )
    .unwrap();
    let ingest = token(&data, "ingest", None);
    let read = token(&data, "read", None);
    // Through the config file, as an operator would set it.
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "rules: {}\nnotify: {}\nsilences: {}\n",
            rules.display(),
            notify.display(),
            silences.display()
        ),
    )
    .unwrap();
    let node = Node::start(&data, &["--config", config.to_str().unwrap()]);

    let listed = get(&node, &read, "/api/v1/silences").json();
    let ids: Vec<&str> = listed["silences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|silence| silence["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["quiet-maintenance"], "{listed}");

    let line = |model: &str, at: &str| {
        format!("{{\"timestamp\":\"{at}\",\"model_id\":\"{model}\",\"latency_ms\":5}}\n")
    };
    let mut body = String::new();
    for _ in 0..25 {
        body.push_str(&line("loud", &at(2)));
        body.push_str(&line("quiet", &at(3)));
    }
    for second in (10..60).step_by(2) {
        body.push_str(&line("tick", &at(second)));
    }
    let answer = curl(&[
        "-H",
        &format!("Authorization: Bearer {ingest}"),
        "--data-binary",
        &body,
        &node.url("/api/v1/ingest/inference"),
    ]);
    assert_eq!(answer.json()["accepted"], 75, "{}", answer.body);

    let history = eventually(30, "the notification history", || {
        let history = get(&node, &read, "/api/v1/notifications").json();
        let suppressed = !history["suppressed"].as_array()?.is_empty();
        let notified = !history["notifications"].as_array()?.is_empty();
        (suppressed && notified).then_some(history)
    });
    let notified: Vec<String> = history["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|notification| {
            notification["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|alert| alert["group"]["model_id"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(notified.iter().any(|model| model == "loud"), "{history}");
    assert!(notified.iter().all(|model| model != "quiet"), "{history}");
    let suppressed = history["suppressed"].as_array().unwrap();
    assert!(
        suppressed.iter().any(|entry| entry["rule_id"] == "burst"
            && entry["suppression"]
                .to_string()
                .contains("quiet-maintenance")),
        "{history}"
    );
    node.stop();

    // A bad file: the node does not start, and says where.
    std::fs::write(&silences, "silences:\n  - id: x\n    matchers: []\n").unwrap();
    let output = std::process::Command::new(super::common::binary())
        .args(["serve", "--no-pg", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("silences.yaml:2"), "{message}");
}

//! Per-token rate limits: `serve --rate-limit` (the node's default) and
//! `token create --rate-limit` (a token's own). A token past its burst gets
//! 429 with Retry-After (HEC: 503 code 9), nothing of that request is
//! stored, other tokens keep their own buckets, and after the wait it is
//! accepted again. What is stored is exactly what was acknowledged.

use std::path::Path;

use super::common;
use super::{available, counts_by_model, curl, events, post_inference, Answer, Node};

fn token(data: &Path, rate_limit: Option<&str>) -> String {
    let mut args = vec![
        "token",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--scope",
        "ingest",
    ];
    if let Some(limit) = rate_limit {
        args.extend(["--rate-limit", limit]);
    }
    common::run(&args).trim().to_string()
}

fn retry_after(answer: &Answer) -> u64 {
    answer
        .header("Retry-After")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {}", answer.headers))
}

#[test]
fn a_token_past_its_burst_waits_while_other_tokens_go_on() {
    if !available("curl", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The node's default: 10 events/s, at most 200 at once.
    let limited = token(&data, None);
    let other = token(&data, None);
    let free = token(&data, Some("events=1000000,events_burst=1000000"));
    let node = Node::start(&data, &["--rate-limit", "events=10,events_burst=200"]);
    let mut acknowledged = 0u64;

    let first = post_inference(&node, &limited, &events("limited", 150));
    assert_eq!(first.status, 200, "{}", first.body);
    acknowledged += first.json()["accepted"].as_u64().unwrap();
    // 50 left, 10 more each second: 100 more must wait about 5 s.
    let refused = post_inference(&node, &limited, &events("limited", 100));
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(retry_after(&refused) >= 1, "{}", refused.headers);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{}",
        refused.body
    );
    // The same token over Elasticsearch _bulk and Splunk HEC.
    let bulk: String = events("limited", 100)
        .lines()
        .map(|line| format!("{{\"index\":{{}}}}\n{line}\n"))
        .collect();
    let bulk = curl(&[
        "-H",
        &format!("Authorization: ApiKey {limited}"),
        "-H",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        &bulk,
        &node.url("/inference/_bulk"),
    ]);
    assert_eq!(bulk.status, 429, "{}", bulk.body);
    assert_eq!(
        bulk.json()["error"]["type"],
        "es_rejected_execution_exception"
    );
    assert!(retry_after(&bulk) >= 1);
    let hec: String = events("limited", 100)
        .lines()
        .map(|line| format!("{{\"event\":{line}}}"))
        .collect();
    let hec = curl(&[
        "-H",
        &format!("Authorization: Splunk {limited}"),
        "--data-binary",
        &hec,
        &node.url("/services/collector/event"),
    ]);
    assert_eq!(hec.status, 503, "{}", hec.body);
    assert_eq!(hec.json()["code"], 9, "{}", hec.body);
    assert!(retry_after(&hec) >= 1);
    // More than the burst can never fit: the answer says so.
    let too_big = post_inference(&node, &limited, &events("limited", 201));
    assert_eq!(too_big.status, 429, "{}", too_big.body);
    assert!(too_big.body.contains("burst"), "{}", too_big.body);

    // Other tokens have their own buckets: one under the same default, one
    // with its own, larger limit.
    let beside = post_inference(&node, &other, &events("other", 150));
    assert_eq!(beside.status, 200, "{}", beside.body);
    let big = post_inference(&node, &free, &events("free", 1000));
    assert_eq!(big.status, 200, "{}", big.body);
    assert_eq!(big.json()["accepted"], 1000);

    // After waiting as told, the limited token is accepted again.
    let mut wait = retry_after(&refused);
    let mut accepted = None;
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_secs(wait));
        let again = post_inference(&node, &limited, &events("limited", 100));
        if again.status == 200 {
            accepted = Some(again);
            break;
        }
        assert_eq!(again.status, 429, "{}", again.body);
        wait = retry_after(&again);
    }
    let accepted = accepted.expect("accepted again after waiting");
    acknowledged += accepted.json()["accepted"].as_u64().unwrap();
    node.stop();

    let stored = counts_by_model(&data);
    assert_eq!(stored.get("limited"), Some(&acknowledged), "{stored:?}");
    assert_eq!(acknowledged, 250);
    assert_eq!(stored.get("other"), Some(&150), "{stored:?}");
    assert_eq!(stored.get("free"), Some(&1000), "{stored:?}");
}

#[test]
fn a_bad_rate_limit_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(common::binary())
        .args(["token", "create", "--scope", "ingest", "--rate-limit"])
        .arg("events=0")
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("above zero"), "{message}");
    assert!(!dir.path().join("tokens.json").exists());
}

//! The alert history as a SQL table: `detect --actions` records every
//! transition in its state dir, and `inferwatch query --alerts` answers SQL
//! over them next to the events.

mod common;

use std::collections::BTreeMap;

use common::{nanos, parse_lines, rules_dir, run};
use serde_json::Value;

#[test]
fn every_transition_detect_printed_is_a_row_of_the_alerts_table() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    run(&[
        "simulate",
        "--scenario",
        "canary-regression",
        "--duration",
        "1h",
        "--rate",
        "60",
        "--seed",
        "3",
        "--output",
        events.to_str().unwrap(),
    ]);
    // Nothing listens on the webhook's port: deliveries stay pending in the
    // outbox, which is not what this test looks at.
    let actions = dir.path().join("actions.yaml");
    std::fs::write(
        &actions,
        "actions:\n  - name: hook\n    kind: webhook\n    url: http://127.0.0.1:9/alerts\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let printed = parse_lines(&run(&[
        "detect",
        "--quiet",
        "--rules",
        rules_dir().to_str().unwrap(),
        "--actions",
        actions.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--delivery-grace",
        "0s",
        "--dead-letter",
        dir.path().join("dead.jsonl").to_str().unwrap(),
        events.to_str().unwrap(),
    ]));
    assert!(printed.len() >= 2, "{printed:#?}");
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for alert in &printed {
        let key = (
            alert["rule_id"].as_str().unwrap().to_string(),
            alert["state"].as_str().unwrap().to_string(),
        );
        *expected.entry(key).or_default() += 1;
    }
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let query = |sql: &str| {
        parse_lines(&run(&[
            "query",
            "--data",
            data.to_str().unwrap(),
            "--alerts",
            state.to_str().unwrap(),
            "--format",
            "json",
            sql,
        ]))
    };
    let rows = query(
        "SELECT rule_id, state, count(*) AS n FROM alerts WHERE origin = 'engine' GROUP BY rule_id, state ORDER BY rule_id, state",
    );
    let counted: BTreeMap<(String, String), u64> = rows
        .iter()
        .map(|row| {
            (
                (
                    row["rule_id"].as_str().unwrap().to_string(),
                    row["state"].as_str().unwrap().to_string(),
                ),
                row["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counted, expected);
    // Typed columns: event times compare as timestamps, the group's model
    // has its own column, and the summary is there to read.
    let first_start = printed
        .iter()
        .map(|a| nanos(a["starts_at"].as_str().unwrap()))
        .min()
        .unwrap();
    let rows = query(
        "SELECT rule_id, model_id, summary, CAST(starts_at AS BIGINT) AS start_ns FROM alerts ORDER BY starts_at, rule_id LIMIT 1",
    );
    assert_eq!(rows[0]["start_ns"].as_i64().unwrap(), first_start);
    let first: &Value = printed
        .iter()
        .filter(|a| nanos(a["starts_at"].as_str().unwrap()) == first_start)
        .min_by_key(|a| a["rule_id"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(rows[0]["rule_id"], first["rule_id"]);
    assert_eq!(rows[0]["model_id"], first["group"]["model_id"]);
    assert_eq!(rows[0]["summary"], first["summary"]);
}

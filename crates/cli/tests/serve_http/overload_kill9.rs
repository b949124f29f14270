//! Overload with kill -9, the short version of `bench/overload.py` (whose
//! default run is 30 s): a throttled node (`--queue 2`, each store append
//! slowed by 50 ms) is offered about 10x the requests/s it acknowledges
//! when saturated, from 32 concurrent NDJSON and HEC senders, for 6 s; it
//! is SIGKILLed halfway and restarted. The script checks 429s (HEC: 503
//! code 9) with `Retry-After`, and that every event acknowledged with a
//! 2xx is in the store afterwards (by its unique `request_id`, through
//! SQL); it reports the node's peak RSS (VmHWM), which is printed here,
//! not asserted.

use std::path::Path;
use std::process::Command;

use super::common;

#[test]
fn every_event_acknowledged_under_10x_overload_survives_a_kill_9_and_busy_answers_carry_retry_after(
) {
    if !common::available("python3", &["--version"]) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/overload.py");
    let output = Command::new("python3")
        .arg(&script)
        .args(["--binary", common::binary()])
        .args(["--seconds", "6", "--probe-seconds", "2", "--json"])
        .output()
        .expect("running bench/overload.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "no report ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");
    assert!(output.status.success(), "{report}");
    assert_eq!(report["acknowledged_missing"], 0, "{report}");
    assert!(report["acknowledged_events"].as_u64().unwrap() > 0);
    assert!(report["busy_429"].as_u64().unwrap() > 0);
    assert!(report["busy_hec_503_9"].as_u64().unwrap() > 0);
    assert_eq!(
        report["peak_rss_kib_per_life"].as_array().unwrap().len(),
        2,
        "killed once, so two lives: {report}"
    );
}

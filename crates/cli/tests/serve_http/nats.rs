//! `serve --nats-url`: the JetStream input against a real `nats-server -js`
//! (Debian nats-server) on a loopback port, with the Python `nats-py`
//! client publishing. Events arrive in the store, bad lines of a message
//! are dead-lettered while its good ones are kept, every message ends up
//! acked, and a kill -9 of the node mid-run followed by a restart loses no
//! published event.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::common;
use super::{eventually, now, Node};

/// The publisher and consumer-info client, on nats-py.
const CLIENT: &str = r#"
import asyncio, json, sys
import nats

async def main():
    mode, url, stream = sys.argv[1:4]
    nc = await nats.connect(url)
    js = nc.jetstream()
    if mode == "publish":
        subject, path = sys.argv[4:6]
        with open(path) as f:
            messages = json.load(f)
        for n, message in enumerate(messages, 1):
            # Waits for JetStream's PubAck: the message is in the stream.
            await js.publish(subject, message.encode())
            print(n, flush=True)
    else:
        info = await js.consumer_info(stream, sys.argv[4])
        print(json.dumps({"pending": info.num_pending, "ack_pending": info.num_ack_pending,
                          "redelivered": info.num_redelivered}))
    await nc.close()

asyncio.run(main())
"#;

/// A `nats-server -js` on a free loopback port; killed when dropped.
struct NatsServer {
    child: Child,
    url: String,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server(store: &Path) -> Option<NatsServer> {
    if !common::available("nats-server", &["--version"]) {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nats-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("nats-server said it is ready").unwrap();
        if line.contains("Server is ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Some(NatsServer {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    })
}

/// Whether the Python client works (fails in CI when it does not).
fn client_available() -> bool {
    common::available(&common::python(), &["-c", "import nats.js"])
}

fn client(dir: &Path, args: &[&str]) -> Child {
    let script = dir.join("nats_client.py");
    std::fs::write(&script, CLIENT).unwrap();
    Command::new(common::python())
        .arg(&script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running the nats-py client")
}

fn publish(dir: &Path, url: &str, subject: &str, messages: &[String]) -> Child {
    let path = dir.join(format!("messages-{}.json", messages.len()));
    std::fs::write(&path, serde_json::to_string(messages).unwrap()).unwrap();
    client(
        dir,
        &["publish", url, "IWTEST", subject, path.to_str().unwrap()],
    )
}

fn consumer_info(dir: &Path, url: &str) -> serde_json::Value {
    let output = client(dir, &["info", url, "IWTEST", "iw-node"])
        .wait_with_output()
        .unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

fn start_node(data: &Path, url: &str) -> Node {
    Node::start(
        data,
        &[
            "--open",
            "--nats-url",
            url,
            "--nats-stream",
            "IWTEST",
            "--nats-subject",
            "iw.>",
            "--nats-consumer",
            "iw-node",
            "--nats-ack-wait",
            "2s",
        ],
    )
}

/// `(events, distinct request ids)` in the inference stream.
fn stored(data: &Path) -> (u64, u64) {
    let out = common::run(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM inference",
    ]);
    let row = out.lines().nth(1).expect("one row");
    let (n, d) = row.split_once(',').unwrap();
    (n.parse().unwrap(), d.parse().unwrap())
}

fn message(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"{}\",\"model_id\":\"nats-model\",\"request_id\":\"r-{i}\",\"latency_ms\":{}}}\n",
                now(),
                10 + i % 50
            )
        })
        .collect()
}

#[test]
fn published_events_arrive_and_bad_lines_are_dead_lettered_with_the_good_kept() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = nats_server(&dir.path().join("jetstream")) else {
        return;
    };
    if !client_available() {
        return;
    }
    let data = dir.path().join("data");
    let node = start_node(&data, &server.url);
    let mut messages: Vec<String> = (0..40).map(|m| message(m * 10, 10)).collect();
    // Two good lines around two bad ones, then a message of bad lines only.
    let good = message(400, 2);
    let (first, second) = good.split_at(good.find('\n').unwrap() + 1);
    messages.push(format!("{first}{{not json\n{second}[1,2]\n"));
    messages.push("nope\n{\"timestamp\":\"x\"\n".into());
    let status = publish(dir.path(), &server.url, "iw.events", &messages)
        .wait()
        .unwrap();
    assert!(status.success());
    eventually(60, "402 events in the store", || {
        (stored(&data) == (402, 402)).then_some(())
    });
    // Every message acked, the all-bad one included: nothing comes again.
    eventually(30, "every message acked", || {
        let info = consumer_info(dir.path(), &server.url);
        (info["pending"] == 0 && info["ack_pending"] == 0).then_some(info)
    });
    let dead = std::fs::read_to_string(data.join("dead_letters.jsonl")).unwrap();
    let from_nats: Vec<serde_json::Value> = dead
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|letter| letter.to_string().contains("nats:"))
        .collect();
    assert_eq!(from_nats.len(), 4, "{dead}");
    let health = super::curl(&[&node.url("/api/v1/health")]).json();
    assert_eq!(health["ingest"]["nats"]["events"], 402, "{health}");
    let metrics = super::curl(&[&node.url("/metrics")]).body;
    assert!(
        metrics
            .contains(r#"inferwatch_ingest_events_total{protocol="nats",stream="inference"} 402"#),
        "{metrics}"
    );
    node.stop();
    assert_eq!(stored(&data), (402, 402));
}

#[test]
fn a_kill_9_mid_run_and_a_restart_lose_no_published_event() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = nats_server(&dir.path().join("jetstream")) else {
        return;
    };
    if !client_available() {
        return;
    }
    let data = dir.path().join("data");
    let node = start_node(&data, &server.url);
    const MESSAGES: usize = 400;
    const PER_MESSAGE: usize = 5;
    let messages: Vec<String> = (0..MESSAGES)
        .map(|m| message(m * PER_MESSAGE, PER_MESSAGE))
        .collect();
    let mut publisher = publish(dir.path(), &server.url, "iw.events", &messages);
    let mut progress = BufReader::new(publisher.stdout.take().unwrap()).lines();
    // Kill the node once a third is published (it is consuming as it goes).
    for _ in 0..MESSAGES / 3 {
        progress.next().expect("publisher progress").unwrap();
    }
    node.kill_9();
    let node = start_node(&data, &server.url);
    for line in progress {
        line.unwrap();
    }
    assert!(publisher.wait().unwrap().success());
    let total = (MESSAGES * PER_MESSAGE) as u64;
    let (events, distinct) = eventually(90, "every published request id stored", || {
        let (events, distinct) = stored(&data);
        (distinct == total).then_some((events, distinct))
    });
    eprintln!(
        "nats kill -9: {distinct} of {total} request ids present, {} duplicates (redelivered after the kill)",
        events - distinct
    );
    eventually(30, "every message acked", || {
        let info = consumer_info(dir.path(), &server.url);
        (info["pending"] == 0 && info["ack_pending"] == 0).then_some(())
    });
    node.stop();
    assert_eq!(stored(&data).1, total);
}

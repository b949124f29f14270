//! `inferwatch demo`: the node with the simulated fleet feeding it, for a
//! first look at the dashboard.
//!
//! It makes a data directory (marked as the demo's, so a second run may
//! start it afresh and no other directory is ever overwritten), writes the
//! rule pack and SLOs embedded in the binary into it, creates tokens and runs the
//! same node as `serve --listen` in this process. A feeder thread then
//! sends the simulator's events to the node's own NDJSON ingest endpoint,
//! the path every shipper takes: first `--history` of the fleet ending now,
//! as fast as the node takes it (so rollups and learned baselines exist),
//! then live traffic stamped with the current time. Incidents are scheduled
//! around that moment: an extraction sweep and a poisoned source start in
//! the last quarter of an hour of the history, so their alerts are firing
//! when the live traffic starts; the recsys canary regresses from three
//! minutes before it, a latency regression fires a few minutes into the
//! live traffic and an input-length shift later (see [`schedule`]).
//!
//! The canary closes the loop: the demo runs the simulator's traffic router
//! (`inferwatch_sim::router`), which the live traffic honours from its next
//! simulated second, and starts the node with an actions file whose
//! `rollback` action calls the router for the canary rules. Once
//! `canary-vs-baseline` (or `canary-latency-judge`) fires, the router sends
//! the canary's traffic to its baseline, the canary's events stop and the
//! alert resolves, long before the injected regression would have ended.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use inferwatch_core::NANOS_PER_SECOND;
use inferwatch_server::auth::{create_token, Scope};
use inferwatch_sim::router::RouterState;
use inferwatch_sim::{Incident, Routing, Scenario, SimConfig, DEPLOYMENTS, MODELS};

use crate::query_cmd::runtime;
use crate::serve_cmd::{serve_node_until, shutdown_signal, ServeArgs};

/// Arguments of `inferwatch demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Data directory, made under the working directory; a directory that
    /// an earlier demo made is started afresh, any other is refused.
    #[arg(long, default_value = "inferwatch-demo")]
    data: PathBuf,
    /// Address of the dashboard, the REST API and HTTP ingest.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Simulated history ending now, sent before the live traffic (at
    /// least 10m; the learned baselines want about 1h).
    #[arg(long, default_value = "2h", value_name = "DURATION")]
    history: String,
    /// Live traffic: simulated seconds per wall second. Above 1 the events
    /// are dated ahead of the clock.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Fleet traffic in events per second (history and live).
    #[arg(long, default_value_t = 200.0, value_name = "EV_PER_S")]
    rate: f64,
}

/// Marks a data directory as the demo's.
const MARKER: &str = "INFERWATCH-DEMO";

/// The shipped rule pack (`rules/*.yaml`), embedded so that the demo works
/// from any directory, with an installed binary as with `cargo run`.
macro_rules! embedded_rules {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../rules/", $name)))),*]
    };
}
const RULES: &[(&str, &str)] = embedded_rules![
    "adversarial-probing.yaml",
    "canary-latency-judge.yaml",
    "canary-vs-baseline.yaml",
    "client-behaviour-forest.yaml",
    "confidence-baseline.yaml",
    "confidence-drift-daily.yaml",
    "cost-harvesting.yaml",
    "denial-of-service.yaml",
    "error-rate.yaml",
    "extraction-confirmed.yaml",
    "key-new-networks.yaml",
    "latency-baseline.yaml",
    "membership-inference.yaml",
    "model-extraction.yaml",
    "model-inversion.yaml",
    "source-confidence-drift.yaml",
    "volume-baseline.yaml",
    "volume-drop.yaml",
];

/// The shipped SLOs (`slos/*.yaml`): their budgets and burn rates show on
/// the dashboard.
const SLOS: &[(&str, &str)] = &[
    ("chat-llm.yaml", include_str!("../../../slos/chat-llm.yaml")),
    ("recsys.yaml", include_str!("../../../slos/recsys.yaml")),
    ("vision.yaml", include_str!("../../../slos/vision.yaml")),
];

/// The rules whose alerts roll the canary back.
const ROLLBACK_RULES: [&str; 2] = ["canary-vs-baseline", "canary-latency-judge"];

/// The actions file: one `rollback` action, aimed at the demo's router.
fn actions_yaml(router: SocketAddr) -> String {
    format!(
        "# Written by `inferwatch demo`: when a canary rule fires, ask the\n\
         # simulated fleet's traffic router to send the canary's traffic to\n\
         # its baseline.\n\
         actions:\n  \
         - name: canary-rollback\n    \
           kind: rollback\n    \
           rules: [{rules}]\n    \
           request:\n      \
             method: POST\n      \
             url: \"http://{router}/models/{{{{group.model_id}}}}/rollback\"\n      \
             body: '{{\"rule\": \"{{{{rule_id}}}}\", \"alert\": \"{{{{alert_id}}}}\"}}'\n",
        rules = ROLLBACK_RULES.join(", ")
    )
}

/// Parses `serve`'s flags, so the demo runs exactly the node `serve` runs.
#[derive(Parser)]
struct ServeCli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// Runs `inferwatch demo`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let history_ns = inferwatch_core::parse_duration(&args.history)
        .with_context(|| format!("--history {}", args.history))?;
    anyhow::ensure!(
        history_ns >= 600 * NANOS_PER_SECOND,
        "--history must be at least 10m"
    );
    anyhow::ensure!(
        args.speed.is_finite() && args.speed > 0.0,
        "--speed must be a positive number"
    );
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number"
    );
    prepare(&args.data)?;
    let rules = args.data.join("rules");
    let slos = args.data.join("slos");
    let (read, _) = create_token(&args.data, Scope::Read, None, None)?;
    let (admin, _) = create_token(&args.data, Scope::Admin, None, None)?;
    let (ingest, _) = create_token(&args.data, Scope::Ingest, None, None)?;
    // The fleet's traffic router, which the rollback action calls and the
    // live traffic honours.
    let router = RouterState::new(None, 0)?;
    let router_address = inferwatch_sim::router::serve("127.0.0.1:0", router.clone())
        .context("starting the simulated fleet's traffic router")?;
    let actions = args.data.join("actions.yaml");
    std::fs::write(&actions, actions_yaml(router_address))
        .with_context(|| format!("writing {}", actions.display()))?;
    let data = args.data.to_string_lossy().into_owned();
    let listen = args.listen.to_string();
    let alerts = args
        .data
        .join("alerts.jsonl")
        .to_string_lossy()
        .into_owned();
    // Faster than real time, event time runs ahead of the wall clock.
    let max_future = if args.speed > 1.0 { "3650d" } else { "2m" };
    let serve_args = ServeCli::try_parse_from([
        "demo",
        "--no-pg",
        "--data",
        &data,
        "--listen",
        &listen,
        "--rules",
        &rules.to_string_lossy(),
        "--slos",
        &slos.to_string_lossy(),
        "--alerts-file",
        &alerts,
        "--max-future",
        max_future,
        "--actions",
        &actions.to_string_lossy(),
    ])?
    .serve;

    let stop = Arc::new(AtomicBool::new(false));
    let (address_sender, address) = std::sync::mpsc::channel::<SocketAddr>();
    let (ended_sender, ended) = tokio::sync::oneshot::channel::<()>();
    let feeder = {
        let stop = stop.clone();
        let plan = Feed {
            token: ingest,
            admin: admin.clone(),
            history_ns,
            rate: args.rate,
            speed: args.speed,
            router,
            stop,
        };
        std::thread::Builder::new()
            .name("demo-feed".into())
            .spawn(move || {
                let result = match address.recv() {
                    Ok(address) => plan.run(address),
                    Err(_) => Ok(()),
                };
                if let Err(error) = &result {
                    if !plan.stop.load(Ordering::SeqCst) {
                        eprintln!("inferwatch demo: the simulated feed failed: {error:#}");
                    }
                }
                drop(ended_sender);
                result
            })?
    };
    let data_dir = args.data.clone();
    let stopping = stop.clone();
    let served = runtime()?.block_on(serve_node_until(
        &serve_args,
        args.listen,
        move |bound| {
            banner(bound, router_address, &data_dir, &read, &admin);
            let _ = address_sender.send(bound);
        },
        async move {
            tokio::select! {
                _ = shutdown_signal() => eprintln!("inferwatch demo: stopping"),
                _ = ended => eprintln!("inferwatch demo: the feed ended; stopping"),
            }
            stopping.store(true, Ordering::SeqCst);
        },
    ));
    stop.store(true, Ordering::SeqCst);
    let fed = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the feed thread panicked"))?;
    served?;
    match fed {
        Err(error) if !stop.load(Ordering::SeqCst) => Err(error),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Makes (or starts afresh) the demo's data directory and writes the rules.
fn prepare(data: &Path) -> anyhow::Result<()> {
    if data.exists() {
        if data.join(MARKER).is_file() {
            std::fs::remove_dir_all(data)
                .with_context(|| format!("removing the earlier demo in {}", data.display()))?;
        } else if std::fs::read_dir(data)
            .with_context(|| format!("reading {}", data.display()))?
            .next()
            .is_some()
        {
            anyhow::bail!(
                "{} exists and is not an inferwatch demo directory (it has no {MARKER} file); \
                 give another --data",
                data.display()
            );
        }
    }
    let rules = data.join("rules");
    std::fs::create_dir_all(&rules).with_context(|| format!("creating {}", rules.display()))?;
    std::fs::write(
        data.join(MARKER),
        "Made by `inferwatch demo`, which deletes and remakes this directory on each run.\n",
    )
    .with_context(|| format!("writing into {}", data.display()))?;
    for (name, text) in RULES {
        std::fs::write(rules.join(name), text)
            .with_context(|| format!("writing {}", rules.join(name).display()))?;
    }
    let slos = data.join("slos");
    std::fs::create_dir_all(&slos).with_context(|| format!("creating {}", slos.display()))?;
    for (name, text) in SLOS {
        std::fs::write(slos.join(name), text)
            .with_context(|| format!("writing {}", slos.join(name).display()))?;
    }
    Ok(())
}

/// What a newcomer needs: the URL, the tokens and a curl line. On
/// standard output; progress goes to standard error.
fn banner(address: SocketAddr, router: SocketAddr, data: &Path, read: &str, admin: &str) {
    let base = format!("http://{address}");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\ninferwatch demo: a simulated model fleet is feeding the node (data in {}).\n\n\
         Dashboard:    {base}/ui/\n\
         Read token:   {read}\n\
         Admin token:  {admin}   (acknowledge and silence alerts)\n\
         Fleet router: http://{router}/routes   (the canary rules' rollback action calls it)\n\n\
         Paste the read token into the dashboard, or ask the REST API:\n  \
         curl -H 'Authorization: Bearer {read}' {base}/api/v1/alerts\n  \
         curl -H 'Authorization: Bearer {read}' '{base}/api/v1/series?metric=p99&model_id=recsys'\n\n\
         History is being sent first; live traffic follows. A few minutes into it the\n\
         recsys canary's alert fires, its rollback sends the canary's traffic to the\n\
         baseline, and the alert resolves. Ctrl-C stops.\n",
        data.display()
    );
    let _ = out.flush();
}

/// The feeder: history, then live traffic, into the node's NDJSON ingest.
struct Feed {
    token: String,
    /// For the silence a rollback makes (see [`silence_withdrawn`]).
    admin: String,
    history_ns: i64,
    rate: f64,
    speed: f64,
    router: Arc<RouterState>,
    stop: Arc<AtomicBool>,
}

/// The incidents, in minutes from `now_ns` (the end of the history).
///
/// The extraction sweep and the poisoned source start in the history, so
/// their alerts are firing once it is in (about 20 s after start for 2 h of
/// history). The recsys canary regresses from three minutes before now, so
/// `canary-vs-baseline` (5 minutes in breach) fires about two minutes into
/// the live traffic and its rollback stops the canary: the regression is
/// scheduled to run for 40 minutes, but the alert resolves about five
/// minutes after the rollback. The fraud latency regression starts a minute
/// before now and fires a few minutes into the live traffic; the
/// input-length shift comes later, and each incident resolves.
fn schedule(now_ns: i64) -> Vec<Incident> {
    let minute = 60 * NANOS_PER_SECOND;
    [
        (Scenario::CanaryRegression, -3, 40),
        (Scenario::Extraction, -14, 10),
        (Scenario::PoisonedSource, -5, 12),
        (Scenario::LatencyRegression, -1, 20),
        (Scenario::InputLengthShift, 25, 45),
    ]
    .into_iter()
    .map(|(scenario, start, end)| Incident {
        scenario,
        start_ns: now_ns + start * minute,
        end_ns: now_ns + end * minute,
        key: scenario.key(),
    })
    .collect()
}

fn wall_now_ns() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

impl Feed {
    fn run(&self, address: SocketAddr) -> anyhow::Result<()> {
        let second = NANOS_PER_SECOND;
        let now_ns = wall_now_ns() / second * second;
        let incidents = schedule(now_ns);
        let base = SimConfig {
            scenarios: vec![Scenario::Baseline],
            rate: self.rate,
            threads: 1,
            ..SimConfig::default()
        };
        let history = SimConfig {
            duration_ns: self.history_ns,
            start_ns: now_ns - self.history_ns,
            ..base.clone()
        };
        eprintln!(
            "inferwatch demo: sending the history from {} (about {:.0} events)",
            inferwatch_core::format_timestamp(history.start_ns),
            self.history_ns as f64 / 1e9 * self.rate
        );
        let began = Instant::now();
        let mut poster = Poster::new(address, &self.token, &self.stop, 4 << 20);
        let summary = inferwatch_sim::generate_scheduled(&history, incidents.clone(), &mut poster)
            .context("sending the history")?;
        poster.flush().context("sending the history")?;
        eprintln!(
            "inferwatch demo: history sent: {} events in {:.1} s; live traffic follows",
            summary.events,
            began.elapsed().as_secs_f64()
        );
        // From here on the traffic honours the router: a rollback (the
        // canary's alert may fire while the clock is being caught up with)
        // takes effect from the next simulated second.
        let mut routed = Routing::default();
        let mut route = |second_ns: i64| {
            let routing = self.router.routing_at(second_ns);
            for index in announce_rollbacks(&routed, &routing, second_ns) {
                if let Err(error) = silence_withdrawn(address, &self.admin, index) {
                    eprintln!("inferwatch demo: silencing volume-drop after the rollback: {error}");
                }
            }
            routed = routing;
            routing
        };
        // Catch up with the clock, so the charts show no gap where the
        // history was being sent (and no volume rule sees one); each segment
        // has its own seed, so request ids do not repeat.
        let mut covered = now_ns;
        let mut seed = base.seed;
        loop {
            let target = wall_now_ns() / second * second;
            if target - covered < 2 * second {
                break;
            }
            seed += 1;
            let catch_up = SimConfig {
                duration_ns: target - covered,
                start_ns: covered,
                seed,
                ..base.clone()
            };
            // As fast as it goes, one simulated second at a time.
            inferwatch_sim::generate_live_scheduled(
                &catch_up,
                incidents.clone(),
                &mut poster,
                f64::MAX,
                &mut route,
            )
            .context("catching up with the clock")?;
            poster.flush().context("catching up with the clock")?;
            covered = target;
        }
        // Live, one simulated day at a time, from where the history ended.
        let mut poster = Poster::new(address, &self.token, &self.stop, 0);
        while !self.stop.load(Ordering::SeqCst) {
            if let Some(wait) = u64::try_from(covered - wall_now_ns())
                .ok()
                .map(Duration::from_nanos)
            {
                std::thread::sleep(wait);
            }
            seed += 1;
            let live = SimConfig {
                duration_ns: 86_400 * second,
                start_ns: covered,
                seed,
                ..base.clone()
            };
            inferwatch_sim::generate_live_scheduled(
                &live,
                incidents.clone(),
                &mut poster,
                self.speed,
                &mut route,
            )
            .context("sending live traffic")?;
            covered += live.duration_ns;
        }
        Ok(())
    }
}

/// Says on standard error which deployments the router took out of the
/// traffic since the previous simulated second, and returns their indices.
fn announce_rollbacks(before: &Routing, now: &Routing, second_ns: i64) -> Vec<usize> {
    let mut withdrawn = Vec::new();
    for (index, deployment) in DEPLOYMENTS.iter().enumerate() {
        if before.is_live(index) && !now.is_live(index) {
            withdrawn.push(index);
            eprintln!(
                "inferwatch demo: rollback: the router took {} {} ({}) out of the traffic \
                 from {}; its requests go to the baseline now",
                MODELS[deployment.model].model_id,
                deployment.model_version,
                deployment.ab_group,
                inferwatch_core::format_timestamp(second_ns)
            );
        }
    }
    withdrawn
}

/// A version the router took out of the traffic on purpose goes quiet, and
/// `volume-drop` would fire for it and stay firing (its group keeps no
/// traffic to resolve it). The demo silences that alert for the withdrawn
/// version through the REST API, as an operator would after a rollback: it
/// still shows (silenced, with this comment) but notifies nobody, and any
/// other version's drop is still told.
fn silence_withdrawn(address: SocketAddr, admin: &str, index: usize) -> anyhow::Result<()> {
    let deployment = &DEPLOYMENTS[index];
    let body = serde_json::json!({
        "matchers": [
            "alertname=\"volume-drop\"",
            format!("model_id={:?}", MODELS[deployment.model].model_id),
            format!("model_version={:?}", deployment.model_version),
        ],
        "duration": "30d",
        "created_by": "inferwatch demo",
        "comment": "rolled back by the canary rule's rollback action: this version is out of the traffic on purpose",
    })
    .to_string();
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST /api/v1/silences HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    anyhow::ensure!(
        answer.starts_with("HTTP/1.1 201"),
        "the node answered {}",
        answer.lines().next().unwrap_or("nothing")
    );
    eprintln!(
        "inferwatch demo: silenced volume-drop for {} {} (out of the traffic on purpose)",
        MODELS[deployment.model].model_id, deployment.model_version
    );
    Ok(())
}

/// A `Write` that posts whole lines to `/api/v1/ingest/inference` once
/// `batch` bytes are buffered, and on every flush.
struct Poster<'a> {
    address: SocketAddr,
    token: &'a str,
    stop: &'a AtomicBool,
    batch: usize,
    buffer: Vec<u8>,
}

impl<'a> Poster<'a> {
    fn new(address: SocketAddr, token: &'a str, stop: &'a AtomicBool, batch: usize) -> Self {
        Poster {
            address,
            token,
            stop,
            batch,
            buffer: Vec::new(),
        }
    }

    /// Posts the complete lines buffered.
    fn post_lines(&mut self) -> std::io::Result<()> {
        let Some(end) = memchr::memrchr(b'\n', &self.buffer) else {
            return Ok(());
        };
        let body: Vec<u8> = self.buffer.drain(..=end).collect();
        self.post(&body)
    }

    fn post(&self, body: &[u8]) -> std::io::Result<()> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "the demo is stopping",
                ));
            }
            let mut stream = TcpStream::connect(self.address)?;
            stream.set_read_timeout(Some(Duration::from_secs(300)))?;
            write!(
                stream,
                "POST /api/v1/ingest/{} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                inferwatch_core::DEFAULT_STREAM,
                self.address,
                self.token,
                body.len()
            )?;
            stream.write_all(body)?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer)?;
            let text = String::from_utf8_lossy(&answer);
            let status: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            match status {
                200..=299 => return Ok(()),
                // The node's queue is full: it said when to come back.
                429 | 503 => std::thread::sleep(Duration::from_secs(1)),
                _ => {
                    return Err(std::io::Error::other(format!(
                        "the node answered {status}: {}",
                        text.split_once("\r\n\r\n").map_or("", |(_, body)| body)
                    )))
                }
            }
        }
    }
}

impl Write for Poster<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.batch > 0 && self.buffer.len() >= self.batch {
            self.post_lines()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.post_lines()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `.yaml` file names in the repository's `folder`, sorted.
    fn yaml_files(folder: &str) -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(folder);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                name.ends_with(".yaml").then_some(name)
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_embedded_rule_pack_is_the_rules_directory() {
        let embedded: Vec<String> = RULES.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(
            embedded,
            yaml_files("rules"),
            "add new rules to RULES in demo_cmd.rs"
        );
        let embedded: Vec<String> = SLOS.iter().map(|(name, _)| name.to_string()).collect();
        let on_disk = yaml_files("slos");
        assert_eq!(embedded, on_disk, "add new SLOs to SLOS in demo_cmd.rs");
    }

    #[test]
    fn the_actions_file_rolls_back_on_the_canary_rules_of_the_rule_pack() {
        let router: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        let text = actions_yaml(router);
        let file = inferwatch_alert::ActionsFile::from_yaml_str(Path::new("actions.yaml"), &text)
            .unwrap_or_else(|error| panic!("{error}\n{text}"));
        let actions = file.build(&inferwatch_alert::BuildContext::new()).unwrap();
        assert_eq!(actions.len(), 1);
        let rules = actions[0].filter.rules.clone().unwrap();
        assert_eq!(
            rules.iter().map(String::as_str).collect::<Vec<_>>(),
            ["canary-latency-judge", "canary-vs-baseline"]
        );
        for rule in &rules {
            assert!(
                RULES
                    .iter()
                    .any(|(_, yaml)| yaml.contains(&format!("id: {rule}\n"))),
                "{rule} is not in the rule pack"
            );
        }
        assert!(
            text.contains("url: \"http://127.0.0.1:4567/models/{{group.model_id}}/rollback\""),
            "{text}"
        );
    }

    #[test]
    fn the_canary_regression_straddles_the_start_of_the_live_traffic() {
        let now = 1_800_000_000 * NANOS_PER_SECOND;
        let canary = schedule(now)
            .into_iter()
            .find(|incident| incident.scenario == Scenario::CanaryRegression)
            .unwrap();
        assert!(canary.start_ns < now && canary.end_ns > now + 30 * 60 * NANOS_PER_SECOND);
    }

    #[test]
    fn a_directory_that_is_not_the_demos_is_refused_and_the_demos_is_remade() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("keep.txt"), "mine").unwrap();
        let error = prepare(&other).unwrap_err().to_string();
        assert!(error.contains("not an inferwatch demo"), "{error}");
        assert!(other.join("keep.txt").is_file());

        let demo = dir.path().join("demo");
        prepare(&demo).unwrap();
        std::fs::write(demo.join("old.txt"), "x").unwrap();
        prepare(&demo).unwrap();
        assert!(!demo.join("old.txt").exists());
        assert!(demo.join("rules/canary-vs-baseline.yaml").is_file());
    }
}

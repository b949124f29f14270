//! `inferwatch simulate`: write a deterministic synthetic model fleet as JSONL,
//! and optionally the labels of the injected incidents.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use inferwatch_sim::{targets, Scenario, SimConfig, SimError};

/// Arguments of `inferwatch simulate`.
#[derive(clap::Args)]
pub struct Args {
    /// Scenarios to inject, comma separated: baseline, latency-regression,
    /// error-spike, canary-regression, poisoned-source, input-length-shift,
    /// extraction, dos, partial-outage, stolen-key, cost-harvesting,
    /// adversarial-probing, membership-inference, inversion, slow-drift.
    #[arg(long, default_value = "baseline", value_name = "NAME[,NAME...]")]
    scenario: String,
    /// Simulated time span, e.g. 10m, 1h, 1d.
    #[arg(long, default_value = "1h")]
    duration: String,
    /// Seed of every random draw: same arguments and seed, same bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output file; `-` writes to standard output.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    /// Write one JSON line per injected incident to this file.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Fleet traffic in events per second (attack scenarios add to it).
    #[arg(long, default_value_t = 300.0, value_name = "EV_PER_S")]
    rate: f64,
    /// Event time of the first instant (RFC 3339).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    start: String,
    /// Generator threads (0: one per core, at most 4); the output does not
    /// depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Ordinary clients (1 to 2,000,000), with Zipf popularity; the
    /// attackers' ids and addresses do not change with it.
    #[arg(long, default_value_t = inferwatch_sim::CLIENT_COUNT, value_name = "N")]
    clients: usize,
    /// canary-regression: latency factor of the recsys 2.1 canary (> 0; 1
    /// leaves its latency alone).
    #[arg(long, default_value_t = targets::CANARY_LATENCY_FACTOR, value_name = "F")]
    canary_latency_factor: f64,
    /// canary-regression: error rate of the recsys 2.1 canary (0 to 1; below
    /// the background 0.3 % it keeps the background, so 0 simulates a
    /// latency-only regression).
    #[arg(long, default_value_t = targets::CANARY_ERROR_RATE, value_name = "R")]
    canary_error_rate: f64,
    /// Live fleet: write each simulated second when it is due, SPEED times
    /// faster than real time (1 = real time), flushing as it goes.
    #[arg(long, value_name = "SPEED")]
    live: Option<f64>,
    /// With --live: serve the traffic router on this address (e.g.
    /// 127.0.0.1:8088; port 0 picks one, printed on stderr). `POST
    /// /models/{model_id}/rollback` moves a model's canary traffic to its
    /// baseline from the next simulated second; `GET /routes` lists routes.
    #[arg(long, value_name = "ADDR", requires = "live")]
    router: Option<String>,
    /// With --router: write deployment records to this JSONL file: one
    /// `deploy` per deployment at --start (simulated commit times), then
    /// each rollback, stamped with its event time. `inferwatch dora report`
    /// reads it.
    #[arg(long, value_name = "FILE", requires = "router")]
    deployments: Option<PathBuf>,
    /// `foreign`: the same fleet as another company would log it (other
    /// model names, version strings, A/B words, ids and a nested shape), to
    /// try rules and mappings on names that are not the simulator's.
    #[arg(long, value_enum, default_value_t = Naming::Default)]
    naming: Naming,
    /// With --naming foreign: write the mapping that reads it back to FILE
    /// (`inferwatch detect --mapping FILE`).
    #[arg(long, value_name = "FILE", requires = "naming")]
    mapping_out: Option<PathBuf>,
    /// Add benign noise, which is not an incident and is not labelled: a
    /// busy QA client with unique inputs, an hourly backfill in every 12
    /// hours, mobile clients hopping addresses, one-minute blips of errors,
    /// latency or traffic, and new clients joining over the day.
    #[arg(long)]
    noise: bool,
}

/// How the simulated fleet names things.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Naming {
    /// The simulator's own names (canonical fields).
    Default,
    /// Foreign names and shape, read back through a mapping.
    Foreign,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = SimConfig {
        scenarios: Scenario::parse_list(&args.scenario)?,
        duration_ns: inferwatch_core::parse_duration(&args.duration)?,
        seed: args.seed,
        rate: args.rate,
        start_ns: inferwatch_core::parse_timestamp_text(&args.start)?,
        threads: args.threads,
        clients: args.clients,
        canary_latency_factor: args.canary_latency_factor,
        canary_error_rate: args.canary_error_rate,
        noise: args.noise,
    };
    config.validate()?;

    let incidents = inferwatch_sim::incidents(&config);
    let foreign = args.naming == Naming::Foreign;
    if let Some(path) = &args.mapping_out {
        std::fs::write(path, inferwatch_sim::FOREIGN_MAPPING)
            .with_context(|| format!("cannot write the mapping {}", path.display()))?;
    }
    if let Some(path) = &args.labels {
        let file = File::create(path)
            .with_context(|| format!("cannot create labels file {}", path.display()))?;
        let mut labels = BufWriter::new(file);
        for incident in &incidents {
            let mut incident = serde_json::to_value(incident)?;
            if let (true, Some(key)) = (foreign, incident["key"].as_object_mut()) {
                for (column, value) in key.iter_mut() {
                    if let Some(text) = value.as_str() {
                        *value = inferwatch_sim::foreign_value(column, text).into();
                    }
                }
            }
            serde_json::to_writer(&mut labels, &incident)?;
            labels.write_all(b"\n")?;
        }
        labels
            .flush()
            .with_context(|| format!("cannot write labels file {}", path.display()))?;
    }

    let began = Instant::now();
    let to_stdout = args.output.as_os_str() == "-";
    let writer: Box<dyn Write> = if to_stdout {
        Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock()))
    } else {
        let file = File::create(&args.output)
            .with_context(|| format!("cannot create output file {}", args.output.display()))?;
        Box::new(BufWriter::with_capacity(1 << 20, file))
    };
    let writer: Box<dyn Write> = if foreign {
        Box::new(inferwatch_sim::ForeignWriter::new(writer))
    } else {
        writer
    };
    let result = match args.live {
        None => inferwatch_sim::generate(&config, writer),
        Some(speed) => {
            let state = inferwatch_sim::router::RouterState::new(
                args.deployments.as_deref(),
                config.start_ns,
            )?;
            if let Some(address) = &args.router {
                let bound = inferwatch_sim::router::serve(address, state.clone())?;
                eprintln!("router: listening on http://{bound}");
            }
            inferwatch_sim::generate_live(&config, writer, speed, |second_ns| {
                state.routing_at(second_ns)
            })
        }
    };
    let summary = match result {
        Ok(summary) => summary,
        // A reader such as `head` closed the pipe: that is how it says "enough".
        Err(SimError::Write(error))
            if to_stdout && error.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            return Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            return Err(anyhow::Error::new(error))
                .with_context(|| format!("simulating into {}", args.output.display()))
        }
    };

    let seconds = began.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "simulate: {} events ({:.1} MB, {:.0} bytes/event), {} incident{}, {:.2} s, {:.0} events/s",
        summary.events,
        summary.bytes as f64 / 1e6,
        summary.bytes as f64 / summary.events.max(1) as f64,
        summary.incidents.len(),
        if summary.incidents.len() == 1 {
            ""
        } else {
            "s"
        },
        seconds,
        summary.events as f64 / seconds,
    );
    Ok(ExitCode::SUCCESS)
}

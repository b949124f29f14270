//! The event generator: one-second chunks, each drawn from its own random
//! stream, formatted into a reused buffer and written in order.

use std::io::Write;
use std::sync::mpsc;

use rand::{Rng, RngCore, SeedableRng};
use rand_distr::{Distribution, Exp1, Gamma, Poisson, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::fleet::{
    self, AliasTable, ModelProfile, CHAT_LLM, DEPLOYMENTS, FRAUD, MODELS, RECSYS, RECSYS_CANARY,
    SOURCE_COUNT, VISION,
};
use crate::format::{
    push_hex16, push_integer, push_one_decimal, push_padded, push_probability, push_two_digits,
    TimestampFormatter,
};
use crate::noise::{self, BlipKind};
use crate::scenario::{targets, Incident, Scenario};
use crate::{SimConfig, SimError, SimSummary};

/// Simulated time covered by one chunk.
const CHUNK_NS: i64 = 1_000_000_000;
/// Request ids are `chunk << 24 | index in chunk`.
const REQUEST_INDEX_BITS: u32 = 24;
/// Highest accepted `--rate`, so that a chunk never holds 2^24 events.
pub(crate) const MAX_RATE: f64 = 10_000_000.0;
/// Index of the extraction attacker among the attackers (after the
/// ordinary clients).
const EXTRACTION_ATTACKER: usize = 0;
/// Index of the first flooding client among the attackers.
const DOS_FIRST_ATTACKER: usize = 1;
/// Digits of the shortest client number (`c-00042`).
const CLIENT_NUMBER_WIDTH: usize = 5;
/// Deployment indices of the single-version models hit by attacks.
const CHAT_DEPLOYMENT: usize = 3;
const VISION_DEPLOYMENT: usize = 4;
/// Index of the noise's QA client among the special clients (after the
/// attackers); the new clients of the noise follow it.
const QA_SLOT: usize = DOS_FIRST_ATTACKER + targets::DOS_CLIENT_COUNT;
/// The adversarial prober and the membership-inference attacker.
const PROBE_SLOT: usize = QA_SLOT + 1;
const MEMBERSHIP_SLOT: usize = PROBE_SLOT + 1;
const INVERSION_SLOT: usize = MEMBERSHIP_SLOT + 1;
const FIRST_NEW_CLIENT_SLOT: usize = INVERSION_SLOT + 1;
/// Distinct prompts replayed by the flooding clients.
const DOS_PROMPT_COUNT: u64 = 5;
/// Most classes of any model.
const MAX_CLASSES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Fleet,
    Extraction,
    Dos,
    /// The benign noise ([`noise`]): the QA client, a backfill, the new
    /// clients, a traffic blip.
    Qa,
    Backfill,
    NewClient,
    Blip,
    /// The ATLAS scenarios' attackers.
    StolenKey,
    CostHarvest,
    Probe,
    Membership,
    Inversion,
}

/// How an answer's class probabilities are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// The model's own Dirichlet (or the poisoned one).
    Drawn,
    /// Drawn, then the top two classes pulled within
    /// [`targets::PROBING_MAX_MARGIN`] of each other.
    AtBoundary,
    /// The same draw for the same record (seeded by it), with a tiny jitter.
    SameFor(u64),
    /// The true class forced to [`targets::INVERSION_CLASS`].
    Steered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Timeout,
    Internal,
    Unavailable,
    RateLimited,
}

impl Outcome {
    /// The JSON between the source id and the latency value.
    fn fragment(self) -> &'static [u8] {
        match self {
            Outcome::Ok => br#"","status":"ok","http_status":200,"latency_ms":"#,
            Outcome::Timeout => {
                br#"","status":"error","error_type":"timeout","http_status":504,"latency_ms":"#
            }
            Outcome::Internal => {
                br#"","status":"error","error_type":"internal","http_status":500,"latency_ms":"#
            }
            Outcome::Unavailable => {
                br#"","status":"error","error_type":"unavailable","http_status":503,"latency_ms":"#
            }
            Outcome::RateLimited => {
                br#"","status":"error","error_type":"rate_limited","http_status":429,"latency_ms":"#
            }
        }
    }
}

/// Which errors a failing request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorMix {
    /// 30 % timeout, 50 % internal, 20 % rate limited.
    Background,
    /// 70 % internal, 30 % unavailable.
    Spike,
    /// 60 % internal, 40 % timeout.
    Canary,
    /// 60 % rate limited, 40 % unavailable.
    Overload,
}

impl ErrorMix {
    fn pick(self, uniform: f64) -> Outcome {
        match self {
            ErrorMix::Background if uniform < 0.3 => Outcome::Timeout,
            ErrorMix::Background if uniform < 0.8 => Outcome::Internal,
            ErrorMix::Background => Outcome::RateLimited,
            ErrorMix::Spike if uniform < 0.7 => Outcome::Internal,
            ErrorMix::Spike => Outcome::Unavailable,
            ErrorMix::Canary if uniform < 0.6 => Outcome::Internal,
            ErrorMix::Canary => Outcome::Timeout,
            ErrorMix::Overload if uniform < 0.6 => Outcome::RateLimited,
            ErrorMix::Overload => Outcome::Unavailable,
        }
    }
}

/// What the incidents active at one instant do to one event.
#[derive(Debug, Clone, Copy)]
struct Effects {
    latency_log_shift: f64,
    input_log_shift: f64,
    error_rate: f64,
    error_mix: ErrorMix,
    poisoned: bool,
    /// Weight of the true class's draw (the answers' confidence).
    true_class_weight: f64,
}

impl Effects {
    const NONE: Effects = Effects {
        latency_log_shift: 0.0,
        input_log_shift: 0.0,
        error_rate: fleet::BACKGROUND_ERROR_RATE,
        error_mix: ErrorMix::Background,
        poisoned: false,
        true_class_weight: 1.0,
    };

    fn raise_errors(&mut self, rate: f64, mix: ErrorMix) {
        if rate > self.error_rate {
            self.error_rate = rate;
            self.error_mix = mix;
        }
    }
}

struct ModelRuntime {
    profile: &'static ModelProfile,
    ln_median_latency: f64,
    noise_sigma: f64,
    ln_input_median: f64,
    ln_output_median: f64,
    class_cumulative: Vec<f64>,
    gamma: Option<Gamma<f64>>,
}

/// Everything the chunks share: precomputed once per run.
pub(crate) struct Plan {
    start_ns: i64,
    end_ns: i64,
    seed: u64,
    fleet_rate: f64,
    extraction_rate: f64,
    dos_rate: f64,
    incidents: Vec<Incident>,
    models: Vec<ModelRuntime>,
    deployment_cumulative: [f64; DEPLOYMENTS.len()],
    deployment_fragments: Vec<Vec<u8>>,
    /// Ordinary clients are `0 .. clients`; their fragments are formatted
    /// per event, so a million clients cost only the popularity table.
    clients: usize,
    /// The extraction attacker, then the flooders: clients `clients ..`.
    attacker_fragments: Vec<Vec<u8>>,
    client_popularity: AliasTable,
    ln_canary_latency: f64,
    canary_error_rate: f64,
    poisoned_gamma: Gamma<f64>,
    ln_dos_input: f64,
    /// Whether the benign noise ([`noise`]) is on.
    noise: bool,
    qa_rate: f64,
    backfill_client: usize,
    backfill_rate: f64,
    new_client_rate: f64,
    /// Each model's share of the fleet rate (traffic blips add a multiple).
    model_shares: [f64; MODELS.len()],
    stolen_key_rate: f64,
    cost_harvesting_rate: f64,
    probing_rate: f64,
    membership_rate: f64,
    inversion_rate: f64,
    ln_harvest_input: f64,
}

impl Plan {
    pub(crate) fn new(config: &SimConfig, incidents: Vec<Incident>) -> Result<Plan, SimError> {
        let gamma = |shape: f64| {
            Gamma::new(shape, 1.0).map_err(|error| {
                SimError::Internal(format!("gamma distribution with shape {shape}: {error}"))
            })
        };
        let mut models = Vec::with_capacity(MODELS.len());
        for profile in &MODELS {
            let mut cumulative = Vec::with_capacity(profile.class_prior.len());
            let mut total = 0.0;
            for share in profile.class_prior {
                total += share;
                cumulative.push(total);
            }
            let gamma = if profile.class_prior.is_empty() {
                None
            } else {
                Some(gamma(profile.concentration)?)
            };
            models.push(ModelRuntime {
                profile,
                ln_median_latency: profile.median_latency_ms.ln(),
                noise_sigma: profile.noise_sigma(),
                ln_input_median: profile.input_tokens_median.ln(),
                ln_output_median: profile.output_tokens_median.ln(),
                class_cumulative: cumulative,
                gamma,
            });
        }
        let mut deployment_cumulative = [0.0; DEPLOYMENTS.len()];
        let mut total = 0.0;
        for (slot, deployment) in deployment_cumulative.iter_mut().zip(&DEPLOYMENTS) {
            total += deployment.share;
            *slot = total;
        }
        let deployment_fragments =
            DEPLOYMENTS
                .iter()
                .map(|deployment| {
                    format!(
                    r#"","model_id":"{}","model_version":"{}","ab_group":"{}","request_id":"r-"#,
                    MODELS[deployment.model].model_id, deployment.model_version, deployment.ab_group
                )
                .into_bytes()
                })
                .collect();
        let client_fragment = |id: &str, ip: &str| {
            format!(r#"","client_id":"{id}","client_ip":"{ip}","source_id":"src-"#).into_bytes()
        };
        let mut attacker_fragments = vec![client_fragment(
            targets::EXTRACTION_CLIENT_ID,
            targets::EXTRACTION_CLIENT_IP,
        )];
        for index in 0..targets::DOS_CLIENT_COUNT {
            attacker_fragments.push(client_fragment(
                &format!("c-{:05}", targets::DOS_FIRST_CLIENT_NUMBER + index),
                &format!("198.51.100.{}", targets::DOS_FIRST_CLIENT_HOST + index),
            ));
        }
        debug_assert_eq!(attacker_fragments.len(), QA_SLOT);
        attacker_fragments.push(client_fragment(noise::QA_CLIENT_ID, noise::QA_CLIENT_IP));
        attacker_fragments.push(client_fragment(
            targets::PROBING_CLIENT_ID,
            targets::PROBING_CLIENT_IP,
        ));
        attacker_fragments.push(client_fragment(
            targets::MEMBERSHIP_CLIENT_ID,
            targets::MEMBERSHIP_CLIENT_IP,
        ));
        attacker_fragments.push(client_fragment(
            targets::INVERSION_CLIENT_ID,
            targets::INVERSION_CLIENT_IP,
        ));
        debug_assert_eq!(attacker_fragments.len(), FIRST_NEW_CLIENT_SLOT);
        let mut model_shares = [0.0; MODELS.len()];
        for deployment in &DEPLOYMENTS {
            model_shares[deployment.model] += deployment.share;
        }
        let chat_share = DEPLOYMENTS
            .iter()
            .filter(|deployment| deployment.model == CHAT_LLM)
            .map(|deployment| deployment.share)
            .sum::<f64>();
        Ok(Plan {
            start_ns: config.start_ns,
            end_ns: config.start_ns + config.duration_ns,
            seed: config.seed,
            fleet_rate: config.rate,
            extraction_rate: config.rate * targets::EXTRACTION_RATE_SHARE,
            dos_rate: config.rate * chat_share * targets::DOS_EXTRA_VOLUME,
            incidents,
            models,
            deployment_cumulative,
            deployment_fragments,
            clients: config.clients,
            attacker_fragments,
            client_popularity: AliasTable::new(&fleet::zipf_weights(
                config.clients,
                fleet::CLIENT_ZIPF_EXPONENT,
            )),
            ln_canary_latency: config.canary_latency_factor.ln(),
            canary_error_rate: config.canary_error_rate,
            poisoned_gamma: gamma(targets::POISONED_CONCENTRATION)?,
            ln_dos_input: targets::DOS_INPUT_TOKENS.ln(),
            noise: config.noise,
            qa_rate: config.rate * noise::QA_RATE_SHARE,
            backfill_client: noise::BACKFILL_CLIENT_INDEX.min(config.clients - 1),
            backfill_rate: config.rate
                * client_share(config.clients, noise::BACKFILL_CLIENT_INDEX)
                * noise::BACKFILL_EXTRA_FACTOR,
            new_client_rate: config.rate * noise::NEW_CLIENT_RATE_SHARE,
            model_shares,
            stolen_key_rate: config.rate * targets::STOLEN_KEY_RATE_SHARE,
            cost_harvesting_rate: config.rate
                * client_share(config.clients, targets::COST_HARVESTING_INDEX)
                * targets::COST_HARVESTING_EXTRA_FACTOR,
            probing_rate: config.rate * targets::PROBING_RATE_SHARE,
            membership_rate: config.rate * targets::MEMBERSHIP_RATE_SHARE,
            inversion_rate: config.rate * targets::INVERSION_RATE_SHARE,
            ln_harvest_input: targets::COST_HARVESTING_INPUT_TOKENS.ln(),
        })
    }

    /// Appends the JSON from the end of the request id to the source number:
    /// `","client_id":"c-00042","client_ip":"10.1.2.3","source_id":"src-`.
    /// `address` replaces an ordinary client's own (a mobile client's, or a
    /// stolen key's).
    #[inline]
    fn push_client(&self, buffer: &mut Vec<u8>, client: usize, address: Option<[u8; 4]>) {
        let octets = if let Some(special) = client.checked_sub(self.clients) {
            let Some(ordinal) = special.checked_sub(FIRST_NEW_CLIENT_SLOT) else {
                buffer.extend_from_slice(&self.attacker_fragments[special]);
                return;
            };
            let ordinal = ordinal as u64;
            buffer.extend_from_slice(br#"","client_id":"c-"#);
            push_integer(buffer, noise::FIRST_NEW_CLIENT_NUMBER + ordinal);
            noise::new_client_ip_octets(ordinal)
        } else {
            buffer.extend_from_slice(br#"","client_id":"c-"#);
            push_padded(
                buffer,
                fleet::client_number(client) as u64,
                CLIENT_NUMBER_WIDTH,
            );
            address.unwrap_or_else(|| fleet::client_ip_octets(client))
        };
        let [first, second, third, fourth] = octets;
        buffer.extend_from_slice(br#"","client_ip":""#);
        push_integer(buffer, u64::from(first));
        for octet in [second, third, fourth] {
            buffer.push(b'.');
            push_integer(buffer, u64::from(octet));
        }
        buffer.extend_from_slice(br#"","source_id":"src-"#);
    }

    pub(crate) fn chunk_count(&self) -> u64 {
        let span = self.end_ns - self.start_ns;
        (span as u64).div_ceil(CHUNK_NS as u64)
    }
}

/// Ordinary client `index`'s share of the fleet (its Zipf weight over the
/// sum; the last client's when there are fewer).
pub(crate) fn client_share(clients: usize, index: usize) -> f64 {
    let weights = fleet::zipf_weights(clients, fleet::CLIENT_ZIPF_EXPONENT);
    let total: f64 = weights.iter().sum();
    weights[index.min(clients - 1)] / total
}

/// How far into `[start, end)` `timestamp` is, from 0 to 1.
fn incident_progress(timestamp: i64, start: i64, end: i64) -> f64 {
    ((timestamp - start) as f64 / (end - start).max(1) as f64).clamp(0.0, 1.0)
}

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash.
#[inline]
pub(crate) fn mix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Per-thread scratch space and the chunk-filling logic.
pub(crate) struct ChunkGenerator<'plan> {
    plan: &'plan Plan,
    routing: Routing,
    arrivals: Vec<(i64, Stream)>,
    active: Vec<(Scenario, i64, i64)>,
    /// The noise's blip during the current chunk.
    blip: Option<noise::Blip>,
    timestamps: TimestampFormatter,
}

impl<'plan> ChunkGenerator<'plan> {
    pub(crate) fn new(plan: &'plan Plan) -> Self {
        Self {
            plan,
            routing: Routing::default(),
            arrivals: Vec::new(),
            active: Vec::new(),
            blip: None,
            timestamps: TimestampFormatter::new(),
        }
    }

    /// Appends the events of chunk `chunk` to `buffer`; returns how many.
    pub(crate) fn fill(&mut self, chunk: u64, buffer: &mut Vec<u8>) -> u64 {
        let plan = self.plan;
        let chunk_start = plan.start_ns + chunk as i64 * CHUNK_NS;
        let chunk_end = (chunk_start + CHUNK_NS).min(plan.end_ns);
        if chunk_start >= chunk_end {
            return 0;
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix64(
            mix64(plan.seed) ^ chunk.wrapping_mul(0xD1B5_4A32_D192_ED03),
        ));

        self.active.clear();
        self.active.extend(
            plan.incidents
                .iter()
                .filter(|incident| incident.start_ns < chunk_end && chunk_start < incident.end_ns)
                .map(|incident| (incident.scenario, incident.start_ns, incident.end_ns)),
        );

        self.arrivals.clear();
        add_arrivals(
            &mut self.arrivals,
            &mut rng,
            Stream::Fleet,
            plan.fleet_rate,
            chunk_start,
            chunk_end,
        );
        for index in 0..self.active.len() {
            let (scenario, start, end) = self.active[index];
            let (stream, rate) = match scenario {
                Scenario::Extraction => (Stream::Extraction, plan.extraction_rate),
                Scenario::Dos => (Stream::Dos, plan.dos_rate),
                Scenario::StolenKey => (Stream::StolenKey, plan.stolen_key_rate),
                Scenario::CostHarvesting => (Stream::CostHarvest, plan.cost_harvesting_rate),
                Scenario::AdversarialProbing => (Stream::Probe, plan.probing_rate),
                Scenario::MembershipInference => (Stream::Membership, plan.membership_rate),
                Scenario::Inversion => (Stream::Inversion, plan.inversion_rate),
                _ => continue,
            };
            add_arrivals(
                &mut self.arrivals,
                &mut rng,
                stream,
                rate,
                start.max(chunk_start),
                end.min(chunk_end),
            );
        }
        self.blip = None;
        if plan.noise {
            self.add_noise_arrivals(&mut rng, chunk_start, chunk_end);
        }
        self.arrivals
            .sort_unstable_by_key(|&(timestamp, stream)| (timestamp, stream as u8));

        let middle = chunk_start + (chunk_end - chunk_start) / 2;
        let ln_cycle = fleet::daily_cycle(middle).ln();
        let request_base = chunk << REQUEST_INDEX_BITS;
        let mut written = 0;
        for index in 0..self.arrivals.len() {
            let (timestamp, stream) = self.arrivals[index];
            written += u64::from(self.write_event(
                buffer,
                &mut rng,
                timestamp,
                stream,
                request_base | index as u64,
                ln_cycle,
            ));
        }
        written
    }

    /// The noise's own traffic in `[chunk_start, chunk_end)` (see [`noise`]).
    fn add_noise_arrivals(
        &mut self,
        rng: &mut Xoshiro256PlusPlus,
        chunk_start: i64,
        chunk_end: i64,
    ) {
        let plan = self.plan;
        self.blip = noise::blip(plan.seed, chunk_start);
        let mut streams = vec![
            (Stream::Qa, plan.qa_rate),
            (Stream::NewClient, plan.new_client_rate),
        ];
        if noise::backfill_running(plan.start_ns, chunk_start) {
            streams.push((Stream::Backfill, plan.backfill_rate));
        }
        if let Some(blip) = self.blip.filter(|blip| blip.kind == BlipKind::Traffic) {
            let rate = plan.fleet_rate * plan.model_shares[blip.model] * noise::BLIP_EXTRA_TRAFFIC;
            streams.push((Stream::Blip, rate));
        }
        for (stream, rate) in streams {
            add_arrivals(
                &mut self.arrivals,
                rng,
                stream,
                rate,
                chunk_start,
                chunk_end,
            );
        }
    }

    /// The weight of the inversion's target class at `timestamp`: from 1 at
    /// the incident's start to [`targets::INVERSION_CONFIDENCE_GROWTH`] at
    /// its end.
    fn inversion_progress(&self, timestamp: i64) -> f64 {
        self.active
            .iter()
            .find(|(scenario, _, _)| *scenario == Scenario::Inversion)
            .map_or(1.0, |&(_, start, end)| {
                1.0 + (targets::INVERSION_CONFIDENCE_GROWTH - 1.0)
                    * incident_progress(timestamp, start, end)
            })
    }

    /// A deployment drawn by the fleet's traffic shares, after routing.
    fn draw_deployment(&self, rng: &mut Xoshiro256PlusPlus) -> usize {
        let uniform: f64 = rng.random();
        let deployment = self
            .plan
            .deployment_cumulative
            .iter()
            .position(|&bound| uniform < bound)
            .unwrap_or(DEPLOYMENTS.len() - 1);
        self.routing.route(deployment)
    }

    /// The first deployment (the baseline) of model `model`, after routing.
    fn model_deployment(&self, model: usize) -> usize {
        let first = DEPLOYMENTS
            .iter()
            .position(|deployment| deployment.model == model)
            .unwrap_or(0);
        self.routing.route(first)
    }

    fn in_partial_outage(&self, timestamp: i64) -> bool {
        self.active.iter().any(|&(scenario, start, end)| {
            scenario == Scenario::PartialOutage && start <= timestamp && timestamp < end
        })
    }

    fn effects(&self, timestamp: i64, deployment: usize, source: usize) -> Effects {
        let mut effects = Effects::NONE;
        let model = DEPLOYMENTS[deployment].model;
        match self.blip {
            Some(blip) if blip.model == model && blip.kind == BlipKind::Errors => {
                effects.raise_errors(noise::BLIP_ERROR_RATE, ErrorMix::Spike);
            }
            Some(blip) if blip.model == model && blip.kind == BlipKind::Latency => {
                effects.latency_log_shift += noise::BLIP_LATENCY_FACTOR.ln();
            }
            _ => {}
        }
        for &(scenario, start, end) in &self.active {
            if timestamp < start || timestamp >= end {
                continue;
            }
            match scenario {
                Scenario::Baseline | Scenario::Extraction => {}
                Scenario::LatencyRegression if model == FRAUD => {
                    effects.latency_log_shift += targets::LATENCY_REGRESSION_FACTOR.ln();
                }
                Scenario::ErrorSpike if model == VISION => {
                    effects.raise_errors(targets::ERROR_SPIKE_RATE, ErrorMix::Spike);
                }
                Scenario::CanaryRegression if deployment == RECSYS_CANARY => {
                    effects.latency_log_shift += self.plan.ln_canary_latency;
                    effects.raise_errors(self.plan.canary_error_rate, ErrorMix::Canary);
                }
                Scenario::PoisonedSource if source == targets::POISONED_SOURCE_INDEX => {
                    effects.poisoned = true;
                }
                Scenario::SlowDrift if model == VISION => {
                    effects.true_class_weight *= 1.0
                        - (1.0 - targets::SLOW_DRIFT_FINAL_WEIGHT)
                            * incident_progress(timestamp, start, end);
                }
                Scenario::InputLengthShift if model == RECSYS => {
                    effects.input_log_shift += targets::INPUT_LENGTH_FACTOR.ln();
                }
                Scenario::Dos if model == CHAT_LLM => {
                    effects.latency_log_shift += targets::DOS_OVERLOAD_FACTOR.ln();
                    effects.raise_errors(targets::DOS_ERROR_RATE, ErrorMix::Overload);
                }
                _ => {}
            }
        }
        effects
    }

    fn write_event(
        &mut self,
        buffer: &mut Vec<u8>,
        rng: &mut Xoshiro256PlusPlus,
        timestamp: i64,
        stream: Stream,
        request_id: u64,
        ln_cycle: f64,
    ) -> bool {
        let plan = self.plan;
        let (deployment, client) = match stream {
            Stream::Fleet => {
                let deployment = self.draw_deployment(rng);
                (deployment, plan.client_popularity.sample(rng.next_u64()))
            }
            Stream::Qa => (self.draw_deployment(rng), plan.clients + QA_SLOT),
            Stream::NewClient => {
                let deployment = self.draw_deployment(rng);
                let joined = noise::new_clients_joined(plan.start_ns, timestamp);
                let ordinal = ((rng.next_u32() as u64 * joined) >> 32) as usize;
                (deployment, plan.clients + FIRST_NEW_CLIENT_SLOT + ordinal)
            }
            Stream::Backfill => (self.model_deployment(RECSYS), plan.backfill_client),
            Stream::Blip => {
                let model = self.blip.map_or(RECSYS, |blip| blip.model);
                (
                    self.model_deployment(model),
                    plan.client_popularity.sample(rng.next_u64()),
                )
            }
            Stream::Extraction => (VISION_DEPLOYMENT, plan.clients + EXTRACTION_ATTACKER),
            Stream::StolenKey => (
                self.draw_deployment(rng),
                targets::STOLEN_KEY_INDEX.min(plan.clients - 1),
            ),
            Stream::CostHarvest => (
                CHAT_DEPLOYMENT,
                targets::COST_HARVESTING_INDEX.min(plan.clients - 1),
            ),
            Stream::Probe => (VISION_DEPLOYMENT, plan.clients + PROBE_SLOT),
            Stream::Inversion => (VISION_DEPLOYMENT, plan.clients + INVERSION_SLOT),
            Stream::Membership => (self.model_deployment(FRAUD), plan.clients + MEMBERSHIP_SLOT),
            Stream::Dos => {
                let offset =
                    ((rng.next_u32() as u64 * targets::DOS_CLIENT_COUNT as u64) >> 32) as usize;
                (CHAT_DEPLOYMENT, plan.clients + DOS_FIRST_ATTACKER + offset)
            }
        };
        if DEPLOYMENTS[deployment].model == FRAUD && self.in_partial_outage(timestamp) {
            let kept: f64 = rng.random();
            if kept >= targets::PARTIAL_OUTAGE_KEPT {
                return false;
            }
        }
        let source = ((rng.next_u32() as u64 * SOURCE_COUNT as u64) >> 32) as usize;
        let model_index = DEPLOYMENTS[deployment].model;
        let model = &plan.models[model_index];
        let profile = model.profile;
        let effects = self.effects(timestamp, deployment, source);

        // Token counts, then latency caused by them.
        let normal: f64 = rng.sample(StandardNormal);
        let input_deviation = match stream {
            Stream::Dos => plan.ln_dos_input - model.ln_input_median + 0.1 * normal,
            Stream::CostHarvest => plan.ln_harvest_input - model.ln_input_median + 0.1 * normal,
            _ => effects.input_log_shift + profile.input_tokens_sigma * normal,
        };
        let input_tokens = (model.ln_input_median + input_deviation)
            .exp()
            .round()
            .max(1.0) as u64;
        let (mut output_tokens, output_deviation) = if profile.output_tokens_sigma > 0.0 {
            let normal: f64 = rng.sample(StandardNormal);
            let mut deviation = profile.output_tokens_sigma * normal;
            if stream == Stream::CostHarvest {
                deviation += targets::COST_HARVESTING_OUTPUT_FACTOR.ln();
            }
            let tokens = (model.ln_output_median + deviation).exp().round().max(1.0) as u64;
            (tokens, deviation)
        } else {
            (profile.output_tokens_median as u64, 0.0)
        };
        let noise: f64 = rng.sample(StandardNormal);
        let mut latency = (model.ln_median_latency
            + ln_cycle
            + profile.input_elasticity * input_deviation
            + profile.output_elasticity * output_deviation
            + model.noise_sigma * noise
            + effects.latency_log_shift)
            .exp();

        let coin: f64 = rng.random();
        let mut outcome = if coin < effects.error_rate {
            effects.error_mix.pick(coin / effects.error_rate)
        } else {
            Outcome::Ok
        };
        if outcome == Outcome::Ok && latency > profile.timeout_ms {
            outcome = Outcome::Timeout;
        }
        match outcome {
            Outcome::Ok => {}
            Outcome::Timeout => latency = profile.timeout_ms * (1.0 + 0.01 * rng.random::<f64>()),
            Outcome::Internal => latency *= 0.3,
            Outcome::Unavailable => latency = 0.5 + 0.05 * latency,
            Outcome::RateLimited => latency = 0.3 + 1.5 * rng.random::<f64>(),
        }
        if outcome != Outcome::Ok {
            output_tokens = 0;
        }

        let input_hash = match stream {
            Stream::Extraction | Stream::Inversion => rng.next_u64(),
            Stream::Dos => mix64(0xD05_0000 + rng.next_u64() % DOS_PROMPT_COUNT),
            Stream::Backfill => mix64(0xBAC_F111 + rng.next_u64() % noise::BACKFILL_PAYLOADS),
            Stream::Probe => {
                let base = rng.next_u64() % targets::PROBING_BASE_INPUTS;
                mix64(0x9B0B_0000 + base * 4 + rng.next_u64() % 3)
            }
            Stream::Membership => mix64(targets::MEMBERSHIP_RECORD),
            Stream::Qa if rng.random::<f64>() < noise::QA_UNIQUE_SHARE => rng.next_u64(),
            Stream::Fleet
            | Stream::Qa
            | Stream::NewClient
            | Stream::Blip
            | Stream::StolenKey
            | Stream::CostHarvest => {
                let uniform: f64 = rng.random();
                if uniform < fleet::FRESH_INPUT_SHARE {
                    rng.next_u64()
                } else {
                    let within =
                        (uniform - fleet::FRESH_INPUT_SHARE) / (1.0 - fleet::FRESH_INPUT_SHARE);
                    let item = (within * within * within * fleet::INPUT_POOL_SIZE as f64) as u64;
                    mix64(((client as u64) << 16) | ((model_index as u64) << 8) | item)
                }
            }
        };

        buffer.extend_from_slice(br#"{"timestamp":""#);
        self.timestamps.push(buffer, timestamp);
        buffer.extend_from_slice(&plan.deployment_fragments[deployment]);
        push_hex16(buffer, request_id);
        let address = if stream == Stream::StolenKey {
            let network = rng.next_u64() % targets::STOLEN_KEY_NETWORKS;
            Some([45, 60 + network as u8, 7, 10 + network as u8])
        } else if plan.noise && client < plan.clients && noise::is_mobile(client) {
            Some(noise::mobile_ip_octets(client, rng.next_u64()))
        } else {
            None
        };
        plan.push_client(buffer, client, address);
        push_two_digits(buffer, source);
        buffer.extend_from_slice(outcome.fragment());
        push_one_decimal(buffer, latency);
        if profile.logs_ttft && outcome == Outcome::Ok {
            let normal: f64 = rng.sample(StandardNormal);
            let ttft = (latency * 0.15 * (0.2 * normal).exp()).min(0.9 * latency);
            buffer.extend_from_slice(br#","ttft_ms":"#);
            push_one_decimal(buffer, ttft);
        }
        buffer.extend_from_slice(br#","input_tokens":"#);
        push_integer(buffer, input_tokens);
        buffer.extend_from_slice(br#","output_tokens":"#);
        push_integer(buffer, output_tokens);
        buffer.extend_from_slice(br#","input_hash":""#);
        push_hex16(buffer, input_hash);
        buffer.push(b'"');
        if outcome == Outcome::Ok {
            if let Some(gamma) = &model.gamma {
                let answer = match stream {
                    Stream::Probe => Answer::AtBoundary,
                    Stream::Membership => Answer::SameFor(input_hash),
                    Stream::Inversion => Answer::Steered,
                    _ => Answer::Drawn,
                };
                let weight = if stream == Stream::Inversion {
                    self.inversion_progress(timestamp)
                } else {
                    effects.true_class_weight
                };
                self.write_probabilities(
                    buffer,
                    rng,
                    model,
                    gamma,
                    (effects.poisoned, weight),
                    answer,
                );
            }
        }
        buffer.extend_from_slice(b"}\n");
        true
    }

    fn write_probabilities(
        &self,
        buffer: &mut Vec<u8>,
        rng: &mut Xoshiro256PlusPlus,
        model: &ModelRuntime,
        gamma: &Gamma<f64>,
        (poisoned, true_class_weight): (bool, f64),
        answer: Answer,
    ) {
        let classes = model.class_cumulative.len();
        debug_assert!(classes > 1 && classes <= MAX_CLASSES);
        // The same record gets the same draw: its own stream, seeded by it.
        let mut record_rng;
        let draws = match answer {
            Answer::SameFor(record) => {
                record_rng = Xoshiro256PlusPlus::seed_from_u64(record);
                &mut record_rng
            }
            Answer::Drawn | Answer::AtBoundary | Answer::Steered => &mut *rng,
        };
        let uniform: f64 = draws.random();
        let true_class = if answer == Answer::Steered {
            targets::INVERSION_CLASS.min(classes - 1)
        } else if poisoned && uniform < targets::POISONED_CLASS_SKEW {
            classes - 1
        } else {
            let uniform = if poisoned {
                (uniform - targets::POISONED_CLASS_SKEW) / (1.0 - targets::POISONED_CLASS_SKEW)
            } else {
                uniform
            };
            model
                .class_cumulative
                .iter()
                .position(|&bound| uniform < bound)
                .unwrap_or(classes - 1)
        };
        let concentration = if poisoned {
            &self.plan.poisoned_gamma
        } else {
            gamma
        };
        let mut probabilities = [0.0_f64; MAX_CLASSES];
        let mut total = 0.0;
        for (class, slot) in probabilities[..classes].iter_mut().enumerate() {
            let draw: f64 = if class == true_class {
                true_class_weight * concentration.sample(draws)
            } else {
                draws.sample(Exp1)
            };
            *slot = draw;
            total += draw;
        }
        if matches!(answer, Answer::SameFor(_)) {
            // A repeated query is answered the same up to float noise.
            total = 0.0;
            for slot in &mut probabilities[..classes] {
                *slot *= 1.0 + 0.004 * (rng.random::<f64>() - 0.5);
                total += *slot;
            }
        }
        let mut predicted = 0;
        for class in 0..classes {
            probabilities[class] /= total;
            if probabilities[class] > probabilities[predicted] {
                predicted = class;
            }
        }
        if answer == Answer::AtBoundary {
            let runner_up = (0..classes)
                .filter(|&class| class != predicted)
                .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
                .unwrap_or(predicted);
            let middle = (probabilities[predicted] + probabilities[runner_up]) / 2.0;
            let gap = targets::PROBING_MAX_MARGIN * rng.random::<f64>();
            probabilities[predicted] = middle + gap / 2.0;
            probabilities[runner_up] = middle - gap / 2.0;
        }
        buffer.extend_from_slice(br#","predicted_class":"#);
        push_integer(buffer, predicted as u64);
        buffer.extend_from_slice(br#","confidence":"#);
        push_probability(buffer, probabilities[predicted]);
        buffer.extend_from_slice(br#","probabilities":["#);
        for (class, probability) in probabilities[..classes].iter().enumerate() {
            if class > 0 {
                buffer.push(b',');
            }
            push_probability(buffer, *probability);
        }
        buffer.push(b']');
    }
}

/// Adds a Poisson number of arrivals at `rate` per second, uniform in
/// `[start, end)`.
fn add_arrivals(
    arrivals: &mut Vec<(i64, Stream)>,
    rng: &mut Xoshiro256PlusPlus,
    stream: Stream,
    rate: f64,
    start: i64,
    end: i64,
) {
    let span = end - start;
    let expected = rate * span as f64 / 1e9;
    if span <= 0 || expected <= 0.0 {
        return;
    }
    let count = match Poisson::new(expected) {
        Ok(poisson) => poisson.sample(rng) as u64,
        Err(_) => expected.round() as u64,
    };
    arrivals.reserve(count as usize);
    for _ in 0..count {
        let offset =
            ((rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) * span as f64) as i64;
        arrivals.push((start + offset.min(span - 1), stream));
    }
}

/// Generates every chunk and writes them in order, with `threads` worker
/// threads formatting chunks while the calling thread writes.
pub(crate) fn run(
    plan: &Plan,
    threads: usize,
    writer: &mut dyn Write,
) -> Result<SimSummary, SimError> {
    let chunk_count = plan.chunk_count();
    let mut summary = SimSummary {
        events: 0,
        bytes: 0,
        incidents: plan.incidents.clone(),
    };
    let threads = threads.clamp(1, chunk_count.clamp(1, 64) as usize);
    if threads == 1 {
        let mut generator = ChunkGenerator::new(plan);
        let mut buffer = Vec::new();
        for chunk in 0..chunk_count {
            buffer.clear();
            summary.events += generator.fill(chunk, &mut buffer);
            summary.bytes += buffer.len() as u64;
            writer.write_all(&buffer).map_err(SimError::Write)?;
        }
        writer.flush().map_err(SimError::Write)?;
        return Ok(summary);
    }

    std::thread::scope(|scope| {
        let mut filled = Vec::with_capacity(threads);
        let mut recycle = Vec::with_capacity(threads);
        for worker in 0..threads {
            let (filled_sender, filled_receiver) = mpsc::sync_channel::<(Vec<u8>, u64)>(2);
            let (recycle_sender, recycle_receiver) = mpsc::channel::<Vec<u8>>();
            filled.push(filled_receiver);
            recycle.push(recycle_sender);
            scope.spawn(move || {
                let mut generator = ChunkGenerator::new(plan);
                let mut chunk = worker as u64;
                while chunk < chunk_count {
                    let mut buffer = recycle_receiver.try_recv().unwrap_or_default();
                    buffer.clear();
                    let events = generator.fill(chunk, &mut buffer);
                    if filled_sender.send((buffer, events)).is_err() {
                        return; // The writer stopped.
                    }
                    chunk += threads as u64;
                }
            });
        }
        for chunk in 0..chunk_count {
            let worker = (chunk % threads as u64) as usize;
            let (buffer, events) = filled[worker].recv().map_err(|_| {
                SimError::Internal(format!("generator thread for chunk {chunk} stopped"))
            })?;
            summary.events += events;
            summary.bytes += buffer.len() as u64;
            writer.write_all(&buffer).map_err(SimError::Write)?;
            // The worker may have finished already; then the buffer is dropped.
            let _ = recycle[worker].send(buffer);
        }
        writer.flush().map_err(SimError::Write)?;
        Ok(summary)
    })
}

/// Which deployments take traffic. A rolled-back deployment's requests go to
/// its model's baseline deployment instead; the random draws are the same
/// either way, so a run is still determined by its routing per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routing {
    rolled_back: [bool; DEPLOYMENTS.len()],
}

impl Routing {
    /// Sends the canary traffic of `model_id` to its baseline. Returns the
    /// versions rolled back (empty when the model has no live canary).
    pub fn roll_back(&mut self, model_id: &str) -> Vec<&'static str> {
        let mut versions = Vec::new();
        for (index, deployment) in DEPLOYMENTS.iter().enumerate() {
            if deployment.ab_group == "canary"
                && MODELS[deployment.model].model_id == model_id
                && !self.rolled_back[index]
            {
                self.rolled_back[index] = true;
                versions.push(deployment.model_version);
            }
        }
        versions
    }

    /// Whether a deployment (index into [`DEPLOYMENTS`]) takes traffic.
    pub fn is_live(&self, deployment: usize) -> bool {
        !self.rolled_back[deployment]
    }

    fn route(&self, deployment: usize) -> usize {
        if !self.rolled_back[deployment] {
            return deployment;
        }
        let model = DEPLOYMENTS[deployment].model;
        DEPLOYMENTS
            .iter()
            .position(|candidate| candidate.model == model && candidate.ab_group == "baseline")
            .unwrap_or(deployment)
    }
}

/// Generates chunk after chunk on the calling thread, each no earlier than
/// its event time divided by `speed` after the start, asking `routing` for
/// the routing of each simulated second just before generating it.
pub(crate) fn run_live(
    plan: &Plan,
    writer: &mut dyn Write,
    speed: f64,
    routing: &mut dyn FnMut(i64) -> Routing,
) -> Result<SimSummary, SimError> {
    let mut summary = SimSummary {
        events: 0,
        bytes: 0,
        incidents: plan.incidents.clone(),
    };
    let wall_start = std::time::Instant::now();
    let mut generator = ChunkGenerator::new(plan);
    let mut buffer = Vec::new();
    for chunk in 0..plan.chunk_count() {
        let offset_ns = chunk as i64 * CHUNK_NS;
        let due = std::time::Duration::from_secs_f64(offset_ns as f64 / 1e9 / speed);
        if let Some(wait) = due.checked_sub(wall_start.elapsed()) {
            std::thread::sleep(wait);
        }
        generator.routing = routing(plan.start_ns + offset_ns);
        buffer.clear();
        summary.events += generator.fill(chunk, &mut buffer);
        summary.bytes += buffer.len() as u64;
        writer.write_all(&buffer).map_err(SimError::Write)?;
        writer.flush().map_err(SimError::Write)?;
    }
    Ok(summary)
}

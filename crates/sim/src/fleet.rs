//! The simulated fleet: models, versions, clients and data sources.
//!
//! Everything here is fixed (it does not depend on the seed), so rule authors
//! can read the numbers below and set thresholds from them. The seed drives
//! only the traffic drawn from this fleet.

/// Default number of ordinary clients (`c-00000` .. `c-01999`); see
/// [`SimConfig::clients`](crate::SimConfig::clients).
pub const CLIENT_COUNT: usize = 2_000;

/// Most ordinary clients a run may have.
pub const MAX_CLIENTS: usize = 2_000_000;

/// Client numbers that ordinary clients never get, because the attackers own
/// them: the flooders of `dos` (`c-20000` .. `c-20039`) and the extraction
/// attacker (`c-31337`), in increasing order as `(first, count)`.
const RESERVED_CLIENT_NUMBERS: [(usize, usize); 2] = [
    (
        crate::targets::DOS_FIRST_CLIENT_NUMBER,
        crate::targets::DOS_CLIENT_COUNT,
    ),
    (crate::targets::EXTRACTION_CLIENT_NUMBER, 1),
];

/// Zipf exponent of client popularity: client rank `r` (from 1) sends a share
/// proportional to `r^-0.8`, so the busiest client sends about 5.4 % of the
/// traffic and the median client about 0.02 %.
pub const CLIENT_ZIPF_EXPONENT: f64 = 0.8;

/// Number of data sources (`src-00` .. `src-19`), chosen uniformly per event.
pub const SOURCE_COUNT: usize = 20;

/// Background error rate of every model version outside incidents.
pub const BACKGROUND_ERROR_RATE: f64 = 0.003;

/// Amplitude of the daily latency cycle: latency medians are multiplied by
/// `1 + 0.2 * cos(2π (hour_utc - 14) / 24)`, highest at 14:00 UTC and lowest
/// at 02:00 UTC.
pub const DAILY_CYCLE_AMPLITUDE: f64 = 0.2;

/// Hour of the day (UTC) at which latency peaks.
pub const DAILY_CYCLE_PEAK_HOUR: f64 = 14.0;

/// Share of a normal client's requests that carry a never-seen-before input;
/// the rest repeat one of the client's [`INPUT_POOL_SIZE`] usual inputs.
pub const FRESH_INPUT_SHARE: f64 = 0.3;

/// Number of repeated inputs each client draws from (per model).
pub const INPUT_POOL_SIZE: u64 = 32;

/// What one model of the fleet looks like when nothing is wrong.
///
/// Latency is log-normal. Its logarithm is
/// `ln(median_latency_ms) + ln(daily cycle)
///  + input_elasticity * ln(input_tokens / input_tokens_median)
///  + output_elasticity * ln(output_tokens / output_tokens_median)
///  + noise`, with the noise chosen so that the total log-sigma is
/// `latency_sigma`. Longer inputs therefore cause longer latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelProfile {
    /// The `model_id` value.
    pub model_id: &'static str,
    /// Median latency in milliseconds when the daily cycle factor is 1
    /// (at 08:00 and 20:00 UTC).
    pub median_latency_ms: f64,
    /// Total standard deviation of `ln(latency)`.
    pub latency_sigma: f64,
    /// Requests slower than this become `timeout` errors (HTTP 504).
    pub timeout_ms: f64,
    /// Median of the log-normal input token count.
    pub input_tokens_median: f64,
    /// Log-sigma of the input token count.
    pub input_tokens_sigma: f64,
    /// Exponent of latency in the input token count.
    pub input_elasticity: f64,
    /// Median of the log-normal output token count.
    pub output_tokens_median: f64,
    /// Log-sigma of the output token count (0: always the median).
    pub output_tokens_sigma: f64,
    /// Exponent of latency in the output token count.
    pub output_elasticity: f64,
    /// Prior of the true class; empty for models that log no probabilities.
    pub class_prior: &'static [f64],
    /// Dirichlet parameter of the true class (every other class has 1), so the
    /// mean probability of the true class is `c / (c + classes - 1)`.
    pub concentration: f64,
    /// Whether the model logs `ttft_ms` (time to first token).
    pub logs_ttft: bool,
}

impl ModelProfile {
    /// The 99th percentile of latency, relative to the median, within any
    /// short window: `exp(2.326 * latency_sigma)`.
    pub fn p99_over_median(&self) -> f64 {
        (2.326_347_874 * self.latency_sigma).exp()
    }

    /// Standard deviation of the latency noise that is not explained by the
    /// token counts.
    pub fn noise_sigma(&self) -> f64 {
        let explained = (self.input_elasticity * self.input_tokens_sigma).powi(2)
            + (self.output_elasticity * self.output_tokens_sigma).powi(2);
        (self.latency_sigma.powi(2) - explained).max(0.0).sqrt()
    }
}

/// Index of `recsys` in [`MODELS`].
pub const RECSYS: usize = 0;
/// Index of `fraud` in [`MODELS`].
pub const FRAUD: usize = 1;
/// Index of `chat-llm` in [`MODELS`].
pub const CHAT_LLM: usize = 2;
/// Index of `vision` in [`MODELS`].
pub const VISION: usize = 3;

/// The models of the fleet.
pub const MODELS: [ModelProfile; 4] = [
    ModelProfile {
        model_id: "recsys",
        median_latency_ms: 160.0,
        latency_sigma: 0.30,
        timeout_ms: 1_500.0,
        input_tokens_median: 300.0,
        input_tokens_sigma: 0.35,
        input_elasticity: 0.3,
        output_tokens_median: 20.0,
        output_tokens_sigma: 0.25,
        output_elasticity: 0.0,
        class_prior: &[0.30, 0.25, 0.20, 0.15, 0.10],
        concentration: 16.0,
        logs_ttft: false,
    },
    ModelProfile {
        model_id: "fraud",
        median_latency_ms: 25.0,
        latency_sigma: 0.30,
        timeout_ms: 500.0,
        input_tokens_median: 120.0,
        input_tokens_sigma: 0.2,
        input_elasticity: 0.3,
        output_tokens_median: 1.0,
        output_tokens_sigma: 0.0,
        output_elasticity: 0.0,
        class_prior: &[0.97, 0.03],
        concentration: 9.0,
        logs_ttft: false,
    },
    ModelProfile {
        model_id: "chat-llm",
        median_latency_ms: 2_400.0,
        latency_sigma: 0.30,
        timeout_ms: 30_000.0,
        input_tokens_median: 800.0,
        input_tokens_sigma: 0.5,
        input_elasticity: 0.3,
        output_tokens_median: 250.0,
        output_tokens_sigma: 0.5,
        output_elasticity: 0.4,
        class_prior: &[],
        concentration: 0.0,
        logs_ttft: true,
    },
    ModelProfile {
        model_id: "vision",
        median_latency_ms: 60.0,
        latency_sigma: 0.30,
        timeout_ms: 2_000.0,
        input_tokens_median: 1_024.0,
        input_tokens_sigma: 0.1,
        input_elasticity: 0.5,
        output_tokens_median: 1.0,
        output_tokens_sigma: 0.0,
        output_elasticity: 0.0,
        class_prior: &[0.16, 0.14, 0.12, 0.11, 0.10, 0.09, 0.08, 0.07, 0.07, 0.06],
        concentration: 30.0,
        logs_ttft: false,
    },
];

/// One deployed model version and its share of the total traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deployment {
    /// Index into [`MODELS`].
    pub model: usize,
    /// The `model_version` value.
    pub model_version: &'static str,
    /// The `ab_group` value: `baseline` or `canary`.
    pub ab_group: &'static str,
    /// Share of the fleet's traffic (the shares sum to 1).
    pub share: f64,
}

/// Index of the `recsys` 2.1 canary in [`DEPLOYMENTS`].
pub const RECSYS_CANARY: usize = 1;

/// The deployed versions. Shares are fixed; the total is the `--rate`.
pub const DEPLOYMENTS: [Deployment; 5] = [
    Deployment {
        model: RECSYS,
        model_version: "2.0",
        ab_group: "baseline",
        share: 0.405,
    },
    Deployment {
        model: RECSYS,
        model_version: "2.1",
        ab_group: "canary",
        share: 0.045,
    },
    Deployment {
        model: FRAUD,
        model_version: "1.3",
        ab_group: "baseline",
        share: 0.25,
    },
    Deployment {
        model: CHAT_LLM,
        model_version: "4.0",
        ab_group: "baseline",
        share: 0.10,
    },
    Deployment {
        model: VISION,
        model_version: "3.2",
        ab_group: "baseline",
        share: 0.20,
    },
];

/// The number in the `client_id` of ordinary client `index`: the index
/// itself below 20 000, then shifted past the numbers of the attackers, so
/// that no ordinary client ever shares an id with one (index 20 000 is
/// `c-20040`, index 31 297 is `c-31338`).
pub fn client_number(index: usize) -> usize {
    let mut number = index;
    for (first, count) in RESERVED_CLIENT_NUMBERS {
        if number >= first {
            number += count;
        }
    }
    number
}

/// The `client_id` of ordinary client `index`: `c-` and
/// [`client_number`], at least five digits.
pub fn client_id(index: usize) -> String {
    format!("c-{:05}", client_number(index))
}

/// The stable `client_ip` of ordinary client `index`: a bijection of the
/// index (below 2^24) into `10.0.0.0/8`, so no two clients share an address.
pub fn client_ip(index: usize) -> String {
    let [_, second, third, fourth] = client_ip_octets(index);
    format!("10.{second}.{third}.{fourth}")
}

/// The four octets of [`client_ip`] (the first is always 10).
#[inline]
pub(crate) fn client_ip_octets(index: usize) -> [u8; 4] {
    let mixed = (index as u32)
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(0x0012_3457)
        & 0x00FF_FFFF;
    [10, (mixed >> 16) as u8, (mixed >> 8) as u8, mixed as u8]
}

/// The `source_id` of data source `index`.
pub fn source_id(index: usize) -> String {
    format!("src-{index:02}")
}

/// The daily latency factor at `timestamp_ns` (UTC nanoseconds).
pub fn daily_cycle(timestamp_ns: i64) -> f64 {
    let seconds_of_day = timestamp_ns.rem_euclid(86_400 * 1_000_000_000) as f64 / 1e9;
    let hours = seconds_of_day / 3_600.0;
    let angle = 2.0 * std::f64::consts::PI * (hours - DAILY_CYCLE_PEAK_HOUR) / 24.0;
    1.0 + DAILY_CYCLE_AMPLITUDE * angle.cos()
}

/// Alias table (Vose) for O(1) sampling from a fixed discrete distribution.
#[derive(Debug, Clone)]
pub(crate) struct AliasTable {
    probability: Vec<f64>,
    alias: Vec<u32>,
}

impl AliasTable {
    /// Builds the table; `weights` must be non-empty and positive.
    pub(crate) fn new(weights: &[f64]) -> Self {
        let count = weights.len();
        debug_assert!(count > 0 && count < u32::MAX as usize);
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights
            .iter()
            .map(|weight| weight * count as f64 / total)
            .collect();
        let mut probability = vec![1.0; count];
        let mut alias: Vec<u32> = (0..count as u32).collect();
        let mut small: Vec<usize> = Vec::new();
        let mut large: Vec<usize> = Vec::new();
        for (index, value) in scaled.iter().enumerate() {
            if *value < 1.0 {
                small.push(index);
            } else {
                large.push(index);
            }
        }
        while let (Some(&less), Some(&more)) = (small.last(), large.last()) {
            small.pop();
            probability[less] = scaled[less];
            alias[less] = more as u32;
            scaled[more] -= 1.0 - scaled[less];
            if scaled[more] < 1.0 {
                large.pop();
                small.push(more);
            }
        }
        // Whatever is left has weight 1 up to rounding.
        Self { probability, alias }
    }

    /// Picks an index from one 64-bit random word.
    #[inline]
    pub(crate) fn sample(&self, random: u64) -> usize {
        let column = (((random >> 32) * self.probability.len() as u64) >> 32) as usize;
        let coin = (random & 0xFFFF_FFFF) as f64 * (1.0 / 4_294_967_296.0);
        if coin < self.probability[column] {
            column
        } else {
            self.alias[column] as usize
        }
    }
}

/// Zipf weights `r^-s` for ranks `1..=count`.
pub(crate) fn zipf_weights(count: usize, exponent: f64) -> Vec<f64> {
    (1..=count)
        .map(|rank| (rank as f64).powf(-exponent))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_one_and_every_model_is_deployed() {
        let total: f64 = DEPLOYMENTS.iter().map(|deployment| deployment.share).sum();
        assert!((total - 1.0).abs() < 1e-12);
        for model in 0..MODELS.len() {
            assert!(DEPLOYMENTS
                .iter()
                .any(|deployment| deployment.model == model));
        }
        assert_eq!(DEPLOYMENTS[RECSYS_CANARY].ab_group, "canary");
    }

    #[test]
    fn every_model_keeps_p99_below_two_and_a_half_medians_at_the_daily_peak() {
        for model in &MODELS {
            let peak = (1.0 + DAILY_CYCLE_AMPLITUDE) * model.p99_over_median();
            assert!(peak < 2.5, "{}: {peak}", model.model_id);
            assert!(model.noise_sigma() > 0.1, "{}", model.model_id);
            let prior: f64 = model.class_prior.iter().sum();
            assert!(model.class_prior.is_empty() || (prior - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn client_addresses_are_distinct() {
        let mut addresses: Vec<String> = (0..CLIENT_COUNT).map(client_ip).collect();
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), CLIENT_COUNT);
        assert_eq!(client_id(42), "c-00042");
        assert_eq!(source_id(7), "src-07");
    }

    #[test]
    fn ordinary_client_ids_skip_the_attackers_numbers() {
        assert_eq!(client_id(1_999), "c-01999");
        assert_eq!(client_id(19_999), "c-19999");
        assert_eq!(client_id(20_000), "c-20040");
        assert_eq!(client_id(31_296), "c-31336");
        assert_eq!(client_id(31_297), "c-31338");
        assert_eq!(client_id(MAX_CLIENTS - 1), "c-2000040");
        let attacker = crate::targets::EXTRACTION_CLIENT_ID;
        let mut previous = None;
        for index in 0..40_000 {
            let number = client_number(index);
            assert!(previous.is_none_or(|previous| number > previous));
            previous = Some(number);
            assert!(!(20_000..20_040).contains(&number), "{index} -> {number}");
            assert_ne!(client_id(index), attacker);
        }
        // Addresses stay distinct for a million clients, too.
        let mut addresses: Vec<[u8; 4]> = (0..1_000_000).map(client_ip_octets).collect();
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), 1_000_000);
    }

    #[test]
    fn daily_cycle_peaks_at_fourteen_hundred() {
        let hour = 3_600 * 1_000_000_000_i64;
        assert!((daily_cycle(14 * hour) - 1.2).abs() < 1e-9);
        assert!((daily_cycle(2 * hour) - 0.8).abs() < 1e-9);
        assert!((daily_cycle(8 * hour) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn alias_table_matches_its_weights() {
        let weights = [5.0, 1.0, 3.0, 1.0];
        let table = AliasTable::new(&weights);
        let mut counts = [0_u32; 4];
        let mut state = 0x1234_5678_u64;
        for _ in 0..200_000 {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            counts[table.sample(z ^ (z >> 31))] += 1;
        }
        for (count, weight) in counts.iter().zip(weights) {
            let expected = 200_000.0 * weight / 10.0;
            assert!(
                (*count as f64 - expected).abs() < expected * 0.05,
                "{counts:?}"
            );
        }
    }
}

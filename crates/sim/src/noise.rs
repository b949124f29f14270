//! Benign noise: what honest fleets do that looks odd to a naive detector.
//!
//! Real traffic is not the smooth Zipf fleet of [`crate::fleet`]. A rule
//! pack that is quiet on the smooth fleet can still page every night on a
//! real one, so `--noise` adds the patterns that raised false alerts when
//! the default pack met another company's logs (issue 17). None of them is
//! an incident, so none is labelled:
//!
//! * **A busy QA client** ([`QA_CLIENT_ID`]) at 3 % of the fleet rate
//!   (9 requests/s at 300), almost every input unique, on every model, all
//!   run long. A high distinct-input ratio alone is not extraction.
//! * **A backfill**: ordinary client [`BACKFILL_CLIENT_INDEX`] (`c-00005`)
//!   replays a batch job against `recsys` for one hour in every twelve
//!   ([`BACKFILL_WINDOWS`]), at ten times its own rate, from a small pool of
//!   repeated payloads. Volume alone is not an attack.
//! * **Mobile clients**: every ordinary client whose index is 7 modulo 40
//!   (50 of the default 2,000) calls from a new address almost every time,
//!   always inside its two own carrier networks (`100.64.0.0/13`). Many IPs
//!   are not many *new networks*.
//! * **Blips**: in every hour one minute ([`blip`]) where one model has
//!   15 % errors, or twice its latency, or three times its traffic. One
//!   minute is not an incident.
//! * **New clients** over the day: one joins every [`NEW_CLIENT_INTERVAL_NS`]
//!   (`c-9100000`, `c-9100001`, …, each with its own address), and together
//!   they send 1 % of the fleet rate. A new key is a risk contribution, not
//!   an alert.
//!
//! Everything is derived from the seed and the event time, so a run is
//! still the same bytes for the same arguments.

use crate::fleet::MODELS;

/// The QA client's id: far above every ordinary client number (at most
/// about 2,000,041), so no `--clients` value collides with it.
pub const QA_CLIENT_ID: &str = "c-9000001";
/// The QA client's only address.
pub const QA_CLIENT_IP: &str = "192.168.50.10";
/// The QA client's share of the fleet rate.
pub const QA_RATE_SHARE: f64 = 0.03;
/// Share of the QA client's inputs that are new.
pub const QA_UNIQUE_SHARE: f64 = 0.95;

/// The ordinary client that runs backfills (`c-00005` with default clients;
/// the busiest client when a run has fewer than six).
pub const BACKFILL_CLIENT_INDEX: usize = 5;
/// The backfill's rate on top of the client's own, as a multiple of it.
pub const BACKFILL_EXTRA_FACTOR: f64 = 9.0;
/// Distinct payloads the backfill replays.
pub const BACKFILL_PAYLOADS: u64 = 64;
/// Backfills run over `[start, end)` hours of every 12-hour block of the run.
pub const BACKFILL_WINDOWS: (i64, i64) = (3, 4);
const BACKFILL_BLOCK_HOURS: i64 = 12;

/// Ordinary clients with `index % MOBILE_MODULUS == MOBILE_REMAINDER` are
/// mobile.
pub const MOBILE_MODULUS: usize = 40;
/// See [`MOBILE_MODULUS`].
pub const MOBILE_REMAINDER: usize = 7;

/// A new client joins this often (one every 4 minutes, 360 a day).
pub const NEW_CLIENT_INTERVAL_NS: i64 = 240 * 1_000_000_000;
/// The number in the first new client's id.
pub const FIRST_NEW_CLIENT_NUMBER: u64 = 9_100_000;
/// Share of the fleet rate that the new clients send together.
pub const NEW_CLIENT_RATE_SHARE: f64 = 0.01;

/// Error rate of an error blip.
pub const BLIP_ERROR_RATE: f64 = 0.15;
/// Latency factor of a latency blip.
pub const BLIP_LATENCY_FACTOR: f64 = 2.0;
/// Extra traffic of a traffic blip, as a multiple of the model's own.
pub const BLIP_EXTRA_TRAFFIC: f64 = 2.0;

const HOUR_NS: i64 = 3_600 * 1_000_000_000;
const MINUTE_NS: i64 = 60 * 1_000_000_000;

/// What a blip does to its model for one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlipKind {
    /// [`BLIP_ERROR_RATE`] errors.
    Errors,
    /// Latency × [`BLIP_LATENCY_FACTOR`].
    Latency,
    /// Traffic × (1 + [`BLIP_EXTRA_TRAFFIC`]).
    Traffic,
}

/// One blip: a model (index into [`MODELS`]) and what happens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blip {
    /// Index into [`MODELS`].
    pub model: usize,
    /// What happens.
    pub kind: BlipKind,
}

/// The blip during the minute that holds `timestamp_ns`, if that minute is
/// its hour's blip minute (one of minutes 5 to 54, from the seed and the
/// hour since the epoch).
pub fn blip(seed: u64, timestamp_ns: i64) -> Option<Blip> {
    let hour = timestamp_ns.div_euclid(HOUR_NS);
    let minute = timestamp_ns.rem_euclid(HOUR_NS) / MINUTE_NS;
    let draw = crate::generate::mix64(seed ^ 0xB11B_0000_0000 ^ hour as u64);
    if minute != 5 + (draw % 50) as i64 {
        return None;
    }
    let kind = match (draw >> 16) % 3 {
        0 => BlipKind::Errors,
        1 => BlipKind::Latency,
        _ => BlipKind::Traffic,
    };
    Some(Blip {
        model: ((draw >> 32) % MODELS.len() as u64) as usize,
        kind,
    })
}

/// Whether a backfill runs at `timestamp_ns`, in a run that started at
/// `start_ns`.
pub fn backfill_running(start_ns: i64, timestamp_ns: i64) -> bool {
    let hour_of_block = (timestamp_ns - start_ns).div_euclid(HOUR_NS) % BACKFILL_BLOCK_HOURS;
    (BACKFILL_WINDOWS.0..BACKFILL_WINDOWS.1).contains(&hour_of_block)
}

/// Whether ordinary client `index` is mobile.
pub fn is_mobile(index: usize) -> bool {
    index % MOBILE_MODULUS == MOBILE_REMAINDER
}

/// The address of mobile client `index` for one request, from a random
/// draw: one of its two carrier networks (`100.64.0.0/13`, fixed per
/// client), any host in it.
pub fn mobile_ip_octets(index: usize, random: u64) -> [u8; 4] {
    let network = (index / MOBILE_MODULUS + (random & 1) as usize * 3) % 8;
    [
        100,
        64 + network as u8,
        (random >> 8) as u8,
        (random >> 16) as u8,
    ]
}

/// How many new clients have joined by `timestamp_ns` (at least one, so the
/// stream always has a client to pick).
pub fn new_clients_joined(start_ns: i64, timestamp_ns: i64) -> u64 {
    ((timestamp_ns - start_ns).max(0) / NEW_CLIENT_INTERVAL_NS) as u64 + 1
}

/// The address of new client `ordinal`: `172.16.0.0/12`, one per client.
pub fn new_client_ip_octets(ordinal: u64) -> [u8; 4] {
    [
        172,
        16 + ((ordinal >> 16) & 15) as u8,
        (ordinal >> 8) as u8,
        ordinal as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hour_has_exactly_one_blip_minute() {
        for hour in 0..48_i64 {
            let minutes = (0..60)
                .filter(|minute| blip(42, hour * HOUR_NS + minute * MINUTE_NS + 1).is_some())
                .count();
            assert_eq!(minutes, 1, "hour {hour}");
        }
    }

    #[test]
    fn blips_vary_in_kind_and_model_over_a_day() {
        let blips: Vec<Blip> = (0..24 * 60)
            .filter_map(|minute| blip(7, minute * MINUTE_NS))
            .collect();
        assert_eq!(blips.len(), 24);
        for kind in [BlipKind::Errors, BlipKind::Latency, BlipKind::Traffic] {
            assert!(blips.iter().any(|blip| blip.kind == kind), "{kind:?}");
        }
        assert!(blips.iter().any(|blip| blip.model != blips[0].model));
    }

    #[test]
    fn backfills_run_one_hour_in_twelve() {
        let start = 1_000 * HOUR_NS;
        let running = (0..24 * 60)
            .filter(|minute| backfill_running(start, start + minute * MINUTE_NS))
            .count();
        assert_eq!(running, 2 * 60);
        assert!(!backfill_running(start, start + 3 * HOUR_NS - 1));
        assert!(backfill_running(start, start + 3 * HOUR_NS));
        assert!(!backfill_running(start, start + 4 * HOUR_NS));
    }

    #[test]
    fn a_mobile_client_stays_within_its_two_networks() {
        let index = 47;
        assert!(is_mobile(index));
        let mut networks: Vec<u8> = (0..1_000_u64)
            .map(|draw| mobile_ip_octets(index, crate::generate::mix64(draw))[1])
            .collect();
        networks.sort_unstable();
        networks.dedup();
        assert_eq!(networks.len(), 2);
        assert!(networks.iter().all(|second| (64..72).contains(second)));
    }

    #[test]
    fn new_clients_join_one_every_four_minutes() {
        assert_eq!(new_clients_joined(0, 0), 1);
        assert_eq!(new_clients_joined(0, NEW_CLIENT_INTERVAL_NS - 1), 1);
        assert_eq!(new_clients_joined(0, 24 * HOUR_NS - 1), 360);
        assert_ne!(new_client_ip_octets(1), new_client_ip_octets(257));
    }
}

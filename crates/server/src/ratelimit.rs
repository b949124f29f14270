//! Per-token rate limits on ingest.
//!
//! A token may carry a [`RateLimit`] (`inferwatch token create
//! --rate-limit events=5000,requests=20`); tokens without one get the
//! node's default (`serve --rate-limit`), and with neither nothing is
//! limited. Each token has its own GCRA buckets (`governor`), one for
//! events and one for requests. A request over either limit is refused as a
//! whole before anything of it is queued, with the wait until it would fit
//! as `Retry-After`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use serde::{Deserialize, Serialize};

use crate::ServerError;

/// Events and/or requests per second, each with a burst (the most taken at
/// once; the rate when not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Events per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    /// Most events at once (at least one request's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_burst: Option<u32>,
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// Most requests at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_burst: Option<u32>,
}

impl std::str::FromStr for RateLimit {
    type Err = ServerError;

    /// `events=N[,events_burst=N][,requests=N][,requests_burst=N]`, rates
    /// per second.
    fn from_str(text: &str) -> Result<RateLimit, ServerError> {
        let mut limit = RateLimit::default();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                ServerError::Config(format!("rate limit '{text}': '{part}' is not key=value"))
            })?;
            let number = value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&number| number > 0)
                .ok_or_else(|| {
                    ServerError::Config(format!(
                        "rate limit '{text}': {key} must be a whole number above zero"
                    ))
                })?;
            let slot = match key.trim() {
                "events" => &mut limit.events_per_second,
                "events_burst" => &mut limit.events_burst,
                "requests" => &mut limit.requests_per_second,
                "requests_burst" => &mut limit.requests_burst,
                other => {
                    return Err(ServerError::Config(format!(
                        "rate limit '{text}': unknown key '{other}' (events, events_burst, requests, requests_burst)"
                    )))
                }
            };
            *slot = Some(number);
        }
        if limit.events_per_second.is_none() && limit.requests_per_second.is_none() {
            return Err(ServerError::Config(format!(
                "rate limit '{text}': give events=N and/or requests=N (per second)"
            )));
        }
        if limit.events_burst.is_some() && limit.events_per_second.is_none()
            || limit.requests_burst.is_some() && limit.requests_per_second.is_none()
        {
            return Err(ServerError::Config(format!(
                "rate limit '{text}': a burst needs its rate"
            )));
        }
        Ok(limit)
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            ("events", self.events_per_second),
            ("events_burst", self.events_burst),
            ("requests", self.requests_per_second),
            ("requests_burst", self.requests_burst),
        ];
        let text: Vec<String> = parts
            .iter()
            .filter_map(|(key, value)| value.map(|value| format!("{key}={value}")))
            .collect();
        formatter.write_str(&text.join(","))
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// Whole seconds until it would fit (at least 1).
    pub retry_after: u64,
    /// For the client.
    pub reason: String,
}

struct Buckets {
    limit: RateLimit,
    events: Option<DefaultDirectRateLimiter>,
    requests: Option<DefaultDirectRateLimiter>,
}

fn bucket(rate: Option<u32>, burst: Option<u32>) -> Option<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(rate?)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Some(DefaultDirectRateLimiter::direct(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// The node's buckets, one set per token id.
#[derive(Default)]
pub struct RateLimiter {
    default: Option<RateLimit>,
    buckets: Mutex<HashMap<String, Arc<Buckets>>>,
}

impl RateLimiter {
    /// Limits tokens without their own limit to `default`.
    pub fn new(default: Option<RateLimit>) -> RateLimiter {
        RateLimiter {
            default,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `events` events from `key`'s buckets (`own`
    /// is the token's limit, over the node's default), or says how long to
    /// wait. Nothing is taken from the events bucket when the request
    /// bucket refuses.
    pub fn admit(&self, key: &str, own: Option<RateLimit>, events: u64) -> Result<(), Throttled> {
        let Some(limit) = own.or(self.default) else {
            return Ok(());
        };
        let buckets = {
            let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            match all.get(key) {
                // A changed limit (the tokens file was edited) starts afresh.
                Some(buckets) if buckets.limit == limit => buckets.clone(),
                _ => {
                    let buckets = Arc::new(Buckets {
                        limit,
                        events: bucket(limit.events_per_second, limit.events_burst),
                        requests: bucket(limit.requests_per_second, limit.requests_burst),
                    });
                    all.insert(key.to_string(), buckets.clone());
                    buckets
                }
            }
        };
        let clock = DefaultClock::default();
        let wait = |duration: Duration| duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        if let Some(requests) = &buckets.requests {
            if let Err(not_until) = requests.check() {
                return Err(Throttled {
                    retry_after: wait(not_until.wait_time_from(clock.now())).max(1),
                    reason: format!(
                        "rate limit: over {} requests per second for this token; retry later",
                        limit.requests_per_second.unwrap_or_default()
                    ),
                });
            }
        }
        if let Some(bucket) = &buckets.events {
            let n = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX));
            let Some(n) = n else { return Ok(()) };
            match bucket.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    return Err(Throttled {
                        retry_after: wait(not_until.wait_time_from(clock.now())).max(1),
                        reason: format!(
                            "rate limit: over {} events per second for this token; retry later",
                            limit.events_per_second.unwrap_or_default()
                        ),
                    })
                }
                Err(capacity) => {
                    // Retrying cannot help; the answer says so.
                    return Err(Throttled {
                        retry_after: 1,
                        reason: format!(
                            "rate limit: a request of {events} events is more than this token's burst of {} events; send smaller requests",
                            capacity.0
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_print_and_refuse_nonsense() {
        let limit: RateLimit = "events=5000,events_burst=20000,requests=10"
            .parse()
            .unwrap();
        assert_eq!(limit.events_per_second, Some(5000));
        assert_eq!(limit.events_burst, Some(20000));
        assert_eq!(limit.requests_per_second, Some(10));
        assert_eq!(limit.requests_burst, None);
        assert_eq!(limit.to_string().parse::<RateLimit>().unwrap(), limit);
        for bad in [
            "",
            "events=0",
            "events=lots",
            "bytes=5",
            "events_burst=5",
            "events",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_past_its_burst_waits_and_others_do_not() {
        let limiter = RateLimiter::new(None);
        let own = Some("events=10,events_burst=100".parse().unwrap());
        assert!(limiter.admit("a", own, 60).is_ok());
        let refused = limiter.admit("a", own, 60).unwrap_err();
        assert!(
            refused.retry_after >= 1 && refused.retry_after <= 6,
            "{refused:?}"
        );
        assert!(limiter.admit("b", own, 100).is_ok(), "b has its own bucket");
        assert!(
            limiter.admit("c", None, 1_000_000).is_ok(),
            "no limit at all"
        );
        let too_big = limiter.admit("a", own, 101).unwrap_err();
        assert!(too_big.reason.contains("burst"), "{too_big:?}");
        let node = RateLimiter::new(Some("requests=1".parse().unwrap()));
        assert!(node.admit("a", None, 1).is_ok());
        assert!(node.admit("a", None, 1).is_err(), "the default applies");
    }
}

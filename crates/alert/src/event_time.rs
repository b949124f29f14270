//! Event time as the noise-control stages use it: UTC nanoseconds inside,
//! RFC 3339 text in every file and JSON shape.

use std::time::Duration;

use inferwatch_core::{format_timestamp, parse_timestamp_text, Alert, AlertState};

use crate::AlertError;

/// Reads an RFC 3339 (or epoch) timestamp into UTC nanoseconds.
pub fn parse_event_time(text: &str) -> Result<i64, AlertError> {
    parse_timestamp_text(text)
        .map_err(|_| AlertError::Invalid(format!("invalid timestamp '{text}', expected RFC 3339")))
}

/// Formats UTC nanoseconds as RFC 3339.
pub fn format_event_time(nanos: i64) -> String {
    format_timestamp(nanos)
}

/// The event time of an alert transition: when it fired (or went pending),
/// or when it resolved.
pub fn transition_time(alert: &Alert) -> Result<i64, AlertError> {
    let text = match (alert.state, &alert.ends_at) {
        (AlertState::Resolved, Some(ends_at)) => ends_at,
        _ => &alert.starts_at,
    };
    parse_event_time(text).map_err(|_| {
        AlertError::Invalid(format!(
            "alert {} ({}): invalid timestamp '{text}', expected RFC 3339",
            alert.alert_id, alert.rule_id
        ))
    })
}

/// A config duration in event-time nanoseconds (saturating; durations come
/// from `parse_duration`, which caps them at `i64::MAX` nanoseconds).
pub fn duration_nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// Serde for an `i64` event time written as RFC 3339.
pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(nanos: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_event_time(*nanos))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_event_time(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for an optional `i64` event time written as RFC 3339 or null.
pub(crate) mod rfc3339_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        nanos: &Option<i64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match nanos {
            Some(nanos) => serializer.serialize_str(&super::format_event_time(*nanos)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => super::parse_event_time(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Serde for a clock reading: RFC 3339, or null for "no event seen yet"
/// (`i64::MIN`).
pub(crate) mod clock_reading {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(nanos: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        if *nanos == i64::MIN {
            serializer.serialize_none()
        } else {
            serializer.serialize_str(&super::format_event_time(*nanos))
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => super::parse_event_time(&text).map_err(serde::de::Error::custom),
            None => Ok(i64::MIN),
        }
    }
}

//! The blocking HTTP client every HTTP action shares, and how its answers
//! map to retry hints.

use std::time::Duration;

use ureq::http;

use crate::delivery::{DeliveryFailure, Retry};

/// Default time a whole request (connect, send, receive) may take.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of an error response body is kept for messages.
const ERROR_BODY_LIMIT: u64 = 512;

/// A receiver's answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body_excerpt: String,
}

/// A ureq agent with a whole-request timeout that returns every status as a
/// reply (not an error) and follows no redirect: a webhook that redirects a
/// POST is misconfigured, and following it would turn the POST into a GET.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    agent: ureq::Agent,
}

impl HttpClient {
    pub(crate) fn new(timeout: Duration) -> HttpClient {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("inferwatch/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpClient {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends one request. Transport failures (refused, timed out, TLS) come
    /// back as transient failures; a malformed request as a permanent one.
    pub(crate) fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Reply, DeliveryFailure> {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder.body(body).map_err(|error| {
            DeliveryFailure::permanent(format!("invalid request to {url}: {error}"))
        })?;
        let mut response = self
            .agent
            .run(request)
            .map_err(|error| transport_failure(url, error))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let body_excerpt = if (200..300).contains(&status) {
            String::new()
        } else {
            // A best-effort excerpt for the failure message; a body that
            // can't be read doesn't change the outcome.
            response
                .body_mut()
                .with_config()
                .limit(ERROR_BODY_LIMIT)
                .read_to_string()
                .unwrap_or_default()
        };
        Ok(Reply {
            status,
            retry_after,
            body_excerpt,
        })
    }
}

fn transport_failure(url: &str, error: ureq::Error) -> DeliveryFailure {
    let permanent = matches!(
        error,
        ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::RequireHttpsOnly(_)
    );
    let message = format!("request to {url} failed: {error}");
    if permanent {
        DeliveryFailure::permanent(message)
    } else {
        DeliveryFailure::transient(message)
    }
}

/// Maps a reply to success, or to a failure with its retry hint:
/// 2xx succeeds; 408, 425, 429 and 5xx are worth retrying (after
/// `Retry-After` when given); anything else is the request's fault.
pub(crate) fn check_status(receiver: &str, reply: &Reply) -> Result<u16, DeliveryFailure> {
    let status = reply.status;
    if (200..300).contains(&status) {
        return Ok(status);
    }
    let retryable = matches!(status, 408 | 425 | 429) || status >= 500;
    let retry = match (retryable, reply.retry_after) {
        (false, _) => Retry::Never,
        (true, Some(delay)) => Retry::After(delay),
        (true, None) => Retry::Backoff,
    };
    let excerpt = reply.body_excerpt.trim();
    let message = if excerpt.is_empty() {
        format!("HTTP {status} from {receiver}")
    } else {
        format!("HTTP {status} from {receiver}: {excerpt}")
    };
    Err(DeliveryFailure {
        message,
        retry,
        status: Some(status),
        remediation: None,
    })
}

/// `Retry-After` is either delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delay = date.signed_duration_since(chrono::Utc::now());
    Some(delay.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let delay = parse_retry_after(&in_an_hour).unwrap();
        assert!(delay > Duration::from_secs(3500) && delay <= Duration::from_secs(3600));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn statuses_map_to_retry_hints() {
        let reply = |status, retry_after| Reply {
            status,
            retry_after,
            body_excerpt: String::new(),
        };
        assert_eq!(check_status("r", &reply(204, None)), Ok(204));
        assert_eq!(
            check_status("r", &reply(503, None)).unwrap_err().retry,
            Retry::Backoff
        );
        assert_eq!(
            check_status("r", &reply(429, Some(Duration::from_secs(7))))
                .unwrap_err()
                .retry,
            Retry::After(Duration::from_secs(7))
        );
        let bad_request = check_status("r", &reply(400, Some(Duration::from_secs(7)))).unwrap_err();
        assert_eq!(bad_request.retry, Retry::Never);
        assert_eq!(bad_request.message, "HTTP 400 from r");
    }

    #[test]
    fn a_closed_port_is_a_transient_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = HttpClient::new(Duration::from_secs(5));
        let failure = client
            .send(
                "POST",
                &format!("http://127.0.0.1:{port}/"),
                &[],
                b"{}".to_vec(),
            )
            .unwrap_err();
        assert_eq!(failure.retry, Retry::Backoff, "{}", failure.message);
        let bad_url = client
            .send("POST", "not a url", &[], Vec::new())
            .unwrap_err();
        assert_eq!(bad_url.retry, Retry::Never, "{}", bad_url.message);
    }
}

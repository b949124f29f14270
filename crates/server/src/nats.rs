//! The NATS JetStream input: one more way in, beside HTTP.
//!
//! A durable pull consumer reads a JetStream stream; each message's payload
//! is one or more NDJSON lines and goes through the same path as
//! `POST /api/v1/ingest/{stream}` (same decoder and mapping, same queue,
//! same dead letters, metrics under protocol `nats`). A message is acked
//! only once the WAL record holding its events is durable. Its bad lines go
//! to the dead letters and its good ones are kept; a message with no good
//! line is acked too, so it is not redelivered forever. When the store's
//! queue is full (or a write fails) the message is nak'ed with a delay and
//! JetStream redelivers it: nothing is dropped.
//!
//! **At least once.** A kill between the WAL fsync and the ack reaching the
//! server leaves the message unacked: JetStream redelivers it after
//! `ack_wait` and its events are stored again. Duplicates are possible
//! (the window is one fsync-to-ack round trip per message in flight);
//! losses are not.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use futures::StreamExt;

use crate::http::{store_lines, AppState, Failure};
use crate::ServerError;

/// Where a message's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Always this inferwatch stream.
    Fixed(String),
    /// The subject's last token (`logs.gateway` → `gateway`).
    LastToken,
}

/// The value of `nats_into` that picks [`Target::LastToken`].
pub const LAST_TOKEN: &str = "@last-token";

impl Target {
    /// `@last-token`, or a stream name.
    pub fn parse(text: &str) -> Result<Target, ServerError> {
        if text == LAST_TOKEN {
            return Ok(Target::LastToken);
        }
        if text.is_empty()
            || !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ServerError::Config(format!(
                "nats_into '{text}': a stream name (letters, digits, '_', '-') or {LAST_TOKEN}"
            )));
        }
        Ok(Target::Fixed(text.to_string()))
    }

    /// The stream for a message on `subject`, if it names a valid one.
    pub fn stream_for(&self, subject: &str) -> Option<String> {
        match self {
            Target::Fixed(name) => Some(name.clone()),
            Target::LastToken => {
                let token = subject.rsplit('.').next().unwrap_or_default();
                let valid = !token.is_empty()
                    && token
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                valid.then(|| token.to_string())
            }
        }
    }
}

/// The NATS input's settings.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream to consume (created over `subject` if missing).
    pub stream: String,
    /// Subject filter of the consumer (and the new stream's subject).
    pub subject: String,
    /// Durable consumer name: a restart resumes where the last run acked.
    pub consumer: String,
    /// Which inferwatch stream the events go to.
    pub into: Target,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Messages handled at once (waiting for durability).
    pub in_flight: usize,
}

/// How long a nak'ed message waits before JetStream redelivers it.
const NAK_DELAY: Duration = Duration::from_secs(1);

/// Connects and binds the consumer: errors here fail the node's start.
pub async fn connect(options: &NatsOptions) -> Result<consumer::PullConsumer, ServerError> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        ServerError::Config(format!("nats {}: {what}: {error}", options.url))
    };
    let client = async_nats::connect(&options.url)
        .await
        .map_err(|e| failed("connecting", &e))?;
    let context = jetstream::new(client);
    let stream = context
        .get_or_create_stream(jetstream::stream::Config {
            name: options.stream.clone(),
            subjects: vec![options.subject.clone()],
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&format!("stream '{}'", options.stream), &e))?;
    stream
        .get_or_create_consumer(
            &options.consumer,
            consumer::pull::Config {
                durable_name: Some(options.consumer.clone()),
                filter_subject: options.subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                max_ack_pending: options.in_flight.max(1) as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed(&format!("consumer '{}'", options.consumer), &e))
}

/// Consumes until the node stops (the task is aborted); each message is
/// acked once its events are durable.
pub async fn run(consumer: consumer::PullConsumer, state: Arc<AppState>, options: NatsOptions) {
    let into = &options.into;
    loop {
        match consumer.messages().await {
            Ok(messages) => {
                messages
                    .for_each_concurrent(options.in_flight.max(1), |message| {
                        let state = state.clone();
                        async move {
                            match message {
                                Ok(message) => handle(&state, into, message).await,
                                // Reconnects are the client's business; say so and go on.
                                Err(error) => eprintln!("inferwatch serve: nats: {error}"),
                            }
                        }
                    })
                    .await;
                eprintln!(
                    "inferwatch serve: nats {}: message stream ended; pulling again",
                    options.url
                );
            }
            Err(error) => eprintln!("inferwatch serve: nats {}: consuming: {error}", options.url),
        }
        tokio::time::sleep(NAK_DELAY).await;
    }
}

async fn handle(state: &AppState, into: &Target, message: jetstream::Message) {
    let subject = message.subject.to_string();
    let kind = match into.stream_for(&subject) {
        None => {
            eprintln!(
                "inferwatch serve: nats: no valid stream name in subject '{subject}'; message terminated"
            );
            AckKind::Term
        }
        Some(stream) => match store_lines(state, "nats", &stream, &message.payload).await {
            Ok(_) => AckKind::Ack,
            Err(Failure::Busy | Failure::Throttled(_)) => AckKind::Nak(Some(NAK_DELAY)),
            Err(Failure::Store(reason)) => {
                eprintln!("inferwatch serve: nats: not stored (redelivered later): {reason}");
                AckKind::Nak(Some(NAK_DELAY))
            }
            Err(Failure::Reserved(reason)) => {
                eprintln!("inferwatch serve: nats: {reason}; message terminated");
                AckKind::Term
            }
        },
    };
    // The ack waits for the server's confirmation, which narrows the
    // window in which a crash leaves a stored message unacked.
    let acked = match kind {
        AckKind::Ack => message.double_ack().await,
        kind => message.ack_with(kind).await,
    };
    if let Err(error) = acked {
        eprintln!("inferwatch serve: nats: ack: {error} (the message may come again)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_a_fixed_stream_or_the_subjects_last_token() {
        assert_eq!(
            Target::parse("inference").unwrap(),
            Target::Fixed("inference".into())
        );
        let last = Target::parse(LAST_TOKEN).unwrap();
        assert_eq!(last.stream_for("logs.gateway"), Some("gateway".into()));
        assert_eq!(last.stream_for("gateway"), Some("gateway".into()));
        assert_eq!(last.stream_for("logs.*"), None);
        assert!(Target::parse("a.b").is_err());
        assert!(Target::parse("").is_err());
    }
}

//! The `serve` configuration file (YAML, `examples/serve.yaml`) and its
//! `INFERWATCH_*` environment overrides.
//!
//! Every key is optional and has the flag of the same name (`max_future`
//! is `--max-future`). Precedence, highest first: a flag given on the
//! command line, then an `INFERWATCH_<KEY>` environment variable
//! (`INFERWATCH_STORE_<KEY>` for the `store:` keys), then the file, then
//! the flag's default. Unknown keys are refused, and errors name the file,
//! line and column (or the variable). Relative paths in the file are
//! relative to the file; in a variable, to the working directory.
//!
//! The command-line side (which flags were given) is the CLI's business;
//! this module reads the file and the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{from_yaml_text, StoreConfig};
use crate::ServerError;

/// The prefix of the environment overrides.
pub const ENV_PREFIX: &str = "INFERWATCH_";

/// The `serve` configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Data directory.
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// HTTP listen address (turns the node on).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Postgres wire address, or `off`.
    #[serde(default)]
    pub pg: Option<String>,
    /// PEM certificate chain: serve HTTPS only (with `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Rules directory.
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// SLOs (file or directory) evaluated beside the rules.
    #[serde(default)]
    pub slos: Option<PathBuf>,
    /// Sigma correlations (file or directory) over the rules' alerts and
    /// the streams sent to the node.
    #[serde(default)]
    pub correlations: Option<PathBuf>,
    /// Field mapping for the inference stream.
    #[serde(default)]
    pub mapping: Option<PathBuf>,
    /// Alert transitions are appended here instead of printed.
    #[serde(default)]
    pub alerts_file: Option<PathBuf>,
    /// Actions file.
    #[serde(default)]
    pub actions: Option<PathBuf>,
    /// Notification settings.
    #[serde(default)]
    pub notify: Option<PathBuf>,
    /// Silences in force from the start.
    #[serde(default)]
    pub silences: Option<PathBuf>,
    /// Ingest rate limit of tokens without their own, e.g.
    /// `events=50000,requests=100`.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Let `command` actions run programs.
    #[serde(default)]
    pub allow_commands: Option<bool>,
    /// Accept requests without tokens.
    #[serde(default)]
    pub open: Option<bool>,
    /// Requests waiting for the store before 429s.
    #[serde(default)]
    pub queue: Option<usize>,
    /// The Elasticsearch version `GET /` reports.
    #[serde(default)]
    pub elasticsearch_version: Option<String>,
    /// Largest request body as sent, e.g. `32MB`.
    #[serde(default)]
    pub max_request_size: Option<String>,
    /// Largest request body decompressed, e.g. `128MB`.
    #[serde(default)]
    pub max_decompressed_size: Option<String>,
    /// How far ahead of the agreed clock an event may be, e.g. `2m`.
    #[serde(default)]
    pub max_future: Option<String>,
    /// How late a side-stream row may arrive and still be correlated, e.g. `5m`.
    #[serde(default)]
    pub correlation_lateness: Option<String>,
    /// Heartbeats after this much silence, or `off`.
    #[serde(default)]
    pub idle_after: Option<String>,
    /// Longest a REST query may run.
    #[serde(default)]
    pub query_timeout: Option<String>,
    /// Most rows a REST query returns.
    #[serde(default)]
    pub query_max_rows: Option<usize>,
    /// At shutdown, how long to wait for deliveries in flight.
    #[serde(default)]
    pub delivery_grace: Option<String>,
    /// This node's writer id in segment names (nodes sharing one data
    /// directory each need their own).
    #[serde(default)]
    pub node_id: Option<String>,
    /// NATS server URL: consume JetStream as one more input.
    #[serde(default)]
    pub nats_url: Option<String>,
    /// The JetStream stream to consume.
    #[serde(default)]
    pub nats_stream: Option<String>,
    /// The consumer's subject filter.
    #[serde(default)]
    pub nats_subject: Option<String>,
    /// The durable consumer's name.
    #[serde(default)]
    pub nats_consumer: Option<String>,
    /// The inferwatch stream events go to, or `@last-token`.
    #[serde(default)]
    pub nats_into: Option<String>,
    /// How long JetStream waits for an ack before redelivering, e.g. `30s`.
    #[serde(default)]
    pub nats_ack_wait: Option<String>,
    /// Store settings.
    #[serde(default)]
    pub store: StoreConfig,
}

impl ServeConfig {
    /// Reads a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<ServeConfig, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|error| ServerError::io(path, error))?;
        let mut config: ServeConfig = from_yaml_text(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |field: &mut Option<PathBuf>| {
            if let Some(relative) = field.as_ref().filter(|p| p.is_relative()) {
                *field = Some(base.join(relative));
            }
        };
        resolve(&mut config.data);
        resolve(&mut config.rules);
        resolve(&mut config.slos);
        resolve(&mut config.correlations);
        resolve(&mut config.mapping);
        resolve(&mut config.alerts_file);
        resolve(&mut config.actions);
        resolve(&mut config.tls_cert);
        resolve(&mut config.tls_key);
        resolve(&mut config.notify);
        resolve(&mut config.silences);
        Ok(config)
    }

    /// Applies the `INFERWATCH_*` overrides `variable` gives (normally
    /// `std::env::var`); returns the names of those applied. A value that
    /// does not parse is an error naming the variable.
    pub fn apply_env(
        &mut self,
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, ServerError> {
        let mut applied = Vec::new();
        let mut take = |key: &str| -> Option<(String, String)> {
            let name = format!("{ENV_PREFIX}{key}");
            let value = variable(&name)?;
            applied.push(name.clone());
            Some((name, value))
        };
        fn parsed<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ServerError>
        where
            T::Err: std::fmt::Display,
        {
            value
                .trim()
                .parse()
                .map_err(|error| ServerError::Config(format!("{name}='{value}': {error}")))
        }
        // One line per key: text keys take the value as is.
        macro_rules! text {
            ($field:expr, $key:literal) => {
                if let Some((_, value)) = take($key) {
                    $field = Some(value.into());
                }
            };
        }
        macro_rules! typed {
            ($field:expr, $key:literal) => {
                if let Some((name, value)) = take($key) {
                    $field = Some(parsed(&name, &value)?);
                }
            };
        }
        text!(self.data, "DATA");
        typed!(self.listen, "LISTEN");
        text!(self.pg, "PG");
        text!(self.tls_cert, "TLS_CERT");
        text!(self.tls_key, "TLS_KEY");
        text!(self.rules, "RULES");
        text!(self.slos, "SLOS");
        text!(self.correlations, "CORRELATIONS");
        text!(self.mapping, "MAPPING");
        text!(self.alerts_file, "ALERTS_FILE");
        text!(self.actions, "ACTIONS");
        text!(self.notify, "NOTIFY");
        text!(self.silences, "SILENCES");
        text!(self.rate_limit, "RATE_LIMIT");
        typed!(self.allow_commands, "ALLOW_COMMANDS");
        typed!(self.open, "OPEN");
        typed!(self.queue, "QUEUE");
        text!(self.elasticsearch_version, "ELASTICSEARCH_VERSION");
        text!(self.max_request_size, "MAX_REQUEST_SIZE");
        text!(self.max_decompressed_size, "MAX_DECOMPRESSED_SIZE");
        text!(self.max_future, "MAX_FUTURE");
        text!(self.correlation_lateness, "CORRELATION_LATENESS");
        text!(self.idle_after, "IDLE_AFTER");
        text!(self.query_timeout, "QUERY_TIMEOUT");
        typed!(self.query_max_rows, "QUERY_MAX_ROWS");
        text!(self.delivery_grace, "DELIVERY_GRACE");
        text!(self.node_id, "NODE_ID");
        text!(self.nats_url, "NATS_URL");
        text!(self.nats_stream, "NATS_STREAM");
        text!(self.nats_subject, "NATS_SUBJECT");
        text!(self.nats_consumer, "NATS_CONSUMER");
        text!(self.nats_into, "NATS_INTO");
        text!(self.nats_ack_wait, "NATS_ACK_WAIT");
        text!(self.store.fsync, "STORE_FSYNC");
        typed!(self.store.flush_rows, "STORE_FLUSH_ROWS");
        text!(self.store.flush_interval, "STORE_FLUSH_INTERVAL");
        text!(self.store.retention_age, "STORE_RETENTION_AGE");
        text!(self.store.retention_size, "STORE_RETENTION_SIZE");
        Ok(applied)
    }

    /// The Postgres listener the `pg` key asks for: `Some(None)` for `off`.
    pub fn postgres(&self) -> Result<Option<Option<SocketAddr>>, ServerError> {
        match self.pg.as_deref().map(str::trim) {
            None => Ok(None),
            Some("off") => Ok(Some(None)),
            Some(address) => address
                .parse()
                .map(|address| Some(Some(address)))
                .map_err(|error| {
                    ServerError::Config(format!(
                        "pg: '{address}' is not an address or off: {error}"
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_example_parses_with_paths_next_to_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/serve.yaml");
        let config = ServeConfig::load(&path).unwrap();
        let examples = path.parent().unwrap();
        assert_eq!(
            config.data.as_deref(),
            Some(examples.join("../demo-data").as_path())
        );
        assert_eq!(
            config.rules.as_deref(),
            Some(examples.join("../rules").as_path())
        );
        assert_eq!(config.listen, Some("127.0.0.1:9200".parse().unwrap()));
        assert_eq!(config.postgres().unwrap(), Some(None));
        assert_eq!(config.store.fsync.as_deref(), Some("interval_ms=100"));
        assert_eq!(config.queue, Some(64));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(&path, "data: d\nstore:\n  fsinc: always\n").unwrap();
        let message = ServeConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains("serve.yaml:3:"), "{message}");
        assert!(message.contains("fsinc"), "{message}");
        std::fs::write(&path, "data: d\nqueue: lots\n").unwrap();
        let message = ServeConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains("serve.yaml:2:"), "{message}");
    }

    #[test]
    fn environment_variables_override_the_file_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(&path, "data: d\nqueue: 8\nstore:\n  flush_rows: 10\n").unwrap();
        let mut config = ServeConfig::load(&path).unwrap();
        let environment = |name: &str| match name {
            "INFERWATCH_QUEUE" => Some("32".to_string()),
            "INFERWATCH_LISTEN" => Some("127.0.0.1:0".to_string()),
            "INFERWATCH_STORE_FSYNC" => Some("always".to_string()),
            "INFERWATCH_NATS_URL" => Some("nats://127.0.0.1:4222".to_string()),
            "INFERWATCH_NODE_ID" => Some("node-b".to_string()),
            _ => None,
        };
        let applied = config.apply_env(environment).unwrap();
        assert_eq!(applied.len(), 5, "{applied:?}");
        assert_eq!(config.nats_url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(config.node_id.as_deref(), Some("node-b"));
        assert_eq!(config.queue, Some(32));
        assert_eq!(config.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(config.store.fsync.as_deref(), Some("always"));
        assert_eq!(config.store.flush_rows, Some(10), "the file's value stays");
        assert_eq!(config.data, Some(dir.path().join("d")));
        let bad = config
            .apply_env(|name| (name == "INFERWATCH_QUEUE").then(|| "many".to_string()))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("INFERWATCH_QUEUE='many'"), "{bad}");
    }
}

//! `command`: run a program for each alert transition. Opt-in.
//!
//! Building a `command` action fails unless the [`BuildContext`] allows
//! commands, which the operator turns on when starting inferwatch; a config
//! file alone can't make inferwatch run programs.
//!
//! The program is started directly (no shell) with the alert JSON on stdin
//! and these environment variables: `INFERWATCH_ALERT_ID`,
//! `INFERWATCH_FINGERPRINT`, `INFERWATCH_RULE_ID`, `INFERWATCH_TITLE`,
//! `INFERWATCH_SEVERITY`, `INFERWATCH_STATE`, `INFERWATCH_STARTS_AT`,
//! `INFERWATCH_ENDS_AT`, `INFERWATCH_VALUE`, `INFERWATCH_THRESHOLD`,
//! `INFERWATCH_IDEMPOTENCY_KEY`, `INFERWATCH_ATTEMPT` and, per group key,
//! `INFERWATCH_GROUP_<KEY>` (upper case, other characters as `_`).
//!
//! Exit status 0 is success. A non-zero exit, a kill by signal or the
//! timeout (default 30s; the program is then killed) is a failure that is
//! retried; the first 2 KiB of stderr go into the failure message. A program
//! that can't be started at all (not found, not executable) is dead-lettered
//! at once. Only the direct child is killed on timeout: a program that
//! starts its own children must end them.
//!
//! ```yaml
//! - name: open-ticket
//!   kind: command
//!   program: /usr/local/bin/open-ticket
//!   args: [--queue, ml-oncall]
//!   timeout: 30s
//! ```

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use marked_yaml::Spanned;
use serde::Deserialize;

use super::{Action, ActionConfig};
use crate::config::{timeout_field, BuildContext, ConfigProblem};
use crate::delivery::{state_name, Delivery, DeliveryFailure, Outcome};
use crate::AlertError;

/// Default time a command may run.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How much stderr is kept for the failure message.
const STDERR_LIMIT: u64 = 2048;

/// Config of a `command` action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program: a path, or a name looked up in `PATH`.
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// How long it may run (default 30s).
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

impl ActionConfig for CommandConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        timeout_field(&self.timeout, DEFAULT_COMMAND_TIMEOUT).map(|_| ())
    }

    fn build(&self, _name: &str, context: &BuildContext) -> Result<Box<dyn Action>, AlertError> {
        if !context.allow_commands {
            return Err(AlertError::Invalid(format!(
                "command actions are disabled; the operator must allow them explicitly to run '{}'",
                self.program
            )));
        }
        let timeout = timeout_field(&self.timeout, DEFAULT_COMMAND_TIMEOUT)
            .map_err(ConfigProblem::into_invalid)?;
        Ok(Box::new(CommandAction::new(
            self.program.clone(),
            self.args.clone(),
            timeout,
        )))
    }
}

/// Runs a program with the alert on stdin.
pub struct CommandAction {
    program: String,
    args: Vec<String>,
    timeout: Duration,
}

impl CommandAction {
    /// Runs `program args…`, killed after `timeout`.
    pub fn new(program: String, args: Vec<String>, timeout: Duration) -> CommandAction {
        CommandAction {
            program,
            args,
            timeout,
        }
    }
}

impl Action for CommandAction {
    fn execute(&self, delivery: &Delivery) -> Result<Outcome, DeliveryFailure> {
        let alert = &delivery.alert;
        let input = serde_json::to_vec(alert).map_err(|error| {
            DeliveryFailure::permanent(format!("cannot encode alert as JSON: {error}"))
        })?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("INFERWATCH_ALERT_ID", &alert.alert_id)
            .env("INFERWATCH_FINGERPRINT", &alert.fingerprint)
            .env("INFERWATCH_RULE_ID", &alert.rule_id)
            .env("INFERWATCH_TITLE", &alert.title)
            .env("INFERWATCH_SEVERITY", alert.severity.to_string())
            .env("INFERWATCH_STATE", state_name(alert.state))
            .env("INFERWATCH_STARTS_AT", &alert.starts_at)
            .env(
                "INFERWATCH_ENDS_AT",
                alert.ends_at.clone().unwrap_or_default(),
            )
            .env(
                "INFERWATCH_VALUE",
                alert.value.map(|v| v.to_string()).unwrap_or_default(),
            )
            .env(
                "INFERWATCH_THRESHOLD",
                alert.threshold.map(|v| v.to_string()).unwrap_or_default(),
            )
            .env("INFERWATCH_IDEMPOTENCY_KEY", &delivery.idempotency_key)
            .env("INFERWATCH_ATTEMPT", delivery.attempt.to_string());
        for (key, value) in &alert.group {
            command.env(format!("INFERWATCH_GROUP_{}", env_suffix(key)), value);
        }
        let mut child = command.spawn().map_err(|error| {
            let message = format!("cannot start {}: {error}", self.program);
            match error.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    DeliveryFailure::permanent(message)
                }
                _ => DeliveryFailure::transient(message),
            }
        })?;
        // Stdin and stderr are served by their own threads, so a program
        // that reads slowly or writes a lot can't deadlock against us.
        if let Some(mut stdin) = child.stdin.take() {
            thread::spawn(move || {
                // A program that exits without reading stdin is not an error.
                let _ = stdin.write_all(&input);
            });
        }
        let (stderr_sender, stderr_receiver) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.take(STDERR_LIMIT).read_to_string(&mut text);
                let _ = stderr_sender.send(text);
            });
        }
        let deadline = Instant::now() + self.timeout;
        let mut poll = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(error) => {
                    return Err(DeliveryFailure::transient(format!(
                        "cannot wait for {}: {error}",
                        self.program
                    )))
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DeliveryFailure::transient(format!(
                    "{} timed out after {:?} and was killed",
                    self.program, self.timeout
                )));
            }
            thread::sleep(poll.min(deadline - now));
            poll = (poll * 2).min(Duration::from_millis(50));
        };
        if status.success() {
            return Ok(Outcome {
                summary: format!("{} exited 0", self.program),
                status: None,
                remediation: None,
            });
        }
        // A grandchild may hold stderr open after the program exits: wait briefly, not forever.
        let stderr = stderr_receiver
            .recv_timeout(Duration::from_secs(1))
            .unwrap_or_default();
        let stderr = stderr.trim();
        let mut message = match status.code() {
            Some(code) => format!("{} exited with status {code}", self.program),
            None => format!("{} was killed by a signal", self.program),
        };
        if !stderr.is_empty() {
            message.push_str(&format!(": {stderr}"));
        }
        Err(DeliveryFailure::transient(message))
    }
}

fn env_suffix(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Retry;

    fn shell(script: &str, timeout: Duration) -> CommandAction {
        CommandAction::new(
            "/bin/sh".to_string(),
            vec!["-c".to_string(), script.to_string()],
            timeout,
        )
    }

    #[test]
    fn program_gets_the_alert_on_stdin_and_fields_in_its_environment() {
        let directory = tempfile::tempdir().unwrap();
        let output = directory.path().join("out");
        let script = format!(
            "cat > '{0}.json'; printf '%s|%s|%s|%s' \"$INFERWATCH_RULE_ID\" \"$INFERWATCH_STATE\" \"$INFERWATCH_GROUP_MODEL_ID\" \"$INFERWATCH_IDEMPOTENCY_KEY\" > '{0}.env'",
            output.display()
        );
        let delivery = Delivery::new(crate::test_alert());
        shell(&script, Duration::from_secs(30))
            .execute(&delivery)
            .unwrap();
        let stdin: inferwatch_core::Alert =
            serde_json::from_slice(&std::fs::read(output.with_extension("json")).unwrap()).unwrap();
        assert_eq!(stdin, delivery.alert);
        assert_eq!(
            std::fs::read_to_string(output.with_extension("env")).unwrap(),
            format!(
                "canary-regression|firing|recsys|{}",
                delivery.idempotency_key
            )
        );
    }

    #[test]
    fn non_zero_exit_and_timeout_are_retryable_failures() {
        let delivery = Delivery::new(crate::test_alert());
        let failed = shell(
            "echo 'ticket queue full' >&2; exit 3",
            Duration::from_secs(30),
        )
        .execute(&delivery)
        .unwrap_err();
        assert_eq!(failed.retry, Retry::Backoff);
        assert_eq!(
            failed.message,
            "/bin/sh exited with status 3: ticket queue full"
        );
        let hung = shell("exec sleep 30", Duration::from_millis(50))
            .execute(&delivery)
            .unwrap_err();
        assert!(hung.message.contains("timed out"), "{}", hung.message);
        let missing = CommandAction::new(
            "/nonexistent/program".into(),
            vec![],
            Duration::from_secs(1),
        )
        .execute(&delivery)
        .unwrap_err();
        assert_eq!(missing.retry, Retry::Never);
    }

    #[test]
    fn commands_need_an_explicit_opt_in() {
        let config = CommandConfig {
            program: "/bin/true".into(),
            args: vec![],
            timeout: None,
        };
        let refused = config.build("run", &BuildContext::new()).err().unwrap();
        assert!(refused
            .to_string()
            .starts_with("command actions are disabled"));
        assert!(config
            .build("run", &BuildContext::new().allow_commands(true))
            .is_ok());
    }
}

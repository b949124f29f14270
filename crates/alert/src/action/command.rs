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
//! that can't be started because of something a retry would meet again is
//! dead-lettered at once: not found, not executable, or a value holding a
//! NUL byte (an environment variable can't carry one; the alert JSON on
//! stdin can, as `\u0000`). A missing program counts as permanent too: a
//! typo in `program` won't fix itself within the retries, and the dead
//! letter says so at once rather than after `max_attempts` backoffs. Other
//! start failures (a process limit, memory) are retried. Only the direct
//! child is killed on timeout: a program that starts its own children must
//! end them.
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
        let mut environment = vec![
            ("INFERWATCH_ALERT_ID".to_string(), alert.alert_id.clone()),
            (
                "INFERWATCH_FINGERPRINT".to_string(),
                alert.fingerprint.clone(),
            ),
            ("INFERWATCH_RULE_ID".to_string(), alert.rule_id.clone()),
            ("INFERWATCH_TITLE".to_string(), alert.title.clone()),
            (
                "INFERWATCH_SEVERITY".to_string(),
                alert.severity.to_string(),
            ),
            (
                "INFERWATCH_STATE".to_string(),
                state_name(alert.state).to_string(),
            ),
            ("INFERWATCH_STARTS_AT".to_string(), alert.starts_at.clone()),
            (
                "INFERWATCH_ENDS_AT".to_string(),
                alert.ends_at.clone().unwrap_or_default(),
            ),
            (
                "INFERWATCH_VALUE".to_string(),
                alert.value.map(|v| v.to_string()).unwrap_or_default(),
            ),
            (
                "INFERWATCH_THRESHOLD".to_string(),
                alert.threshold.map(|v| v.to_string()).unwrap_or_default(),
            ),
            (
                "INFERWATCH_IDEMPOTENCY_KEY".to_string(),
                delivery.idempotency_key.clone(),
            ),
            (
                "INFERWATCH_ATTEMPT".to_string(),
                delivery.attempt.to_string(),
            ),
        ];
        for (key, value) in &alert.group {
            environment.push((
                format!("INFERWATCH_GROUP_{}", env_suffix(key)),
                value.clone(),
            ));
        }
        // Values come from log lines; a NUL can't be passed in the
        // environment, and the same alert would fail the same way on
        // every retry. Name the variable rather than std's "nul byte found".
        if let Some((name, _)) = environment.iter().find(|(_, value)| value.contains('\0')) {
            return Err(DeliveryFailure::permanent(format!(
                "cannot start {}: {name} holds a NUL byte, which an environment variable cannot carry",
                self.program
            )));
        }
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .envs(environment);
        let mut child = command.spawn().map_err(|error| {
            let message = format!("cannot start {}: {error}", self.program);
            match error.kind() {
                // The program or its input is wrong; retrying can't fix it.
                // (InvalidInput: a NUL in the program name or an argument.)
                // Anything else (EAGAIN from a process limit, ENOMEM, a
                // busy executable) may pass.
                std::io::ErrorKind::NotFound
                | std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::InvalidInput => DeliveryFailure::permanent(message),
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
    fn issue_16_start_failures_a_retry_would_repeat_are_permanent() {
        let delivery = Delivery::new(crate::test_alert());
        // std refuses a NUL in an argument before starting anything.
        let nul_argument = shell("exit 0\0", Duration::from_secs(30))
            .execute(&delivery)
            .unwrap_err();
        assert_eq!(nul_argument.retry, Retry::Never, "{}", nul_argument.message);
        assert!(nul_argument.message.starts_with("cannot start /bin/sh: "));

        let mut alert = crate::test_alert();
        alert.title = "slow\0".to_string();
        let nul_value = shell("exit 0", Duration::from_secs(30))
            .execute(&Delivery::new(alert))
            .unwrap_err();
        assert_eq!(nul_value.retry, Retry::Never);
        assert_eq!(
            nul_value.message,
            "cannot start /bin/sh: INFERWATCH_TITLE holds a NUL byte, which an environment variable cannot carry"
        );
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

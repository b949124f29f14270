//! Silences: "don't notify alerts matching these labels between these
//! times", with who asked and why.
//!
//! A silenced alert still goes through the pipeline and into the history
//! (as a `suppressed` record naming the silence); it is only left out of
//! notifications. Silences come from a YAML file and from the API
//! ([`NotificationPipeline::add_silence`](crate::NotificationPipeline::add_silence),
//! [`expire_silence`](crate::NotificationPipeline::expire_silence)), and
//! both kinds are recorded in the history and survive a restart.
//!
//! ```yaml
//! silences:
//!   - id: recsys-retraining          # optional; derived from the content when absent
//!     matchers: ['model_id="recsys"', 'severity=~"low|medium"']
//!     starts_at: 2026-01-01T00:00:00Z
//!     ends_at: 2026-01-01T06:00:00Z
//!     created_by: alice
//!     comment: planned retraining, expect drift alerts
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use inferwatch_core::fingerprint;
use marked_yaml::{Node, Spanned};
use serde::{Deserialize, Serialize};

use crate::config::{load_problem, node_position, ConfigProblem};
use crate::event_time::{format_event_time, parse_event_time, rfc3339};
use crate::matcher::{all_match, LabelMatcher};
use crate::AlertError;

/// One silence. Active from `starts_at` (inclusive) to `ends_at` (exclusive),
/// in event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Unique id; adding a silence with an existing id replaces it.
    pub id: String,
    /// Every matcher must match the alert's labels.
    pub matchers: Vec<LabelMatcher>,
    /// Start, UTC nanoseconds (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub starts_at: i64,
    /// End, UTC nanoseconds (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub ends_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// A checked silence. An empty `id` is replaced by one derived from the
    /// content, so loading the same file twice yields the same ids.
    pub fn new(
        id: impl Into<String>,
        matchers: Vec<LabelMatcher>,
        starts_at: i64,
        ends_at: i64,
        created_by: impl Into<String>,
        comment: impl Into<String>,
    ) -> Result<Silence, AlertError> {
        let mut silence = Silence {
            id: id.into(),
            matchers,
            starts_at,
            ends_at,
            created_by: created_by.into(),
            comment: comment.into(),
        };
        silence.check()?;
        if silence.id.is_empty() {
            silence.id = silence.derived_id();
        }
        Ok(silence)
    }

    /// True when the silence applies at `at`.
    pub fn is_active(&self, at: i64) -> bool {
        self.starts_at <= at && at < self.ends_at
    }

    /// True when the silence is active at `at` and matches the labels.
    pub fn silences(&self, labels: &BTreeMap<String, String>, at: i64) -> bool {
        self.is_active(at) && all_match(&self.matchers, labels)
    }

    pub(crate) fn check(&self) -> Result<(), AlertError> {
        if self.matchers.is_empty() {
            return Err(AlertError::Invalid(
                "silence: at least one matcher is required (a silence of everything is a mistake)"
                    .to_string(),
            ));
        }
        if self.ends_at <= self.starts_at {
            return Err(AlertError::Invalid(format!(
                "silence: ends_at {} must be after starts_at {}",
                format_event_time(self.ends_at),
                format_event_time(self.starts_at)
            )));
        }
        if self.created_by.trim().is_empty() {
            return Err(AlertError::Invalid(
                "silence: created_by must name who created it".to_string(),
            ));
        }
        if !valid_silence_id(&self.id) {
            return Err(AlertError::Invalid(format!(
                "silence: id '{}' may use letters, digits, '-', '_' and '.' only",
                self.id
            )));
        }
        Ok(())
    }

    fn derived_id(&self) -> String {
        let matchers: Vec<String> = self.matchers.iter().map(ToString::to_string).collect();
        let starts = self.starts_at.to_string();
        let ends = self.ends_at.to_string();
        let mut parts: Vec<&str> = matchers.iter().map(String::as_str).collect();
        parts.extend([starts.as_str(), ends.as_str(), self.created_by.as_str()]);
        format!("silence-{}", fingerprint(parts))
    }
}

/// A parsed silences file.
#[derive(Debug, Clone, PartialEq)]
pub struct SilencesFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The silences, in file order.
    pub silences: Vec<Silence>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceDocument {
    #[serde(default)]
    id: Option<Spanned<String>>,
    matchers: Vec<Spanned<String>>,
    starts_at: Spanned<String>,
    ends_at: Spanned<String>,
    created_by: Spanned<String>,
    #[serde(default)]
    comment: Option<String>,
}

impl SilencesFile {
    /// Reads and checks a silences file.
    pub fn load(path: &Path) -> Result<SilencesFile, AlertError> {
        let text = std::fs::read_to_string(path).map_err(|source| AlertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        SilencesFile::from_yaml_str(path, &text)
    }

    /// Checks silences YAML; `path` is used in error messages.
    pub fn from_yaml_str(path: &Path, text: &str) -> Result<SilencesFile, AlertError> {
        let at = |problem: ConfigProblem| positioned_error(path, problem);
        let root = marked_yaml::parse_yaml(0, text).map_err(|error| at(load_problem(&error)))?;
        let Some(mapping) = root.as_mapping() else {
            return Err(at(ConfigProblem {
                message: "expected a mapping with a 'silences' list".to_string(),
                position: node_position(&root),
            }));
        };
        for key in mapping.keys() {
            if key.as_str() != "silences" {
                return Err(at(ConfigProblem {
                    message: format!("unknown field '{}', expected: silences", key.as_str()),
                    position: key.span().start().map(|mark| (mark.line(), mark.column())),
                }));
            }
        }
        let Some(list) = mapping.get_node("silences") else {
            return Ok(SilencesFile {
                path: path.to_path_buf(),
                silences: Vec::new(),
            });
        };
        let entries = match list {
            Node::Sequence(entries) => entries.iter().collect::<Vec<_>>(),
            Node::Scalar(scalar) if scalar.as_str().trim().is_empty() => Vec::new(),
            other => {
                return Err(at(ConfigProblem {
                    message: "silences: expected a list of silences".to_string(),
                    position: node_position(other),
                }))
            }
        };
        let mut ids = HashSet::new();
        let mut silences = Vec::with_capacity(entries.len());
        for entry in entries {
            let silence = silence_entry(entry).map_err(at)?;
            if !ids.insert(silence.id.clone()) {
                return Err(at(ConfigProblem {
                    message: format!("duplicate silence id '{}'", silence.id),
                    position: node_position(entry),
                }));
            }
            silences.push(silence);
        }
        Ok(SilencesFile {
            path: path.to_path_buf(),
            silences,
        })
    }
}

fn silence_entry(entry: &Node) -> Result<Silence, ConfigProblem> {
    if entry.as_mapping().is_none() {
        return Err(ConfigProblem {
            message: "expected a silence (a mapping with matchers, starts_at, ends_at, created_by)"
                .to_string(),
            position: node_position(entry),
        });
    }
    let document: SilenceDocument = marked_yaml::from_node(entry)
        .map_err(|error| ConfigProblem::from_node_error(&error, entry))?;
    let matchers = matcher_list(&document.matchers, "matchers")?;
    if matchers.is_empty() {
        return Err(ConfigProblem {
            message: "matchers: at least one matcher is required".to_string(),
            position: node_position(entry),
        });
    }
    let starts_at = time_field(&document.starts_at, "starts_at")?;
    let ends_at = time_field(&document.ends_at, "ends_at")?;
    if ends_at <= starts_at {
        return Err(ConfigProblem::at(
            &document.ends_at,
            "ends_at: must be after starts_at",
        ));
    }
    let id = match &document.id {
        Some(id) if !valid_silence_id(id.as_str()) => {
            return Err(ConfigProblem::at(
                id,
                "id: use letters, digits, '-', '_' and '.' only",
            ))
        }
        Some(id) => id.as_str().to_string(),
        None => String::new(),
    };
    if document.created_by.trim().is_empty() {
        return Err(ConfigProblem::at(
            &document.created_by,
            "created_by: must name who created the silence",
        ));
    }
    Silence::new(
        id,
        matchers,
        starts_at,
        ends_at,
        document.created_by.as_str(),
        document.comment.unwrap_or_default(),
    )
    .map_err(|error| ConfigProblem {
        message: match error {
            AlertError::Invalid(message) => message,
            other => other.to_string(),
        },
        position: node_position(entry),
    })
}

fn valid_silence_id(id: &str) -> bool {
    id.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses a list of matcher strings, reporting a bad one at its position.
pub(crate) fn matcher_list(
    texts: &[Spanned<String>],
    field: &str,
) -> Result<Vec<LabelMatcher>, ConfigProblem> {
    texts
        .iter()
        .map(|text| {
            LabelMatcher::parse(text.as_str()).map_err(|error| {
                let message = match error {
                    AlertError::Invalid(message) => message,
                    other => other.to_string(),
                };
                ConfigProblem::at(text, format!("{field}: {message}"))
            })
        })
        .collect()
}

fn time_field(value: &Spanned<String>, field: &str) -> Result<i64, ConfigProblem> {
    parse_event_time(value.as_str()).map_err(|_| {
        ConfigProblem::at(
            value,
            format!(
                "{field}: invalid timestamp '{}', expected RFC 3339 such as 2026-01-01T00:00:00Z",
                value.as_str()
            ),
        )
    })
}

/// Turns a positioned problem into the file:line:column error.
pub(crate) fn positioned_error(path: &Path, problem: ConfigProblem) -> AlertError {
    let (line, column) = problem.position.unwrap_or((1, 1));
    AlertError::Config {
        path: path.to_path_buf(),
        line,
        column,
        message: problem.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        SilencesFile::from_yaml_str(Path::new("silences.yaml"), text)
            .expect_err("silences should be rejected")
            .to_string()
    }

    const GOOD: &str = "silences:\n  - id: s1\n    matchers: ['model_id=\"recsys\"']\n    starts_at: 2026-01-01T00:00:00Z\n    ends_at: 2026-01-01T01:00:00Z\n    created_by: alice\n    comment: retraining\n";

    #[test]
    fn a_silence_is_read_with_its_times() {
        let file = SilencesFile::from_yaml_str(Path::new("s.yaml"), GOOD).unwrap();
        let silence = &file.silences[0];
        assert_eq!(silence.id, "s1");
        assert_eq!(silence.created_by, "alice");
        assert_eq!(silence.ends_at - silence.starts_at, 3_600_000_000_000);
        let json = serde_json::to_value(silence).unwrap();
        assert_eq!(json["starts_at"], "2026-01-01T00:00:00Z");
        assert_eq!(json["matchers"][0], "model_id=\"recsys\"");
        let back: Silence = serde_json::from_value(json).unwrap();
        assert_eq!(&back, silence);
    }

    #[test]
    fn ids_are_derived_when_absent_and_stable() {
        let text = GOOD.replace("  - id: s1\n    matchers", "  - matchers");
        let first = SilencesFile::from_yaml_str(Path::new("s.yaml"), &text).unwrap();
        let second = SilencesFile::from_yaml_str(Path::new("s.yaml"), &text).unwrap();
        assert!(first.silences[0].id.starts_with("silence-"));
        assert_eq!(first.silences[0].id, second.silences[0].id);
    }

    #[test]
    fn malformed_silences_name_file_line_and_column() {
        assert_eq!(
            error_of(&GOOD.replace("comment:", "reason:")),
            "silences.yaml:7:5: unknown field 'reason', expected one of: id, matchers, starts_at, ends_at, created_by, comment"
        );
        assert_eq!(
            error_of(&GOOD.replace("model_id=\"recsys\"", "model_id=~\"(recsys\"")),
            "silences.yaml:3:16: matchers: matcher 'model_id=~\"(recsys\"': invalid regular expression: unclosed group"
        );
        assert_eq!(
            error_of(&GOOD.replace("01:00:00Z", "soon")),
            "silences.yaml:5:14: ends_at: invalid timestamp '2026-01-01Tsoon', expected RFC 3339 such as 2026-01-01T00:00:00Z"
        );
        assert_eq!(
            error_of(&GOOD.replace("T01:00", "T00:00")),
            "silences.yaml:5:14: ends_at: must be after starts_at"
        );
        assert!(error_of("silences:\n  - id: [x\n").starts_with("silences.yaml:3:1: "));
    }
}

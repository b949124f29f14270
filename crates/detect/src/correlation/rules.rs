//! Correlation rule files: Sigma detection rules and Sigma v2.1 correlation
//! rules (plus the `absence` extension), read with positions so that every
//! error names the file, line and column.
//!
//! A file holds one or more YAML documents separated by `---`. A document
//! with a `detection:` block is a Sigma detection rule; one with a
//! `correlation:` block is a correlation rule. Each document is read on its
//! own, from a copy of the file in which the other documents' lines are
//! blanked, so line numbers stay those of the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use inferwatch_core::{parse_duration, Severity};
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::Node;

use crate::DetectError;

/// Top-level keys of a Sigma detection rule that inferwatch reads or accepts
/// as metadata. Anything else is an error: a backend must not silently skip
/// what it does not understand.
const DETECTION_RULE_KEYS: &[&str] = &[
    "title",
    "id",
    "name",
    "status",
    "description",
    "author",
    "references",
    "date",
    "modified",
    "tags",
    "level",
    "falsepositives",
    "fields",
    "logsource",
    "detection",
    "related",
    "license",
    "taxonomy",
    "scope",
    "sigma-version",
];

/// Top-level keys of a correlation rule.
const CORRELATION_RULE_KEYS: &[&str] = &[
    "title",
    "id",
    "name",
    "status",
    "description",
    "author",
    "references",
    "date",
    "modified",
    "tags",
    "level",
    "falsepositives",
    "fields",
    "correlation",
    "generate",
    "related",
    "license",
    "taxonomy",
    "scope",
    "sigma-version",
];

/// Keys inside a `correlation:` block.
const CORRELATION_BLOCK_KEYS: &[&str] = &[
    "type",
    "rules",
    "expected",
    "group-by",
    "timespan",
    "timeframe",
    "condition",
    "aliases",
    "generate",
];

/// Sigma correlation types that exist in the specification but that this
/// engine does not evaluate; naming them gives a clearer error than
/// "unknown type".
const UNSUPPORTED_CORRELATION_TYPES: &[&str] = &["value_sum", "value_avg", "value_percentile"];

/// A place in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl FilePosition {
    /// An error at this position.
    pub(crate) fn error(&self, message: String, token: Option<String>) -> DetectError {
        DetectError::Rule {
            path: self.path.clone(),
            line: self.line,
            column: self.column,
            token,
            message,
        }
    }
}

/// A rule named in a correlation's `rules` (or `expected`) list or in an alias.
#[derive(Debug, Clone)]
pub struct RuleReference {
    /// The name or id as written.
    pub name: String,
    /// Where it is written.
    pub position: FilePosition,
}

/// A comparison in a correlation `condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Equal.
    Eq,
    /// Not equal.
    Neq,
}

impl Comparison {
    /// The Sigma spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Gt => "gt",
            Comparison::Gte => "gte",
            Comparison::Lt => "lt",
            Comparison::Lte => "lte",
            Comparison::Eq => "eq",
            Comparison::Neq => "neq",
        }
    }

    /// Whether `value <op> threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Gt => value > threshold,
            Comparison::Gte => value >= threshold,
            Comparison::Lt => value < threshold,
            Comparison::Lte => value <= threshold,
            Comparison::Eq => value == threshold,
            Comparison::Neq => value != threshold,
        }
    }

    /// True when a growing count can only turn the comparison from false to
    /// true, never back: such conditions can be decided the moment a finding
    /// arrives. The others are decided when the window closes.
    pub fn decided_by_growth(self) -> bool {
        matches!(self, Comparison::Gt | Comparison::Gte)
    }
}

/// What a correlation looks for.
#[derive(Debug, Clone)]
pub enum CorrelationKind {
    /// Number of findings of the rules, per group, within the timespan.
    EventCount,
    /// Number of distinct values of `field`, per group, within the timespan.
    ValueCount {
        /// The field whose distinct values are counted.
        field: String,
    },
    /// Every listed rule produced a finding for the group within the timespan, in any order.
    Temporal,
    /// The listed rules produced findings for the group in the listed order
    /// (by event time), first to last within the timespan.
    TemporalOrdered,
    /// inferwatch extension: a finding of one of `rules` was NOT followed by
    /// a finding of any `expected` rule for the same group within the
    /// timespan (inclusive).
    Absence {
        /// Rules whose findings cancel the wait.
        expected: Vec<RuleReference>,
    },
}

impl CorrelationKind {
    /// The type name as written in YAML.
    pub fn type_name(&self) -> &'static str {
        match self {
            CorrelationKind::EventCount => "event_count",
            CorrelationKind::ValueCount { .. } => "value_count",
            CorrelationKind::Temporal => "temporal",
            CorrelationKind::TemporalOrdered => "temporal_ordered",
            CorrelationKind::Absence { .. } => "absence",
        }
    }
}

/// A Sigma detection rule (selection/condition), evaluated by `rsigma-eval`
/// on raw JSON events of one stream.
#[derive(Debug, Clone)]
pub struct SigmaDetectionRule {
    /// How findings of this rule are named: `name` when set, else `id`.
    pub identifier: String,
    /// The other identifier (`id` when `name` is set), which references may also use.
    pub other_identifier: Option<String>,
    /// Human title.
    pub title: String,
    /// The stream whose events it reads (`logsource.service`, else
    /// `logsource.category`); `None` reads every stream.
    pub stream: Option<String>,
    /// Severity from `level`.
    pub severity: Severity,
    /// MITRE ATLAS technique ids from `atlas.*` tags.
    pub atlas: Vec<String>,
    /// Where the rule starts.
    pub position: FilePosition,
    pub(crate) compiled: rsigma_eval::CompiledRule,
}

/// A correlation rule.
#[derive(Debug, Clone)]
pub struct CorrelationRule {
    /// The alert `rule_id`: `name` when set, else `id`.
    pub identifier: String,
    /// The other identifier, which references from chained correlations may also use.
    pub other_identifier: Option<String>,
    /// Human title.
    pub title: String,
    /// Severity from `level` (medium when absent).
    pub severity: Severity,
    /// The correlation type and its type-specific settings.
    pub kind: CorrelationKind,
    /// The rules it consumes (base inferwatch rules, Sigma rules or other correlations).
    pub rules: Vec<RuleReference>,
    /// Group-by names (after aliasing).
    pub group_by: Vec<String>,
    /// `alias name → (rule reference → field in that rule's findings)`.
    pub aliases: BTreeMap<String, BTreeMap<String, String>>,
    /// Timespan (ns).
    pub timespan: i64,
    /// Count conditions, all of which must hold (event_count and value_count only).
    pub condition: Vec<(Comparison, f64)>,
    /// Whether the Sigma detection rules it references also raise alerts of their own.
    pub generate: bool,
    /// MITRE ATLAS technique ids from `atlas.*` tags.
    pub atlas: Vec<String>,
    /// Where the rule starts.
    pub position: FilePosition,
}

impl CorrelationRule {
    /// The condition as one line, e.g. `event_count(auth-failure) by client gte 5 within 5m`.
    pub fn describe(&self) -> String {
        let rules: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        let mut text = match &self.kind {
            CorrelationKind::ValueCount { field } => {
                format!("value_count({field} of {})", rules.join(", "))
            }
            CorrelationKind::TemporalOrdered => {
                format!("temporal_ordered({})", rules.join(" -> "))
            }
            CorrelationKind::Absence { expected } => {
                let expected: Vec<&str> = expected.iter().map(|r| r.name.as_str()).collect();
                format!(
                    "absence({} not followed by {})",
                    rules.join(" or "),
                    expected.join(" or ")
                )
            }
            kind => format!("{}({})", kind.type_name(), rules.join(", ")),
        };
        if !self.group_by.is_empty() {
            text.push_str(&format!(" by {}", self.group_by.join(", ")));
        }
        for (comparison, threshold) in &self.condition {
            text.push_str(&format!(" {} {threshold}", comparison.as_str()));
        }
        text.push_str(&format!(" within {}", format_span(self.timespan)));
        text
    }

    /// The field a finding of `rule` (as referenced) carries for group-by name `name`.
    pub fn field_for<'a>(&'a self, rule_reference: &str, name: &'a str) -> &'a str {
        self.aliases
            .get(name)
            .and_then(|by_rule| by_rule.get(rule_reference))
            .map(String::as_str)
            .unwrap_or(name)
    }
}

/// Every Sigma detection rule and correlation rule read from one or more files.
#[derive(Debug, Clone, Default)]
pub struct CorrelationRules {
    /// Sigma detection rules, in file order.
    pub detection_rules: Vec<SigmaDetectionRule>,
    /// Correlation rules, in file order.
    pub correlations: Vec<CorrelationRule>,
}

impl CorrelationRules {
    /// Reads one file.
    pub fn from_path(path: &Path) -> Result<CorrelationRules, DetectError> {
        let text = std::fs::read_to_string(path).map_err(|source| DetectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        CorrelationRules::from_yaml_str(path, &text)
    }

    /// Reads the documents of one file's text; `path` is used in error messages.
    pub fn from_yaml_str(path: &Path, text: &str) -> Result<CorrelationRules, DetectError> {
        let mut rules = CorrelationRules::default();
        for document_text in split_documents(text) {
            let reader = DocumentReader {
                path,
                text: &document_text,
            };
            reader.read_into(&mut rules)?;
        }
        rules.check_unique_identifiers()?;
        Ok(rules)
    }

    /// Reads every `*.yaml` / `*.yml` file under `dir`, recursively, in path order.
    ///
    /// Returns what loaded and every error, so a checker can report them all at once.
    pub fn load_dir(dir: &Path) -> (CorrelationRules, Vec<DetectError>) {
        let mut paths = Vec::new();
        let mut errors = Vec::new();
        crate::rule::collect_rule_paths(dir, &mut paths, &mut errors);
        paths.sort();
        let mut all = CorrelationRules::default();
        for path in paths {
            match CorrelationRules::from_path(&path) {
                Ok(rules) => {
                    if let Err(error) = all.extend(rules) {
                        errors.push(error);
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        (all, errors)
    }

    /// Adds another file's rules; identifiers must stay unique.
    pub fn extend(&mut self, other: CorrelationRules) -> Result<(), DetectError> {
        let mut merged = self.clone();
        merged.detection_rules.extend(other.detection_rules);
        merged.correlations.extend(other.correlations);
        merged.check_unique_identifiers()?;
        *self = merged;
        Ok(())
    }

    fn check_unique_identifiers(&self) -> Result<(), DetectError> {
        let mut seen: BTreeMap<&str, &FilePosition> = BTreeMap::new();
        let identifiers = self
            .detection_rules
            .iter()
            .map(|rule| (&rule.identifier, &rule.other_identifier, &rule.position))
            .chain(
                self.correlations
                    .iter()
                    .map(|rule| (&rule.identifier, &rule.other_identifier, &rule.position)),
            );
        for (identifier, other, position) in identifiers {
            for name in std::iter::once(identifier).chain(other.iter()) {
                if let Some(previous) = seen.insert(name.as_str(), position) {
                    if previous != position {
                        return Err(position.error(
                            format!(
                                "duplicate rule name or id, also defined at {}:{}:{}",
                                previous.path.display(),
                                previous.line,
                                previous.column
                            ),
                            Some(name.clone()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// One copy of `text` per YAML document, with every line outside that
/// document blanked, so positions in the copy are positions in the file.
/// Copies holding only blanks and comments are left out.
fn split_documents(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let is_separator = |line: &str| {
        line == "---"
            || line.starts_with("--- ")
            || line.starts_with("---\t")
            || line.trim_end() == "---"
    };
    let mut documents = Vec::new();
    let mut start = 0;
    for end in 0..=lines.len() {
        if end < lines.len() && !is_separator(lines[end]) {
            continue;
        }
        let has_content = lines[start..end].iter().any(|line| {
            let trimmed = line.trim();
            !trimmed.is_empty() && !trimmed.starts_with('#') && trimmed != "..."
        });
        if has_content {
            let copy: Vec<&str> = lines
                .iter()
                .enumerate()
                .map(|(index, line)| {
                    if index >= start && index < end {
                        *line
                    } else {
                        ""
                    }
                })
                .collect();
            documents.push(copy.join("\n"));
        }
        start = end + 1;
    }
    documents
}

struct DocumentReader<'a> {
    path: &'a Path,
    /// The file's text with other documents blanked.
    text: &'a str,
}

impl DocumentReader<'_> {
    fn at(&self, node_span: &marked_yaml::Span) -> FilePosition {
        let (line, column) = node_span
            .start()
            .map(|marker| (marker.line(), marker.column()))
            .unwrap_or((1, 1));
        FilePosition {
            path: self.path.to_path_buf(),
            line,
            column,
        }
    }

    fn error_at(&self, span: &marked_yaml::Span, message: impl Into<String>) -> DetectError {
        self.at(span).error(message.into(), None)
    }

    fn error_at_token(&self, scalar: &MarkedScalarNode, message: impl Into<String>) -> DetectError {
        self.at(scalar.span())
            .error(message.into(), Some(scalar.as_str().to_string()))
    }

    fn read_into(&self, rules: &mut CorrelationRules) -> Result<(), DetectError> {
        let root =
            marked_yaml::parse_yaml(0, self.text).map_err(|error| self.load_error(&error))?;
        let Some(document) = root.as_mapping() else {
            return Err(self.error_at(root.span(), "a rule document must be a mapping"));
        };
        let has_detection = document.get_node("detection").is_some();
        let has_correlation = document.get_node("correlation").is_some();
        match (has_detection, has_correlation) {
            (true, true) => Err(self.error_at(
                key_span(document, "correlation"),
                "a document is either a detection rule or a correlation rule, not both",
            )),
            (true, false) => {
                rules.detection_rules.push(self.read_detection_rule(document)?);
                Ok(())
            }
            (false, true) => {
                rules.correlations.push(self.read_correlation_rule(document)?);
                Ok(())
            }
            (false, false) => Err(self.error_at(
                first_key_span(document),
                "expected a Sigma detection rule (with 'detection:') or a correlation rule (with 'correlation:')",
            )),
        }
    }

    fn load_error(&self, error: &marked_yaml::LoadError) -> DetectError {
        let marker = match error {
            marked_yaml::LoadError::TopLevelMustBeMapping(m)
            | marked_yaml::LoadError::TopLevelMustBeSequence(m)
            | marked_yaml::LoadError::UnexpectedAnchor(m)
            | marked_yaml::LoadError::MappingKeyMustBeScalar(m)
            | marked_yaml::LoadError::UnexpectedTag(m)
            | marked_yaml::LoadError::ScanError(m, _) => Some(*m),
            _ => None,
        };
        let (line, column) = marker.map(|m| (m.line(), m.column())).unwrap_or((1, 1));
        DetectError::Rule {
            path: self.path.to_path_buf(),
            line,
            column,
            token: None,
            message: format!("invalid YAML: {error}"),
        }
    }

    fn check_keys(
        &self,
        mapping: &MarkedMappingNode,
        allowed: &[&str],
        context: &str,
    ) -> Result<(), DetectError> {
        for key in mapping.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(self.error_at_token(
                    key,
                    format!(
                        "unsupported key '{}' in {context}, expected one of: {}",
                        key.as_str(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `owner` is where a missing key is reported: the key that holds the
    /// mapping (a mapping's own span starts at its first value, which reads oddly).
    fn required_scalar<'n>(
        &self,
        mapping: &'n MarkedMappingNode,
        key: &str,
        context: &str,
        owner: &marked_yaml::Span,
    ) -> Result<&'n MarkedScalarNode, DetectError> {
        match mapping.get_node(key) {
            None => Err(self.error_at(owner, format!("{context}: missing '{key}'"))),
            Some(node) => self.scalar(node, key),
        }
    }

    fn optional_scalar<'n>(
        &self,
        mapping: &'n MarkedMappingNode,
        key: &str,
    ) -> Result<Option<&'n MarkedScalarNode>, DetectError> {
        mapping
            .get_node(key)
            .map(|node| self.scalar(node, key))
            .transpose()
    }

    fn scalar<'n>(&self, node: &'n Node, key: &str) -> Result<&'n MarkedScalarNode, DetectError> {
        node.as_scalar()
            .ok_or_else(|| self.error_at(node.span(), format!("'{key}' must be a single value")))
    }

    /// A list of scalars, or one scalar standing for a one-element list.
    fn scalar_list<'n>(
        &self,
        node: &'n Node,
        key: &str,
    ) -> Result<Vec<&'n MarkedScalarNode>, DetectError> {
        if let Some(scalar) = node.as_scalar() {
            return Ok(vec![scalar]);
        }
        let Some(sequence) = node.as_sequence() else {
            return Err(self.error_at(node.span(), format!("'{key}' must be a list of names")));
        };
        sequence
            .iter()
            .map(|item| {
                item.as_scalar().ok_or_else(|| {
                    self.error_at(item.span(), format!("'{key}' entries must be plain names"))
                })
            })
            .collect()
    }

    fn identifiers(
        &self,
        document: &MarkedMappingNode,
    ) -> Result<(String, Option<String>), DetectError> {
        let name = self.optional_scalar(document, "name")?;
        let id = self.optional_scalar(document, "id")?;
        for scalar in [name, id].into_iter().flatten() {
            if scalar.as_str().trim().is_empty() {
                return Err(self.error_at_token(scalar, "name and id must not be empty"));
            }
        }
        match (name, id) {
            (Some(name), id) => Ok((
                name.as_str().to_string(),
                id.map(|id| id.as_str().to_string()),
            )),
            (None, Some(id)) => Ok((id.as_str().to_string(), None)),
            (None, None) => Err(self.error_at(
                first_key_span(document),
                "a rule needs a 'name' or an 'id' so that correlations and alerts can refer to it",
            )),
        }
    }

    fn severity(&self, document: &MarkedMappingNode) -> Result<Severity, DetectError> {
        let Some(level) = self.optional_scalar(document, "level")? else {
            return Ok(Severity::Medium);
        };
        match level.as_str() {
            "informational" | "info" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(self.error_at_token(
                level,
                "level must be one of informational, low, medium, high, critical",
            )),
        }
    }

    /// ATLAS technique ids from tags such as `atlas.aml.t0024.001`.
    fn atlas_tags(&self, document: &MarkedMappingNode) -> Result<Vec<String>, DetectError> {
        let Some(tags) = document.get_node("tags") else {
            return Ok(Vec::new());
        };
        let mut atlas = Vec::new();
        for tag in self.scalar_list(tags, "tags")? {
            if let Some(technique) = tag.as_str().strip_prefix("atlas.") {
                atlas.push(technique.to_ascii_uppercase());
            }
        }
        Ok(atlas)
    }

    fn read_detection_rule(
        &self,
        document: &MarkedMappingNode,
    ) -> Result<SigmaDetectionRule, DetectError> {
        self.check_keys(document, DETECTION_RULE_KEYS, "a Sigma detection rule")?;
        let title = self.required_scalar(
            document,
            "title",
            "a Sigma detection rule",
            first_key_span(document),
        )?;
        let (identifier, other_identifier) = self.identifiers(document)?;
        let severity = self.severity(document)?;
        let atlas = self.atlas_tags(document)?;
        let Some(logsource) = document.get_mapping("logsource") else {
            return Err(self.error_at(
                first_key_span(document),
                "a Sigma detection rule needs a 'logsource' mapping (its 'service' or 'category' names the stream)",
            ));
        };
        let stream = match self.optional_scalar(logsource, "service")? {
            Some(service) => Some(service.as_str().to_string()),
            None => self
                .optional_scalar(logsource, "category")?
                .map(|category| category.as_str().to_string()),
        };
        let detection_node = document.get_node("detection").ok_or_else(|| {
            DetectError::Internal("detection rule without a detection block".into())
        })?;
        let Some(detection) = detection_node.as_mapping() else {
            return Err(self.error_at(detection_node.span(), "'detection' must be a mapping"));
        };
        self.check_detection(detection)?;
        // Parse and compile with rsigma; what it rejects that the checks above
        // did not catch is reported at the detection block.
        let collection = rsigma_parser::parse_sigma_yaml(self.text).map_err(|error| {
            self.error_at(
                key_span(document, "detection"),
                format!("invalid Sigma rule: {error}"),
            )
        })?;
        if let Some(message) = collection.errors.first() {
            return Err(self.error_at(
                key_span(document, "detection"),
                format!("invalid Sigma rule: {message}"),
            ));
        }
        let [sigma_rule] = collection.rules.as_slice() else {
            return Err(DetectError::Internal(format!(
                "expected one Sigma rule from one document, got {}",
                collection.rules.len()
            )));
        };
        let compiled = rsigma_eval::compile_rule(sigma_rule).map_err(|error| {
            self.error_at(
                key_span(document, "detection"),
                format!("cannot compile Sigma detection: {error}"),
            )
        })?;
        Ok(SigmaDetectionRule {
            identifier,
            other_identifier,
            title: title.as_str().to_string(),
            stream,
            severity,
            atlas,
            position: self.at(first_key_span(document)),
            compiled,
        })
    }

    /// Checks what rsigma would report without a position: every field
    /// modifier and the condition's syntax.
    fn check_detection(&self, detection: &MarkedMappingNode) -> Result<(), DetectError> {
        let Some(condition) = detection.get_node("condition") else {
            return Err(self.error_at(first_key_span(detection), "'detection' needs a 'condition'"));
        };
        let conditions: Vec<&MarkedScalarNode> = self.scalar_list(condition, "condition")?;
        for condition in conditions {
            if let Err(error) = rsigma_parser::parse_condition(condition.as_str()) {
                let mut position = self.at(condition.span());
                // The location is inside the condition text; on a one-line plain
                // scalar it maps to file columns by addition.
                if let Some(location) = error.location() {
                    if location.line == 1 && !condition.as_str().contains('\n') {
                        position.column += location.col.saturating_sub(1) as usize;
                    }
                }
                return Err(position.error(
                    format!("invalid Sigma condition: {error}"),
                    Some(condition.as_str().to_string()),
                ));
            }
        }
        for (name, selection) in detection.iter() {
            if name.as_str() == "condition" || name.as_str() == "timeframe" {
                continue;
            }
            let maps: Vec<&MarkedMappingNode> = if let Some(mapping) = selection.as_mapping() {
                vec![mapping]
            } else if let Some(list) = selection.as_sequence() {
                // A list of maps (OR of AND-groups) or a list of keywords.
                list.iter().filter_map(Node::as_mapping).collect()
            } else {
                Vec::new()
            };
            for mapping in maps {
                for field in mapping.keys() {
                    self.check_field_spec(field)?;
                }
            }
        }
        Ok(())
    }

    fn check_field_spec(&self, field: &MarkedScalarNode) -> Result<(), DetectError> {
        let text = field.as_str();
        let mut parts = text.split('|');
        let _field_name = parts.next();
        let mut column_offset = text.find('|').unwrap_or(text.len());
        for modifier in parts {
            let mut position = self.at(field.span());
            position.column += column_offset + 1;
            column_offset += modifier.len() + 1;
            if modifier == "expand" {
                // Placeholders need a processing pipeline that says what they
                // expand to; inferwatch has none, so the rule could never match.
                return Err(position.error(
                    "unsupported Sigma modifier 'expand': placeholder expansion needs a processing pipeline".into(),
                    Some(modifier.to_string()),
                ));
            }
        }
        if let Err(error) = rsigma_parser::parse_field_spec(text) {
            let bad_modifier = text.split('|').skip(1).find(|modifier| {
                rsigma_parser::parse_field_spec(&format!("x|{modifier}")).is_err()
            });
            let mut position = self.at(field.span());
            if let Some(modifier) = bad_modifier {
                if let Some(offset) = text.find(&format!("|{modifier}")) {
                    position.column += offset + 1;
                }
                return Err(position.error(
                    format!("unsupported Sigma modifier '{modifier}': {error}"),
                    Some(modifier.to_string()),
                ));
            }
            return Err(position.error(
                format!("invalid Sigma field specification: {error}"),
                Some(text.to_string()),
            ));
        }
        Ok(())
    }

    fn read_correlation_rule(
        &self,
        document: &MarkedMappingNode,
    ) -> Result<CorrelationRule, DetectError> {
        self.check_keys(document, CORRELATION_RULE_KEYS, "a correlation rule")?;
        let title = self.required_scalar(
            document,
            "title",
            "a correlation rule",
            first_key_span(document),
        )?;
        let (identifier, other_identifier) = self.identifiers(document)?;
        let severity = self.severity(document)?;
        let atlas = self.atlas_tags(document)?;
        let block_node = document.get_node("correlation").ok_or_else(|| {
            DetectError::Internal("correlation rule without a correlation block".into())
        })?;
        let Some(block) = block_node.as_mapping() else {
            return Err(self.error_at(block_node.span(), "'correlation' must be a mapping"));
        };
        self.check_keys(block, CORRELATION_BLOCK_KEYS, "a correlation block")?;

        let block_key = key_span(document, "correlation");
        let type_scalar =
            self.required_scalar(block, "type", "the correlation block", block_key)?;
        let rules = match block.get_node("rules") {
            Some(node) => self.references(node, "rules")?,
            None => return Err(self.error_at(block_key, "the correlation block: missing 'rules'")),
        };
        if rules.is_empty() {
            return Err(self.error_at(
                key_span(block, "rules"),
                "'rules' must name at least one rule",
            ));
        }

        let timespan_scalar = match (
            self.optional_scalar(block, "timespan")?,
            self.optional_scalar(block, "timeframe")?,
        ) {
            (Some(timespan), None) | (None, Some(timespan)) => timespan,
            (Some(_), Some(timeframe)) => {
                return Err(self.error_at_token(
                    timeframe,
                    "give 'timespan' or its older spelling 'timeframe', not both",
                ))
            }
            (None, None) => {
                return Err(self.error_at(
                    block_key,
                    "the correlation block: missing 'timespan' (e.g. timespan: 5m)",
                ))
            }
        };
        let timespan = parse_duration(timespan_scalar.as_str())
            .ok()
            .filter(|nanos| *nanos > 0)
            .ok_or_else(|| {
                self.error_at_token(
                    timespan_scalar,
                    "timespan: invalid duration, expected e.g. 30s, 5m or 1h",
                )
            })?;

        let group_by: Vec<String> = match block.get_node("group-by") {
            Some(node) => self
                .scalar_list(node, "group-by")?
                .into_iter()
                .map(|scalar| scalar.as_str().to_string())
                .collect(),
            None => Vec::new(),
        };
        let aliases = self.aliases(block, &rules, &group_by)?;

        let type_name = type_scalar.as_str();
        let kind = match type_name {
            "event_count" => CorrelationKind::EventCount,
            "value_count" => CorrelationKind::ValueCount {
                field: String::new(),
            },
            "temporal" => CorrelationKind::Temporal,
            "temporal_ordered" => CorrelationKind::TemporalOrdered,
            "absence" => {
                let Some(expected) = block.get_node("expected") else {
                    return Err(self.error_at(
                        block_key,
                        "an absence correlation needs 'expected': the rules whose findings must follow",
                    ));
                };
                CorrelationKind::Absence {
                    expected: self.references(expected, "expected")?,
                }
            }
            unsupported if UNSUPPORTED_CORRELATION_TYPES.contains(&unsupported) => {
                return Err(self.error_at_token(
                    type_scalar,
                    format!("unsupported correlation type '{unsupported}': inferwatch evaluates event_count, value_count, temporal, temporal_ordered and absence"),
                ))
            }
            _ => {
                return Err(self.error_at_token(
                    type_scalar,
                    "unknown correlation type, expected one of event_count, value_count, temporal, temporal_ordered, absence",
                ))
            }
        };
        if let (Some(expected), false) = (
            block.get_node("expected"),
            matches!(kind, CorrelationKind::Absence { .. }),
        ) {
            return Err(self.error_at(
                expected.span(),
                "'expected' belongs to absence correlations only",
            ));
        }
        if let CorrelationKind::Absence { expected } = &kind {
            if expected.is_empty() {
                return Err(self.error_at(
                    key_span(block, "expected"),
                    "'expected' must name at least one rule",
                ));
            }
        }

        let (kind, condition) = self.condition(block, kind)?;
        if matches!(
            kind,
            CorrelationKind::Temporal | CorrelationKind::TemporalOrdered
        ) && rules.len() < 2
        {
            return Err(self.error_at(
                key_span(block, "rules"),
                format!("a {type_name} correlation needs at least two rules"),
            ));
        }
        let generate = self.generate(document, block)?;
        Ok(CorrelationRule {
            identifier,
            other_identifier,
            title: title.as_str().to_string(),
            severity,
            kind,
            rules,
            group_by,
            aliases,
            timespan,
            condition,
            generate,
            atlas,
            position: self.at(first_key_span(document)),
        })
    }

    fn references(&self, node: &Node, key: &str) -> Result<Vec<RuleReference>, DetectError> {
        let mut seen = BTreeSet::new();
        let mut references = Vec::new();
        for scalar in self.scalar_list(node, key)? {
            if !seen.insert(scalar.as_str()) {
                return Err(self.error_at_token(scalar, format!("'{key}' names this rule twice")));
            }
            references.push(RuleReference {
                name: scalar.as_str().to_string(),
                position: self.at(scalar.span()),
            });
        }
        Ok(references)
    }

    fn aliases(
        &self,
        block: &MarkedMappingNode,
        rules: &[RuleReference],
        group_by: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, DetectError> {
        let mut aliases = BTreeMap::new();
        let Some(node) = block.get_node("aliases") else {
            return Ok(aliases);
        };
        let Some(mapping) = node.as_mapping() else {
            return Err(self.error_at(
                node.span(),
                "'aliases' must map each alias to {rule: field}",
            ));
        };
        let expected_block = block.get_node("expected");
        let expected_names: Vec<String> = match expected_block {
            Some(node) => self
                .scalar_list(node, "expected")?
                .into_iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            None => Vec::new(),
        };
        for (alias, per_rule) in mapping.iter() {
            if !group_by.iter().any(|name| name == alias.as_str()) {
                return Err(self.error_at_token(
                    alias,
                    "alias is not one of the 'group-by' names, so it would never be used",
                ));
            }
            let Some(per_rule) = per_rule.as_mapping() else {
                return Err(self.error_at(
                    per_rule.span(),
                    "an alias maps rule names to field names, e.g. {auth-failure: src_ip}",
                ));
            };
            let mut fields = BTreeMap::new();
            for (rule, field) in per_rule.iter() {
                let known = rules.iter().any(|r| r.name == rule.as_str())
                    || expected_names.iter().any(|name| name == rule.as_str());
                if !known {
                    return Err(self.error_at_token(
                        rule,
                        "alias names a rule that is not in this correlation's 'rules'",
                    ));
                }
                let field = self.scalar(field, rule.as_str())?;
                fields.insert(rule.as_str().to_string(), field.as_str().to_string());
            }
            aliases.insert(alias.as_str().to_string(), fields);
        }
        Ok(aliases)
    }

    fn condition(
        &self,
        block: &MarkedMappingNode,
        kind: CorrelationKind,
    ) -> Result<(CorrelationKind, Vec<(Comparison, f64)>), DetectError> {
        let counting = matches!(
            kind,
            CorrelationKind::EventCount | CorrelationKind::ValueCount { .. }
        );
        let Some(node) = block.get_node("condition") else {
            if counting {
                return Err(self.error_at(
                    first_key_span(block),
                    format!(
                        "a {} correlation needs a 'condition', e.g. condition: {{gte: 5}}",
                        kind.type_name()
                    ),
                ));
            }
            return Ok((kind, Vec::new()));
        };
        if !counting {
            // Sigma lets temporal types carry a count of distinct rules; this
            // engine requires all of them, so a condition would be ignored.
            return Err(self.error_at(
                key_span(block, "condition"),
                format!(
                    "unsupported: a {} correlation takes no 'condition' here (all listed rules must match)",
                    kind.type_name()
                ),
            ));
        }
        let Some(mapping) = node.as_mapping() else {
            return Err(self.error_at(
                node.span(),
                "'condition' must be a mapping such as {gte: 5}",
            ));
        };
        let mut comparisons = Vec::new();
        let mut field = None;
        for (key, value) in mapping.iter() {
            let comparison = match key.as_str() {
                "gt" => Comparison::Gt,
                "gte" => Comparison::Gte,
                "lt" => Comparison::Lt,
                "lte" => Comparison::Lte,
                "eq" => Comparison::Eq,
                "neq" => Comparison::Neq,
                "field" => {
                    field = Some(self.scalar(value, "field")?);
                    continue;
                }
                _ => {
                    return Err(self.error_at_token(
                        key,
                        "unsupported condition operator, expected gt, gte, lt, lte, eq, neq (and field for value_count)",
                    ))
                }
            };
            let value = self.scalar(value, key.as_str())?;
            let threshold: f64 = value
                .as_str()
                .parse()
                .ok()
                .filter(|number: &f64| number.is_finite() && *number >= 0.0)
                .ok_or_else(|| {
                    self.error_at_token(
                        value,
                        "a condition threshold must be a non-negative number",
                    )
                })?;
            comparisons.push((comparison, threshold));
        }
        if comparisons.is_empty() {
            return Err(self.error_at(
                key_span(block, "condition"),
                "'condition' needs a comparison: gt, gte, lt, lte, eq or neq",
            ));
        }
        let kind = match (kind, field) {
            (CorrelationKind::ValueCount { .. }, Some(field)) => CorrelationKind::ValueCount {
                field: field.as_str().to_string(),
            },
            (CorrelationKind::ValueCount { .. }, None) => {
                return Err(self.error_at(
                    key_span(block, "condition"),
                    "a value_count condition needs 'field': the field whose distinct values are counted",
                ))
            }
            (kind, Some(field)) => {
                return Err(self.error_at_token(
                    field,
                    format!("'field' is for value_count, not {}", kind.type_name()),
                ))
            }
            (kind, None) => kind,
        };
        Ok((kind, comparisons))
    }

    fn generate(
        &self,
        document: &MarkedMappingNode,
        block: &MarkedMappingNode,
    ) -> Result<bool, DetectError> {
        // The Sigma schema puts `generate` at the document root; the nested
        // spelling is accepted as older rules use it.
        let scalar = match (
            self.optional_scalar(document, "generate")?,
            self.optional_scalar(block, "generate")?,
        ) {
            (Some(scalar), _) | (None, Some(scalar)) => scalar,
            (None, None) => return Ok(false),
        };
        scalar
            .as_bool()
            .ok_or_else(|| self.error_at_token(scalar, "generate must be true or false"))
    }
}

/// Where a mapping starts, for messages: its first key (a mapping node's own
/// span starts at its first value).
fn first_key_span(mapping: &MarkedMappingNode) -> &marked_yaml::Span {
    mapping
        .keys()
        .next()
        .map(|key| key.span())
        .unwrap_or_else(|| mapping.span())
}

/// The span of `key` in `mapping` (the key itself), or the mapping's when absent.
fn key_span<'m>(mapping: &'m MarkedMappingNode, key: &str) -> &'m marked_yaml::Span {
    mapping
        .keys()
        .find(|candidate| candidate.as_str() == key)
        .map(|candidate| candidate.span())
        .unwrap_or_else(|| mapping.span())
}

fn format_span(nanos: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
    ];
    for (unit, suffix) in UNITS {
        if nanos % unit == 0 {
            return format!("{}{suffix}", nanos / unit);
        }
    }
    format!("{}ms", nanos / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_file_line_numbers() {
        let text = "a: 1\n---\nb: 2\nc: 3\n---\n# only a comment\n";
        let documents = split_documents(text);
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[0].lines().next(), Some("a: 1"));
        assert_eq!(documents[1].lines().nth(2), Some("b: 2"));
        assert_eq!(documents[1].lines().count(), text.lines().count());
    }

    #[test]
    fn spans_print_in_the_largest_exact_unit() {
        assert_eq!(format_span(300_000_000_000), "5m");
        assert_eq!(format_span(90_000_000_000), "90s");
        assert_eq!(format_span(1_500_000_000), "1500ms");
    }
}

//! Field mapping: which input key fills which canonical column, and how.
//!
//! A [`Mapping`] is compiled once (from the built-in table and an optional
//! user YAML file) into a small trie keyed by JSON object keys. The decoder
//! walks each event's top-level object and only descends into a nested object
//! when some mapped path goes through it, so unmapped subtrees are never
//! parsed, only skipped.
//!
//! Paths are written with dots (`response.usage.prompt_tokens`). Every way of
//! splitting a path into literal keys is inserted, so the nested form
//! (`{"response":{"usage":{"prompt_tokens":1}}}`), the flat dotted form
//! (`{"response.usage.prompt_tokens":1}`) and mixtures of the two all match.
//!
//! When several sources fill the same column, the rule with the higher
//! priority wins whatever the key order: user rules (the first listed wins),
//! then canonical names, then built-in aliases. When the *same* key appears
//! twice in one object, the last occurrence wins, as in most JSON parsers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ahash::AHashMap;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use inferwatch_core::{canonical_schema, column, dictionary_utf8, RoleVocabulary, DEFAULT_STREAM};
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node, Span};

use crate::coerce::TimestampUnit;
use crate::enrich::{Enrichment, EnrichmentSpec};
use crate::limits::ValueLimits;
use crate::record::{OwnedValue, Record};
use crate::IngestError;

/// Priority of user rules; the first rule listed gets the highest.
const USER_PRIORITY_BASE: u32 = 1_000;
/// Priority of canonical column names used as input keys.
const CANONICAL_PRIORITY: u32 = 100;
/// Paths longer than this only match fully nested or fully flat, because the
/// number of mixed spellings doubles with each segment.
const MAX_SEGMENTS_FOR_MIXED_SPELLINGS: usize = 8;

/// What a canonical column holds, from the decoder's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Timestamp,
    Text,
    Integer { minimum: i64, maximum: i64 },
    Float,
    FloatList,
    Attributes,
}

impl ColumnKind {
    pub(crate) fn of(data_type: &DataType) -> Option<ColumnKind> {
        Some(match data_type {
            DataType::Timestamp(_, _) => ColumnKind::Timestamp,
            DataType::Utf8 | DataType::Dictionary(_, _) => ColumnKind::Text,
            DataType::Int32 => ColumnKind::Integer {
                minimum: i64::from(i32::MIN),
                maximum: i64::from(i32::MAX),
            },
            DataType::Int64 => ColumnKind::Integer {
                minimum: i64::MIN,
                maximum: i64::MAX,
            },
            DataType::Float64 => ColumnKind::Float,
            DataType::List(_) => ColumnKind::FloatList,
            DataType::Map(_, _) => ColumnKind::Attributes,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            ColumnKind::Timestamp => "timestamp",
            ColumnKind::Text => "string",
            ColumnKind::Integer { .. } => "integer",
            ColumnKind::Float => "float",
            ColumnKind::FloatList => "float_list",
            ColumnKind::Attributes => "map",
        }
    }
}

/// How a mapped JSON value is turned into a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conversion {
    /// Strings as they are, numbers as their text, booleans as `true`/`false`.
    Text,
    /// Like `Text`, and objects and arrays as their raw JSON text.
    RawText,
    /// Normalised to `ok` or `error`.
    Status,
    /// An integer of the given width.
    Integer(IntegerWidth),
    /// A finite float.
    Float,
    /// `true`/`false`, `"true"`/`"false"` or 1/0, kept as text.
    Boolean,
    /// UTC nanoseconds.
    Timestamp(TimestampUnit),
    /// An array of finite numbers.
    FloatList,
    /// SHA-256 hex of the string content (or of the raw JSON of a non-string).
    Hash,
    /// Every entry of an object becomes an attribute.
    AttributesObject,
}

/// Width of an integer column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntegerWidth {
    Bits32,
    Bits64,
}

impl IntegerWidth {
    pub(crate) fn range(self) -> (i64, i64) {
        match self {
            IntegerWidth::Bits32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
            IntegerWidth::Bits64 => (i64::MIN, i64::MAX),
        }
    }
}

/// Where a rule puts its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A canonical column, by index in the canonical schema.
    Column(usize),
    /// An entry of the `attributes` map.
    Attribute(Box<str>),
}

/// One compiled `from → to` rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// The source path as the user wrote it; named in dead-letter reasons.
    pub(crate) source: Box<str>,
    pub(crate) target: Target,
    pub(crate) conversion: Conversion,
    pub(crate) priority: u32,
    user_defined: bool,
}

/// What the hot path reads of a rule, copied into the key table so that a
/// mapped key costs one cache line, not three (key slot, edge, rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HotRule {
    pub(crate) conversion: Conversion,
    pub(crate) priority: u32,
    /// Canonical column, or [`NO_COLUMN`] for an attribute target.
    pub(crate) column: u32,
}

/// `HotRule::column` of a rule whose target is an attribute.
pub(crate) const NO_COLUMN: u32 = u32::MAX;

impl Rule {
    pub(crate) fn hot(&self) -> HotRule {
        HotRule {
            conversion: self.conversion,
            priority: self.priority,
            column: match self.target {
                Target::Column(column) => u32::try_from(column).unwrap_or(NO_COLUMN),
                Target::Attribute(_) => NO_COLUMN,
            },
        }
    }

    /// A rule that no input key triggers: used to convert lookup-table
    /// values with the same code as event values.
    pub(crate) fn synthetic(source: String, target: Target, conversion: Conversion) -> Rule {
        Rule {
            source: source.into(),
            target,
            conversion,
            priority: 0,
            user_defined: false,
        }
    }
}

/// One key of a trie node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Edge {
    /// Rules applied to the value under this key.
    pub(crate) rules: Vec<u32>,
    /// Node to walk when the value is an object and deeper paths are mapped.
    pub(crate) child: Option<u32>,
    /// The value is ignored entirely.
    pub(crate) dropped: bool,
    /// The value must be an object (the canonical `attributes` key).
    pub(crate) expect_object: bool,
}

/// The keys mapped at one level of nesting.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrieNode {
    /// Used while building; `lookup` reads the compiled `table`.
    pub(crate) edges: AHashMap<Box<str>, Edge>,
    table: KeyTable,
    /// Prepended to unmapped keys at this level to name their attribute
    /// (`response.` under `response`, empty under `attributes`).
    pub(crate) unmapped_prefix: Box<str>,
}

impl TrieNode {
    /// The key slot for an object key at this level.
    #[inline]
    pub(crate) fn lookup(&self, key: &str) -> Option<&KeySlot> {
        self.table.lookup(key)
    }

    /// The full edge of a slot (for keys off the fast path).
    pub(crate) fn edge(&self, slot: &KeySlot) -> Option<&Edge> {
        self.table.edges.get(slot.edge as usize)
    }
}

/// An open-addressing table from key to edge, built once per node.
///
/// Every event looks up every one of its keys, so this is on the hot path.
/// A key is summarised by its length and its first and last eight bytes
/// (two overlapping words); for keys of up to 16 bytes, which is nearly all
/// of them, equal summaries mean equal keys and no byte comparison is
/// needed.
#[derive(Debug, Clone, Default)]
struct KeyTable {
    /// `edge == VACANT` marks an empty slot.
    slots: Box<[KeySlot]>,
    keys: Vec<Box<str>>,
    edges: Vec<Edge>,
}

const VACANT: u32 = u32::MAX;

/// 40 bytes holding everything a key with a single rule needs, so that the
/// root table of the built-in mapping (about 80 keys) stays within a few
/// kilobytes and one lookup touches one cache line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeySlot {
    head: u64,
    tail: u64,
    length: u32,
    edge: u32,
    /// The single rule of the key (`VACANT` when the key has several rules,
    /// a nested node, or is dropped).
    pub(crate) fast_rule: u32,
    pub(crate) hot: HotRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeySummary {
    length: u32,
    head: u64,
    tail: u64,
}

impl KeySummary {
    /// Length plus two words that, for keys of up to 16 bytes, determine
    /// the key: two overlapping 8-byte windows from 8 bytes up, two
    /// overlapping 4-byte windows from 4 bytes up, the bytes themselves below.
    #[inline]
    fn of(key: &[u8]) -> KeySummary {
        let length = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let (head, tail) = if let (Some(head), Some(tail)) =
            (key.first_chunk::<8>(), key.last_chunk::<8>())
        {
            (u64::from_le_bytes(*head), u64::from_le_bytes(*tail))
        } else if let (Some(head), Some(tail)) = (key.first_chunk::<4>(), key.last_chunk::<4>()) {
            let head = u64::from(u32::from_le_bytes(*head));
            let tail = u64::from(u32::from_le_bytes(*tail));
            (head | (tail << 32), 0)
        } else {
            let word = key.iter().enumerate().fold(0u64, |word, (index, &byte)| {
                word | (u64::from(byte) << (8 * index))
            });
            (word, 0)
        };
        KeySummary { length, head, tail }
    }

    #[inline]
    fn hash(&self) -> u64 {
        (self.head ^ self.tail.rotate_left(29) ^ u64::from(self.length))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl KeyTable {
    fn build(edges: &AHashMap<Box<str>, Edge>, rules: &[Rule]) -> KeyTable {
        // At most two thirds full: probes stay short, the table small.
        let capacity = (edges.len() * 3 / 2 + 1).next_power_of_two().max(8);
        let vacant = KeySlot {
            head: 0,
            tail: 0,
            length: u32::MAX,
            edge: VACANT,
            fast_rule: VACANT,
            hot: HotRule {
                conversion: Conversion::Text,
                priority: 0,
                column: NO_COLUMN,
            },
        };
        let mut slots = vec![vacant; capacity];
        let mut keys = Vec::with_capacity(edges.len());
        let mut stored = Vec::with_capacity(edges.len());
        let mask = capacity - 1;
        for (key, edge) in edges {
            let summary = KeySummary::of(key.as_bytes());
            let mut position = (summary.hash() >> 32) as usize & mask;
            while slots[position].edge != VACANT {
                position = (position + 1) & mask;
            }
            let fast = match (edge.child, edge.rules.as_slice(), edge.dropped) {
                (None, [only], false) => rules.get(*only as usize).map(|rule| (*only, rule.hot())),
                _ => None,
            };
            slots[position] = KeySlot {
                head: summary.head,
                tail: summary.tail,
                length: summary.length,
                edge: u32::try_from(stored.len()).unwrap_or(VACANT),
                fast_rule: fast.map_or(VACANT, |(index, _)| index),
                hot: fast.map_or(vacant.hot, |(_, hot)| hot),
            };
            keys.push(key.clone());
            stored.push(edge.clone());
        }
        KeyTable {
            slots: slots.into_boxed_slice(),
            keys,
            edges: stored,
        }
    }

    #[inline]
    fn lookup(&self, key: &str) -> Option<&KeySlot> {
        let bytes = key.as_bytes();
        let summary = KeySummary::of(bytes);
        let mask = self.slots.len().wrapping_sub(1);
        let mut position = (summary.hash() >> 32) as usize & mask;
        // The table is at most half full, so a vacant slot ends every probe.
        loop {
            let slot = self.slots.get(position)?;
            if slot.edge == VACANT {
                return None;
            }
            if slot.length == summary.length
                && slot.head == summary.head
                && slot.tail == summary.tail
            {
                let index = slot.edge as usize;
                // Up to 16 bytes the summary is the whole key.
                if summary.length <= 16
                    || self
                        .keys
                        .get(index)
                        .is_some_and(|stored| stored.as_bytes() == bytes)
                {
                    return Some(slot);
                }
            }
            position = (position + 1) & mask;
        }
    }
}

/// A compiled field mapping. Cheap to share: wrap it in an [`Arc`] and hand
/// it to as many [`crate::Decoder`]s as there are threads.
///
/// # Built-in names
///
/// Unless a mapping file says `builtin: false`, these are always on:
///
/// * every canonical column name, at the top level (`timestamp`, `model_id`,
///   `latency_ms`, `probabilities`…); a top-level `attributes` object is
///   merged into the `attributes` map, and OTel keys inside it still reach
///   their columns;
/// * OpenTelemetry GenAI, as flat dotted keys, nested objects, or inside
///   `attributes`: `gen_ai.response.model` (preferred) and
///   `gen_ai.request.model` → `model_id`; `gen_ai.response.id` →
///   `request_id`; `gen_ai.usage.input_tokens` / `prompt_tokens` →
///   `input_tokens`; `gen_ai.usage.output_tokens` / `completion_tokens` →
///   `output_tokens`; `error.type` → `error_type`; `client.address` →
///   `client_ip`; `http.response.status_code` / `http.status_code` →
///   `http_status`; `enduser.id` / `user.id` → `client_id`; `timeUnixNano` /
///   `observedTimeUnixNano` → `timestamp`; and `server.address`,
///   `server.port`, `gen_ai.system`, `gen_ai.provider.name`,
///   `gen_ai.operation.name`, `gen_ai.request.temperature` / `max_tokens` /
///   `top_p`, `gen_ai.response.finish_reasons`, `gen_ai.conversation.id`
///   kept as attributes under their dotted names;
/// * flat FastAPI / Python logging: `ts`, `time`, `@timestamp` → `timestamp`;
///   `input_payload_hash` → `input_hash`; `output_logits` → `logits`;
///   `output_probabilities` → `probabilities`; `status_code` →
///   `http_status`; `duration_ms` → `latency_ms`;
/// * OpenAI-style bodies: `model` → `model_id`; `usage.prompt_tokens` /
///   `usage.input_tokens` → `input_tokens`; `usage.completion_tokens` /
///   `usage.output_tokens` → `output_tokens`.
///
/// `status` is normalised: `ok`, `success`, `succeeded`, `successful`,
/// `completed` and codes 100–399 are `ok`; `error`, `failed`, `failure`,
/// `fail`, `timeout`, `cancelled` and codes 400–599 are `error`. When absent
/// it is derived: `error` if `http_status` is ≥ 500 or 429 or an
/// `error_type` is present, else `ok`. `stream` defaults to the mapping's.
///
/// # Mapping file reference
///
/// ```yaml
/// stream: inference   # stream of events that name none (default: inference)
/// builtin: true       # keep the built-in names above (default: true)
/// fields:             # applied in addition to (and before) the built-ins
///   - from: response.usage.prompt_tokens  # JSON path with dots; a literal
///                                         # dotted key matches too
///     to: input_tokens   # a canonical column, or any other name: an attribute
///     type: integer      # auto (default: the column's type) | string |
///                        # integer | float | boolean | timestamp | float_list
///     unit: ms           # timestamps: auto (default) | s | ms | us | ns | rfc3339
///     default: 0         # used when the field is absent or null
///   - from: prompt
///     to: input_hash
///     transform: hash    # SHA-256 hex of the value; the raw value is never kept
///   - from: debug_blob
///     drop: true         # ignored entirely, not even kept as an attribute
/// enrich:
///   - table: versions.csv       # CSV with a header, or .json (array of
///                               # objects, or object keyed by the key);
///                               # relative to the mapping file
///     key: model_version        # event column (or attribute) to look up
///     table_key: version        # key column in the table (default: `key`)
///     columns: [owner, ab_group] # canonical ones fill only nulls; others
///                                # become new Utf8-dictionary columns
/// ```
///
/// Unknown keys are errors, and every error names `file:line:column`.
///
/// Precedence: when several sources fill one column, the first matching user
/// rule wins, then the canonical name, then built-in aliases, whatever the
/// key order in the event. A user rule on a path replaces the built-in rules
/// on that same path (so `from: time, to: server_time` stops `time` being
/// read as the timestamp). When one key appears twice in an object, the
/// last occurrence wins. A value that cannot be converted refuses the line
/// only if it came from the winning source.
///
/// Unmapped fields are kept in `attributes` as text: strings unquoted, JSON
/// null as a null value, numbers, booleans, arrays and objects as their JSON
/// text. Unmapped keys inside an object that a mapped path goes through are
/// named by their full dotted path (`response.id`).
#[derive(Debug, Clone)]
pub struct Mapping {
    pub(crate) stream: Box<str>,
    pub(crate) rules: Vec<Rule>,
    /// `nodes[0]` is the root, the top-level object of an event.
    pub(crate) nodes: Vec<TrieNode>,
    /// Per canonical column: its kind, and the default when absent.
    pub(crate) column_kinds: Vec<ColumnKind>,
    pub(crate) column_defaults: Vec<Option<OwnedValue>>,
    pub(crate) attribute_defaults: Vec<(Box<str>, Box<str>)>,
    pub(crate) enrichment: Enrichment,
    pub(crate) schema: SchemaRef,
    /// Source names mapped to `timestamp`, for the "missing timestamp" reason.
    pub(crate) timestamp_sources: Box<str>,
    pub(crate) builtin_enabled: bool,
    pub(crate) origin: Option<PathBuf>,
    /// Whether unmapped keys are kept as attributes (false in a projection
    /// that does not ask for `attributes`).
    pub(crate) keep_unmapped: bool,
    /// Per canonical column, whether it is filled; `None` when all are
    /// (see [`Mapping::projected`]).
    pub(crate) projection: Option<Box<[bool]>>,
    /// The domain of the canonical numbers (the file's `limits:`).
    pub(crate) limits: ValueLimits,
    /// The words for the baseline and canary arms (the file's `roles:`).
    pub(crate) roles: RoleVocabulary,
}

/// Built-in aliases beyond the canonical names: `(path, target, priority)`.
/// A target that is not a canonical column is an attribute name: those
/// entries normalise nested and flat spellings to one dotted attribute key.
const BUILTIN_ALIASES: &[(&str, &str, u32)] = &[
    // OpenTelemetry GenAI semantic conventions. The response model is what
    // actually served the request, so it beats the requested one.
    ("gen_ai.response.model", column::MODEL_ID, 31),
    ("gen_ai.request.model", column::MODEL_ID, 30),
    ("gen_ai.response.id", column::REQUEST_ID, 30),
    ("gen_ai.usage.input_tokens", column::INPUT_TOKENS, 31),
    ("gen_ai.usage.prompt_tokens", column::INPUT_TOKENS, 30),
    ("gen_ai.usage.output_tokens", column::OUTPUT_TOKENS, 31),
    ("gen_ai.usage.completion_tokens", column::OUTPUT_TOKENS, 30),
    ("error.type", column::ERROR_TYPE, 30),
    ("client.address", column::CLIENT_IP, 30),
    ("http.response.status_code", column::HTTP_STATUS, 31),
    ("http.status_code", column::HTTP_STATUS, 30),
    ("enduser.id", column::CLIENT_ID, 31),
    ("user.id", column::CLIENT_ID, 30),
    ("timeUnixNano", column::TIMESTAMP, 31),
    ("observedTimeUnixNano", column::TIMESTAMP, 30),
    ("server.address", "server.address", 30),
    ("server.port", "server.port", 30),
    ("gen_ai.system", "gen_ai.system", 30),
    ("gen_ai.provider.name", "gen_ai.provider.name", 30),
    ("gen_ai.operation.name", "gen_ai.operation.name", 30),
    (
        "gen_ai.request.temperature",
        "gen_ai.request.temperature",
        30,
    ),
    ("gen_ai.request.max_tokens", "gen_ai.request.max_tokens", 30),
    ("gen_ai.request.top_p", "gen_ai.request.top_p", 30),
    (
        "gen_ai.response.finish_reasons",
        "gen_ai.response.finish_reasons",
        30,
    ),
    ("gen_ai.conversation.id", "gen_ai.conversation.id", 30),
    // Flat FastAPI / Python-logging style.
    ("ts", column::TIMESTAMP, 22),
    ("time", column::TIMESTAMP, 21),
    ("@timestamp", column::TIMESTAMP, 20),
    ("input_payload_hash", column::INPUT_HASH, 20),
    ("output_logits", column::LOGITS, 20),
    ("output_probabilities", column::PROBABILITIES, 20),
    ("status_code", column::HTTP_STATUS, 20),
    ("duration_ms", column::LATENCY_MS, 20),
    // OpenAI-style response bodies.
    ("model", column::MODEL_ID, 10),
    ("usage.prompt_tokens", column::INPUT_TOKENS, 10),
    ("usage.completion_tokens", column::OUTPUT_TOKENS, 10),
    ("usage.input_tokens", column::INPUT_TOKENS, 11),
    ("usage.output_tokens", column::OUTPUT_TOKENS, 11),
];

impl Mapping {
    /// The built-in mapping: canonical column names, OpenTelemetry GenAI
    /// attributes (flat, nested or inside an `attributes` object), flat
    /// FastAPI-style logs and OpenAI-style usage blocks.
    pub fn builtin() -> Mapping {
        let mut builder = MappingBuilder::new(None);
        builder.add_builtin();
        builder.finish(Enrichment::none())
    }

    /// Reads and compiles a user mapping file. Lookup tables named in its
    /// `enrich:` section are read relative to the file's directory.
    pub fn from_yaml_path(path: &Path) -> Result<Mapping, IngestError> {
        let text = std::fs::read_to_string(path).map_err(|source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Mapping::from_yaml_str(path, &text)
    }

    /// Compiles a user mapping given as text. `origin` names the file in
    /// error messages (`origin:line:column: message`) and anchors relative
    /// lookup-table paths.
    pub fn from_yaml_str(origin: &Path, text: &str) -> Result<Mapping, IngestError> {
        let spec = MappingSpec::parse(origin, text)?;
        let mut builder = MappingBuilder::new(Some(origin.to_path_buf()));
        if let Some(stream) = &spec.stream {
            builder.stream = stream.clone().into();
        }
        if spec.builtin {
            builder.add_builtin();
        }
        builder.add_user_fields(origin, &spec.fields)?;
        let base_directory = origin.parent().unwrap_or(Path::new("."));
        let enrichment = Enrichment::from_specs(origin, base_directory, &spec.enrich)?;
        let mut mapping = builder.finish(enrichment);
        mapping.limits = spec.limits;
        mapping.roles = spec.roles;
        Ok(mapping)
    }

    /// Replaces the lookup tables (for callers that build them in code with
    /// [`Enrichment::from_tables`]).
    pub fn with_enrichment(self, enrichment: Enrichment) -> Mapping {
        let mut mapping = self;
        mapping.schema = schema_with_extra_columns(enrichment.extra_columns());
        mapping.enrichment = enrichment;
        mapping
    }

    /// The schema of the batches decoded with this mapping: the canonical
    /// columns, then one Utf8-dictionary column per enrichment column that is
    /// not canonical.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The stream events get when they do not name one.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The words that name the baseline and canary arms in `ab_group`: the
    /// defaults plus the file's `roles:`.
    pub fn roles(&self) -> &RoleVocabulary {
        &self.roles
    }

    /// The lookup tables.
    pub fn enrichment(&self) -> &Enrichment {
        &self.enrichment
    }

    /// Whether the built-in names and aliases are active.
    pub fn builtin_enabled(&self) -> bool {
        self.builtin_enabled
    }

    /// The file this mapping was read from, if any.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// A copy of this mapping that only fills `columns` (canonical or
    /// enrichment column names); every other column of the schema stays in
    /// the schema but is all-null, and its input keys are skipped without
    /// being converted (and not copied into `attributes` either, unless
    /// `attributes` itself is requested). The schema is unchanged, so
    /// compiled consumers still fit. Unknown names are ignored.
    ///
    /// `timestamp` and `stream` are always kept (events without a timestamp
    /// are still dead letters), and so is every column the schema declares
    /// non-nullable (`status`). Dependencies are kept too: `status` keeps
    /// `http_status` and `error_type` (it is derived from them when absent);
    /// any of `confidence`, `predicted_class`, `margin`, `entropy` keeps
    /// `probabilities` and `logits`; an enrichment column keeps its lookup
    /// key.
    ///
    /// Bad values in kept fields are refused exactly as by the full mapping,
    /// and invalid JSON anywhere in a line still makes it a dead letter; but
    /// a projected decoder does not validate fields it does not read, so a
    /// wrong type in a skipped field is accepted.
    ///
    /// The trie is rewritten: rules whose target is not kept are removed, a
    /// key left with no rule and nothing nested below it is dropped, and
    /// every node's key table is rebuilt, so the decoder's hot path is the
    /// same code as for a full mapping.
    pub fn projected(&self, columns: &[&str]) -> Mapping {
        let canonical = canonical_schema();
        let column_count = self.column_kinds.len();
        let extra_names = self.enrichment.extra_columns();
        let mut keep = vec![false; column_count];
        let mut keep_extra = vec![false; extra_names.len()];
        let index = |name: &str| canonical.index_of(name).ok();
        for name in columns {
            if let Some(column) = index(name) {
                keep[column] = true;
            } else if let Some(extra) = extra_names.iter().position(|extra| extra == name) {
                keep_extra[extra] = true;
            }
        }
        let attributes = index(column::ATTRIBUTES);
        let mark = |keep: &mut Vec<bool>, name: &str| {
            if let Some(column) = index(name) {
                keep[column] = true;
            }
        };
        mark(&mut keep, column::TIMESTAMP);
        mark(&mut keep, column::STREAM);
        // A non-nullable column (status) must be filled for the batch to
        // fit the schema.
        for (column, field) in canonical.fields().iter().enumerate() {
            if !field.is_nullable() {
                keep[column] = true;
            }
        }
        // Dependencies, to a fixed point (enrichment keys may themselves be
        // derived or enriched columns).
        loop {
            let before = (keep.clone(), keep_extra.clone());
            let kept = |keep: &[bool], name: &str| index(name).is_some_and(|column| keep[column]);
            if kept(&keep, column::STATUS) {
                mark(&mut keep, column::HTTP_STATUS);
                mark(&mut keep, column::ERROR_TYPE);
            }
            if [
                column::CONFIDENCE,
                column::PREDICTED_CLASS,
                column::MARGIN,
                column::ENTROPY,
            ]
            .iter()
            .any(|name| kept(&keep, name))
            {
                mark(&mut keep, column::PROBABILITIES);
                mark(&mut keep, column::LOGITS);
            }
            self.enrichment
                .mark_keys(&mut keep, &mut keep_extra, attributes);
            if (keep.clone(), keep_extra.clone()) == before {
                break;
            }
        }
        let keep_attributes = attributes.is_some_and(|column| keep[column]);
        let mut mapping = self.clone();
        mapping.keep_unmapped = keep_attributes;
        let rule_kept: Vec<bool> = self
            .rules
            .iter()
            .map(|rule| match rule.target {
                Target::Column(column) => keep.get(column).copied().unwrap_or(false),
                Target::Attribute(_) => keep_attributes,
            })
            .collect();
        // Children are created after their parents, so walking the nodes
        // backwards settles every child before the edge that leads to it.
        let mut node_live = vec![true; mapping.nodes.len()];
        for node_index in (0..mapping.nodes.len()).rev() {
            let node = &mut mapping.nodes[node_index];
            let mut live = false;
            for edge in node.edges.values_mut() {
                edge.rules
                    .retain(|&rule| rule_kept.get(rule as usize).copied().unwrap_or(false));
                if let Some(child) = edge.child {
                    // With attributes kept, an unmapped subtree is still
                    // copied into them, so the child stays.
                    if !keep_attributes && !node_live[child as usize] {
                        edge.child = None;
                    }
                }
                if edge.rules.is_empty() && edge.child.is_none() {
                    edge.dropped = true;
                    edge.expect_object = false;
                }
                live |= !edge.dropped;
            }
            node_live[node_index] = live;
            node.table = KeyTable::build(&node.edges, &mapping.rules);
        }
        for (column, default) in mapping.column_defaults.iter_mut().enumerate() {
            if !keep[column] {
                *default = None;
            }
        }
        if !keep_attributes {
            mapping.attribute_defaults.clear();
        }
        mapping.enrichment.retain_targets(&keep, &keep_extra);
        mapping.projection = Some(keep.into_boxed_slice());
        mapping
    }

    /// Whether canonical column `index` is filled by decoders of this
    /// mapping (always, unless it is [`Mapping::projected`]).
    pub(crate) fn fills(&self, index: usize) -> bool {
        self.projection
            .as_ref()
            .is_none_or(|keep| keep.get(index).copied().unwrap_or(false))
    }

    /// Shares the mapping between decoders.
    pub fn into_shared(self) -> Arc<Mapping> {
        Arc::new(self)
    }
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping::builtin()
    }
}

fn schema_with_extra_columns(extra_columns: &[String]) -> SchemaRef {
    if extra_columns.is_empty() {
        return canonical_schema();
    }
    let mut fields: Vec<Field> = canonical_schema()
        .fields()
        .iter()
        .map(|field| field.as_ref().clone())
        .collect();
    fields.extend(
        extra_columns
            .iter()
            .map(|name| Field::new(name.as_str(), dictionary_utf8(), true)),
    );
    Arc::new(Schema::new(fields))
}

/// Index of a canonical column by name.
pub(crate) fn canonical_column_index(name: &str) -> Option<usize> {
    canonical_schema().index_of(name).ok()
}

/// The conversion that fills canonical column `index`.
pub(crate) fn conversion_for_column(index: usize, kind: ColumnKind) -> Conversion {
    match kind {
        ColumnKind::Timestamp => Conversion::Timestamp(TimestampUnit::Auto),
        ColumnKind::Text if canonical_column_index(column::STATUS) == Some(index) => {
            Conversion::Status
        }
        ColumnKind::Text => Conversion::Text,
        ColumnKind::Integer { minimum, .. } => Conversion::Integer(if minimum == i64::MIN {
            IntegerWidth::Bits64
        } else {
            IntegerWidth::Bits32
        }),
        ColumnKind::Float => Conversion::Float,
        ColumnKind::FloatList => Conversion::FloatList,
        ColumnKind::Attributes => Conversion::AttributesObject,
    }
}

/// Builds the trie and rule table.
struct MappingBuilder {
    stream: Box<str>,
    rules: Vec<Rule>,
    nodes: Vec<TrieNode>,
    column_kinds: Vec<ColumnKind>,
    column_defaults: Vec<Option<(u32, OwnedValue)>>,
    attribute_defaults: Vec<(Box<str>, Box<str>)>,
    builtin_enabled: bool,
    origin: Option<PathBuf>,
}

impl MappingBuilder {
    fn new(origin: Option<PathBuf>) -> MappingBuilder {
        let schema = canonical_schema();
        let column_kinds: Vec<ColumnKind> = schema
            .fields()
            .iter()
            // Every canonical type has a kind; Text is a harmless fallback
            // should the schema grow a type this decoder does not know yet.
            .map(|field| ColumnKind::of(field.data_type()).unwrap_or(ColumnKind::Text))
            .collect();
        let column_count = column_kinds.len();
        MappingBuilder {
            stream: DEFAULT_STREAM.into(),
            rules: Vec::new(),
            nodes: vec![TrieNode::default()],
            column_kinds,
            column_defaults: vec![None; column_count],
            attribute_defaults: Vec::new(),
            builtin_enabled: false,
            origin,
        }
    }

    fn add_builtin(&mut self) {
        self.builtin_enabled = true;
        let schema = canonical_schema();
        for (index, field) in schema.fields().iter().enumerate() {
            let kind = self.column_kinds[index];
            if kind == ColumnKind::Attributes {
                // `attributes: {...}` is walked, not converted, so that OTel
                // keys inside it still reach their columns and the rest keep
                // their own names.
                let (_, edge) = self.edge_for_single_key(0, field.name(), "");
                edge.expect_object = true;
                continue;
            }
            let rule = Rule {
                source: field.name().as_str().into(),
                target: Target::Column(index),
                conversion: conversion_for_column(index, kind),
                priority: CANONICAL_PRIORITY,
                user_defined: false,
            };
            self.insert_rule(&[field.name().as_str()], rule);
        }
        for &(path, target, priority) in BUILTIN_ALIASES {
            let (target, conversion) = match canonical_column_index(target) {
                Some(index) => (
                    Target::Column(index),
                    conversion_for_column(index, self.column_kinds[index]),
                ),
                None => (Target::Attribute(target.into()), Conversion::RawText),
            };
            let segments: Vec<&str> = path.split('.').collect();
            let rule = Rule {
                source: path.into(),
                target,
                conversion,
                priority,
                user_defined: false,
            };
            self.insert_rule(&segments, rule);
            // The same OTel keys also arrive inside an `attributes` object.
            if path.contains('.') {
                let rule = Rule {
                    source: format!("attributes.{path}").into(),
                    ..self.rules[self.rules.len() - 1].clone()
                };
                let mut nested = vec![column::ATTRIBUTES];
                nested.extend(&segments);
                self.insert_rule_from(&nested, rule, true);
            }
        }
    }

    fn add_user_fields(&mut self, origin: &Path, fields: &[FieldSpec]) -> Result<(), IngestError> {
        let field_count = u32::try_from(fields.len()).unwrap_or(u32::MAX);
        for (position, field) in fields.iter().enumerate() {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            let priority = USER_PRIORITY_BASE + field_count.saturating_sub(position);
            self.add_user_field(origin, field, priority)?;
        }
        Ok(())
    }

    fn add_user_field(
        &mut self,
        origin: &Path,
        field: &FieldSpec,
        priority: u32,
    ) -> Result<(), IngestError> {
        let segments: Vec<&str> = field.from.value.split('.').collect();
        if segments.iter().any(|segment| segment.is_empty()) {
            return Err(config_error(
                origin,
                &field.from.span,
                format!(
                    "invalid `from` path {:?}: empty segment (write a.b.c)",
                    field.from.value
                ),
            ));
        }
        if field.drop {
            if let Some(to) = &field.to {
                return Err(config_error(
                    origin,
                    &to.span,
                    "`drop: true` and `to` exclude each other: a dropped field goes nowhere",
                ));
            }
            self.mark_dropped(&segments);
            return Ok(());
        }
        let Some(to) = &field.to else {
            return Err(config_error(
                origin,
                &field.span,
                format!(
                    "field {:?} needs `to` (a column or attribute name) or `drop: true`",
                    field.from.value
                ),
            ));
        };
        if to.value.is_empty() {
            return Err(config_error(origin, &to.span, "`to` must not be empty"));
        }
        let target = match canonical_column_index(&to.value) {
            Some(index) => Target::Column(index),
            None => Target::Attribute(to.value.as_str().into()),
        };
        let conversion = self.user_conversion(origin, field, &target)?;
        let rule = Rule {
            source: field.from.value.as_str().into(),
            target: target.clone(),
            conversion,
            priority,
            user_defined: true,
        };
        if let Some(default) = &field.default {
            let value = convert_default(origin, default, &rule)?;
            match &target {
                Target::Column(index) => {
                    let slot = &mut self.column_defaults[*index];
                    if slot
                        .as_ref()
                        .is_none_or(|(existing, _)| *existing < priority)
                    {
                        *slot = Some((priority, value));
                    }
                }
                Target::Attribute(name) => {
                    let mut record = Record::new(0, 0);
                    let text = record.render_owned(&value).into_boxed_str();
                    if !self.attribute_defaults.iter().any(|(key, _)| key == name) {
                        self.attribute_defaults.push((name.clone(), text));
                    }
                }
            }
        }
        self.insert_rule(&segments, rule);
        Ok(())
    }

    fn user_conversion(
        &self,
        origin: &Path,
        field: &FieldSpec,
        target: &Target,
    ) -> Result<Conversion, IngestError> {
        let column_kind = match target {
            Target::Column(index) => Some(self.column_kinds[*index]),
            Target::Attribute(_) => None,
        };
        let unit = match &field.unit {
            Some(unit) => Some(TimestampUnit::parse(&unit.value).ok_or_else(|| {
                config_error(
                    origin,
                    &unit.span,
                    format!(
                        "unknown unit {:?} (expected auto, s, ms, us, ns or rfc3339)",
                        unit.value
                    ),
                )
            })?),
            None => None,
        };
        let conversion = if let Some(transform) = &field.transform {
            if transform.value != "hash" {
                return Err(config_error(
                    origin,
                    &transform.span,
                    format!("unknown transform {:?} (expected hash)", transform.value),
                ));
            }
            if column_kind.is_some_and(|kind| kind != ColumnKind::Text) {
                return Err(config_error(
                    origin,
                    &transform.span,
                    format!(
                        "transform hash produces a string, but column {} holds {}",
                        to_name(field),
                        column_kind.map_or("?", ColumnKind::describe)
                    ),
                ));
            }
            if let Some(field_type) = &field.field_type {
                if field_type.value != "string" && field_type.value != "auto" {
                    return Err(config_error(
                        origin,
                        &field_type.span,
                        "transform hash produces a string: leave `type` out",
                    ));
                }
            }
            Conversion::Hash
        } else {
            let declared = match &field.field_type {
                Some(field_type) if field_type.value != "auto" => Some(field_type),
                _ => None,
            };
            match (declared, column_kind, target) {
                (None, Some(kind), Target::Column(index)) => conversion_for_column(*index, kind),
                (None, _, _) => Conversion::RawText,
                (Some(declared), kind, _) => {
                    let conversion = match declared.value.as_str() {
                        "string" => Conversion::Text,
                        "integer" => Conversion::Integer(IntegerWidth::Bits64),
                        "float" => Conversion::Float,
                        "boolean" => Conversion::Boolean,
                        "timestamp" => Conversion::Timestamp(TimestampUnit::Auto),
                        "float_list" => Conversion::FloatList,
                        other => {
                            return Err(config_error(
                                origin,
                                &declared.span,
                                format!(
                                    "unknown type {other:?} (expected auto, string, integer, \
                                     float, boolean, timestamp or float_list)"
                                ),
                            ))
                        }
                    };
                    match (kind, target) {
                        (None, _) => conversion,
                        (Some(kind), Target::Column(index)) => {
                            let natural = conversion_for_column(*index, kind);
                            let fits = match (conversion, natural) {
                                (Conversion::Text, Conversion::Text | Conversion::Status) => true,
                                (Conversion::Integer(_), Conversion::Integer(_)) => true,
                                (a, b) => std::mem::discriminant(&a) == std::mem::discriminant(&b),
                            };
                            if !fits {
                                return Err(config_error(
                                    origin,
                                    &declared.span,
                                    format!(
                                        "type {} does not fit column {}, which holds {}",
                                        declared.value,
                                        to_name(field),
                                        kind.describe()
                                    ),
                                ));
                            }
                            natural
                        }
                        (Some(_), Target::Attribute(_)) => conversion,
                    }
                }
            }
        };
        match (unit, conversion) {
            (Some(unit), Conversion::Timestamp(_)) => Ok(Conversion::Timestamp(unit)),
            (Some(_), _) => Err(config_error(
                origin,
                &field
                    .unit
                    .as_ref()
                    .map(|unit| unit.span)
                    .unwrap_or(field.span),
                "`unit` only applies to timestamps (target timestamp or type: timestamp)",
            )),
            (None, conversion) => Ok(conversion),
        }
    }

    /// Inserts a rule under every spelling of its path.
    fn insert_rule(&mut self, segments: &[&str], rule: Rule) {
        self.insert_rule_from(segments, rule, false);
    }

    fn insert_rule_from(&mut self, segments: &[&str], rule: Rule, first_is_attributes: bool) {
        let rule_index = u32::try_from(self.rules.len()).unwrap_or(u32::MAX);
        let user_defined = rule.user_defined;
        self.rules.push(rule);
        let mut edges = Vec::new();
        self.collect_edges(0, segments, first_is_attributes, &mut edges);
        for (node, key) in edges {
            let edge = self.nodes[node as usize].edges.entry(key).or_default();
            if user_defined {
                // A user rule on a path replaces the built-in rules on it, so
                // that remapping `time` to an attribute stops it being read as
                // the timestamp.
                let rules = &self.rules;
                edge.rules
                    .retain(|&existing| rules[existing as usize].user_defined);
                edge.dropped = false;
            }
            edge.rules.push(rule_index);
        }
    }

    fn mark_dropped(&mut self, segments: &[&str]) {
        let mut edges = Vec::new();
        self.collect_edges(0, segments, false, &mut edges);
        for (node, key) in edges {
            let edge = self.nodes[node as usize].edges.entry(key).or_default();
            edge.dropped = true;
            edge.rules.clear();
        }
    }

    /// Finds (creating nodes as needed) every `(node, final key)` pair that
    /// spells `segments`. With `first_is_attributes`, the first segment is
    /// the `attributes` key and is only ever nested.
    fn collect_edges(
        &mut self,
        node: u32,
        segments: &[&str],
        first_is_attributes: bool,
        out: &mut Vec<(u32, Box<str>)>,
    ) {
        if first_is_attributes {
            let child = self.child_node(node, segments[0], "");
            self.collect_edges(child, &segments[1..], false, out);
            return;
        }
        let all_spellings = segments.len() <= MAX_SEGMENTS_FOR_MIXED_SPELLINGS;
        for take in 1..=segments.len() {
            if !all_spellings && take != 1 && take != segments.len() {
                continue;
            }
            let key = segments[..take].join(".");
            if take == segments.len() {
                out.push((node, key.into()));
            } else {
                let prefix = format!("{}{key}.", self.nodes[node as usize].unmapped_prefix);
                let child = self.child_node(node, &key, &prefix);
                if all_spellings {
                    self.collect_edges(child, &segments[take..], false, out);
                } else {
                    // Fully nested only below the first level.
                    self.collect_nested_only(child, &segments[take..], out);
                }
            }
        }
    }

    fn collect_nested_only(
        &mut self,
        node: u32,
        segments: &[&str],
        out: &mut Vec<(u32, Box<str>)>,
    ) {
        let mut node = node;
        for (position, segment) in segments.iter().enumerate() {
            if position + 1 == segments.len() {
                out.push((node, (*segment).into()));
            } else {
                let prefix = format!("{}{segment}.", self.nodes[node as usize].unmapped_prefix);
                node = self.child_node(node, segment, &prefix);
            }
        }
    }

    fn child_node(&mut self, node: u32, key: &str, prefix: &str) -> u32 {
        let next_index = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        let (child, created) = {
            let edge = self.nodes[node as usize]
                .edges
                .entry(key.into())
                .or_default();
            match edge.child {
                Some(child) => (child, false),
                None => {
                    edge.child = Some(next_index);
                    (next_index, true)
                }
            }
        };
        if created {
            self.nodes.push(TrieNode {
                edges: AHashMap::default(),
                table: KeyTable::default(),
                unmapped_prefix: prefix.into(),
            });
        }
        child
    }

    fn edge_for_single_key(&mut self, node: u32, key: &str, prefix: &str) -> (u32, &mut Edge) {
        let child = self.child_node(node, key, prefix);
        let edge = self.nodes[node as usize]
            .edges
            .entry(key.into())
            .or_default();
        (child, edge)
    }

    fn finish(mut self, enrichment: Enrichment) -> Mapping {
        for node in &mut self.nodes {
            node.table = KeyTable::build(&node.edges, &self.rules);
        }
        let schema = schema_with_extra_columns(enrichment.extra_columns());
        let mut column_defaults: Vec<Option<OwnedValue>> = self
            .column_defaults
            .into_iter()
            .map(|default| default.map(|(_, value)| value))
            .collect();
        if let Some(stream_index) = canonical_column_index(column::STREAM) {
            if column_defaults[stream_index].is_none() {
                column_defaults[stream_index] = Some(OwnedValue::Text(self.stream.clone()));
            }
        }
        let timestamp_index = canonical_column_index(column::TIMESTAMP);
        let mut timestamp_sources = String::new();
        let mut timestamp_rules: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|rule| matches!(rule.target, Target::Column(index) if Some(index) == timestamp_index))
            .filter(|rule| !rule.source.starts_with("attributes."))
            .collect();
        timestamp_rules.sort_by_key(|rule| std::cmp::Reverse(rule.priority));
        for rule in timestamp_rules {
            if !timestamp_sources.is_empty() {
                timestamp_sources.push_str(", ");
            }
            let _ = write!(timestamp_sources, "{}", rule.source);
        }
        Mapping {
            stream: self.stream,
            rules: self.rules,
            nodes: self.nodes,
            column_kinds: self.column_kinds,
            column_defaults,
            attribute_defaults: self.attribute_defaults,
            enrichment,
            schema,
            timestamp_sources: timestamp_sources.into(),
            builtin_enabled: self.builtin_enabled,
            origin: self.origin,
            keep_unmapped: true,
            projection: None,
            limits: ValueLimits::default(),
            roles: RoleVocabulary::default(),
        }
    }
}

fn to_name(field: &FieldSpec) -> &str {
    field.to.as_ref().map_or("?", |to| to.value.as_str())
}

/// Converts a YAML default through the same code path as event values, so a
/// default that would not fit its column is refused when the file is loaded,
/// not on every event.
fn convert_default(
    origin: &Path,
    default: &Spanned<serde_json::Value>,
    rule: &Rule,
) -> Result<OwnedValue, IngestError> {
    let json = default.value.to_string();
    let mut record = Record::new(0, 0);
    record.convert_json_text(rule, &json).map_err(|message| {
        config_error(origin, &default.span, format!("invalid default: {message}"))
    })
}

// ---------------------------------------------------------------------------
// YAML reading (by hand over marked_yaml nodes, so that every error names
// the exact line and column, including unknown keys).

/// A value and where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

#[derive(Debug)]
struct MappingSpec {
    stream: Option<String>,
    builtin: bool,
    fields: Vec<FieldSpec>,
    enrich: Vec<EnrichmentSpec>,
    limits: ValueLimits,
    roles: RoleVocabulary,
}

#[derive(Debug)]
struct FieldSpec {
    span: Span,
    from: Spanned<String>,
    to: Option<Spanned<String>>,
    field_type: Option<Spanned<String>>,
    unit: Option<Spanned<String>>,
    transform: Option<Spanned<String>>,
    drop: bool,
    default: Option<Spanned<serde_json::Value>>,
}

impl MappingSpec {
    fn parse(origin: &Path, text: &str) -> Result<MappingSpec, IngestError> {
        let empty = MappingSpec {
            stream: None,
            builtin: true,
            fields: Vec::new(),
            enrich: Vec::new(),
            limits: ValueLimits::default(),
            roles: RoleVocabulary::default(),
        };
        if text.lines().all(|line| {
            let line = line.trim();
            line.is_empty() || line.starts_with('#') || line == "---"
        }) {
            return Ok(empty);
        }
        let options = LoaderOptions::default().error_on_duplicate_keys(true);
        let root = marked_yaml::parse_yaml_with_options(0, text, options)
            .map_err(|error| load_error(origin, &error))?;
        let Some(root) = root.as_mapping() else {
            return Err(config_error(
                origin,
                root.span(),
                "a mapping file must be a YAML mapping (stream, builtin, fields, enrich)",
            ));
        };
        let mut spec = empty;
        for (key, value) in root.iter() {
            match key.as_str() {
                "stream" => spec.stream = Some(expect_string(origin, key, value)?.value),
                "builtin" => spec.builtin = expect_bool(origin, key, value)?,
                "fields" => {
                    for item in expect_sequence(origin, key, value)? {
                        spec.fields.push(FieldSpec::parse(origin, item)?);
                    }
                }
                "enrich" => {
                    for item in expect_sequence(origin, key, value)? {
                        spec.enrich.push(parse_enrichment_spec(origin, item)?);
                    }
                }
                "limits" => spec.limits = parse_limits(origin, value)?,
                "roles" => spec.roles = parse_roles(origin, value)?,
                other => {
                    return Err(unknown_key(
                        origin,
                        key,
                        other,
                        "the top level",
                        &["stream", "builtin", "fields", "enrich", "limits", "roles"],
                    ))
                }
            }
        }
        Ok(spec)
    }
}

impl FieldSpec {
    fn parse(origin: &Path, node: &Node) -> Result<FieldSpec, IngestError> {
        let mapping = expect_mapping(origin, node, "a field rule")?;
        let span = first_key_span(mapping).unwrap_or(*node.span());
        let mut from = None;
        let mut spec = FieldSpec {
            span,
            from: Spanned {
                value: String::new(),
                span: *node.span(),
            },
            to: None,
            field_type: None,
            unit: None,
            transform: None,
            drop: false,
            default: None,
        };
        for (key, value) in mapping.iter() {
            match key.as_str() {
                "from" => from = Some(expect_string(origin, key, value)?),
                "to" => spec.to = Some(expect_string(origin, key, value)?),
                "type" => spec.field_type = Some(expect_string(origin, key, value)?),
                "unit" => spec.unit = Some(expect_string(origin, key, value)?),
                "transform" => spec.transform = Some(expect_string(origin, key, value)?),
                "drop" => spec.drop = expect_bool(origin, key, value)?,
                "default" => {
                    spec.default = Some(Spanned {
                        value: yaml_to_json(value),
                        span: *value.span(),
                    })
                }
                other => {
                    return Err(unknown_key(
                        origin,
                        key,
                        other,
                        "a field rule",
                        &["from", "to", "type", "unit", "transform", "drop", "default"],
                    ))
                }
            }
        }
        spec.from = from.ok_or_else(|| {
            config_error(origin, &span, "a field rule needs `from` (the input path)")
        })?;
        Ok(spec)
    }
}

fn parse_enrichment_spec(origin: &Path, node: &Node) -> Result<EnrichmentSpec, IngestError> {
    let mapping = expect_mapping(origin, node, "an enrichment")?;
    let span = first_key_span(mapping).unwrap_or(*node.span());
    let mut table = None;
    let mut key_column = None;
    let mut table_key = None;
    let mut columns = None;
    for (key, value) in mapping.iter() {
        match key.as_str() {
            "table" => table = Some(expect_string(origin, key, value)?),
            "key" => key_column = Some(expect_string(origin, key, value)?),
            "table_key" => table_key = Some(expect_string(origin, key, value)?),
            "columns" => {
                let mut names = Vec::new();
                for item in expect_sequence(origin, key, value)? {
                    let Some(scalar) = item.as_scalar() else {
                        return Err(config_error(
                            origin,
                            item.span(),
                            "a column name must be a string",
                        ));
                    };
                    names.push(Spanned {
                        value: scalar.as_str().to_string(),
                        span: *scalar.span(),
                    });
                }
                if names.is_empty() {
                    return Err(config_error(
                        origin,
                        value.span(),
                        "`columns` must name at least one column",
                    ));
                }
                columns = Some(Spanned {
                    value: names,
                    span: *value.span(),
                });
            }
            other => {
                return Err(unknown_key(
                    origin,
                    key,
                    other,
                    "an enrichment",
                    &["table", "key", "table_key", "columns"],
                ))
            }
        }
    }
    let missing = |what: &str| config_error(origin, &span, format!("an enrichment needs `{what}`"));
    Ok(EnrichmentSpec {
        table: table.ok_or_else(|| missing("table"))?,
        key_column: key_column.ok_or_else(|| missing("key"))?,
        table_key,
        columns: columns.ok_or_else(|| missing("columns"))?,
    })
}

/// Where a mapping's first key is written: a better place to point at than
/// the mapping node itself, whose start marker can lag behind.
fn first_key_span(mapping: &MarkedMappingNode) -> Option<Span> {
    mapping.iter().next().map(|(key, _)| *key.span())
}

/// YAML scalars become JSON strings (the converters read numbers from
/// strings anyway), sequences become arrays.
fn yaml_to_json(node: &Node) -> serde_json::Value {
    match node {
        Node::Scalar(scalar) => serde_json::Value::String(scalar.as_str().to_string()),
        Node::Sequence(sequence) => {
            serde_json::Value::Array(sequence.iter().map(yaml_to_json).collect())
        }
        Node::Mapping(mapping) => serde_json::Value::Object(
            mapping
                .iter()
                .map(|(key, value)| (key.as_str().to_string(), yaml_to_json(value)))
                .collect(),
        ),
    }
}

fn expect_mapping<'a>(
    origin: &Path,
    node: &'a Node,
    what: &str,
) -> Result<&'a MarkedMappingNode, IngestError> {
    node.as_mapping()
        .ok_or_else(|| config_error(origin, node.span(), format!("{what} must be a mapping")))
}

fn expect_sequence<'a>(
    origin: &Path,
    key: &MarkedScalarNode,
    value: &'a Node,
) -> Result<&'a [Node], IngestError> {
    match value {
        Node::Sequence(sequence) => Ok(sequence.as_slice()),
        // `fields:` with nothing under it.
        Node::Scalar(scalar)
            if scalar.as_str().is_empty()
                || scalar.as_str() == "null"
                || scalar.as_str() == "~" =>
        {
            Ok(&[])
        }
        _ => Err(config_error(
            origin,
            value.span(),
            format!("`{}` must be a list", key.as_str()),
        )),
    }
}

fn expect_string(
    origin: &Path,
    key: &MarkedScalarNode,
    value: &Node,
) -> Result<Spanned<String>, IngestError> {
    match value.as_scalar() {
        Some(scalar) => Ok(Spanned {
            value: scalar.as_str().to_string(),
            span: *scalar.span(),
        }),
        None => Err(config_error(
            origin,
            value.span(),
            format!("`{}` must be a string", key.as_str()),
        )),
    }
}

/// `roles: {baseline: [words], canary: [words]}`, added to the defaults.
fn parse_roles(origin: &Path, node: &Node) -> Result<RoleVocabulary, IngestError> {
    let mut roles = RoleVocabulary::default();
    for (key, value) in expect_mapping(origin, node, "`roles`")?.iter() {
        let mut words = Vec::new();
        for item in expect_sequence(origin, key, value)? {
            words.push(expect_string(origin, key, item)?.value);
        }
        match key.as_str() {
            "baseline" => roles.extend(&words, &[]),
            "canary" => roles.extend(&[], &words),
            other => {
                return Err(unknown_key(
                    origin,
                    key,
                    other,
                    "`roles`",
                    &["baseline", "canary"],
                ))
            }
        }
    }
    Ok(roles)
}

/// `limits: {latency_ms: <max>, tokens: <max>}` (see [`ValueLimits`]).
fn parse_limits(origin: &Path, node: &Node) -> Result<ValueLimits, IngestError> {
    let mut limits = ValueLimits::default();
    for (key, value) in expect_mapping(origin, node, "`limits`")?.iter() {
        let number = value
            .as_scalar()
            .and_then(|scalar| scalar.as_str().parse::<f64>().ok())
            .filter(|number| number.is_finite() && *number > 0.0)
            .ok_or_else(|| {
                config_error(
                    origin,
                    value.span(),
                    format!("`{}` must be a positive number", key.as_str()),
                )
            })?;
        match key.as_str() {
            "latency_ms" => limits.latency_ms = number,
            "tokens" => limits.tokens = number.min(i64::MAX as f64) as i64,
            other => {
                return Err(unknown_key(
                    origin,
                    key,
                    other,
                    "`limits`",
                    &["latency_ms", "tokens"],
                ))
            }
        }
    }
    Ok(limits)
}

fn expect_bool(origin: &Path, key: &MarkedScalarNode, value: &Node) -> Result<bool, IngestError> {
    value
        .as_scalar()
        .and_then(|scalar| scalar.as_bool())
        .ok_or_else(|| {
            config_error(
                origin,
                value.span(),
                format!("`{}` must be true or false", key.as_str()),
            )
        })
}

fn unknown_key(
    origin: &Path,
    key: &MarkedScalarNode,
    name: &str,
    place: &str,
    expected: &[&str],
) -> IngestError {
    config_error(
        origin,
        key.span(),
        format!(
            "unknown key `{name}` in {place} (expected one of: {})",
            expected.join(", ")
        ),
    )
}

/// Builds a [`IngestError::Config`] positioned at the start of `span`.
pub(crate) fn config_error(origin: &Path, span: &Span, message: impl Into<String>) -> IngestError {
    let (line, column) = span
        .start()
        .map_or((1, 1), |marker| (marker.line(), marker.column()));
    IngestError::Config {
        path: origin.to_path_buf(),
        line,
        column,
        message: message.into(),
    }
}

fn load_error(origin: &Path, error: &LoadError) -> IngestError {
    let marker = match error {
        LoadError::TopLevelMustBeMapping(marker)
        | LoadError::TopLevelMustBeSequence(marker)
        | LoadError::UnexpectedAnchor(marker)
        | LoadError::MappingKeyMustBeScalar(marker)
        | LoadError::UnexpectedTag(marker)
        | LoadError::ScanError(marker, _) => Some(*marker),
        LoadError::DuplicateKey(inner) => inner.key.span().start().copied(),
    };
    let (line, column) = marker.map_or((1, 1), |marker| (marker.line(), marker.column()));
    // LoadError's text starts with its own "line:column: "; keep only the
    // message, lowercased like every other error of this crate.
    let text = error.to_string();
    let prefix = format!("{line}:{column}: ");
    let message = text.strip_prefix(&prefix).unwrap_or(&text);
    let message = match error {
        LoadError::DuplicateKey(inner) => format!("duplicate key `{}`", inner.key.as_str()),
        _ => lowercase_first(message),
    };
    IngestError::Config {
        path: origin.to_path_buf(),
        line,
        column,
        message: format!("invalid YAML: {message}"),
    }
}

fn lowercase_first(text: &str) -> String {
    let mut characters = text.chars();
    match characters.next() {
        Some(first) => first.to_lowercase().chain(characters).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_add_a_fleets_words_to_the_vocabulary() {
        let mapping = Mapping::from_yaml_str(
            Path::new("m.yaml"),
            "roles:\n  baseline: [blue]\n  canary: [green, edge]\n",
        )
        .unwrap();
        let role = |word| mapping.roles().role_of(word);
        assert_eq!(role("blue"), Some(inferwatch_core::Role::Baseline));
        assert_eq!(role("green"), Some(inferwatch_core::Role::Canary));
        assert_eq!(role("stable"), Some(inferwatch_core::Role::Baseline));
        let error = Mapping::from_yaml_str(Path::new("m.yaml"), "roles:\n  canery: [x]\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("m.yaml:2:") && error.contains("canery"),
            "{error}"
        );
    }

    #[test]
    fn key_table_finds_members_and_only_members() {
        // Keys of every length from 0 to 40 sharing prefixes and suffixes,
        // so that summaries are as alike as they can be.
        let alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_.-@";
        let mut members: Vec<String> = (0..=alphabet.len())
            .map(|length| alphabet[..length].to_string())
            .collect();
        members.extend((1..alphabet.len()).map(|start| alphabet[start..].to_string()));
        members.sort();
        members.dedup();
        let edges: AHashMap<Box<str>, Edge> = members
            .iter()
            .map(|key| (key.as_str().into(), Edge::default()))
            .collect();
        let table = KeyTable::build(&edges, &[]);
        for key in &members {
            let slot = table
                .lookup(key)
                .unwrap_or_else(|| panic!("{key:?} not found"));
            assert_eq!(&*table.keys[slot.edge as usize], key.as_str());
        }
        for absent in [
            "abcdefghijklmnoq",
            "bcd",
            "abcdefghijklmnopqrstuvwxyz0123456789_.-X",
            "zz",
            "a-",
        ] {
            assert!(table.lookup(absent).is_none(), "{absent:?}");
        }
        assert!(KeyTable::default().lookup("anything").is_none());
    }

    #[test]
    fn every_builtin_alias_names_a_column_or_keeps_its_name() {
        let mapping = Mapping::builtin();
        for &(path, target, _) in BUILTIN_ALIASES {
            let rule = mapping
                .rules
                .iter()
                .find(|rule| &*rule.source == path)
                .unwrap_or_else(|| panic!("{path} has no rule"));
            match &rule.target {
                Target::Column(index) => {
                    assert_eq!(canonical_schema().field(*index).name(), target)
                }
                Target::Attribute(name) => assert_eq!(&**name, target),
            }
        }
        assert_eq!(mapping.stream(), DEFAULT_STREAM);
        assert_eq!(mapping.schema(), canonical_schema());
    }

    #[test]
    fn user_rules_are_ranked_in_file_order() {
        let mapping = Mapping::from_yaml_str(
            Path::new("m.yaml"),
            "fields:\n  - from: a\n    to: model_id\n  - from: b\n    to: model_id\n",
        )
        .unwrap();
        let priority = |source: &str| {
            mapping
                .rules
                .iter()
                .find(|rule| &*rule.source == source)
                .map(|rule| rule.priority)
                .unwrap()
        };
        assert!(priority("a") > priority("b"));
        assert!(priority("b") > priority("model_id"));
        assert!(priority("model_id") > priority("gen_ai.response.model"));
    }
}

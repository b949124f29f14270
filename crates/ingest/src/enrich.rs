//! Enrichment: lookup tables joined onto events by a key column.
//!
//! A table maps a key (say a `model_version`) to a few values (its owner,
//! release date, A/B arm). Values for canonical columns are converted to the
//! column type when the table is loaded and only fill a column the event left
//! null; other values become extra Utf8-dictionary columns appended to the
//! schema. Tables are applied in the order given, so a later table may be
//! keyed by a column an earlier one added.

use std::path::Path;

use ahash::AHashMap;
use inferwatch_core::canonical_schema;

use crate::mapping::{
    canonical_column_index, config_error, conversion_for_column, ColumnKind, Rule, Spanned, Target,
};
use crate::record::{OwnedValue, Record, SlotValue};
use crate::IngestError;

/// One `enrich:` entry of a mapping file, as written.
#[derive(Debug, Clone)]
pub(crate) struct EnrichmentSpec {
    pub(crate) table: Spanned<String>,
    pub(crate) key_column: Spanned<String>,
    pub(crate) table_key: Option<Spanned<String>>,
    pub(crate) columns: Spanned<Vec<Spanned<String>>>,
}

/// One row of a lookup table as text, one optional value per column.
type TextRow = Box<[Option<Box<str>>]>;

/// A lookup table as text: for each key, one optional value per column.
#[derive(Debug, Clone)]
pub struct LookupTable {
    name: String,
    key_column: String,
    columns: Vec<String>,
    rows: AHashMap<Box<str>, TextRow>,
}

impl LookupTable {
    /// An empty table named `name` (used in error messages), joined on the
    /// event column `key_column`, providing `columns`.
    pub fn new(
        name: impl Into<String>,
        key_column: impl Into<String>,
        columns: Vec<String>,
    ) -> LookupTable {
        LookupTable {
            name: name.into(),
            key_column: key_column.into(),
            columns,
            rows: AHashMap::default(),
        }
    }

    /// Adds (or replaces: the last row with a key wins) one row.
    pub fn insert(&mut self, key: &str, values: Vec<Option<String>>) -> Result<(), IngestError> {
        if values.len() != self.columns.len() {
            return Err(IngestError::LookupTable {
                table: self.name.clone(),
                message: format!(
                    "row {key:?} has {} values for {} columns",
                    values.len(),
                    self.columns.len()
                ),
            });
        }
        let values: Box<[Option<Box<str>>]> = values
            .into_iter()
            .map(|value| value.map(String::into_boxed_str))
            .collect();
        self.rows.insert(key.into(), values);
        Ok(())
    }

    /// Reads a table file: CSV with a header row (`.csv`), or JSON (`.json`)
    /// holding either an array of objects or an object keyed by the key.
    /// `table_key` names the key column in the file when it differs from
    /// the event column `key_column`.
    pub fn from_path(
        path: &Path,
        key_column: &str,
        table_key: Option<&str>,
        columns: Vec<String>,
    ) -> Result<LookupTable, IngestError> {
        let table_key = table_key.unwrap_or(key_column);
        let is_json = path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| extension.eq_ignore_ascii_case("json"));
        let mut table = LookupTable::new(path.display().to_string(), key_column, columns);
        if is_json {
            table.read_json(path, table_key)?;
        } else {
            table.read_csv(path, table_key)?;
        }
        Ok(table)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table's name (its path when read from a file).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, message: impl Into<String>) -> IngestError {
        IngestError::LookupTable {
            table: self.name.clone(),
            message: message.into(),
        }
    }

    fn read_csv(&mut self, path: &Path, table_key: &str) -> Result<(), IngestError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(|error| csv_error(path, error))?;
        let headers = reader
            .headers()
            .map_err(|error| csv_error(path, error))?
            .clone();
        let position_of = |name: &str| headers.iter().position(|header| header == name);
        let header_list = || headers.iter().collect::<Vec<_>>().join(", ");
        let key_position = position_of(table_key).ok_or_else(|| {
            self.error(format!(
                "no column `{table_key}` (columns: {})",
                header_list()
            ))
        })?;
        let mut positions = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let position = position_of(column).ok_or_else(|| {
                self.error(format!("no column `{column}` (columns: {})", header_list()))
            })?;
            positions.push(position);
        }
        for record in reader.records() {
            let record = record.map_err(|error| csv_error(path, error))?;
            let Some(key) = record.get(key_position) else {
                continue;
            };
            let values = positions
                .iter()
                .map(|&position| {
                    record
                        .get(position)
                        .filter(|value| !value.is_empty())
                        .map(str::to_string)
                })
                .collect();
            self.insert(key, values)?;
        }
        Ok(())
    }

    fn read_json(&mut self, path: &Path, table_key: &str) -> Result<(), IngestError> {
        let text = std::fs::read_to_string(path).map_err(|source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let document: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
            self.error(format!(
                "invalid JSON at line {} column {}: {error}",
                error.line(),
                error.column()
            ))
        })?;
        let mut rows: Vec<(String, serde_json::Map<String, serde_json::Value>)> = Vec::new();
        match document {
            serde_json::Value::Array(items) => {
                for (position, item) in items.into_iter().enumerate() {
                    let serde_json::Value::Object(object) = item else {
                        return Err(self.error(format!("element {position} is not an object")));
                    };
                    let key = object.get(table_key).and_then(json_text).ok_or_else(|| {
                        self.error(format!("element {position} has no `{table_key}`"))
                    })?;
                    rows.push((key, object));
                }
            }
            serde_json::Value::Object(object) => {
                for (key, value) in object {
                    let serde_json::Value::Object(row) = value else {
                        return Err(
                            self.error(format!("the value of key {key:?} is not an object"))
                        );
                    };
                    rows.push((key, row));
                }
            }
            _ => {
                return Err(
                    self.error("expected an array of objects or an object keyed by the key column")
                )
            }
        }
        // A column that no row has is almost certainly a typo.
        for column in &self.columns {
            if !rows.is_empty() && !rows.iter().any(|(_, row)| row.contains_key(column)) {
                return Err(self.error(format!("no row has column `{column}`")));
            }
        }
        for (key, row) in rows {
            let values = self
                .columns
                .iter()
                .map(|column| row.get(column).and_then(json_text))
                .collect();
            self.insert(&key, values)?;
        }
        Ok(())
    }
}

fn csv_error(path: &Path, error: csv::Error) -> IngestError {
    if error.is_io_error() {
        if let csv::ErrorKind::Io(source) = error.into_kind() {
            return IngestError::Io {
                path: path.to_path_buf(),
                source,
            };
        }
        return IngestError::Internal("csv i/o error without an i/o source".into());
    }
    let position = error
        .position()
        .map(|position| format!(" at line {}", position.line()))
        .unwrap_or_default();
    IngestError::LookupTable {
        table: path.display().to_string(),
        message: format!("invalid CSV{position}: {error}"),
    }
}

/// JSON values as lookup text: strings unquoted, null as absent, anything
/// else as its JSON text.
fn json_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// Where the lookup key of an event comes from.
#[derive(Debug, Clone)]
enum KeySource {
    Column(usize),
    Extra(usize),
    Attribute(Box<str>),
}

/// Where a looked-up value goes.
#[derive(Debug, Clone, Copy)]
enum EnrichmentTarget {
    Column(usize),
    Extra(usize),
    /// Not filled (a projected mapping does not ask for the column).
    Skip,
}

#[derive(Debug, Clone)]
struct CompiledTable {
    key: KeySource,
    targets: Vec<EnrichmentTarget>,
    rows: AHashMap<Box<str>, Box<[Option<OwnedValue>]>>,
}

/// Compiled lookup tables, ready to join onto decoded records.
#[derive(Debug, Clone, Default)]
pub struct Enrichment {
    tables: Vec<CompiledTable>,
    extra_columns: Vec<String>,
}

impl Enrichment {
    /// No lookup tables.
    pub fn none() -> Enrichment {
        Enrichment::default()
    }

    /// Compiles tables built in code or read with [`LookupTable::from_path`].
    /// Values for canonical columns are converted to the column type now, so
    /// a bad value is reported once instead of on every event.
    pub fn from_tables(tables: Vec<LookupTable>) -> Result<Enrichment, IngestError> {
        let schema = canonical_schema();
        let mut enrichment = Enrichment::default();
        let mut record = Record::new(0, 0);
        for table in tables {
            let key = match canonical_column_index(&table.key_column) {
                Some(index) => {
                    let kind = ColumnKind::of(schema.field(index).data_type());
                    if !matches!(
                        kind,
                        Some(ColumnKind::Text | ColumnKind::Integer { .. } | ColumnKind::Float)
                    ) {
                        return Err(table.error(format!(
                            "column `{}` cannot be a lookup key (use a string or number column)",
                            table.key_column
                        )));
                    }
                    KeySource::Column(index)
                }
                None => match enrichment
                    .extra_columns
                    .iter()
                    .position(|name| *name == table.key_column)
                {
                    Some(extra) => KeySource::Extra(extra),
                    None => KeySource::Attribute(table.key_column.as_str().into()),
                },
            };
            let mut targets = Vec::with_capacity(table.columns.len());
            let mut rules = Vec::with_capacity(table.columns.len());
            for column in &table.columns {
                match canonical_column_index(column) {
                    Some(index) => {
                        let kind = ColumnKind::of(schema.field(index).data_type())
                            .unwrap_or(ColumnKind::Text);
                        if !matches!(
                            kind,
                            ColumnKind::Text | ColumnKind::Integer { .. } | ColumnKind::Float
                        ) {
                            return Err(table.error(format!(
                                "column `{column}` cannot be filled from a lookup table"
                            )));
                        }
                        targets.push(EnrichmentTarget::Column(index));
                        rules.push(Some(Rule::synthetic(
                            format!("{}.{column}", table.name),
                            Target::Column(index),
                            conversion_for_column(index, kind),
                        )));
                    }
                    None => {
                        let extra = match enrichment
                            .extra_columns
                            .iter()
                            .position(|name| name == column)
                        {
                            Some(extra) => extra,
                            None => {
                                enrichment.extra_columns.push(column.clone());
                                enrichment.extra_columns.len() - 1
                            }
                        };
                        targets.push(EnrichmentTarget::Extra(extra));
                        rules.push(None);
                    }
                }
            }
            let mut rows = AHashMap::with_capacity(table.rows.len());
            for (key, values) in &table.rows {
                let mut converted = Vec::with_capacity(values.len());
                for ((value, rule), column) in values.iter().zip(&rules).zip(&table.columns) {
                    let owned = match (value, rule) {
                        (None, _) => None,
                        (Some(text), None) => Some(OwnedValue::Text(text.clone())),
                        (Some(text), Some(rule)) => {
                            let json = serde_json::Value::String(text.to_string()).to_string();
                            let value =
                                record.convert_json_text(rule, &json).map_err(|message| {
                                    table
                                        .error(format!("row {key:?}, column `{column}`: {message}"))
                                })?;
                            Some(value)
                        }
                    };
                    converted.push(owned);
                }
                rows.insert(key.clone(), converted.into_boxed_slice());
            }
            enrichment.tables.push(CompiledTable { key, targets, rows });
        }
        Ok(enrichment)
    }

    /// Loads the `enrich:` section of a mapping file; table paths are
    /// relative to `base_directory`.
    pub(crate) fn from_specs(
        origin: &Path,
        base_directory: &Path,
        specs: &[EnrichmentSpec],
    ) -> Result<Enrichment, IngestError> {
        let mut tables = Vec::with_capacity(specs.len());
        for spec in specs {
            let path = base_directory.join(&spec.table.value);
            let columns: Vec<String> = spec
                .columns
                .value
                .iter()
                .map(|column| column.value.clone())
                .collect();
            if let Some(duplicate) =
                spec.columns
                    .value
                    .iter()
                    .enumerate()
                    .find(|(index, column)| {
                        spec.columns.value[..*index]
                            .iter()
                            .any(|earlier| earlier.value == column.value)
                    })
            {
                return Err(config_error(
                    origin,
                    &duplicate.1.span,
                    format!("column `{}` is listed twice", duplicate.1.value),
                ));
            }
            let table = LookupTable::from_path(
                &path,
                &spec.key_column.value,
                spec.table_key.as_ref().map(|key| key.value.as_str()),
                columns,
            )
            .map_err(|error| match error {
                IngestError::LookupTable { message, .. } => config_error(
                    origin,
                    &spec.table.span,
                    format!("lookup table {}: {message}", path.display()),
                ),
                IngestError::Io { source, .. } => config_error(
                    origin,
                    &spec.table.span,
                    format!("cannot read lookup table {}: {source}", path.display()),
                ),
                other => other,
            })?;
            tables.push(table);
        }
        Enrichment::from_tables(tables)
    }

    /// Names of the columns this enrichment appends to the canonical schema.
    pub fn extra_columns(&self) -> &[String] {
        &self.extra_columns
    }

    /// True when there are no tables.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Joins every table onto the record. `key_buffer` is reused scratch
    /// space for keys that are numbers in the event.
    pub(crate) fn apply(
        &self,
        record: &mut Record,
        column_defaults: &[Option<OwnedValue>],
        key_buffer: &mut String,
    ) {
        for table in &self.tables {
            key_buffer.clear();
            let found = match &table.key {
                KeySource::Column(index) => {
                    let value = record.slots[*index].value;
                    if value.is_present() {
                        write_key(record, value, key_buffer)
                    } else {
                        match &column_defaults[*index] {
                            Some(default) => write_owned_key(default, key_buffer),
                            None => false,
                        }
                    }
                }
                KeySource::Extra(index) => write_key(record, record.extra[*index], key_buffer),
                KeySource::Attribute(name) => match record.attribute_value(name) {
                    Some(value) => {
                        key_buffer.push_str(value);
                        true
                    }
                    None => false,
                },
            };
            if !found {
                continue;
            }
            let Some(values) = table.rows.get(key_buffer.as_str()) else {
                continue;
            };
            for (target, value) in table.targets.iter().zip(values.iter()) {
                let Some(value) = value else {
                    continue;
                };
                match *target {
                    EnrichmentTarget::Column(index) => record.fill_column_if_absent(index, value),
                    EnrichmentTarget::Extra(index) => {
                        if !record.extra[index].is_present() {
                            let stored = record.store_owned(value);
                            record.extra[index] = stored;
                        }
                    }
                    EnrichmentTarget::Skip => {}
                }
            }
        }
    }

    fn target_kept(target: EnrichmentTarget, keep: &[bool], keep_extra: &[bool]) -> bool {
        match target {
            EnrichmentTarget::Column(index) => keep.get(index).copied().unwrap_or(false),
            EnrichmentTarget::Extra(index) => keep_extra.get(index).copied().unwrap_or(false),
            EnrichmentTarget::Skip => false,
        }
    }

    /// Marks the lookup key of every table that fills a kept column as kept
    /// (`attributes` for a key read from an attribute).
    pub(crate) fn mark_keys(
        &self,
        keep: &mut [bool],
        keep_extra: &mut [bool],
        attributes: Option<usize>,
    ) {
        for table in &self.tables {
            let used = table
                .targets
                .iter()
                .any(|&target| Self::target_kept(target, keep, keep_extra));
            if !used {
                continue;
            }
            let slot = match &table.key {
                KeySource::Column(index) => keep.get_mut(*index),
                KeySource::Extra(index) => keep_extra.get_mut(*index),
                KeySource::Attribute(_) => attributes.and_then(|index| keep.get_mut(index)),
            };
            if let Some(slot) = slot {
                *slot = true;
            }
        }
    }

    /// Stops filling columns that are not kept; tables left with nothing to
    /// fill are removed.
    pub(crate) fn retain_targets(&mut self, keep: &[bool], keep_extra: &[bool]) {
        for table in &mut self.tables {
            for target in &mut table.targets {
                if !Self::target_kept(*target, keep, keep_extra) {
                    *target = EnrichmentTarget::Skip;
                }
            }
        }
        self.tables.retain(|table| {
            table
                .targets
                .iter()
                .any(|target| !matches!(target, EnrichmentTarget::Skip))
        });
    }
}

/// Writes a slot's value as lookup-key text; false when it has none.
fn write_key(record: &Record, value: SlotValue, key_buffer: &mut String) -> bool {
    use std::fmt::Write as _;
    match value {
        SlotValue::Absent | SlotValue::FloatList { .. } | SlotValue::Timestamp(_) => false,
        SlotValue::Text { .. } | SlotValue::Static(_) => {
            key_buffer.push_str(record.as_text(value).unwrap_or_default());
            true
        }
        SlotValue::Integer(integer) => write!(key_buffer, "{integer}").is_ok(),
        SlotValue::Float(float) => write!(key_buffer, "{float}").is_ok(),
    }
}

fn write_owned_key(value: &OwnedValue, key_buffer: &mut String) -> bool {
    use std::fmt::Write as _;
    match value {
        OwnedValue::Text(text) => {
            key_buffer.push_str(text);
            true
        }
        OwnedValue::Static(text) => {
            key_buffer.push_str(text.as_str());
            true
        }
        OwnedValue::Integer(integer) => write!(key_buffer, "{integer}").is_ok(),
        OwnedValue::Float(float) => write!(key_buffer, "{float}").is_ok(),
        OwnedValue::Timestamp(_) | OwnedValue::FloatList(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_from_csv_and_both_json_shapes() {
        let directory = tempfile::tempdir().unwrap();
        let csv_path = directory.path().join("t.csv");
        std::fs::write(
            &csv_path,
            "id , owner,tier\nv1, alice ,gold\nv2,,silver\nv1,carol,bronze\n",
        )
        .unwrap();
        let table =
            LookupTable::from_path(&csv_path, "model_version", Some("id"), vec!["owner".into()])
                .unwrap();
        assert_eq!(table.len(), 2);
        // Cells are trimmed, empty ones are absent, and the last row of a key wins.
        assert_eq!(table.rows["v1"][0].as_deref(), Some("carol"));
        assert_eq!(table.rows["v2"][0], None);

        let array_path = directory.path().join("a.json");
        std::fs::write(
            &array_path,
            r#"[{"k":"x","n":3,"o":{"a":1}},{"k":"y","n":null}]"#,
        )
        .unwrap();
        let table =
            LookupTable::from_path(&array_path, "k", None, vec!["n".into(), "o".into()]).unwrap();
        assert_eq!(table.rows["x"][0].as_deref(), Some("3"));
        assert_eq!(table.rows["x"][1].as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(table.rows["y"][0], None);

        let object_path = directory.path().join("o.json");
        std::fs::write(&object_path, r#"{"x":{"n":"1"}}"#).unwrap();
        let table = LookupTable::from_path(&object_path, "k", None, vec!["n".into()]).unwrap();
        assert_eq!(table.rows["x"][0].as_deref(), Some("1"));

        let typo = LookupTable::from_path(&object_path, "k", None, vec!["m".into()]).unwrap_err();
        assert_eq!(
            typo.to_string(),
            format!(
                "lookup table {}: no row has column `m`",
                object_path.display()
            )
        );
        let mut table = LookupTable::new("t", "k", vec!["a".into()]);
        assert!(table.insert("x", vec![]).is_err());
    }

    #[test]
    fn extra_columns_are_shared_between_tables_and_can_be_keys() {
        let mut first = LookupTable::new("first", "model_id", vec!["owner".into()]);
        first.insert("m", vec![Some("alice".into())]).unwrap();
        let mut second = LookupTable::new("second", "owner", vec!["pager".into(), "owner".into()]);
        second
            .insert("alice", vec![Some("#a".into()), Some("ignored".into())])
            .unwrap();
        let enrichment = Enrichment::from_tables(vec![first, second]).unwrap();
        assert_eq!(enrichment.extra_columns(), ["owner", "pager"]);
        assert!(matches!(enrichment.tables[1].key, KeySource::Extra(0)));
        let refused = Enrichment::from_tables(vec![LookupTable::new("t", "probabilities", vec![])]);
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("cannot be a lookup key"));
    }
}

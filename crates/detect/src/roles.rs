//! The `ab_role` column: each row's deployment role, from `ab_group`
//! through the [`RoleVocabulary`], else from the traffic itself.
//!
//! **The traffic fallback.** When `ab_group` is missing or names no role,
//! the arms of a model are told apart by what a canary looks like: within a
//! model, the version with the most requests over the last
//! [`TRAILING_MINUTES`] complete minutes is the baseline, and a version that
//! started after it (or within a minute of it: a log that begins mid-rollout)
//! and has less than half of the model's traffic is the canary. Any other version has no role (a third arm, or two arms in a
//! 50/50 split, which is an A/B test rather than a canary). A model with one
//! version serving is its own baseline.
//!
//! Roles are decided row by row, in input order, from complete minutes of
//! event time only, so the same log gives the same roles however it is cut
//! into batches. The fallback keeps no state until the first row that needs
//! it, so fleets whose `ab_group` speaks the vocabulary pay nothing for it.

use std::sync::Arc;

use ahash::AHashMap;
use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, StringArray};
use arrow::datatypes::{DataType, Int32Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use inferwatch_core::{column, Role, RoleVocabulary};

/// Complete minutes of traffic that decide the arms.
pub const TRAILING_MINUTES: usize = 10;
const MINUTE: i64 = 60_000_000_000;

/// One version of a model, as the fallback tracks it.
#[derive(Debug, Clone)]
struct Arm {
    version: Arc<str>,
    first_seen: i64,
    /// Requests per minute, in a ring indexed by minute number.
    counts: [u64; TRAILING_MINUTES + 1],
    minutes: [i64; TRAILING_MINUTES + 1],
    /// The role decided for the minute in `decided.0`.
    decided: (i64, Option<Role>),
}

impl Arm {
    fn new(version: Arc<str>, first_seen: i64) -> Arm {
        Arm {
            version,
            first_seen,
            counts: [0; TRAILING_MINUTES + 1],
            minutes: [i64::MIN; TRAILING_MINUTES + 1],
            decided: (i64::MIN, None),
        }
    }

    fn count(&mut self, minute: i64) {
        let slot = minute.rem_euclid(self.counts.len() as i64) as usize;
        if self.minutes[slot] != minute {
            if self.minutes[slot] > minute {
                // A row older than the ring: too late to change a decision.
                return;
            }
            self.minutes[slot] = minute;
            self.counts[slot] = 0;
        }
        self.counts[slot] += 1;
    }

    /// Requests in the complete minutes before `minute`.
    fn trailing(&self, minute: i64) -> u64 {
        self.minutes
            .iter()
            .zip(&self.counts)
            .filter(|(&at, _)| at < minute && at >= minute - TRAILING_MINUTES as i64)
            .map(|(_, &count)| count)
            .sum()
    }
}

/// Assigns `ab_role` to every row the engine observes.
#[derive(Debug, Clone, Default)]
pub struct RoleBook {
    vocabulary: RoleVocabulary,
    /// Per model: its arms, in order of first appearance.
    models: AHashMap<Arc<str>, Vec<Arm>>,
    tracking: bool,
}

impl RoleBook {
    /// A role book with `vocabulary`.
    pub fn new(vocabulary: RoleVocabulary) -> RoleBook {
        RoleBook {
            vocabulary,
            ..RoleBook::default()
        }
    }

    /// The `ab_role` column for `batch` (dictionary-encoded, null where no
    /// role is known).
    pub fn assign(&mut self, batch: &RecordBatch) -> ArrayRef {
        let rows = batch.num_rows();
        let groups = dictionary(batch, column::AB_GROUP);
        // Per distinct ab_group value, once per batch.
        let named: Vec<Option<Role>> = groups.as_ref().map_or_else(Vec::new, |groups| {
            let values = groups.values().as_string::<i32>();
            (0..values.len())
                .map(|index| {
                    values
                        .is_valid(index)
                        .then(|| self.vocabulary.role_of(values.value(index)))
                        .flatten()
                })
                .collect()
        });
        let named_at = |row: usize| -> Option<Role> {
            let groups = groups.as_ref()?;
            groups
                .is_valid(row)
                .then(|| {
                    named
                        .get(groups.keys().value(row) as usize)
                        .copied()
                        .flatten()
                })
                .flatten()
        };
        let mut roles: Vec<Option<Role>> = (0..rows).map(named_at).collect();
        if !self.tracking && roles.iter().any(Option::is_none) {
            self.tracking = true;
        }
        if self.tracking {
            self.fill_from_traffic(batch, &mut roles);
        }
        let keys: Vec<Option<i32>> = roles
            .iter()
            .map(|role| {
                role.map(|role| match role {
                    Role::Baseline => 0,
                    Role::Canary => 1,
                })
            })
            .collect();
        let values = StringArray::from(vec![Role::Baseline.as_str(), Role::Canary.as_str()]);
        let keys = arrow::array::Int32Array::from(keys);
        match DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)) {
            Ok(array) => Arc::new(array),
            Err(_) => arrow::array::new_null_array(&role_type(), rows),
        }
    }

    /// Counts every row's (model, version, minute) and fills the rows the
    /// vocabulary left without a role.
    fn fill_from_traffic(&mut self, batch: &RecordBatch, roles: &mut [Option<Role>]) {
        let (Some(models), Some(versions), Some(times)) = (
            dictionary(batch, column::MODEL_ID),
            dictionary(batch, column::MODEL_VERSION),
            batch
                .column_by_name(column::TIMESTAMP)
                .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>()),
        ) else {
            return;
        };
        let model_names = models.values().as_string::<i32>();
        let version_names = versions.values().as_string::<i32>();
        // (model key, version key) → index into that model's arms.
        let mut arms_of: AHashMap<(i32, i32), usize> = AHashMap::new();
        for (row, role) in roles.iter_mut().enumerate() {
            if models.is_null(row) || versions.is_null(row) {
                continue;
            }
            let (model_key, version_key) = (models.keys().value(row), versions.keys().value(row));
            let time = times.value(row);
            let minute = time.div_euclid(MINUTE);
            let model: Arc<str> = Arc::from(model_names.value(model_key as usize));
            let arms = self.models.entry(model).or_default();
            let arm = *arms_of.entry((model_key, version_key)).or_insert_with(|| {
                let version = version_names.value(version_key as usize);
                match arms.iter().position(|arm| &*arm.version == version) {
                    Some(index) => index,
                    None => {
                        arms.push(Arm::new(Arc::from(version), time));
                        arms.len() - 1
                    }
                }
            });
            if role.is_none() {
                *role = decide(arms, arm, minute);
            }
            arms[arm].count(minute);
        }
    }
}

/// The role of `arms[arm]` during `minute`, from the complete minutes
/// before it (cached per arm and minute).
fn decide(arms: &mut [Arm], arm: usize, minute: i64) -> Option<Role> {
    if arms[arm].decided.0 == minute {
        return arms[arm].decided.1;
    }
    let trailing: Vec<u64> = arms.iter().map(|arm| arm.trailing(minute)).collect();
    let total: u64 = trailing.iter().sum();
    // The busiest arm; ties go to the older, then to the name.
    let baseline = (0..arms.len()).max_by(|&a, &b| {
        trailing[a]
            .cmp(&trailing[b])
            .then(arms[b].first_seen.cmp(&arms[a].first_seen))
            .then(arms[b].version.cmp(&arms[a].version))
    });
    let role = match baseline {
        _ if total == 0 => {
            // No history yet: the first version seen is the baseline.
            let oldest = (0..arms.len()).min_by_key(|&index| (arms[index].first_seen, index));
            (oldest == Some(arm)).then_some(Role::Baseline)
        }
        Some(baseline) if baseline == arm => Some(Role::Baseline),
        Some(baseline) => {
            // Arms first seen within a minute of each other (a log that
            // starts mid-rollout) count as started together.
            let younger = arms[arm].first_seen > arms[baseline].first_seen - MINUTE;
            (younger && trailing[arm] * 2 < total).then_some(Role::Canary)
        }
        None => None,
    };
    arms[arm].decided = (minute, role);
    role
}

/// The Arrow type of `ab_role`.
pub fn role_type() -> DataType {
    inferwatch_core::dictionary_utf8()
}

/// `name` as an Int32 dictionary of strings (cast when it is plain text).
fn dictionary(batch: &RecordBatch, name: &str) -> Option<DictionaryArray<Int32Type>> {
    let array = batch.column_by_name(name)?;
    let cast = match array.data_type() {
        DataType::Dictionary(key, value)
            if **key == DataType::Int32 && **value == DataType::Utf8 =>
        {
            array.clone()
        }
        _ => arrow::compute::cast(array, &role_type()).ok()?,
    };
    cast.as_dictionary_opt::<Int32Type>().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampNanosecondArray;
    use arrow::datatypes::{Field, Schema, TimeUnit};

    fn batch(rows: &[(i64, &str, &str, Option<&str>)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new(
                column::TIMESTAMP,
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new(column::MODEL_ID, DataType::Utf8, true),
            Field::new(column::MODEL_VERSION, DataType::Utf8, true),
            Field::new(column::AB_GROUP, DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(
                    TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.0))
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap()
    }

    fn roles(array: &ArrayRef) -> Vec<Option<String>> {
        let cast = arrow::compute::cast(array, &DataType::Utf8).unwrap();
        cast.as_string::<i32>()
            .iter()
            .map(|value| value.map(str::to_string))
            .collect()
    }

    #[test]
    fn the_vocabulary_names_roles_whatever_the_fleet_calls_them() {
        let mut book = RoleBook::new(RoleVocabulary::default());
        let rows = [
            (0, "m", "7", Some("stable")),
            (1, "m", "8", Some("Canary")),
            (2, "n", "a", Some("control")),
            (3, "n", "b", Some("treatment")),
        ];
        assert_eq!(
            roles(&book.assign(&batch(&rows))),
            ["baseline", "canary", "baseline", "canary"].map(|r| Some(r.to_string()))
        );
        assert!(!book.tracking, "no row needed the traffic");
    }

    /// Ten minutes of version 1 alone, then version 2 at a tenth of the
    /// traffic, all without `ab_group`.
    fn unlabelled_canary() -> Vec<(i64, &'static str, &'static str, Option<&'static str>)> {
        let mut rows = Vec::new();
        for second in 0..20 * 60 {
            let time = second as i64 * 1_000_000_000;
            rows.push((time, "m", "1", None));
            if second >= 10 * 60 && second % 10 == 0 {
                rows.push((time, "m", "2", None));
            }
        }
        rows
    }

    #[test]
    fn without_a_vocabulary_the_small_late_version_is_the_canary() {
        let rows = unlabelled_canary();
        let mut book = RoleBook::new(RoleVocabulary::default());
        let assigned = roles(&book.assign(&batch(&rows)));
        for (row, role) in rows.iter().zip(&assigned) {
            let expected = match row.2 {
                "1" => Some("baseline"),
                _ => Some("canary"),
            };
            assert_eq!(role.as_deref(), expected, "row {row:?}");
        }
    }

    #[test]
    fn roles_do_not_depend_on_batch_boundaries() {
        let rows = unlabelled_canary();
        let whole = roles(&RoleBook::new(RoleVocabulary::default()).assign(&batch(&rows)));
        for size in [1, 7, 500] {
            let mut book = RoleBook::new(RoleVocabulary::default());
            let pieces: Vec<Option<String>> = rows
                .chunks(size)
                .flat_map(|chunk| roles(&book.assign(&batch(chunk))))
                .collect();
            assert_eq!(pieces, whole, "batches of {size}");
        }
    }

    #[test]
    fn an_even_split_has_no_canary() {
        let mut rows = Vec::new();
        for second in 0..15 * 60 {
            let time = second as i64 * 1_000_000_000;
            rows.push((time, "m", "a", None));
            rows.push((time, "m", "b", None));
        }
        let assigned = roles(&RoleBook::new(RoleVocabulary::default()).assign(&batch(&rows)));
        let late_b: Vec<_> = rows
            .iter()
            .zip(&assigned)
            .filter(|(row, _)| row.2 == "b" && row.0 >= 2 * 60 * 1_000_000_000)
            .map(|(_, role)| role.clone())
            .collect();
        assert!(late_b.iter().all(Option::is_none), "{late_b:?}");
    }
}

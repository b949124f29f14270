//! Counting by one dictionary-encoded string column, on the dictionary keys.
//!
//! `SELECT client_id, count(*) … GROUP BY client_id` is the commonest ad-hoc
//! question ("who sends the most?"). DataFusion 55 groups a dictionary column
//! through its generic row encoder, one hashed row per event. Yet every
//! Parquet batch of one row group shares one dictionary array, so the group
//! of each key can be looked up once per row group and each event costs an
//! array index and an increment. DataFusion has no hook for a specialised
//! group table, hence this small operator: [`DictionaryCountRule`] swaps it in
//! for an [`AggregateExec`] that only counts by one `Dictionary(_, Utf8)`
//! column, with the same output schema, partitioning and properties, so the
//! rest of the plan is unchanged.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, DictionaryArray, Int64Array, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{ArrowDictionaryKeyType, ArrowNativeType, DataType, SchemaRef};
use datafusion::arrow::downcast_dictionary_array;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, HashMap, Result};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

/// Replaces count-only aggregates grouped by one dictionary string column
/// with [`DictionaryCountExec`]. It runs last, after DataFusion has placed
/// partial and final aggregates, and replaces each eligible stage in place.
#[derive(Debug, Default)]
pub struct DictionaryCountRule;

impl PhysicalOptimizerRule for DictionaryCountRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let replacement = node
                .downcast_ref::<AggregateExec>()
                .and_then(DictionaryCountExec::replacing);
            Ok(match replacement {
                Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "dictionary_count"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Counts rows per value of one dictionary-encoded string column; emits
/// one row per distinct value (null included) once its input is exhausted.
#[derive(Debug)]
pub struct DictionaryCountExec {
    input: Arc<dyn ExecutionPlan>,
    /// The grouped column's index in the input.
    group_column: usize,
    /// The replaced aggregate's output: the group, then one Int64 per count.
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DictionaryCountExec {
    /// The operator for `aggregate`, if it only counts non-null literals
    /// (`count(*)`, `count(1)`) grouped by one `Dictionary(_, Utf8)` column.
    fn replacing(aggregate: &AggregateExec) -> Option<DictionaryCountExec> {
        let first_stage = matches!(
            aggregate.mode(),
            AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
        );
        let group_by = aggregate.group_expr();
        if !first_stage
            || !group_by.is_single()
            || group_by.expr().len() != 1
            || aggregate.limit_options().is_some()
            || *aggregate.input_order_mode() != InputOrderMode::Linear
            || aggregate.aggr_expr().is_empty()
            || aggregate.filter_expr().iter().any(Option::is_some)
        {
            return None;
        }
        let column = group_by.expr()[0].0.downcast_ref::<Column>()?;
        let input_type = aggregate
            .input()
            .schema()
            .field(column.index())
            .data_type()
            .clone();
        if !matches!(&input_type, DataType::Dictionary(_, value) if **value == DataType::Utf8) {
            return None;
        }
        let counts_only = aggregate.aggr_expr().iter().all(|expr| {
            expr.fun().name() == "count"
                && !expr.is_distinct()
                && expr.order_bys().is_empty()
                && expr.expressions().iter().all(is_non_null_literal)
        });
        let schema = aggregate.schema();
        let shape_matches = schema.fields().len() == 1 + aggregate.aggr_expr().len()
            && schema.fields()[1..]
                .iter()
                .all(|field| field.data_type() == &DataType::Int64);
        (counts_only && shape_matches).then(|| DictionaryCountExec {
            input: aggregate.input().clone(),
            group_column: column.index(),
            schema,
            properties: aggregate.properties().clone(),
        })
    }
}

fn is_non_null_literal(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.downcast_ref::<Literal>()
        .is_some_and(|literal| !literal.value().is_null())
}

impl DisplayAs for DictionaryCountExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DictionaryCountExec: group_by={}",
            self.input.schema().field(self.group_column).name()
        )
    }
}

impl ExecutionPlan for DictionaryCountExec {
    fn name(&self) -> &str {
        "DictionaryCountExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _visit: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("DictionaryCountExec takes one input");
        }
        Ok(Arc::new(DictionaryCountExec {
            input: children.swap_remove(0),
            group_column: self.group_column,
            schema: self.schema.clone(),
            properties: self.properties.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let group_column = self.group_column;
        let schema = self.schema.clone();
        let output = futures::stream::once(async move {
            let counts = input
                .try_fold(KeyCounts::default(), |mut counts, batch| async move {
                    counts.add(batch.column(group_column))?;
                    Ok(counts)
                })
                .await?;
            counts.into_batch(&schema)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            output.boxed(),
        )))
    }
}

/// Marks a dictionary key whose group has not been looked up yet.
const UNMAPPED: u32 = u32::MAX;

/// Counts per distinct string, with the key → group map of the last
/// dictionary seen.
#[derive(Default)]
struct KeyCounts {
    group_of_value: HashMap<Box<str>, u32>,
    /// Group values in group order; `None` is the null group.
    values: Vec<Option<Box<str>>>,
    counts: Vec<i64>,
    null_group: Option<u32>,
    /// The dictionary `group_of_key` was built for (compared by pointer).
    dictionary: Option<ArrayData>,
    group_of_key: Vec<u32>,
}

impl KeyCounts {
    fn add(&mut self, column: &ArrayRef) -> Result<()> {
        downcast_dictionary_array! {
            column => {
                self.add_dictionary(column);
                Ok(())
            },
            other => internal_err!("DictionaryCountExec got {other} instead of a dictionary")
        }
    }

    fn add_dictionary<K: ArrowDictionaryKeyType>(&mut self, column: &DictionaryArray<K>) {
        let dictionary = column.values().to_data();
        if !self
            .dictionary
            .as_ref()
            .is_some_and(|seen| seen.ptr_eq(&dictionary))
        {
            self.group_of_key.clear();
            self.group_of_key.resize(column.values().len(), UNMAPPED);
            self.dictionary = Some(dictionary);
        }
        let strings = column.values().as_string::<i32>();
        let keys = column.keys();
        let nulls = keys.nulls().filter(|nulls| nulls.null_count() > 0);
        for (row, key) in keys.values().iter().enumerate() {
            let group = if nulls.is_some_and(|nulls| nulls.is_null(row)) {
                self.null_group()
            } else {
                let key = key.as_usize();
                match self.group_of_key[key] {
                    UNMAPPED => {
                        let group = if strings.is_null(key) {
                            self.null_group()
                        } else {
                            self.group_of(strings.value(key))
                        };
                        self.group_of_key[key] = group;
                        group
                    }
                    group => group,
                }
            };
            self.counts[group as usize] += 1;
        }
    }

    fn group_of(&mut self, value: &str) -> u32 {
        if let Some(&group) = self.group_of_value.get(value) {
            return group;
        }
        let group = self.new_group(Some(value.into()));
        self.group_of_value.insert(value.into(), group);
        group
    }

    fn null_group(&mut self) -> u32 {
        match self.null_group {
            Some(group) => group,
            None => {
                let group = self.new_group(None);
                self.null_group = Some(group);
                group
            }
        }
    }

    fn new_group(&mut self, value: Option<Box<str>>) -> u32 {
        self.values.push(value);
        self.counts.push(0);
        // More than u32::MAX - 1 distinct values cannot fit one batch anyway.
        (self.values.len() - 1) as u32
    }

    fn into_batch(self, schema: &SchemaRef) -> Result<RecordBatch> {
        let values: StringArray = self.values.iter().map(|value| value.as_deref()).collect();
        let group = cast(&values, schema.field(0).data_type())?;
        let counts: ArrayRef = Arc::new(Int64Array::from(self.counts));
        let mut columns = vec![group];
        columns.extend(std::iter::repeat_n(counts, schema.fields().len() - 1));
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::common::ScalarValue;

    fn dictionary(keys: Vec<Option<i32>>, values: &ArrayRef) -> ArrayRef {
        Arc::new(DictionaryArray::new(Int32Array::from(keys), values.clone()))
    }

    #[test]
    fn counts_merge_batches_with_shared_and_fresh_dictionaries_and_keep_nulls() {
        let shared: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("b"), None]));
        let fresh: ArrayRef = Arc::new(StringArray::from(vec!["b", "c"]));
        let mut counts = KeyCounts::default();
        counts
            .add(&dictionary(vec![Some(0), Some(1), Some(0), None], &shared))
            .unwrap();
        counts
            .add(&dictionary(vec![Some(2), Some(0)], &shared))
            .unwrap();
        counts
            .add(&dictionary(vec![Some(0), Some(1), Some(1)], &fresh))
            .unwrap();
        let mut found: Vec<(Option<String>, i64)> = counts
            .values
            .iter()
            .map(|value| value.as_deref().map(str::to_string))
            .zip(counts.counts.iter().copied())
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                (None, 2),
                (Some("a".into()), 3),
                (Some("b".into()), 2),
                (Some("c".into()), 2),
            ]
        );
    }

    #[test]
    fn a_plain_string_column_is_an_internal_error_not_a_panic() {
        let plain: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
        assert!(KeyCounts::default().add(&plain).is_err());
    }

    #[test]
    fn a_count_literal_is_only_eligible_when_not_null() {
        let one: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(ScalarValue::Int64(Some(1))));
        let null: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(ScalarValue::Int64(None)));
        assert!(is_non_null_literal(&one));
        assert!(!is_non_null_literal(&null));
    }
}

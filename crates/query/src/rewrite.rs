//! Answering dashboard-shaped queries from the per-minute rollups.
//!
//! An aggregate over the `inference` table can be computed from
//! `inference_rollups` when every part of it is known per rollup row:
//!
//! * it groups by rollup dimensions (model_id, model_version, ab_group,
//!   source_id, status) and by time buckets of whole minutes
//!   (`time_bucket('5 minutes', timestamp)`, `date_trunc('hour', timestamp)`);
//! * it filters on dimensions, and on `timestamp >= T` / `timestamp < T`
//!   with T on a minute boundary;
//! * its aggregates are `count(*)`, `sum/min/max/avg(latency_ms)`,
//!   `quantile(latency_ms, q)`, `sum(input_tokens|output_tokens)`,
//!   `count(latency_ms)`, and `sum/avg/min/max/count(DISTINCT)` of
//!   expressions over dimensions (weighted by the row count), each with an
//!   optional `FILTER (WHERE <dimensions>)`.
//!
//! Then the plan `Aggregate(Filter(Scan inference))` becomes
//! `Projection(Aggregate(Filter(Scan inference_rollups)))` whose outputs
//! keep the original names and types, so everything above is unchanged.
//! Counts and sums are exact; quantiles merge the stored DDSketches (1 %
//! relative error, the same as `quantile` on raw rows; each group's sketches
//! are merged once however many quantiles the query asks for). Anything else runs
//! on the events, unchanged. The rule runs first among analyzer rules, so
//! `EXPLAIN` shows which table answered.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, Alias, ScalarFunction};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    cast, lit, AggregateUDF, BinaryExpr, Expr, LogicalPlan, LogicalPlanBuilder, Operator, ScalarUDF,
};
use datafusion::optimizer::AnalyzerRule;
use inferwatch_core::{column, DEFAULT_STREAM};
use inferwatch_store::{rollup_column, StoreReader, ROLLUP_DIMENSIONS};

use crate::functions::{bucket_width_nanos, MINUTE_NANOS};
use crate::table::{timestamp_literal, StreamTable, TableKind};

/// The analyzer rule that routes eligible aggregates to the rollups.
pub struct RollupRewrite {
    reader: Arc<StoreReader>,
    sketch_merge: Arc<AggregateUDF>,
    sketch_quantile: Arc<ScalarUDF>,
}

impl std::fmt::Debug for RollupRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RollupRewrite")
    }
}

impl RollupRewrite {
    /// A rule reading rollups through `reader`, merging sketches with
    /// `sketch_merge` and reading quantiles with `sketch_quantile`.
    pub fn new(
        reader: Arc<StoreReader>,
        sketch_merge: Arc<AggregateUDF>,
        sketch_quantile: Arc<ScalarUDF>,
    ) -> RollupRewrite {
        RollupRewrite {
            reader,
            sketch_merge,
            sketch_quantile,
        }
    }
}

impl AnalyzerRule for RollupRewrite {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up(|node| {
            let LogicalPlan::Aggregate(aggregate) = &node else {
                return Ok(Transformed::no(node));
            };
            match self.rewrite(aggregate)? {
                Some(rewritten) => Ok(Transformed::yes(rewritten)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "inferwatch_rollup_rewrite"
    }
}

/// Combines the partial columns (in the order of `Recipe::partials`).
type Finish = Box<dyn Fn(&[Expr]) -> Expr>;

/// How one original aggregate is computed from partial aggregates.
struct Recipe {
    partials: Vec<Expr>,
    finish: Finish,
}

impl RollupRewrite {
    fn rewrite(
        &self,
        aggregate: &datafusion::logical_expr::Aggregate,
    ) -> Result<Option<LogicalPlan>> {
        // Aggregate → (Filter | SubqueryAlias)* → TableScan(inference)
        let mut predicates: Vec<Expr> = Vec::new();
        let mut plan = aggregate.input.as_ref();
        let scan = loop {
            match plan {
                LogicalPlan::Filter(filter) => {
                    predicates.extend(split_conjunction(&filter.predicate).into_iter().cloned());
                    plan = filter.input.as_ref();
                }
                LogicalPlan::SubqueryAlias(alias) => plan = alias.input.as_ref(),
                LogicalPlan::TableScan(scan) => break scan,
                _ => return Ok(None),
            }
        };
        let Ok(provider) = source_as_provider(&scan.source) else {
            return Ok(None);
        };
        let is_inference_events = provider
            .downcast_ref::<StreamTable>()
            .is_some_and(|table| table.is_stream(DEFAULT_STREAM, TableKind::Events));
        if !is_inference_events {
            return Ok(None);
        }
        predicates.extend(scan.filters.iter().cloned());
        let mut rollup_predicates = Vec::new();
        for predicate in &predicates {
            let Some(rewritten) = rewrite_predicate(predicate) else {
                return Ok(None);
            };
            rollup_predicates.push(rewritten);
        }
        let mut groups = Vec::new();
        for (index, group) in aggregate.group_expr.iter().enumerate() {
            let Some(rewritten) = rewrite_group(group) else {
                return Ok(None);
            };
            groups.push(rewritten.alias(format!("__group_{index}")));
        }
        let mut recipes = Vec::new();
        for expr in &aggregate.aggr_expr {
            let Some(recipe) = self.recipe(expr) else {
                return Ok(None);
            };
            recipes.push(recipe);
        }
        // Build the rollup plan.
        let rollups = StreamTable::rollups(self.reader.clone(), DEFAULT_STREAM);
        let mut builder = LogicalPlanBuilder::scan(
            format!("{DEFAULT_STREAM}_rollups"),
            provider_as_source(Arc::new(rollups)),
            None,
        )?;
        if let Some(predicate) = conjunction(rollup_predicates) {
            builder = builder.filter(predicate)?;
        }
        let mut partials = Vec::new();
        let mut partial_columns: Vec<Vec<Expr>> = Vec::new();
        // Equal partials are computed once: p50, p95 and p99 share one merge.
        let mut distinct_partials: Vec<&Expr> = Vec::new();
        for recipe in &recipes {
            let mut columns = Vec::new();
            for partial in &recipe.partials {
                let position = match distinct_partials.iter().position(|p| *p == partial) {
                    Some(position) => position,
                    None => {
                        distinct_partials.push(partial);
                        let name = format!("__partial_{}", partials.len());
                        partials.push(partial.clone().alias(name));
                        partials.len() - 1
                    }
                };
                columns.push(Expr::Column(Column::from_name(format!(
                    "__partial_{position}"
                ))));
            }
            partial_columns.push(columns);
        }
        builder = builder.aggregate(groups, partials)?;
        // Restore the original output names, qualifiers and types.
        let output_schema = aggregate.schema.clone();
        let mut outputs = Vec::new();
        for index in 0..output_schema.fields().len() {
            let (qualifier, field) = output_schema.qualified_field(index);
            let value = if index < aggregate.group_expr.len() {
                Expr::Column(Column::from_name(format!("__group_{index}")))
            } else {
                let position = index - aggregate.group_expr.len();
                (recipes[position].finish)(&partial_columns[position])
            };
            outputs.push(Expr::Alias(Alias::new(
                cast(value, field.data_type().clone()),
                qualifier.cloned(),
                field.name(),
            )));
        }
        Ok(Some(builder.project(outputs)?.build()?))
    }

    fn recipe(&self, expr: &Expr) -> Option<Recipe> {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
            return None;
        };
        if !params.order_by.is_empty() || params.null_treatment.is_some() {
            return None;
        }
        let filter = match &params.filter {
            Some(filter) => Some(Box::new(rewrite_dimension_expr(filter)?)),
            None => None,
        };
        let aggregate = |udaf: Arc<AggregateUDF>, args: Vec<Expr>, distinct: bool| {
            Expr::AggregateFunction(AggregateFunction::new_udf(
                udaf,
                args,
                distinct,
                filter.clone(),
                vec![],
                None,
            ))
        };
        let rollup = |name: &str| Expr::Column(Column::from_name(name));
        let argument = params.args.first();
        let argument_column = argument.and_then(plain_column_name);
        let name = func.name();
        let single = |partial: Expr| Recipe {
            partials: vec![partial],
            finish: Box::new(|p: &[Expr]| p[0].clone()),
        };
        let zero_when_empty = |partial: Expr| Recipe {
            partials: vec![partial],
            finish: Box::new(|p: &[Expr]| {
                datafusion::functions::expr_fn::coalesce(vec![p[0].clone(), lit(0i64)])
            }),
        };
        if params.distinct {
            // count(DISTINCT d), min/max(DISTINCT d) over dimensions are the same on rollup rows.
            let dimension = rewrite_dimension_expr(argument?)?;
            return match name {
                "count" | "min" | "max" => {
                    Some(single(aggregate(func.clone(), vec![dimension], true)))
                }
                _ => None,
            };
        }
        use rollup_column::*;
        match (name, argument_column.as_deref()) {
            ("count", _) if argument.is_some_and(is_non_null_literal) => Some(zero_when_empty(
                aggregate(sum_udaf(), vec![rollup(COUNT)], false),
            )),
            ("count", Some(column::LATENCY_MS)) => Some(zero_when_empty(aggregate(
                sum_udaf(),
                vec![rollup(LATENCY_COUNT)],
                false,
            ))),
            ("sum", Some(column::LATENCY_MS)) => Some(single(aggregate(
                sum_udaf(),
                vec![rollup(LATENCY_SUM)],
                false,
            ))),
            ("sum", Some(column::INPUT_TOKENS)) => Some(single(aggregate(
                sum_udaf(),
                vec![rollup(INPUT_TOKENS_SUM)],
                false,
            ))),
            ("sum", Some(column::OUTPUT_TOKENS)) => Some(single(aggregate(
                sum_udaf(),
                vec![rollup(OUTPUT_TOKENS_SUM)],
                false,
            ))),
            ("min", Some(column::LATENCY_MS)) => Some(single(aggregate(
                min_udaf(),
                vec![rollup(LATENCY_MIN)],
                false,
            ))),
            ("max", Some(column::LATENCY_MS)) => Some(single(aggregate(
                max_udaf(),
                vec![rollup(LATENCY_MAX)],
                false,
            ))),
            ("avg", Some(column::LATENCY_MS)) => Some(Recipe {
                partials: vec![
                    aggregate(sum_udaf(), vec![rollup(LATENCY_SUM)], false),
                    aggregate(sum_udaf(), vec![rollup(LATENCY_COUNT)], false),
                ],
                finish: Box::new(|p: &[Expr]| ratio(p[0].clone(), p[1].clone())),
            }),
            ("quantile", Some(column::LATENCY_MS)) => {
                let q = params.args.get(1)?;
                matches!(q, Expr::Literal(..)).then_some(())?;
                let (sketch_quantile, q) = (self.sketch_quantile.clone(), q.clone());
                Some(Recipe {
                    partials: vec![aggregate(
                        self.sketch_merge.clone(),
                        vec![rollup(LATENCY_SKETCH)],
                        false,
                    )],
                    finish: Box::new(move |p: &[Expr]| {
                        Expr::ScalarFunction(ScalarFunction::new_udf(
                            sketch_quantile.clone(),
                            vec![p[0].clone(), cast(q.clone(), arrow_f64())],
                        ))
                    }),
                })
            }
            ("sum" | "avg" | "min" | "max" | "count", _) => {
                // An expression over dimensions: weight each rollup row by its count.
                let dimension = rewrite_dimension_expr(argument?)?;
                let weighted = Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(dimension.clone()),
                    Operator::Multiply,
                    Box::new(rollup(COUNT)),
                ));
                match name {
                    "sum" => Some(single(aggregate(sum_udaf(), vec![weighted], false))),
                    "min" | "max" => Some(single(aggregate(func.clone(), vec![dimension], false))),
                    "count" => Some(zero_when_empty(aggregate(
                        sum_udaf(),
                        vec![count_where_not_null(dimension)],
                        false,
                    ))),
                    _ => {
                        let counted = count_where_not_null(dimension);
                        Some(Recipe {
                            partials: vec![
                                aggregate(sum_udaf(), vec![cast(weighted, arrow_f64())], false),
                                aggregate(sum_udaf(), vec![counted], false),
                            ],
                            finish: Box::new(|p: &[Expr]| ratio(p[0].clone(), p[1].clone())),
                        })
                    }
                }
            }
            _ => None,
        }
    }
}

/// The rollup row's count where `expr` is not null, else 0.
fn count_where_not_null(expr: Expr) -> Expr {
    Expr::Case(datafusion::logical_expr::expr::Case::new(
        None,
        vec![(
            Box::new(Expr::IsNotNull(Box::new(expr))),
            Box::new(Expr::Column(Column::from_name(rollup_column::COUNT))),
        )],
        Some(Box::new(lit(0i64))),
    ))
}

fn arrow_f64() -> datafusion::arrow::datatypes::DataType {
    datafusion::arrow::datatypes::DataType::Float64
}

/// `numerator / denominator` as a float, NULL when the denominator is 0.
fn ratio(numerator: Expr, denominator: Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(
        Box::new(cast(numerator, arrow_f64())),
        Operator::Divide,
        Box::new(datafusion::functions::expr_fn::nullif(
            cast(denominator, arrow_f64()),
            lit(0.0f64),
        )),
    ))
}

fn is_non_null_literal(expr: &Expr) -> bool {
    matches!(expr, Expr::Literal(value, _) if !value.is_null())
}

fn plain_column_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Column(column) => Some(column.name.clone()),
        _ => None,
    }
}

fn is_dimension(name: &str) -> bool {
    ROLLUP_DIMENSIONS.contains(&name)
}

/// Rewrites an expression that may only read dimensions (and constants);
/// `None` if it reads anything else or calls something volatile.
fn rewrite_dimension_expr(expr: &Expr) -> Option<Expr> {
    let mut allowed = true;
    let rewritten = expr
        .clone()
        .transform_up(|node| {
            match &node {
                Expr::Column(column) if is_dimension(&column.name) => {
                    return Ok(Transformed::yes(Expr::Column(Column::from_name(
                        column.name.clone(),
                    ))))
                }
                Expr::Column(_)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
                | Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::OuterReferenceColumn(..)
                | Expr::Placeholder(_) => allowed = false,
                Expr::ScalarFunction(function)
                    if function.func.signature().volatility
                        != datafusion::logical_expr::Volatility::Immutable =>
                {
                    allowed = false
                }
                _ => {}
            }
            Ok(Transformed::no(node))
        })
        .ok()?
        .data;
    allowed.then_some(rewritten)
}

/// A WHERE conjunct over dimensions, or a minute-aligned half-open time bound.
fn rewrite_predicate(predicate: &Expr) -> Option<Expr> {
    if let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate {
        let on_time = |side: &Expr| plain_column_name(side).as_deref() == Some(column::TIMESTAMP);
        let (op, literal) = if on_time(left) {
            (*op, right.as_ref())
        } else if on_time(right) {
            (op.swap()?, left.as_ref())
        } else {
            return rewrite_dimension_expr(predicate);
        };
        if !matches!(op, Operator::GtEq | Operator::Lt) {
            return None;
        }
        let nanos = timestamp_literal(literal)?;
        if nanos.rem_euclid(MINUTE_NANOS) != 0 {
            return None;
        }
        return Some(Expr::BinaryExpr(BinaryExpr::new(
            Box::new(Expr::Column(Column::from_name(rollup_column::MINUTE))),
            op,
            Box::new(literal.clone()),
        )));
    }
    rewrite_dimension_expr(predicate)
}

/// A GROUP BY expression: a dimension, or a time bucket of whole minutes.
fn rewrite_group(expr: &Expr) -> Option<Expr> {
    if let Expr::ScalarFunction(ScalarFunction { func, args }) = expr {
        let on_time = |e: &Expr| plain_column_name(e).as_deref() == Some(column::TIMESTAMP);
        let minute = || Expr::Column(Column::from_name(rollup_column::MINUTE));
        match (func.name(), args.as_slice()) {
            ("time_bucket", [width, time]) if on_time(time) => {
                let Expr::Literal(value, _) = width else {
                    return None;
                };
                let nanos = bucket_width_nanos(value)?;
                if nanos % MINUTE_NANOS != 0 {
                    return None;
                }
                return Some(Expr::ScalarFunction(ScalarFunction::new_udf(
                    func.clone(),
                    vec![width.clone(), minute()],
                )));
            }
            ("date_trunc", [unit, time]) if on_time(time) => {
                let Expr::Literal(ScalarValue::Utf8(Some(unit_text)), _) = unit else {
                    return None;
                };
                let coarse = matches!(
                    unit_text.to_ascii_lowercase().as_str(),
                    "minute" | "hour" | "day" | "week" | "month" | "quarter" | "year"
                );
                if !coarse {
                    return None;
                }
                return Some(Expr::ScalarFunction(ScalarFunction::new_udf(
                    func.clone(),
                    vec![unit.clone(), minute()],
                )));
            }
            _ => {}
        }
    }
    rewrite_dimension_expr(expr)
}

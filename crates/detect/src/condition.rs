//! Conditions: expressions over window aggregates, evaluated per group at each tick.

use arrow::datatypes::{DataType, Schema};

use crate::expr::{Argument, ArithOp, CompareOp, Expr, ExprError, Literal};
use crate::rule::Rule;
use crate::DetectError;

/// What an aggregate computes over the window. The `usize` is a column
/// index in the schema; the engine re-targets it to a position in its
/// summary layout with [`AggregateKind::with_column`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggregateKind {
    /// Rows.
    Count,
    /// Rows per second of window.
    Rate,
    /// Rows with `status == "error"`.
    Errors,
    /// Errors ÷ rows (NaN on an empty window).
    ErrorRate,
    /// Sum of a column.
    Sum(usize),
    /// Mean of a column.
    Avg(usize),
    /// Minimum of a column.
    Min(usize),
    /// Maximum of a column.
    Max(usize),
    /// Sample standard deviation of a column.
    Stddev(usize),
    /// A quantile of a column, from a DDSketch (1 % relative error).
    Quantile(usize, f64),
    /// Distinct values of a column, from HyperLogLog.
    Distinct(usize),
}

/// Which part of a window summary an aggregate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryPart {
    /// Row and error counts only.
    Counts,
    /// Exact moments of a column.
    Moments,
    /// A quantile sketch of a column.
    Sketch,
    /// A distinct-count sketch of a column.
    Distinct,
}

impl AggregateKind {
    /// The column it reads, if any.
    pub fn column(self) -> Option<usize> {
        match self {
            AggregateKind::Count
            | AggregateKind::Rate
            | AggregateKind::Errors
            | AggregateKind::ErrorRate => None,
            AggregateKind::Sum(c)
            | AggregateKind::Avg(c)
            | AggregateKind::Min(c)
            | AggregateKind::Max(c)
            | AggregateKind::Stddev(c)
            | AggregateKind::Quantile(c, _)
            | AggregateKind::Distinct(c) => Some(c),
        }
    }

    /// The same aggregate reading `index` instead of its column.
    pub fn with_column(self, index: usize) -> AggregateKind {
        match self {
            AggregateKind::Sum(_) => AggregateKind::Sum(index),
            AggregateKind::Avg(_) => AggregateKind::Avg(index),
            AggregateKind::Min(_) => AggregateKind::Min(index),
            AggregateKind::Max(_) => AggregateKind::Max(index),
            AggregateKind::Stddev(_) => AggregateKind::Stddev(index),
            AggregateKind::Quantile(_, q) => AggregateKind::Quantile(index, q),
            AggregateKind::Distinct(_) => AggregateKind::Distinct(index),
            counts => counts,
        }
    }

    /// The summary part it needs.
    pub fn part(self) -> SummaryPart {
        match self {
            AggregateKind::Sum(_)
            | AggregateKind::Avg(_)
            | AggregateKind::Min(_)
            | AggregateKind::Max(_)
            | AggregateKind::Stddev(_) => SummaryPart::Moments,
            AggregateKind::Quantile(..) => SummaryPart::Sketch,
            AggregateKind::Distinct(_) => SummaryPart::Distinct,
            _ => SummaryPart::Counts,
        }
    }
}

/// An aggregate over one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateRef {
    /// Segment index (0 is every row that passes the rule filter).
    pub segment: usize,
    /// What to compute.
    pub kind: AggregateKind,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// A number.
    Number(f64),
    /// An aggregate's value, by index into the rule's aggregate list.
    Aggregate(usize),
    /// Arithmetic.
    Arith(ArithOp, Box<Condition>, Box<Condition>),
    /// Negation.
    Negate(Box<Condition>),
    /// A comparison; the index numbers comparisons for value/threshold reporting.
    Compare(CompareOp, Box<Condition>, Box<Condition>, usize),
    /// Both. The flag says whether the right side holds `for` timers, which
    /// must be updated every tick; otherwise the right side is skipped when
    /// the left decides (sparing sketch merges on idle groups).
    And(Box<Condition>, Box<Condition>, bool),
    /// Either; the flag as for `And`.
    Or(Box<Condition>, Box<Condition>, bool),
    /// Not.
    Not(Box<Condition>),
    /// Held continuously for a duration; the index numbers per-group timers.
    HeldFor(Box<Condition>, i64, usize),
}

/// The result of compiling a condition.
#[derive(Debug, Clone)]
pub struct CompiledCondition {
    /// The tree.
    pub root: Condition,
    /// Distinct aggregates it reads.
    pub aggregates: Vec<AggregateRef>,
    /// Number of `for` timers.
    pub held_timers: usize,
    /// Number of comparisons.
    pub comparisons: usize,
    /// A detector's series (a baseline's one, a forest's features), reading
    /// the same aggregate list.
    pub series: Vec<Condition>,
}

/// Checks what needs no schema: known functions, known segments, boolean shape.
pub(crate) fn check_condition_shape(rule: &Rule) -> Result<(), DetectError> {
    let segment_names: Vec<&str> = rule
        .segments
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    let mut compiler = Compiler {
        schema: None,
        segment_names: &segment_names,
        output: CompiledCondition {
            root: Condition::Number(0.0),
            aggregates: Vec::new(),
            held_timers: 0,
            comparisons: 0,
            series: Vec::new(),
        },
    };
    if let Some(condition) = &rule.condition {
        compiler
            .boolean(&condition.expr)
            .map_err(|error| rule.expression_error(condition, &error))?;
    }
    if let Some(detector) = &rule.detector {
        for series in detector.series() {
            compiler
                .numeric(&series.expr)
                .map_err(|error| rule.expression_error(series, &error))?;
        }
    }
    Ok(())
}

/// Compiles a rule's condition against a schema.
pub fn compile_condition(rule: &Rule, schema: &Schema) -> Result<CompiledCondition, DetectError> {
    let segment_names: Vec<&str> = rule
        .segments
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    let mut compiler = Compiler {
        schema: Some(schema),
        segment_names: &segment_names,
        output: CompiledCondition {
            root: Condition::Number(0.0),
            aggregates: Vec::new(),
            held_timers: 0,
            comparisons: 0,
            series: Vec::new(),
        },
    };
    let root = match &rule.condition {
        Some(condition) => compiler
            .boolean(&condition.expr)
            .map_err(|error| rule.expression_error(condition, &error))?,
        None => Condition::Number(1.0),
    };
    if let Some(detector) = &rule.detector {
        for series in detector.series() {
            let compiled = compiler
                .numeric(&series.expr)
                .map_err(|error| rule.expression_error(series, &error))?;
            compiler.output.series.push(compiled);
        }
    }
    compiler.output.root = root;
    Ok(compiler.output)
}

struct Compiler<'a> {
    schema: Option<&'a Schema>,
    segment_names: &'a [&'a str],
    output: CompiledCondition,
}

/// Compiled operands of `and`/`or`, and whether the right one holds `for` timers.
type Operands = (Box<Condition>, Box<Condition>, bool);

impl Compiler<'_> {
    fn operands(&mut self, left: &Expr, right: &Expr) -> Result<Operands, ExprError> {
        let left = self.boolean(left)?;
        let timers_before = self.output.held_timers;
        let right = self.boolean(right)?;
        let right_has_timers = self.output.held_timers > timers_before;
        Ok((Box::new(left), Box::new(right), right_has_timers))
    }

    fn boolean(&mut self, expr: &Expr) -> Result<Condition, ExprError> {
        match expr {
            Expr::And(left, right) => {
                let (left, right, right_has_timers) = self.operands(left, right)?;
                Ok(Condition::And(left, right, right_has_timers))
            }
            Expr::Or(left, right) => {
                let (left, right, right_has_timers) = self.operands(left, right)?;
                Ok(Condition::Or(left, right, right_has_timers))
            }
            Expr::Not(inner) => Ok(Condition::Not(Box::new(self.boolean(inner)?))),
            Expr::HeldFor(inner, duration, span) => {
                if *duration <= 0 {
                    return Err(ExprError::new(*span, "'for' needs a positive duration"));
                }
                let inner = self.boolean(inner)?;
                let index = self.output.held_timers;
                self.output.held_timers += 1;
                Ok(Condition::HeldFor(Box::new(inner), *duration, index))
            }
            Expr::Compare(op, left, right, _) => {
                let left = self.numeric(left)?;
                let right = self.numeric(right)?;
                let index = self.output.comparisons;
                self.output.comparisons += 1;
                Ok(Condition::Compare(
                    *op,
                    Box::new(left),
                    Box::new(right),
                    index,
                ))
            }
            Expr::Literal(Literal::Bool(value), _) => {
                Ok(Condition::Number(if *value { 1.0 } else { 0.0 }))
            }
            other => Err(ExprError::new(
                other.span(),
                "expected a comparison such as p99(latency_ms) > 500",
            )),
        }
    }

    fn numeric(&mut self, expr: &Expr) -> Result<Condition, ExprError> {
        match expr {
            Expr::Literal(Literal::Number(value), _) => Ok(Condition::Number(*value)),
            Expr::Literal(_, span) => Err(ExprError::new(*span, "conditions compare numbers")),
            Expr::Arith(op, left, right) => Ok(Condition::Arith(
                *op,
                Box::new(self.numeric(left)?),
                Box::new(self.numeric(right)?),
            )),
            Expr::Negate(inner) => Ok(Condition::Negate(Box::new(self.numeric(inner)?))),
            Expr::Identifier { name, span, .. } => Err(ExprError::new(
                *span,
                format!(
                    "'{name}' is not an aggregate: write e.g. avg({name}), p99({name}) or count()"
                ),
            )),
            Expr::Call {
                qualifier,
                function,
                arguments,
                span,
            } => {
                let segment = match qualifier {
                    None => 0,
                    Some(name) => match self.segment_names.iter().position(|s| s == name) {
                        Some(index) => index + 1,
                        None => {
                            return Err(ExprError::new(
                                *span,
                                format!("unknown segment '{name}': define it under 'segments:'"),
                            ))
                        }
                    },
                };
                let kind = self.aggregate_kind(function, arguments, *span)?;
                let reference = AggregateRef { segment, kind };
                let index = match self.output.aggregates.iter().position(|a| *a == reference) {
                    Some(index) => index,
                    None => {
                        self.output.aggregates.push(reference);
                        self.output.aggregates.len() - 1
                    }
                };
                Ok(Condition::Aggregate(index))
            }
            other => Err(ExprError::new(
                other.span(),
                "expected a number or an aggregate such as count()",
            )),
        }
    }

    fn column(
        &self,
        argument: Option<&Argument>,
        call_span: crate::expr::Span,
        numeric: bool,
    ) -> Result<usize, ExprError> {
        let Some(Argument::Column(name, span)) = argument else {
            return Err(ExprError::new(call_span, "expected a column argument"));
        };
        let Some(schema) = self.schema else {
            return Ok(0);
        };
        let index = schema
            .index_of(name)
            .map_err(|_| ExprError::new(*span, format!("unknown column '{name}'")))?;
        let data_type = schema.field(index).data_type();
        if numeric && !(data_type.is_numeric() || matches!(data_type, DataType::Timestamp(..))) {
            return Err(ExprError::new(
                *span,
                format!("column '{name}' is not numeric"),
            ));
        }
        Ok(index)
    }

    fn aggregate_kind(
        &self,
        function: &str,
        arguments: &[Argument],
        span: crate::expr::Span,
    ) -> Result<AggregateKind, ExprError> {
        let no_arguments = |kind: AggregateKind| {
            if arguments.is_empty() {
                Ok(kind)
            } else {
                Err(ExprError::new(
                    span,
                    format!("{function}() takes no arguments"),
                ))
            }
        };
        let one_column = |numeric: bool| -> Result<usize, ExprError> {
            if arguments.len() != 1 {
                return Err(ExprError::new(
                    span,
                    format!("{function}() takes one column"),
                ));
            }
            self.column(arguments.first(), span, numeric)
        };
        match function {
            "count" => no_arguments(AggregateKind::Count),
            "rate" => no_arguments(AggregateKind::Rate),
            "errors" => no_arguments(AggregateKind::Errors),
            "error_rate" => no_arguments(AggregateKind::ErrorRate),
            "sum" => Ok(AggregateKind::Sum(one_column(true)?)),
            "avg" | "mean" => Ok(AggregateKind::Avg(one_column(true)?)),
            "min" => Ok(AggregateKind::Min(one_column(true)?)),
            "max" => Ok(AggregateKind::Max(one_column(true)?)),
            "stddev" => Ok(AggregateKind::Stddev(one_column(true)?)),
            "distinct" | "count_distinct" => Ok(AggregateKind::Distinct(one_column(false)?)),
            "median" => Ok(AggregateKind::Quantile(one_column(true)?, 0.5)),
            "quantile" => {
                if arguments.len() != 2 {
                    return Err(ExprError::new(span, "quantile() takes a column and a quantile, e.g. quantile(latency_ms, 0.99)"));
                }
                let column = self.column(arguments.first(), span, true)?;
                match &arguments[1] {
                    Argument::Literal(Literal::Number(q), _) if (0.0..=1.0).contains(q) => Ok(AggregateKind::Quantile(column, *q)),
                    Argument::Literal(_, span) | Argument::Column(_, span) => {
                        Err(ExprError::new(*span, "the quantile must be a number between 0 and 1"))
                    }
                }
            }
            name if name.len() >= 3 && name.starts_with('p') && name[1..].chars().all(|c| c.is_ascii_digit()) => {
                // p50, p95, p99, p999: the digits after "p" are the fraction's digits.
                let digits = &name[1..];
                let quantile: f64 = format!("0.{digits}").parse().map_err(|_| ExprError::new(span, "invalid quantile"))?;
                Ok(AggregateKind::Quantile(one_column(true)?, quantile))
            }
            other => Err(ExprError::new(
                span,
                format!(
                    "unknown aggregate '{other}': use count, rate, errors, error_rate, sum, avg, min, max, stddev, \
                     quantile, median, pNN or distinct"
                ),
            )),
        }
    }
}

/// Per-group memory of `for` timers.
#[derive(Debug, Clone, Default)]
pub struct HeldTimers {
    /// Boxed, not a Vec: one per tracked group, and most rules have none.
    since: Box<[Option<i64>]>,
}

impl HeldTimers {
    /// Timers for a condition with `count` `for` clauses.
    pub fn new(count: usize) -> Self {
        HeldTimers {
            since: vec![None; count].into_boxed_slice(),
        }
    }

    /// Whether any timer is running.
    pub fn any_running(&self) -> bool {
        self.since.iter().any(Option::is_some)
    }

    /// Stops every timer.
    pub fn reset(&mut self) {
        self.since.iter_mut().for_each(|since| *since = None);
    }
}

/// The comparisons that explain an evaluation: the first one that held and
/// the first one that did not. A firing alert reports the former, a resolved
/// alert the latter (the reason it stopped).
#[derive(Debug, Clone, Copy, Default)]
pub struct Witness {
    held: Option<(f64, f64, Option<Subject>)>,
    failed: Option<(f64, f64, Option<Subject>)>,
}

/// What a comparison compared when its left side is one aggregate, e.g.
/// `p99(latency_ms) > 500`: the operator and the aggregate's index. An alert's
/// explanation uses it to pick the rows that made the condition hold.
pub type Subject = (CompareOp, usize);

impl Witness {
    /// `(value, threshold)` of the first comparison whose truth is `held`,
    /// falling back to the other kind.
    pub fn explaining(&self, held: bool) -> Option<(f64, f64)> {
        self.pick(held)
            .map(|(value, threshold, _)| (value, threshold))
    }

    /// The aggregate and operator of the comparison [`Witness::explaining`]
    /// reports, when its left side is a single aggregate.
    pub fn subject(&self, held: bool) -> Option<Subject> {
        self.pick(held).and_then(|(_, _, subject)| subject)
    }

    fn pick(&self, held: bool) -> Option<(f64, f64, Option<Subject>)> {
        if held {
            self.held.or(self.failed)
        } else {
            self.failed.or(self.held)
        }
    }
}

/// Evaluates a condition at `now`, updating timers. Aggregate values are
/// asked for on demand, so a decided `and`/`or` never computes the other
/// side's aggregates; every `for` timer is still updated each tick.
pub fn evaluate(
    condition: &Condition,
    values: &mut dyn FnMut(usize) -> f64,
    now: i64,
    timers: &mut HeldTimers,
    witness: &mut Witness,
) -> f64 {
    match condition {
        Condition::Number(value) => *value,
        Condition::Aggregate(index) => values(*index),
        Condition::Arith(op, left, right) => {
            let left = evaluate(left, values, now, timers, witness);
            let right = evaluate(right, values, now, timers, witness);
            op.apply(left, right)
        }
        Condition::Negate(inner) => -evaluate(inner, values, now, timers, witness),
        Condition::Compare(op, left_side, right, _) => {
            let left = evaluate(left_side, values, now, timers, witness);
            let right = evaluate(right, values, now, timers, witness);
            let held = op.apply(left, right);
            let slot = if held {
                &mut witness.held
            } else {
                &mut witness.failed
            };
            let subject = match **left_side {
                Condition::Aggregate(index) => Some((*op, index)),
                _ => None,
            };
            slot.get_or_insert((left, right, subject));
            truth(held)
        }
        Condition::And(left, right, right_has_timers) => {
            let left = evaluate(left, values, now, timers, witness) != 0.0;
            if !left && !right_has_timers {
                return 0.0;
            }
            let right = evaluate(right, values, now, timers, witness) != 0.0;
            truth(left && right)
        }
        Condition::Or(left, right, right_has_timers) => {
            let left = evaluate(left, values, now, timers, witness) != 0.0;
            if left && !right_has_timers {
                return 1.0;
            }
            let right = evaluate(right, values, now, timers, witness) != 0.0;
            truth(left || right)
        }
        Condition::Not(inner) => truth(evaluate(inner, values, now, timers, witness) == 0.0),
        Condition::HeldFor(inner, duration, index) => {
            let holds = evaluate(inner, values, now, timers, witness) != 0.0;
            let since = &mut timers.since[*index];
            if !holds {
                *since = None;
                return 0.0;
            }
            let started = *since.get_or_insert(now);
            truth(now - started >= *duration)
        }
    }
}

fn truth(value: bool) -> f64 {
    if value {
        1.0
    } else {
        0.0
    }
}

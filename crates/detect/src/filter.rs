//! Row predicates compiled against a schema and evaluated on whole batches.
//!
//! A filter is compiled once per rule into a [`RowPredicate`] that refers to
//! columns by index, then evaluated per batch with Arrow kernels into a
//! bitmap. Dictionary columns are compared on their (small) dictionary
//! first and the answer is gathered through the keys, so `model_id ==
//! "recsys"` costs one string comparison per distinct value, not per row.
//!
//! A missing (null) value never satisfies a comparison; `not` of such a
//! comparison does. This is simpler to explain than SQL's three-valued logic.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, StringArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp;
use arrow::compute::{cast, is_not_null};
use arrow::datatypes::{DataType, Int32Type, Schema};
use arrow::record_batch::RecordBatch;

use crate::expr::{ArithOp, CompareOp, Expr, ExprError, Literal};

/// A compiled row-level predicate.
#[derive(Debug, Clone)]
pub enum RowPredicate {
    /// Always this value.
    Constant(bool),
    /// A string column equals (or not) one of the values.
    TextIn {
        /// Column index.
        column: usize,
        /// Accepted values.
        values: Vec<String>,
        /// `!=` / `not in`.
        negated: bool,
    },
    /// A numeric comparison.
    Numeric {
        /// Operator.
        op: CompareOp,
        /// Left side.
        left: NumericExpr,
        /// Right side.
        right: NumericExpr,
    },
    /// `column is [not] null`.
    IsNull {
        /// Column index.
        column: usize,
        /// `is not null`.
        negated: bool,
    },
    /// Both hold.
    And(Box<RowPredicate>, Box<RowPredicate>),
    /// Either holds.
    Or(Box<RowPredicate>, Box<RowPredicate>),
    /// Negation.
    Not(Box<RowPredicate>),
}

/// A compiled numeric expression over columns.
#[derive(Debug, Clone)]
pub enum NumericExpr {
    /// A numeric column, cast to f64.
    Column(usize),
    /// A constant.
    Constant(f64),
    /// Arithmetic.
    Arith(ArithOp, Box<NumericExpr>, Box<NumericExpr>),
    /// Negation.
    Negate(Box<NumericExpr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    Text,
    Numeric,
    Other,
}

fn column_kind(data_type: &DataType) -> ColumnKind {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnKind::Text,
        DataType::Dictionary(_, value) if value.as_ref() == &DataType::Utf8 => ColumnKind::Text,
        data_type if data_type.is_numeric() => ColumnKind::Numeric,
        _ => ColumnKind::Other,
    }
}

fn resolve_column(schema: &Schema, expr: &Expr) -> Result<Option<(usize, ColumnKind)>, ExprError> {
    let Expr::Identifier {
        qualifier,
        name,
        span,
    } = expr
    else {
        return Ok(None);
    };
    if let Some(qualifier) = qualifier {
        return Err(ExprError::new(
            *span,
            format!("'{qualifier}.{name}': a filter names plain columns"),
        ));
    }
    match schema.index_of(name) {
        Ok(index) => Ok(Some((index, column_kind(schema.field(index).data_type())))),
        Err(_) => Err(ExprError::new(*span, format!("unknown column '{name}'"))),
    }
}

impl RowPredicate {
    /// Appends the indices of the columns the predicate reads.
    pub fn referenced_columns(&self, out: &mut Vec<usize>) {
        match self {
            RowPredicate::Constant(_) => {}
            RowPredicate::TextIn { column, .. } | RowPredicate::IsNull { column, .. } => {
                out.push(*column)
            }
            RowPredicate::Numeric { left, right, .. } => {
                left.referenced_columns(out);
                right.referenced_columns(out);
            }
            RowPredicate::And(left, right) | RowPredicate::Or(left, right) => {
                left.referenced_columns(out);
                right.referenced_columns(out);
            }
            RowPredicate::Not(inner) => inner.referenced_columns(out),
        }
    }
}

impl NumericExpr {
    /// Appends the indices of the columns the expression reads.
    pub fn referenced_columns(&self, out: &mut Vec<usize>) {
        match self {
            NumericExpr::Column(column) => out.push(*column),
            NumericExpr::Constant(_) => {}
            NumericExpr::Arith(_, left, right) => {
                left.referenced_columns(out);
                right.referenced_columns(out);
            }
            NumericExpr::Negate(inner) => inner.referenced_columns(out),
        }
    }
}

/// Compiles a filter expression against a schema.
pub fn compile_predicate(expr: &Expr, schema: &Schema) -> Result<RowPredicate, ExprError> {
    match expr {
        Expr::Literal(Literal::Bool(value), _) => Ok(RowPredicate::Constant(*value)),
        Expr::And(left, right) => Ok(RowPredicate::And(
            Box::new(compile_predicate(left, schema)?),
            Box::new(compile_predicate(right, schema)?),
        )),
        Expr::Or(left, right) => Ok(RowPredicate::Or(
            Box::new(compile_predicate(left, schema)?),
            Box::new(compile_predicate(right, schema)?),
        )),
        Expr::Not(inner) => Ok(RowPredicate::Not(Box::new(compile_predicate(inner, schema)?))),
        Expr::IsNull { operand, negated } => match resolve_column(schema, operand)? {
            Some((column, _)) => Ok(RowPredicate::IsNull { column, negated: *negated }),
            None => Err(ExprError::new(operand.span(), "'is null' applies to a column")),
        },
        Expr::In(operand, values, span) => {
            let Some((column, kind)) = resolve_column(schema, operand)? else {
                return Err(ExprError::new(*span, "'in' applies to a column"));
            };
            match kind {
                ColumnKind::Text => {
                    let mut texts = Vec::new();
                    for value in values {
                        match value {
                            Literal::Text(text) => texts.push(text.clone()),
                            _ => return Err(ExprError::new(*span, "a text column is compared with quoted strings")),
                        }
                    }
                    Ok(RowPredicate::TextIn { column, values: texts, negated: false })
                }
                ColumnKind::Numeric => {
                    let mut any = RowPredicate::Constant(false);
                    for value in values {
                        let Literal::Number(number) = value else {
                            return Err(ExprError::new(*span, "a numeric column is compared with numbers"));
                        };
                        let equal = RowPredicate::Numeric {
                            op: CompareOp::Eq,
                            left: NumericExpr::Column(column),
                            right: NumericExpr::Constant(*number),
                        };
                        any = RowPredicate::Or(Box::new(any), Box::new(equal));
                    }
                    Ok(any)
                }
                ColumnKind::Other => Err(ExprError::new(operand.span(), "this column's type can't be compared")),
            }
        }
        Expr::Compare(op, left, right, span) => compile_compare(*op, left, right, *span, schema),
        Expr::HeldFor(_, _, span) => Err(ExprError::new(*span, "'for' belongs in a condition, not a filter")),
        Expr::Call { span, function, .. } => Err(ExprError::new(
            *span,
            format!("'{function}(...)' is an aggregate: aggregates belong in the condition, filters compare columns"),
        )),
        other => Err(ExprError::new(other.span(), "expected a comparison such as status == \"error\"")),
    }
}

fn compile_compare(
    op: CompareOp,
    left: &Expr,
    right: &Expr,
    span: crate::expr::Span,
    schema: &Schema,
) -> Result<RowPredicate, ExprError> {
    // Text comparisons: column ==/!= "literal" (either order).
    let text_side =
        |column_expr: &Expr, literal_expr: &Expr| -> Result<Option<RowPredicate>, ExprError> {
            let (Some((column, ColumnKind::Text)), Expr::Literal(literal, literal_span)) =
                (resolve_column(schema, column_expr)?, literal_expr)
            else {
                return Ok(None);
            };
            let Literal::Text(text) = literal else {
                return Err(ExprError::new(
                    *literal_span,
                    "a text column is compared with a quoted string",
                ));
            };
            let negated = match op {
                CompareOp::Eq => false,
                CompareOp::NotEq => true,
                _ => return Err(ExprError::new(span, "text columns support only == and !=")),
            };
            Ok(Some(RowPredicate::TextIn {
                column,
                values: vec![text.clone()],
                negated,
            }))
        };
    if let Some(predicate) = text_side(left, right)? {
        return Ok(predicate);
    }
    if let Some(predicate) = text_side(right, left)? {
        return Ok(predicate);
    }
    Ok(RowPredicate::Numeric {
        op,
        left: compile_numeric(left, schema)?,
        right: compile_numeric(right, schema)?,
    })
}

fn compile_numeric(expr: &Expr, schema: &Schema) -> Result<NumericExpr, ExprError> {
    match expr {
        Expr::Literal(Literal::Number(n), _) => Ok(NumericExpr::Constant(*n)),
        Expr::Literal(_, span) => Err(ExprError::new(*span, "expected a number here")),
        Expr::Identifier { span, .. } => match resolve_column(schema, expr)? {
            Some((column, ColumnKind::Numeric)) => Ok(NumericExpr::Column(column)),
            Some((_, ColumnKind::Text)) => Err(ExprError::new(
                *span,
                "a text column is compared with a quoted string using == or !=",
            )),
            _ => Err(ExprError::new(
                *span,
                "this column's type can't be compared",
            )),
        },
        Expr::Arith(op, left, right) => Ok(NumericExpr::Arith(
            *op,
            Box::new(compile_numeric(left, schema)?),
            Box::new(compile_numeric(right, schema)?),
        )),
        Expr::Negate(inner) => Ok(NumericExpr::Negate(Box::new(compile_numeric(
            inner, schema,
        )?))),
        other => Err(ExprError::new(other.span(), "expected a numeric value")),
    }
}

/// Evaluates a predicate over a batch: bit `i` is set when row `i` matches.
pub fn evaluate_predicate(predicate: &RowPredicate, batch: &RecordBatch) -> BooleanBuffer {
    let rows = batch.num_rows();
    match predicate {
        RowPredicate::Constant(value) => {
            if *value {
                BooleanBuffer::new_set(rows)
            } else {
                BooleanBuffer::new_unset(rows)
            }
        }
        RowPredicate::And(left, right) => {
            &evaluate_predicate(left, batch) & &evaluate_predicate(right, batch)
        }
        RowPredicate::Or(left, right) => {
            &evaluate_predicate(left, batch) | &evaluate_predicate(right, batch)
        }
        RowPredicate::Not(inner) => !&evaluate_predicate(inner, batch),
        RowPredicate::IsNull { column, negated } => {
            let present =
                is_not_null(batch.column(*column).as_ref()).map(|array| array.values().clone());
            let present = present.unwrap_or_else(|_| BooleanBuffer::new_set(rows));
            if *negated {
                present
            } else {
                !&present
            }
        }
        RowPredicate::TextIn {
            column,
            values,
            negated,
        } => {
            let matched = text_in(batch.column(*column), values);
            let present = match batch.column(*column).logical_nulls() {
                Some(nulls) => nulls.inner().clone(),
                None => BooleanBuffer::new_set(rows),
            };
            if *negated {
                &!&matched & &present
            } else {
                matched
            }
        }
        RowPredicate::Numeric { op, left, right } => {
            let left = evaluate_numeric(left, batch);
            let right = evaluate_numeric(right, batch);
            compare_numeric(*op, &left, &right, rows)
        }
    }
}

fn text_in(array: &ArrayRef, values: &[String]) -> BooleanBuffer {
    let rows = array.len();
    if let Some(dictionary) = array.as_dictionary_opt::<Int32Type>() {
        let dictionary_values = dictionary.values().as_string::<i32>();
        let accepted: Vec<bool> = (0..dictionary_values.len())
            .map(|index| {
                dictionary_values.is_valid(index)
                    && values.iter().any(|v| v == dictionary_values.value(index))
            })
            .collect();
        let keys = dictionary.keys();
        let key_values = keys.values();
        return match keys.nulls() {
            None => BooleanBuffer::collect_bool(rows, |row| accepted[key_values[row] as usize]),
            Some(nulls) => BooleanBuffer::collect_bool(rows, |row| {
                nulls.is_valid(row) && accepted[key_values[row] as usize]
            }),
        };
    }
    let Some(strings) = array.as_string_opt::<i32>() else {
        return BooleanBuffer::new_unset(rows);
    };
    let mut any = BooleanBuffer::new_unset(rows);
    for value in values {
        let scalar = StringArray::new_scalar(value);
        if let Ok(matched) = cmp::eq(strings, &scalar) {
            any = &any | &true_bits(&matched);
        }
    }
    any
}

fn true_bits(array: &BooleanArray) -> BooleanBuffer {
    match array.nulls() {
        Some(nulls) => array.values() & nulls.inner(),
        None => array.values().clone(),
    }
}

/// A numeric operand evaluated over a batch.
enum NumericValue {
    Scalar(f64),
    Array(Float64Array),
}

fn evaluate_numeric(expr: &NumericExpr, batch: &RecordBatch) -> NumericValue {
    match expr {
        NumericExpr::Constant(value) => NumericValue::Scalar(*value),
        NumericExpr::Column(column) => {
            let array = batch.column(*column);
            let floats = match array.as_primitive_opt::<arrow::datatypes::Float64Type>() {
                Some(floats) => floats.clone(),
                None => match cast(array, &DataType::Float64) {
                    Ok(cast_array) => cast_array
                        .as_primitive::<arrow::datatypes::Float64Type>()
                        .clone(),
                    Err(_) => Float64Array::new_null(batch.num_rows()),
                },
            };
            NumericValue::Array(floats)
        }
        NumericExpr::Negate(inner) => match evaluate_numeric(inner, batch) {
            NumericValue::Scalar(value) => NumericValue::Scalar(-value),
            NumericValue::Array(array) => {
                NumericValue::Array(arrow::compute::kernels::arity::unary(&array, |v: f64| -v))
            }
        },
        NumericExpr::Arith(op, left, right) => {
            let op = *op;
            match (
                evaluate_numeric(left, batch),
                evaluate_numeric(right, batch),
            ) {
                (NumericValue::Scalar(a), NumericValue::Scalar(b)) => {
                    NumericValue::Scalar(op.apply(a, b))
                }
                (NumericValue::Array(a), NumericValue::Scalar(b)) => {
                    NumericValue::Array(arrow::compute::kernels::arity::unary(&a, |v: f64| {
                        op.apply(v, b)
                    }))
                }
                (NumericValue::Scalar(a), NumericValue::Array(b)) => {
                    NumericValue::Array(arrow::compute::kernels::arity::unary(&b, |v: f64| {
                        op.apply(a, v)
                    }))
                }
                (NumericValue::Array(a), NumericValue::Array(b)) => NumericValue::Array(
                    arrow::compute::kernels::arity::binary(&a, &b, |x: f64, y: f64| op.apply(x, y))
                        .unwrap_or_else(|_| Float64Array::new_null(a.len())),
                ),
            }
        }
    }
}

fn compare_numeric(
    op: CompareOp,
    left: &NumericValue,
    right: &NumericValue,
    rows: usize,
) -> BooleanBuffer {
    let result = match (left, right) {
        (NumericValue::Scalar(a), NumericValue::Scalar(b)) => {
            return if op.apply(*a, *b) {
                BooleanBuffer::new_set(rows)
            } else {
                BooleanBuffer::new_unset(rows)
            };
        }
        (NumericValue::Array(a), NumericValue::Scalar(b)) => {
            run_compare(op, a, &Float64Array::new_scalar(*b))
        }
        (NumericValue::Scalar(a), NumericValue::Array(b)) => {
            run_compare(op, &Float64Array::new_scalar(*a), b)
        }
        (NumericValue::Array(a), NumericValue::Array(b)) => run_compare(op, a, b),
    };
    match result {
        Some(result) if result.len() == rows => true_bits(&result),
        _ => BooleanBuffer::new_unset(rows),
    }
}

fn run_compare(
    op: CompareOp,
    left: &dyn arrow::array::Datum,
    right: &dyn arrow::array::Datum,
) -> Option<BooleanArray> {
    let result = match op {
        CompareOp::Eq => cmp::eq(left, right),
        CompareOp::NotEq => cmp::neq(left, right),
        CompareOp::Less => cmp::lt(left, right),
        CompareOp::LessEq => cmp::lt_eq(left, right),
        CompareOp::Greater => cmp::gt(left, right),
        CompareOp::GreaterEq => cmp::gt_eq(left, right),
    };
    result.ok()
}

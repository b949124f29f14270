//! The expression language shared by rule filters and rule conditions.
//!
//! One grammar serves both places; what differs is what an identifier means.
//! In a `filter` (evaluated per row) a bare identifier is a column. In a
//! `condition` (evaluated per group at each window tick) identifiers are
//! aggregate calls such as `p99(latency_ms)` or `canary.error_rate()`, and a
//! sub-condition may carry a duration: `(p99(latency_ms) > 500) for 5m`.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | held
//! held    := compare ("for" DURATION)?
//! compare := sum (CMP sum | "in" "[" literal ("," literal)* "]" | "is" "not"? "null")?
//! sum     := product (("+" | "-") product)*
//! product := unary (("*" | "/") unary)*
//! unary   := "-" unary | primary
//! primary := NUMBER | STRING | "true" | "false" | "(" expr ")"
//!          | IDENT ("." IDENT)? ("(" (arg ("," arg)*)? ")")?
//! ```
//!
//! Errors carry the byte span of the offending token so that the rule loader
//! can point at file:line:column.

use std::fmt;

/// A byte range inside the expression text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A parse or validation problem inside one expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// Where in the expression text.
    pub span: Span,
    /// What is wrong.
    pub message: String,
}

impl ExprError {
    pub(crate) fn new(span: Span, message: impl Into<String>) -> Self {
        ExprError {
            span,
            message: message.into(),
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Eq,
    /// `!=`
    NotEq,
    /// `<`
    Less,
    /// `<=`
    LessEq,
    /// `>`
    Greater,
    /// `>=`
    GreaterEq,
}

impl CompareOp {
    /// Applies the operator to two numbers; NaN compares false (except `!=`).
    pub fn apply(self, left: f64, right: f64) -> bool {
        match self {
            CompareOp::Eq => left == right,
            CompareOp::NotEq => left != right,
            CompareOp::Less => left < right,
            CompareOp::LessEq => left <= right,
            CompareOp::Greater => left > right,
            CompareOp::GreaterEq => left >= right,
        }
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

impl ArithOp {
    /// Applies the operator.
    pub fn apply(self, left: f64, right: f64) -> f64 {
        match self {
            ArithOp::Add => left + right,
            ArithOp::Sub => left - right,
            ArithOp::Mul => left * right,
            ArithOp::Div => left / right,
        }
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// Any number.
    Number(f64),
    /// A quoted string.
    Text(String),
    /// `true` or `false`.
    Bool(bool),
}

/// A call argument: a column name or a literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Argument {
    /// A bare identifier.
    Column(String, Span),
    /// A literal.
    Literal(Literal, Span),
}

/// The syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Literal(Literal, Span),
    /// A bare identifier, optionally qualified: `latency_ms` or `canary.x`.
    Identifier {
        /// `canary` in `canary.x`.
        qualifier: Option<String>,
        /// The name.
        name: String,
        /// Where.
        span: Span,
    },
    /// A call, optionally qualified: `p99(latency_ms)`, `canary.count()`.
    Call {
        /// Segment name in `segment.fn(...)`.
        qualifier: Option<String>,
        /// Function name.
        function: String,
        /// Arguments.
        arguments: Vec<Argument>,
        /// Where (the whole call).
        span: Span,
    },
    /// `-x`
    Negate(Box<Expr>),
    /// `not x`
    Not(Box<Expr>),
    /// `a + b` etc.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `a > b` etc.
    Compare(CompareOp, Box<Expr>, Box<Expr>, Span),
    /// `a in [..]`
    In(Box<Expr>, Vec<Literal>, Span),
    /// `a is null` (`negated` for `is not null`)
    IsNull {
        /// The operand.
        operand: Box<Expr>,
        /// `is not null`.
        negated: bool,
    },
    /// `a and b`
    And(Box<Expr>, Box<Expr>),
    /// `a or b`
    Or(Box<Expr>, Box<Expr>),
    /// `x for 5m`: held continuously for the duration (nanoseconds).
    HeldFor(Box<Expr>, i64, Span),
}

impl Expr {
    /// The span of the whole expression (approximate for binary nodes: the left operand's start to the right's end).
    pub fn span(&self) -> Span {
        match self {
            Expr::Literal(_, span)
            | Expr::Identifier { span, .. }
            | Expr::Call { span, .. }
            | Expr::Compare(_, _, _, span)
            | Expr::In(_, _, span)
            | Expr::HeldFor(_, _, span) => *span,
            Expr::Negate(inner) | Expr::Not(inner) => inner.span(),
            Expr::IsNull { operand, .. } => operand.span(),
            Expr::Arith(_, left, right) | Expr::And(left, right) | Expr::Or(left, right) => Span {
                start: left.span().start,
                end: right.span().end,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Duration(i64),
    Text(String),
    Identifier(String),
    Symbol(&'static str),
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Number(n) => write!(f, "number {n}"),
            Token::Duration(_) => f.write_str("duration"),
            Token::Text(t) => write!(f, "string \"{t}\""),
            Token::Identifier(i) => write!(f, "'{i}'"),
            Token::Symbol(s) => write!(f, "'{s}'"),
            Token::End => f.write_str("end of expression"),
        }
    }
}

const SYMBOLS: [&str; 16] = [
    "==", "!=", "<=", ">=", "<", ">", "=", "+", "-", "*", "/", "(", ")", "[", "]", ",",
];

fn tokenize(text: &str) -> Result<Vec<(Token, Span)>, ExprError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let byte = bytes[position];
        if byte.is_ascii_whitespace() {
            position += 1;
            continue;
        }
        let start = position;
        if byte.is_ascii_digit()
            || (byte == b'.' && bytes.get(position + 1).is_some_and(u8::is_ascii_digit))
        {
            while position < bytes.len()
                && (bytes[position].is_ascii_digit()
                    || bytes[position] == b'.'
                    || bytes[position] == b'_'
                    || ((bytes[position] == b'e' || bytes[position] == b'E')
                        && bytes
                            .get(position + 1)
                            .is_some_and(|b| b.is_ascii_digit() || *b == b'-' || *b == b'+')))
            {
                if bytes[position] == b'e' || bytes[position] == b'E' {
                    position += 1; // the sign or first exponent digit
                }
                position += 1;
            }
            let number_end = position;
            while position < bytes.len() && bytes[position].is_ascii_alphabetic() {
                position += 1;
            }
            let span = Span {
                start,
                end: position,
            };
            let literal = &text[start..number_end];
            if position > number_end {
                let nanos =
                    inferwatch_core::parse_duration(&text[start..position]).map_err(|_| {
                        ExprError::new(
                            span,
                            format!(
                                "invalid duration '{}': use ms, s, m, h or d",
                                &text[start..position]
                            ),
                        )
                    })?;
                tokens.push((Token::Duration(nanos), span));
            } else {
                let value: f64 = literal
                    .replace('_', "")
                    .parse()
                    .map_err(|_| ExprError::new(span, format!("invalid number '{literal}'")))?;
                tokens.push((Token::Number(value), span));
            }
            continue;
        }
        if byte == b'"' || byte == b'\'' {
            let quote = byte;
            position += 1;
            let mut value = String::new();
            loop {
                let Some(&next) = bytes.get(position) else {
                    return Err(ExprError::new(
                        Span {
                            start,
                            end: position,
                        },
                        "unterminated string",
                    ));
                };
                if next == quote {
                    position += 1;
                    break;
                }
                if next == b'\\' && position + 1 < bytes.len() {
                    position += 1;
                }
                let character = text[position..].chars().next().unwrap_or('\u{fffd}');
                value.push(character);
                position += character.len_utf8();
            }
            tokens.push((
                Token::Text(value),
                Span {
                    start,
                    end: position,
                },
            ));
            continue;
        }
        if byte.is_ascii_alphabetic() || byte == b'_' {
            while position < bytes.len()
                && (bytes[position].is_ascii_alphanumeric() || bytes[position] == b'_')
            {
                position += 1;
            }
            tokens.push((
                Token::Identifier(text[start..position].to_string()),
                Span {
                    start,
                    end: position,
                },
            ));
            continue;
        }
        if byte == b'.' {
            position += 1;
            tokens.push((
                Token::Symbol("."),
                Span {
                    start,
                    end: position,
                },
            ));
            continue;
        }
        let symbol = SYMBOLS
            .iter()
            .find(|symbol| text[position..].starts_with(**symbol));
        match symbol {
            Some(symbol) => {
                position += symbol.len();
                tokens.push((
                    Token::Symbol(symbol),
                    Span {
                        start,
                        end: position,
                    },
                ));
            }
            None => {
                let character = text[position..].chars().next().unwrap_or('?');
                return Err(ExprError::new(
                    Span {
                        start,
                        end: position + character.len_utf8(),
                    },
                    format!("unexpected character '{character}'"),
                ));
            }
        }
    }
    tokens.push((
        Token::End,
        Span {
            start: text.len(),
            end: text.len(),
        },
    ));
    Ok(tokens)
}

/// Parses an expression.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        position: 0,
    };
    let expr = parser.or()?;
    let (token, span) = parser.peek();
    if *token != Token::End {
        return Err(ExprError::new(
            span,
            format!("unexpected {token}: expected an operator or the end"),
        ));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<(Token, Span)>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> (&Token, Span) {
        let (token, span) = &self.tokens[self.position.min(self.tokens.len() - 1)];
        (token, *span)
    }

    fn advance(&mut self) -> (Token, Span) {
        let item = self.tokens[self.position.min(self.tokens.len() - 1)].clone();
        if self.position < self.tokens.len() - 1 {
            self.position += 1;
        }
        item
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek().0, Token::Symbol(s) if *s == symbol) {
            self.advance();
            return true;
        }
        false
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        if matches!(self.peek().0, Token::Identifier(name) if name == keyword) {
            self.advance();
            return true;
        }
        false
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<Span, ExprError> {
        let (token, span) = self.peek();
        if matches!(token, Token::Symbol(s) if *s == symbol) {
            self.advance();
            return Ok(span);
        }
        Err(ExprError::new(
            span,
            format!("expected '{symbol}', found {token}"),
        ))
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat_keyword("or") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.not()?;
        while self.eat_keyword("and") {
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.eat_keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.held()
    }

    fn held(&mut self) -> Result<Expr, ExprError> {
        let inner = self.compare()?;
        if !self.eat_keyword("for") {
            return Ok(inner);
        }
        match self.advance() {
            (Token::Duration(nanos), span) => {
                let whole = Span {
                    start: inner.span().start,
                    end: span.end,
                };
                Ok(Expr::HeldFor(Box::new(inner), nanos, whole))
            }
            (token, span) => Err(ExprError::new(
                span,
                format!("expected a duration such as 5m after 'for', found {token}"),
            )),
        }
    }

    fn compare(&mut self) -> Result<Expr, ExprError> {
        let left = self.sum()?;
        let (token, span) = self.peek();
        let op = match token {
            Token::Symbol("==") => CompareOp::Eq,
            Token::Symbol("!=") => CompareOp::NotEq,
            Token::Symbol("<") => CompareOp::Less,
            Token::Symbol("<=") => CompareOp::LessEq,
            Token::Symbol(">") => CompareOp::Greater,
            Token::Symbol(">=") => CompareOp::GreaterEq,
            Token::Symbol("=") => return Err(ExprError::new(span, "use '==' to compare")),
            Token::Identifier(word) if word == "in" => {
                self.advance();
                return self.in_list(left, span);
            }
            Token::Identifier(word) if word == "is" => {
                self.advance();
                let negated = self.eat_keyword("not");
                let (token, span) = self.advance();
                if !matches!(&token, Token::Identifier(word) if word == "null") {
                    return Err(ExprError::new(
                        span,
                        format!("expected 'null', found {token}"),
                    ));
                }
                return Ok(Expr::IsNull {
                    operand: Box::new(left),
                    negated,
                });
            }
            _ => return Ok(left),
        };
        self.advance();
        let right = self.sum()?;
        let whole = Span {
            start: left.span().start,
            end: right.span().end,
        };
        debug_assert!(whole.start <= whole.end || span.start > 0);
        Ok(Expr::Compare(op, Box::new(left), Box::new(right), whole))
    }

    fn in_list(&mut self, left: Expr, in_span: Span) -> Result<Expr, ExprError> {
        self.expect_symbol("[")?;
        let mut values = Vec::new();
        loop {
            match self.advance() {
                (Token::Number(n), _) => values.push(Literal::Number(n)),
                (Token::Text(t), _) => values.push(Literal::Text(t)),
                (Token::Symbol("]"), _) if values.is_empty() => break,
                (token, span) => {
                    return Err(ExprError::new(
                        span,
                        format!("expected a literal in the list, found {token}"),
                    ))
                }
            }
            if self.eat_symbol("]") {
                break;
            }
            self.expect_symbol(",")?;
        }
        let whole = Span {
            start: left.span().start,
            end: in_span.end,
        };
        Ok(Expr::In(Box::new(left), values, whole))
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.product()?;
        loop {
            let op = match self.peek().0 {
                Token::Symbol("+") => ArithOp::Add,
                Token::Symbol("-") => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.advance();
            let right = self.product()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn product(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek().0 {
                Token::Symbol("*") => ArithOp::Mul,
                Token::Symbol("/") => ArithOp::Div,
                _ => return Ok(left),
            };
            self.advance();
            let right = self.unary()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat_symbol("-") {
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let (token, span) = self.advance();
        match token {
            Token::Number(n) => Ok(Expr::Literal(Literal::Number(n), span)),
            Token::Text(t) => Ok(Expr::Literal(Literal::Text(t), span)),
            Token::Symbol("(") => {
                let inner = self.or()?;
                self.expect_symbol(")")?;
                Ok(inner)
            }
            Token::Identifier(word) if word == "true" || word == "false" => {
                Ok(Expr::Literal(Literal::Bool(word == "true"), span))
            }
            Token::Identifier(word)
                if matches!(
                    word.as_str(),
                    "and" | "or" | "not" | "for" | "in" | "is" | "null"
                ) =>
            {
                Err(ExprError::new(
                    span,
                    format!("unexpected keyword '{word}': expected a value"),
                ))
            }
            Token::Identifier(first) => {
                let (qualifier, name, mut whole) = if self.eat_symbol(".") {
                    match self.advance() {
                        (Token::Identifier(second), second_span) => (
                            Some(first),
                            second,
                            Span {
                                start: span.start,
                                end: second_span.end,
                            },
                        ),
                        (token, span) => {
                            return Err(ExprError::new(
                                span,
                                format!("expected a name after '.', found {token}"),
                            ))
                        }
                    }
                } else {
                    (None, first, span)
                };
                if !self.eat_symbol("(") {
                    return Ok(Expr::Identifier {
                        qualifier,
                        name,
                        span: whole,
                    });
                }
                let mut arguments = Vec::new();
                if !self.eat_symbol(")") {
                    loop {
                        match self.advance() {
                            (Token::Identifier(column), span) => {
                                arguments.push(Argument::Column(column, span))
                            }
                            (Token::Number(n), span) => {
                                arguments.push(Argument::Literal(Literal::Number(n), span))
                            }
                            (Token::Text(t), span) => {
                                arguments.push(Argument::Literal(Literal::Text(t), span))
                            }
                            (token, span) => {
                                return Err(ExprError::new(
                                    span,
                                    format!(
                                        "expected a column or a literal argument, found {token}"
                                    ),
                                ))
                            }
                        }
                        if self.eat_symbol(")") {
                            break;
                        }
                        self.expect_symbol(",")?;
                    }
                }
                whole.end = self.tokens[self.position.saturating_sub(1)].1.end;
                Ok(Expr::Call {
                    qualifier,
                    function: name,
                    arguments,
                    span: whole,
                })
            }
            Token::Duration(_) => Err(ExprError::new(
                span,
                "a duration is only allowed after 'for'",
            )),
            other => Err(ExprError::new(
                span,
                format!("unexpected {other}: expected a value"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_canary_condition() {
        let expr = parse(
            "(canary.p99(latency_ms) > 500) for 5m or (canary.error_rate() > 2 * baseline.error_rate()) for 3m",
        )
        .unwrap();
        let Expr::Or(left, right) = expr else {
            panic!("expected or")
        };
        assert!(matches!(*left, Expr::HeldFor(_, n, _) if n == 300_000_000_000));
        assert!(matches!(*right, Expr::HeldFor(_, n, _) if n == 180_000_000_000));
    }

    #[test]
    fn precedence_is_arithmetic_then_compare_then_not_and_or() {
        let expr = parse("not a > 1 + 2 * 3 and b == 'x' or c in [1, 2]").unwrap();
        let Expr::Or(left, _) = expr else {
            panic!("or at the top")
        };
        let Expr::And(not, _) = *left else {
            panic!("and under or")
        };
        let Expr::Not(compare) = *not else {
            panic!("not")
        };
        let Expr::Compare(CompareOp::Greater, _, sum, _) = *compare else {
            panic!("compare")
        };
        assert!(matches!(*sum, Expr::Arith(ArithOp::Add, _, _)));
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        let error = parse("latency_ms > > 5").unwrap_err();
        assert_eq!(error.span, Span { start: 13, end: 14 });
        let error = parse("status = 'ok'").unwrap_err();
        assert!(error.message.contains("=="), "{}", error.message);
        let error = parse("count() > 5 for 5 parsecs").unwrap_err();
        assert!(error.message.contains("duration"), "{}", error.message);
        assert!(parse("'open").unwrap_err().message.contains("unterminated"));
        assert!(parse("a > 1 )").is_err());
        assert!(parse("x # y").unwrap_err().message.contains('#'));
    }

    #[test]
    fn arbitrary_text_never_panics() {
        for text in [
            "", "(", ")", "((((", "a.", "a.(", "1e", "1e+", "é > 1", "'\\", "f(,)", "x in [",
            "x is", "1.2.3",
        ] {
            let _ = parse(text);
        }
    }
}

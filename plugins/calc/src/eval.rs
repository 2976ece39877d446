//! Arithmetic expressions: `+ - * / % ^`, parentheses, unary minus, functions and constants.
//!
//! Precedence, lowest first: `+ -`, `* / %`, unary `-`/`+`, `^` (right-associative), so
//! `-2^2` is `-4` and `2^3^2` is `512`, as in mathematics.

use std::fmt;

/// Why an expression could not be evaluated. `position` is the 1-based character column.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError {
    pub message: String,
    pub position: Option<usize>,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(pos) => write!(f, "{} at position {pos}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

const FUNCTIONS: &str =
    "sqrt, abs, ln, log10, sin, cos, tan (radians), min, max, round(x[, digits]), floor, ceil";

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Op(char),
    Open,
    Close,
    Comma,
    End,
}

fn tokenize(input: &str) -> Result<Vec<(Token, usize)>, EvalError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            // Exponent notation (`1.5e-3`), but not the constant `e` after a number.
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            let value = text.parse::<f64>().map_err(|_| EvalError {
                message: format!("malformed number `{text}`"),
                position: Some(pos),
            })?;
            tokens.push((Token::Number(value), pos));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            tokens.push((Token::Name(name.to_ascii_lowercase()), pos));
        } else {
            let token = match c {
                '+' | '-' | '*' | '/' | '%' | '^' => Token::Op(c),
                '×' => Token::Op('*'),
                '÷' => Token::Op('/'),
                '(' => Token::Open,
                ')' => Token::Close,
                ',' => Token::Comma,
                _ => {
                    return Err(EvalError {
                        message: format!("unexpected character `{c}`"),
                        position: Some(pos),
                    });
                }
            };
            tokens.push((token, pos));
            i += 1;
        }
    }
    tokens.push((Token::End, chars.len() + 1));
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    next: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.next].0
    }

    fn position(&self) -> usize {
        self.tokens[self.next].1
    }

    fn advance(&mut self) -> (Token, usize) {
        let token = self.tokens[self.next].clone();
        if self.next + 1 < self.tokens.len() {
            self.next += 1;
        }
        token
    }

    fn error(&self, message: impl Into<String>) -> EvalError {
        EvalError {
            message: message.into(),
            position: Some(self.position()),
        }
    }

    fn unexpected(&self) -> EvalError {
        match self.peek() {
            Token::End => self.error("unexpected end of expression"),
            Token::Close => self.error("unmatched `)`"),
            token => self.error(format!("unexpected {}", describe(token))),
        }
    }

    fn expr(&mut self) -> Result<f64, EvalError> {
        let mut value = self.term()?;
        while let Token::Op(op @ ('+' | '-')) = *self.peek() {
            self.advance();
            let rhs = self.term()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<f64, EvalError> {
        let mut value = self.unary()?;
        while let Token::Op(op @ ('*' | '/' | '%')) = *self.peek() {
            let pos = self.advance().1;
            let rhs = self.unary()?;
            if op != '*' && rhs == 0.0 {
                let what = if op == '/' { "division" } else { "modulo" };
                return Err(EvalError {
                    message: format!("{what} by zero"),
                    position: Some(pos),
                });
            }
            value = match op {
                '*' => value * rhs,
                '/' => value / rhs,
                _ => value % rhs,
            };
        }
        Ok(value)
    }

    fn unary(&mut self) -> Result<f64, EvalError> {
        match self.peek() {
            Token::Op('-') => {
                self.advance();
                Ok(-self.unary()?)
            }
            Token::Op('+') => {
                self.advance();
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<f64, EvalError> {
        let base = self.primary()?;
        if *self.peek() == Token::Op('^') {
            let pos = self.advance().1;
            let exponent = self.unary()?;
            let value = base.powf(exponent);
            if value.is_nan() {
                return Err(EvalError {
                    message: format!("{base}^{exponent} is not a real number"),
                    position: Some(pos),
                });
            }
            return Ok(value);
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<f64, EvalError> {
        match self.peek().clone() {
            Token::Number(value) => {
                self.advance();
                Ok(value)
            }
            Token::Open => {
                self.advance();
                let value = self.expr()?;
                if *self.peek() != Token::Close {
                    return Err(self.error("expected `)`"));
                }
                self.advance();
                Ok(value)
            }
            Token::Name(name) => {
                let pos = self.advance().1;
                if *self.peek() == Token::Open {
                    self.advance();
                    let args = self.arguments()?;
                    call(&name, &args, pos)
                } else {
                    constant(&name, pos)
                }
            }
            _ => Err(self.unexpected()),
        }
    }

    fn arguments(&mut self) -> Result<Vec<f64>, EvalError> {
        let mut args = Vec::new();
        if *self.peek() == Token::Close {
            self.advance();
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            match self.peek() {
                Token::Comma => {
                    self.advance();
                }
                Token::Close => {
                    self.advance();
                    return Ok(args);
                }
                _ => return Err(self.error("expected `,` or `)` in argument list")),
            }
        }
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Number(n) => format!("number {n}"),
        Token::Name(name) => format!("name `{name}`"),
        Token::Op(op) => format!("operator `{op}`"),
        Token::Open => "`(`".into(),
        Token::Close => "`)`".into(),
        Token::Comma => "`,`".into(),
        Token::End => "end of expression".into(),
    }
}

fn constant(name: &str, pos: usize) -> Result<f64, EvalError> {
    match name {
        "pi" => Ok(std::f64::consts::PI),
        "e" => Ok(std::f64::consts::E),
        _ => Err(EvalError {
            message: format!("unknown name `{name}` (constants: pi, e; functions: {FUNCTIONS})"),
            position: Some(pos),
        }),
    }
}

fn call(name: &str, args: &[f64], pos: usize) -> Result<f64, EvalError> {
    let err = |message: String| EvalError {
        message,
        position: Some(pos),
    };
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(err(format!(
                "{name}() takes {n} argument{}, got {}",
                if n == 1 { "" } else { "s" },
                args.len()
            )))
        }
    };
    let value = match name {
        "sqrt" | "abs" | "ln" | "log10" | "sin" | "cos" | "tan" | "floor" | "ceil" => {
            arity(1)?;
            let x = args[0];
            match name {
                "sqrt" if x < 0.0 => {
                    return Err(err(format!("sqrt of negative number {x}")));
                }
                "ln" | "log10" if x <= 0.0 => {
                    return Err(err(format!("{name} of non-positive number {x}")));
                }
                "sqrt" => x.sqrt(),
                "abs" => x.abs(),
                "ln" => x.ln(),
                "log10" => x.log10(),
                "sin" => x.sin(),
                "cos" => x.cos(),
                "tan" => x.tan(),
                "floor" => x.floor(),
                _ => x.ceil(),
            }
        }
        "min" | "max" => {
            if args.is_empty() {
                return Err(err(format!("{name}() needs at least one argument")));
            }
            let fold = if name == "min" { f64::min } else { f64::max };
            args.iter().copied().reduce(fold).unwrap_or(f64::NAN)
        }
        "round" => match args {
            [x] => x.round(),
            [x, digits] if digits.fract() == 0.0 && digits.abs() <= 15.0 => {
                let scale = 10f64.powi(*digits as i32);
                (x * scale).round() / scale
            }
            [_, _] => return Err(err("round() digits must be an integer within ±15".into())),
            _ => {
                return Err(err(format!(
                    "round() takes 1 or 2 arguments, got {}",
                    args.len()
                )));
            }
        },
        _ => {
            return Err(err(format!(
                "unknown function `{name}` (functions: {FUNCTIONS})"
            )));
        }
    };
    Ok(value)
}

/// Evaluates `input`.
pub fn evaluate(input: &str) -> Result<f64, EvalError> {
    let tokens = tokenize(input)?;
    let mut parser = Parser { tokens, next: 0 };
    if *parser.peek() == Token::End {
        return Err(EvalError {
            message: "empty expression".into(),
            position: None,
        });
    }
    let value = parser.expr()?;
    if *parser.peek() != Token::End {
        return Err(parser.unexpected());
    }
    if !value.is_finite() {
        return Err(EvalError {
            message: "result is too large to represent".into(),
            position: None,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> f64 {
        evaluate(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    fn err(input: &str) -> String {
        evaluate(input).expect_err(input).to_string()
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(ok("1 + 2 * 3"), 7.0);
        assert_eq!(ok("(1 + 2) * 3"), 9.0);
        assert_eq!(ok("10 - 4 - 3"), 3.0);
        assert_eq!(ok("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(ok("-2 ^ 2"), -4.0);
        assert_eq!(ok("2 ^ -1"), 0.5);
        assert_eq!(ok("7 % 4"), 3.0);
        assert_eq!(ok("--3"), 3.0);
        assert_eq!(ok("1.5e3 + .5"), 1500.5);
    }

    #[test]
    fn functions_and_constants() {
        assert_eq!(ok("sqrt(16) + abs(-2)"), 6.0);
        assert_eq!(ok("max(1, 5, 3) - min(4, 2)"), 3.0);
        assert_eq!(ok("round(2.345, 2)"), 2.35);
        assert_eq!(ok("round(2.5) + floor(1.9) + ceil(1.1)"), 6.0);
        assert_eq!(ok("log10(1000)"), 3.0);
        assert!((ok("ln(e)") - 1.0).abs() < 1e-12);
        assert!((ok("sin(pi / 2)") - 1.0).abs() < 1e-12);
    }

    #[test]
    fn clear_errors() {
        assert_eq!(err("1 / 0"), "division by zero at position 3");
        assert_eq!(err("5 % (2 - 2)"), "modulo by zero at position 3");
        assert!(err("foo + 1").starts_with("unknown name `foo`"));
        assert!(err("bar(1)").starts_with("unknown function `bar`"));
        assert_eq!(err("1 + * 2"), "unexpected operator `*` at position 5");
        assert_eq!(err("(1 + 2"), "expected `)` at position 7");
        assert_eq!(err("1 + 2)"), "unmatched `)` at position 6");
        assert_eq!(err("2 $ 3"), "unexpected character `$` at position 3");
        assert_eq!(err("1 +"), "unexpected end of expression at position 4");
        assert_eq!(err("sqrt(-1)"), "sqrt of negative number -1 at position 1");
        assert_eq!(
            err("sqrt(1, 2)"),
            "sqrt() takes 1 argument, got 2 at position 1"
        );
        assert_eq!(err(""), "empty expression");
        assert_eq!(err("10 ^ 400"), "result is too large to represent");
    }
}

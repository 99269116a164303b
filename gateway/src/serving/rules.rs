//! Custom settings (spec/inference.md §2.14): up to 10 ordered rules, each a SpEL-like
//! expression over the caller and the request's headers that, when it holds, sends the call
//! to one version of the service and adds a header to the request the processor and the
//! engine see. The first rule that holds wins; none: the versions' weights decide.
//!
//! ```text
//! expr       := or
//! or         := and (('||' | 'or') and)*
//! and        := unary (('&&' | 'and') unary)*
//! unary      := ('!' | 'not') unary | '(' expr ')' | comparison
//! comparison := var ('==' | '!=') 'text'
//!             | var 'matches' 'regex'
//!             | var '.hashCode()' ['%' int] ('<' | '<=' | '>' | '>=' | '==' | '!=') int
//! var        := '#' (DOMAIN_NAME | DOMAIN_ID | PROJECT_NAME | PROJECT_ID | USER_NAME
//!                   | USER_ID | HEADER_<name>)
//! ```
//!
//! Strings are single-quoted; `''` inside one is a quote. `matches` is Java's
//! `String.matches` (the whole value), on a subset of regular expressions that Java and
//! this engine (`regex-lite`: linear time, no backtracking bombs) read the same way.
//! `hashCode()` is Java's `String.hashCode`, bit for bit, and `%` keeps the dividend's sign
//! as Java's does.
//!
//! A header the request does not carry is SpEL's `null`: `==` is false, `!=` is true, and
//! `matches` or `hashCode()` on it make the whole rule not hold (SpEL raises an error there);
//! `&&` and `||` stop at the first operand that decides, as Java's do.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Rules one service may have (the seed's limit).
pub const MAX_RULES: usize = 10;
/// The seed's limits on the header a rule adds.
pub const MAX_HEADER_NAME: usize = 128;
pub const MAX_HEADER_VALUE: usize = 256;
/// An expression's length in characters: ten rules of this size are still read in
/// microseconds, and no sensible rule comes near it.
pub const MAX_SETTING_CHARS: usize = 1024;
/// Parentheses and `!` nested deeper than this are refused (the parser recurses).
const MAX_DEPTH: usize = 32;
/// A compiled `matches` pattern's size: `a{1000}{1000}` and the like are refused.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// One rule as a service is deployed with, stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSetting {
    /// The expression.
    pub setting: String,
    /// The version calls go to when it holds.
    pub version: String,
    /// The header added to the request when it holds (with `header_value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_value: Option<String>,
}

/// What an expression is evaluated against. On a single gateway the domain, the project and
/// the user are one: the calling user (for an app's call, the app's owner).
pub struct Facts<'a> {
    pub user_name: &'a str,
    pub user_id: &'a str,
    /// The request's headers, names in lower case.
    pub headers: &'a [(String, String)],
}

/// Why an expression does not parse: where (a character position from 1) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.at, self.message)
    }
}

/// A parsed expression.
#[derive(Debug, Clone)]
pub struct Expr(Node);

#[derive(Debug, Clone)]
enum Node {
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Text {
        var: Var,
        equal: bool,
        text: String,
    },
    Matches {
        var: Var,
        regex: regex_lite::Regex,
    },
    Hash {
        var: Var,
        modulo: Option<i32>,
        op: NumOp,
        value: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    DomainName,
    DomainId,
    ProjectName,
    ProjectId,
    UserName,
    UserId,
    /// A header, by its name in lower case.
    Header(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl NumOp {
    fn holds(self, a: i32, b: i32) -> bool {
        match self {
            NumOp::Lt => a < b,
            NumOp::Le => a <= b,
            NumOp::Gt => a > b,
            NumOp::Ge => a >= b,
            NumOp::Eq => a == b,
            NumOp::Ne => a != b,
        }
    }
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + … + s[n-1]` over UTF-16 code units, in
/// wrapping 32-bit arithmetic.
pub fn java_hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        let chars = text.chars().count();
        if chars == 0 {
            return Err(ParseError {
                at: 1,
                message: "empty; write an expression such as #HEADER_version == '0.0.1'".into(),
            });
        }
        if chars > MAX_SETTING_CHARS {
            return Err(ParseError {
                at: MAX_SETTING_CHARS + 1,
                message: format!("longer than {MAX_SETTING_CHARS} characters"),
            });
        }
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
            end: chars + 1,
        };
        let node = p.or()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(ParseError {
                at: t.at,
                message: format!("unexpected {}; expected && or || or the end", t.tok),
            });
        }
        Ok(Expr(node))
    }

    /// Whether the expression holds for `facts`.
    pub fn holds(&self, facts: &Facts<'_>) -> bool {
        eval(&self.0, facts).unwrap_or(false)
    }
}

/// `None`: SpEL would raise an error (a method or `matches` on an absent header): the rule
/// does not hold, whatever surrounds it.
fn eval(node: &Node, facts: &Facts<'_>) -> Option<bool> {
    Some(match node {
        Node::Or(a, b) => eval(a, facts)? || eval(b, facts)?,
        Node::And(a, b) => eval(a, facts)? && eval(b, facts)?,
        Node::Not(a) => !eval(a, facts)?,
        Node::Text { var, equal, text } => match value(var, facts) {
            Some(v) => (v == text) == *equal,
            // null == 'x' is false, null != 'x' is true.
            None => !*equal,
        },
        Node::Matches { var, regex } => regex.is_match(value(var, facts)?),
        Node::Hash {
            var,
            modulo,
            op,
            value: m,
        } => {
            let h = java_hash_code(value(var, facts)?);
            let h = match modulo {
                Some(n) => h.wrapping_rem(*n),
                None => h,
            };
            op.holds(h, *m)
        }
    })
}

fn value<'a>(var: &Var, facts: &Facts<'a>) -> Option<&'a str> {
    match var {
        Var::DomainName | Var::ProjectName | Var::UserName => Some(facts.user_name),
        Var::DomainId | Var::ProjectId | Var::UserId => Some(facts.user_id),
        Var::Header(name) => facts
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Var(String),
    Text(String),
    Int(i64),
    Ident(String),
    Dot,
    LParen,
    RParen,
    EqEq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    Percent,
    Minus,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Var(v) => write!(f, "#{v}"),
            Tok::Text(t) => write!(f, "'{t}'"),
            Tok::Int(n) => write!(f, "{n}"),
            Tok::Ident(i) => write!(f, "{i:?}"),
            Tok::Dot => f.write_str("'.'"),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::EqEq => f.write_str("=="),
            Tok::Ne => f.write_str("!="),
            Tok::Lt => f.write_str("<"),
            Tok::Le => f.write_str("<="),
            Tok::Gt => f.write_str(">"),
            Tok::Ge => f.write_str(">="),
            Tok::AndAnd => f.write_str("&&"),
            Tok::OrOr => f.write_str("||"),
            Tok::Bang => f.write_str("!"),
            Tok::Percent => f.write_str("%"),
            Tok::Minus => f.write_str("-"),
        }
    }
}

struct Token {
    tok: Tok,
    /// Its first character's position, from 1.
    at: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: String| ParseError {
        at: at + 1,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        let following = chars.get(i + 1).copied();
        let two = |next: char| following == Some(next);
        let (tok, len) = match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '#' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len()
                    && (chars[j].is_ascii_alphanumeric() || chars[j] == '_' || chars[j] == '-')
                {
                    j += 1;
                }
                if j == start {
                    return Err(err(i, "# must be followed by a variable name".into()));
                }
                (Tok::Var(chars[start..j].iter().collect()), j - i)
            }
            '\'' => {
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(err(i, "this string has no closing quote".into())),
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            s.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(&ch) => {
                            s.push(ch);
                            j += 1;
                        }
                    }
                }
                (Tok::Text(s), j + 1 - i)
            }
            '0'..='9' => {
                let mut j = i;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
                let digits: String = chars[i..j].iter().collect();
                let n = digits
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n <= i64::from(i32::MAX) + 1)
                    .ok_or_else(|| err(i, format!("{digits} is out of int range")))?;
                (Tok::Int(n), j - i)
            }
            c if c.is_ascii_alphabetic() => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                let tok = match word.to_ascii_lowercase().as_str() {
                    "and" => Tok::AndAnd,
                    "or" => Tok::OrOr,
                    "not" => Tok::Bang,
                    _ => Tok::Ident(word),
                };
                (tok, j - i)
            }
            '=' if two('=') => (Tok::EqEq, 2),
            '!' if two('=') => (Tok::Ne, 2),
            '<' if two('=') => (Tok::Le, 2),
            '>' if two('=') => (Tok::Ge, 2),
            '&' if two('&') => (Tok::AndAnd, 2),
            '|' if two('|') => (Tok::OrOr, 2),
            '!' => (Tok::Bang, 1),
            '<' => (Tok::Lt, 1),
            '>' => (Tok::Gt, 1),
            '%' => (Tok::Percent, 1),
            '-' => (Tok::Minus, 1),
            '.' => (Tok::Dot, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '=' => return Err(err(i, "= is not an operator; compare with ==".into())),
            '"' => {
                return Err(err(
                    i,
                    "strings are in single quotes ('text'), as SpEL's".into(),
                ));
            }
            other => return Err(err(i, format!("unexpected character {other:?}"))),
        };
        out.push(Token { tok, at });
        i += len;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    /// The position just past the text, for "unexpected end".
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.at)
    }

    fn fail<T>(&self, expected: &str) -> Result<T, ParseError> {
        let message = match self.tokens.get(self.pos) {
            Some(t) => format!("unexpected {}; expected {expected}", t.tok),
            None => format!("unexpected end; expected {expected}"),
        };
        Err(ParseError {
            at: self.at(),
            message,
        })
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Node, ParseError> {
        let mut left = self.and()?;
        while self.eat(&Tok::OrOr) {
            let right = self.and()?;
            left = Node::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, ParseError> {
        let mut left = self.unary()?;
        while self.eat(&Tok::AndAnd) {
            let right = self.unary()?;
            left = Node::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                at: self.at(),
                message: format!("nested deeper than {MAX_DEPTH} levels"),
            });
        }
        let node = if self.eat(&Tok::Bang) {
            Node::Not(Box::new(self.unary()?))
        } else if self.eat(&Tok::LParen) {
            let inner = self.or()?;
            if !self.eat(&Tok::RParen) {
                return self.fail("')'");
            }
            inner
        } else {
            self.comparison()?
        };
        self.depth -= 1;
        Ok(node)
    }

    fn comparison(&mut self) -> Result<Node, ParseError> {
        let var_at = self.at();
        let Some(Tok::Var(name)) = self.peek().cloned() else {
            return self.fail("a variable (#USER_NAME, #HEADER_<name>, …), '(' or '!'");
        };
        self.pos += 1;
        let var = variable(&name).map_err(|message| ParseError {
            at: var_at,
            message,
        })?;
        match self.peek().cloned() {
            Some(Tok::EqEq) | Some(Tok::Ne) => {
                let equal = self.peek() == Some(&Tok::EqEq);
                self.pos += 1;
                let Some(Tok::Text(text)) = self.peek().cloned() else {
                    return self.fail("a string in single quotes");
                };
                self.pos += 1;
                Ok(Node::Text { var, equal, text })
            }
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("matches") => {
                self.pos += 1;
                let at = self.at();
                let Some(Tok::Text(pattern)) = self.peek().cloned() else {
                    return self.fail("a regular expression in single quotes");
                };
                self.pos += 1;
                let regex = java_regex(&pattern).map_err(|message| ParseError {
                    at,
                    message: format!("the regular expression: {message}"),
                })?;
                Ok(Node::Matches { var, regex })
            }
            Some(Tok::Dot) => {
                self.pos += 1;
                let ok = matches!(self.peek(), Some(Tok::Ident(w)) if w == "hashCode");
                if !ok {
                    return self.fail("hashCode() (the one method there is)");
                }
                self.pos += 1;
                if !(self.eat(&Tok::LParen) && self.eat(&Tok::RParen)) {
                    return self.fail("() after hashCode");
                }
                let modulo = if self.eat(&Tok::Percent) {
                    let at = self.at();
                    let n = self.int()?;
                    if n == 0 {
                        return Err(ParseError {
                            at,
                            message: "% 0 divides by zero".into(),
                        });
                    }
                    Some(n)
                } else {
                    None
                };
                let op = match self.peek() {
                    Some(Tok::Lt) => NumOp::Lt,
                    Some(Tok::Le) => NumOp::Le,
                    Some(Tok::Gt) => NumOp::Gt,
                    Some(Tok::Ge) => NumOp::Ge,
                    Some(Tok::EqEq) => NumOp::Eq,
                    Some(Tok::Ne) => NumOp::Ne,
                    _ => return self.fail("%, <, <=, >, >=, == or != after hashCode()"),
                };
                self.pos += 1;
                let value = self.int()?;
                Ok(Node::Hash {
                    var,
                    modulo,
                    op,
                    value,
                })
            }
            _ => self.fail("==, !=, matches or .hashCode()"),
        }
    }

    /// An int literal, maybe negative.
    fn int(&mut self) -> Result<i32, ParseError> {
        let at = self.at();
        let negative = self.eat(&Tok::Minus);
        let Some(Tok::Int(n)) = self.peek().cloned() else {
            return self.fail("an integer");
        };
        self.pos += 1;
        let n = if negative { -n } else { n };
        i32::try_from(n).map_err(|_| ParseError {
            at,
            message: format!("{n} is out of int range"),
        })
    }
}

fn variable(name: &str) -> Result<Var, String> {
    Ok(match name {
        "DOMAIN_NAME" => Var::DomainName,
        "DOMAIN_ID" => Var::DomainId,
        "PROJECT_NAME" => Var::ProjectName,
        "PROJECT_ID" => Var::ProjectId,
        "USER_NAME" => Var::UserName,
        "USER_ID" => Var::UserId,
        _ => match name.strip_prefix("HEADER_") {
            Some(h) if !h.is_empty() && h.bytes().all(is_tchar) => {
                Var::Header(h.to_ascii_lowercase())
            }
            _ => {
                return Err(format!(
                    "unknown variable #{name}; use DOMAIN_NAME, DOMAIN_ID, PROJECT_NAME, PROJECT_ID, USER_NAME, USER_ID or HEADER_<header name>"
                ));
            }
        },
    })
}

/// `matches`' pattern: Java's whole-string match, compiled for `regex-lite` (which reads
/// `\d`, `\w`, `\s`, `\b` and `(?i)` as ASCII, as Java does by default), after checking
/// that it stays within what both read the same way.
fn java_regex(pattern: &str) -> Result<regex_lite::Regex, String> {
    check_java_subset(pattern)?;
    regex_lite::RegexBuilder::new(&format!(r"\A(?:{pattern})\z"))
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(MAX_DEPTH as u32)
        .build()
        .map_err(|e| {
            let e = e.to_string();
            if e.contains("size limit") || e.contains("exceeds") {
                format!("too large once compiled (limit {REGEX_SIZE_LIMIT} bytes)")
            } else {
                e.lines().last().unwrap_or(&e).trim().to_string()
            }
        })
}

/// Refuses what Java and `regex-lite` parse differently (or only one of them parses):
/// escapes beyond the common ones, nested classes and class set operations, inline flags
/// other than `i`, `m`, `s`, look-around, possessive and nested quantifiers, `{` that is not
/// a repetition. The error says where (a character position in the pattern, from 1).
fn check_java_subset(pattern: &str) -> Result<(), String> {
    let c: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    // After a quantifier: another one is possessive (Java) or nested (refused).
    let mut after_quantifier = false;
    let refuse = |at: usize, what: &str| Err(format!("at character {}: {what}", at + 1));
    while i < c.len() {
        let ch = c[i];
        let quantifier_before = after_quantifier;
        after_quantifier = false;
        match ch {
            '\\' => {
                let Some(&e) = c.get(i + 1) else {
                    return refuse(i, "a trailing backslash");
                };
                let common =
                    "\\.*+?()[]{}|^$-/tnrfdDwWsS".contains(e) || (!in_class && "bBAz".contains(e));
                if e == 'x' {
                    // \xhh or \x{h…}: both read them alike.
                } else if !common {
                    return refuse(
                        i,
                        &format!(
                            "\\{e} is not in the supported subset (escapes of metacharacters, \\t \\n \\r \\f \\xhh, \\d \\D \\w \\W \\s \\S, and outside classes \\b \\B \\A \\z)"
                        ),
                    );
                }
                i += 2;
                continue;
            }
            '[' if in_class => {
                return refuse(
                    i,
                    "a [ inside a class (nested classes and [:name:] differ between Java and this engine); write \\[",
                );
            }
            '[' => {
                in_class = true;
                i += 1;
                if c.get(i) == Some(&'^') {
                    i += 1;
                }
                if c.get(i) == Some(&']') {
                    return refuse(i, "a ] first in a class; write \\]");
                }
                continue;
            }
            ']' if in_class => in_class = false,
            '&' | '-' | '~' if in_class && c.get(i + 1) == Some(&ch) => {
                return refuse(
                    i,
                    &format!("{ch}{ch} in a class (a set operation in one engine, not the other)"),
                );
            }
            _ if in_class => {}
            '(' if c.get(i + 1) == Some(&'?') => {
                let mut j = i + 2;
                match c.get(j) {
                    Some(':') => {}
                    Some('<') if c.get(j + 1).is_some_and(|x| x.is_ascii_alphabetic()) => {
                        j += 1;
                        while c.get(j).is_some_and(|x| x.is_ascii_alphanumeric()) {
                            j += 1;
                        }
                        if c.get(j) != Some(&'>') {
                            return refuse(i, "a group name is letters and digits, (?<name>…)");
                        }
                    }
                    _ => {
                        while c.get(j).is_some_and(|x| matches!(x, 'i' | 'm' | 's' | '-')) {
                            j += 1;
                        }
                        if j == i + 2 || !matches!(c.get(j), Some(':') | Some(')')) {
                            return refuse(
                                i,
                                "only (?:…), (?<name>…) and the flags i, m, s are supported (no look-around)",
                            );
                        }
                    }
                }
            }
            '*' | '+' | '?' if quantifier_before => {
                if ch == '?' {
                    // Lazy: fine in both; nothing may follow it.
                    i += 1;
                    if matches!(c.get(i), Some('*' | '+' | '?' | '{')) {
                        return refuse(i, "a quantifier after a lazy one");
                    }
                    continue;
                }
                return refuse(
                    i,
                    "a quantifier right after another (possessive in Java, refused here)",
                );
            }
            '*' | '+' | '?' => after_quantifier = true,
            '{' => {
                if quantifier_before {
                    return refuse(i, "a quantifier right after another");
                }
                let mut j = i + 1;
                let digits = |j: &mut usize| {
                    let s = *j;
                    while c.get(*j).is_some_and(|x| x.is_ascii_digit()) {
                        *j += 1;
                    }
                    *j > s
                };
                let ok = digits(&mut j) && {
                    if c.get(j) == Some(&',') {
                        j += 1;
                        digits(&mut j);
                    }
                    c.get(j) == Some(&'}')
                };
                if !ok {
                    return refuse(
                        i,
                        "{ starts a repetition {n}, {n,} or {n,m}; write \\{ for a brace",
                    );
                }
                i = j + 1;
                after_quantifier = true;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if in_class {
        return refuse(c.len(), "a class [ without its ]");
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A service's rules, compiled: checked against the versions it runs (`versions`, in the
/// service's order). The error names the rule (`custom_settings[i]`) and what is wrong.
#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<Rule>);

#[derive(Debug, Clone)]
struct Rule {
    expr: Expr,
    version: usize,
    header: Option<(String, String)>,
}

/// What the rules decided for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<'a> {
    /// The index of the version (among the service's).
    pub version: usize,
    /// The header to add, name in lower case.
    pub header: Option<(&'a str, &'a str)>,
}

impl Rules {
    pub fn compile(settings: &[CustomSetting], versions: &[&str]) -> Result<Rules, String> {
        if settings.len() > MAX_RULES {
            return Err(format!(
                "custom_settings: {} rules; at most {MAX_RULES}",
                settings.len()
            ));
        }
        let mut out = Vec::with_capacity(settings.len());
        for (i, s) in settings.iter().enumerate() {
            let field = format!("custom_settings[{i}]");
            let expr = Expr::parse(&s.setting).map_err(|e| format!("{field}.setting: {e}"))?;
            let at: Vec<usize> = versions
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == s.version)
                .map(|(n, _)| n)
                .collect();
            let version = match at.as_slice() {
                [one] => *one,
                [] => {
                    return Err(format!(
                        "{field}.version: {:?} is not one of the service's versions ({})",
                        s.version,
                        versions.join(", ")
                    ));
                }
                _ => {
                    return Err(format!(
                        "{field}.version: the service runs {:?} of several models; a rule cannot tell them apart",
                        s.version
                    ));
                }
            };
            let header = match (&s.header_name, &s.header_value) {
                (None, None) => None,
                (Some(n), Some(v)) => {
                    check_header(&field, n, v)?;
                    Some((n.to_ascii_lowercase(), v.clone()))
                }
                _ => {
                    return Err(format!("{field}: header_name and header_value go together"));
                }
            };
            out.push(Rule {
                expr,
                version,
                header,
            });
        }
        Ok(Rules(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rule that holds, or none (the weights decide).
    pub fn route(&self, facts: &Facts<'_>) -> Option<Routed<'_>> {
        self.0.iter().find(|r| r.expr.holds(facts)).map(|r| Routed {
            version: r.version,
            header: r.header.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
        })
    }
}

fn check_header(field: &str, name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.bytes().all(is_tchar) {
        return Err(format!(
            "{field}.header_name: {name:?}; 1-{MAX_HEADER_NAME} characters of an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
        ));
    }
    // Hop-by-hop ones, the body's framing and type, and credentials (never shown to a
    // processor).
    let lower = name.to_ascii_lowercase();
    let lower = lower.as_str();
    if super::call::HOP_BY_HOP.contains(&lower)
        || super::call::CREDENTIALS.contains(&lower)
        || lower == "content-type"
    {
        return Err(format!(
            "{field}.header_name: {name} may not be set by a rule (hop-by-hop, body framing or credentials)"
        ));
    }
    if value.chars().count() > MAX_HEADER_VALUE {
        return Err(format!(
            "{field}.header_value: at most {MAX_HEADER_VALUE} characters"
        ));
    }
    // Visible ASCII, spaces and tabs inside: no CR, LF or NUL (header injection).
    let ok = value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t']);
    if !ok {
        return Err(format!(
            "{field}.header_value: visible ASCII characters and inner spaces only (no CR, LF or control characters)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(headers: &'a [(String, String)]) -> Facts<'a> {
        Facts {
            user_name: "zhangsan",
            user_id: "u-1",
            headers,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn java_hash_codes_are_bit_exact() {
        // Values from Java's "...".hashCode().
        for (s, want) in [
            ("", 0),
            ("a", 97),
            ("hello", 99162322),
            ("uid-12345", 1_478_843_510),
            ("user-42", -147_182_656),
            ("0.0.1", 45_746_997),
            // Overflows many times over.
            (
                "the quick brown fox jumps over the lazy dog",
                -2_082_818_701,
            ),
            // UTF-16 code units: é is one, 😀 is a surrogate pair.
            ("é", 233),
            ("😀", 1_772_899),
        ] {
            assert_eq!(java_hash_code(s), want, "{s:?}");
        }
    }

    #[test]
    fn expressions_hold_as_the_seed_says() {
        let none = h(&[]);
        let v1 = h(&[("version", "0.0.1"), ("testheader", "mock-7")]);
        let uid = h(&[("uid", "user-42")]);
        // user-42: hashCode -147182656, % 100 = -56 (Java keeps the sign), % -7 = -5.
        type Case<'a> = (&'a str, &'a [(String, String)], bool);
        let cases: &[Case] = &[
            ("#DOMAIN_NAME == 'zhangsan'", &none, true),
            ("#DOMAIN_NAME matches 'zh.*'", &none, true),
            ("#DOMAIN_NAME matches 'op.*'", &none, false),
            ("#USER_ID == 'u-1'", &none, true),
            ("#PROJECT_NAME != 'zhangsan'", &none, false),
            ("#HEADER_version == '0.0.1'", &v1, true),
            ("#HEADER_VERSION == '0.0.1'", &v1, true),
            ("#HEADER_version == '0.0.2'", &v1, false),
            ("#HEADER_testheader matches 'mock.*'", &v1, true),
            // matches is a whole-string match.
            ("#HEADER_testheader matches 'mock'", &v1, false),
            ("#HEADER_uid.hashCode() % 100 < 10", &uid, true),
            ("#HEADER_uid.hashCode() % 100 == -56", &uid, true),
            ("#HEADER_uid.hashCode() % 100 >= 0", &uid, false),
            ("#HEADER_uid.hashCode() < 0", &uid, true),
            ("#HEADER_uid.hashCode() % -7 == -5", &uid, true),
            (
                "#HEADER_uid.hashCode() % 100 < 10",
                &h(&[("uid", "uid-12345")]),
                false,
            ),
            (
                "#HEADER_uid.hashCode() % 100 <= 10",
                &h(&[("uid", "uid-12345")]),
                true,
            ),
            // Absent headers: null.
            ("#HEADER_version == '0.0.1'", &none, false),
            ("#HEADER_version != '0.0.1'", &none, true),
            ("#HEADER_version matches '.*'", &none, false),
            ("#HEADER_uid.hashCode() % 100 < 10", &none, false),
            // ... and the error ends the rule, even under ! and ||.
            ("!(#HEADER_uid.hashCode() % 100 < 10)", &none, false),
            (
                "#HEADER_x matches 'a' || #USER_NAME == 'zhangsan'",
                &none,
                false,
            ),
            // Short-circuits as Java's.
            (
                "#USER_NAME == 'zhangsan' || #HEADER_x matches 'a'",
                &none,
                true,
            ),
            ("#USER_NAME == 'x' && #HEADER_x matches 'a'", &none, false),
            // An empty header is a string.
            ("#HEADER_e == ''", &h(&[("e", "")]), true),
            // Combinations and precedence: && before ||.
            (
                "#HEADER_version == '0.0.2' || #HEADER_version == '0.0.1' && #USER_NAME == 'zhangsan'",
                &v1,
                true,
            ),
            (
                "(#HEADER_version == '0.0.2' || #HEADER_version == '0.0.1') && !(#USER_NAME == 'zhangsan')",
                &v1,
                false,
            ),
            (
                "not #HEADER_version == '0.0.2' and #USER_ID == 'u-1'",
                &v1,
                true,
            ),
            ("#USER_NAME == 'it''s'", &none, false),
            // Java's regex subset, ASCII classes.
            ("#HEADER_version matches '[0-9]\\.[0-9]\\.\\d'", &v1, true),
            ("#HEADER_version matches '0\\.0\\.(1|2)'", &v1, true),
            ("#HEADER_version matches '0.{3}1'", &v1, true),
            ("#HEADER_testheader matches '(?i)MOCK-\\d+'", &v1, true),
            ("#HEADER_testheader matches '^mock-7$'", &v1, true),
            ("#HEADER_testheader matches '[^x]+'", &v1, true),
        ];
        for (text, headers, want) in cases {
            let e = Expr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(e.holds(&facts(headers)), *want, "{text}");
        }
    }

    #[test]
    fn errors_say_where_and_what() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty"),
            ("#HEADER_version = '1'", 17, "compare with =="),
            ("#HEADER_version == 0.0.1", 20, "a string in single quotes"),
            ("#HEADER_version == '0.0.1", 20, "no closing quote"),
            ("#NOPE == 'x'", 1, "unknown variable #NOPE"),
            ("#HEADER_ == 'x'", 1, "unknown variable"),
            ("#USER_NAME", 11, "unexpected end; expected ==, !=, matches"),
            ("#USER_NAME == 'a' &&", 21, "unexpected end"),
            ("#USER_NAME == 'a' 'b'", 19, "expected && or ||"),
            ("(#USER_NAME == 'a'", 19, "expected ')'"),
            ("#USER_NAME.length() > 1", 12, "hashCode()"),
            ("#HEADER_u.hashCode() % 0 < 1", 24, "divides by zero"),
            (
                "#HEADER_u.hashCode() % 100 < 99999999999",
                30,
                "out of int range",
            ),
            ("#HEADER_u.hashCode() % 100", 27, "after hashCode()"),
            ("#USER_NAME == \"a\"", 15, "single quotes"),
            ("#USER_NAME == 'a' ; rm", 19, "unexpected character ';'"),
            (
                "#USER_NAME matches 'a(?=b)'",
                20,
                "at character 2: only (?:…)",
            ),
            (
                "#USER_NAME matches 'a\\p{L}'",
                20,
                "\\p is not in the supported subset",
            ),
            ("#USER_NAME matches '[[:alpha:]]'", 20, "a [ inside a class"),
            ("#USER_NAME matches '[a-z&&[^b]]'", 20, "&& in a class"),
            ("#USER_NAME matches 'a*+'", 20, "possessive"),
            ("#USER_NAME matches 'a{,3}'", 20, "{ starts a repetition"),
            ("#USER_NAME matches '(a'", 20, "the regular expression"),
            (
                "#USER_NAME matches '\\1'",
                20,
                "\\1 is not in the supported subset",
            ),
        ];
        for (text, at, says) in cases {
            let e = Expr::parse(text).expect_err(text);
            assert_eq!(e.at, *at, "{text}: {e}");
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        let long = format!("#USER_NAME == '{}'", "a".repeat(MAX_SETTING_CHARS));
        assert!(
            Expr::parse(&long)
                .unwrap_err()
                .message
                .contains("longer than")
        );
        let deep = format!("{}#USER_NAME == 'a'{}", "(".repeat(40), ")".repeat(40));
        assert!(
            Expr::parse(&deep)
                .unwrap_err()
                .message
                .contains("nested deeper")
        );
        let bangs = format!("{}#USER_NAME == 'a'", "!".repeat(40));
        assert!(
            Expr::parse(&bangs)
                .unwrap_err()
                .message
                .contains("nested deeper")
        );
    }

    #[test]
    fn regex_bombs_are_refused_or_linear() {
        // Too large once compiled.
        let e = Expr::parse("#USER_NAME matches '(a{100}){100}'").unwrap_err();
        assert!(e.message.contains("too large"), "{e}");
        // The classic catastrophic pattern runs in linear time here.
        let e = Expr::parse("#HEADER_x matches '(a+)+b'").unwrap();
        let x = h(&[("x", &"a".repeat(5000))]);
        assert!(!e.holds(&facts(&x)));
    }

    fn setting(expr: &str, version: &str) -> CustomSetting {
        CustomSetting {
            setting: expr.into(),
            version: version.into(),
            header_name: None,
            header_value: None,
        }
    }

    #[test]
    fn rules_route_first_match_and_check_their_fields() {
        let mut a = setting("#HEADER_version == '0.0.1'", "0.0.1");
        a.header_name = Some("X-Cfg".into());
        a.header_value = Some("A".into());
        let b = setting("#USER_NAME == 'zhangsan'", "0.0.2");
        let rules = Rules::compile(&[a.clone(), b.clone()], &["0.0.1", "0.0.2"]).unwrap();
        let v1 = h(&[("version", "0.0.1")]);
        assert_eq!(
            rules.route(&facts(&v1)),
            Some(Routed {
                version: 0,
                header: Some(("x-cfg", "A"))
            })
        );
        assert_eq!(
            rules.route(&facts(&[])),
            Some(Routed {
                version: 1,
                header: None
            })
        );
        let other = Facts {
            user_name: "bob",
            user_id: "u-2",
            headers: &[],
        };
        assert_eq!(rules.route(&other), None);

        // The field errors.
        let eleven = vec![b.clone(); 11];
        let e = Rules::compile(&eleven, &["0.0.2"]).unwrap_err();
        assert!(e.contains("at most 10"), "{e}");
        let e = Rules::compile(&[setting("#USER_NAME == 'a'", "9.9.9")], &["0.0.1"]).unwrap_err();
        assert!(e.starts_with("custom_settings[0].version"), "{e}");
        let e = Rules::compile(
            &[b.clone(), setting("#USER_NAME = 'a'", "0.0.2")],
            &["0.0.2"],
        )
        .unwrap_err();
        assert!(
            e.starts_with("custom_settings[1].setting: at character 12"),
            "{e}"
        );
        let e = Rules::compile(std::slice::from_ref(&b), &["0.0.2", "0.0.2"]).unwrap_err();
        assert!(e.contains("several models"), "{e}");
        for (name, value, says) in [
            ("X-Cfg", "A\r\nX-Evil: 1", "no CR, LF"),
            ("X-Cfg", "A\n", "no CR, LF"),
            ("X-Cfg", &"v".repeat(257), "at most 256"),
            ("X Cfg", "A", "header_name"),
            ("X-Cfg:", "A", "header_name"),
            (&"h".repeat(129), "A", "header_name"),
            ("Authorization", "Bearer x", "may not be set"),
            ("apikey", "k", "may not be set"),
            ("Transfer-Encoding", "chunked", "may not be set"),
        ] {
            let mut r = b.clone();
            r.header_name = Some(name.into());
            r.header_value = Some(value.into());
            let e = Rules::compile(&[r], &["0.0.2"]).unwrap_err();
            assert!(e.contains(says), "{name:?}={value:?}: {e}");
        }
        let mut half = b;
        half.header_name = Some("X-Cfg".into());
        let e = Rules::compile(&[half], &["0.0.2"]).unwrap_err();
        assert!(e.contains("go together"), "{e}");
    }
}

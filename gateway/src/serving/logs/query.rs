//! The log search language of `GET /v1/services/{service}/logs?q=` (spec/inference.md
//! §2.17, the seed's log search rules).
//!
//! ```text
//! q      = group { ("||" | "OR") group }        OR binds looser than AND
//! group  = term { ["&&" | "AND"] term }         terms side by side are ANDed
//! term   = word | '"' word { " " word } '"'     a phrase: its words one after another
//! word   = characters but the delimiters; "?" is any one character, "*" any run
//! ```
//!
//! A line's text is cut into words at the seed's delimiters `, " ; = ( ) | [ ] { } @ & < >
//! / : \n \t \r` and spaces (the seed's list lost its `|` to the PDF's extraction; spec §0
//! says so). A word of the query matches a whole word of the line: `error`, `er?or` and
//! `er*r` match `error`; `rro*` matches `rrors` but not `error` (a pattern is anchored at
//! both ends of the word, like the exact keyword it generalises; `*rro*` finds `error`).
//! A word ends only at a delimiter, so `error.` is another word than `error` (`error*`
//! finds both). Matching ignores case (Unicode lower case on both sides); the operators
//! `AND` and `OR` are upper case, `and` and `or` are words.
//!
//! A word of the query that holds a delimiter is refused (400) with the character and the
//! word: the seed says not to enter one, and it could never match a word of a line. So is a
//! query over [`MAX_QUERY_BYTES`] or with more than [`MAX_WORDS`] words, and a word over
//! [`MAX_WORD_CHARS`] characters: with the [`Budget`] the search's work is bounded whatever
//! the query and the lines are.

/// The seed's delimiters, with the `|` its extraction lost, and the space.
pub const DELIMITERS: &[char] = &[
    ',', '"', ';', '=', '(', ')', '|', '[', ']', '{', '}', '@', '&', '<', '>', '/', ':', '\n',
    '\t', '\r', ' ',
];

/// The longest query: a search box's worth (the console's field, a CLI argument).
pub const MAX_QUERY_BYTES: usize = 512;
/// The most words (a phrase's words each count): every line is matched against each.
pub const MAX_WORDS: usize = 16;
/// The longest word: a pattern's length multiplies the work of matching it.
pub const MAX_WORD_CHARS: usize = 64;

/// One character of a pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pat {
    Char(char),
    /// `?`
    One,
    /// `*`
    Any,
}

/// One word of a query, lower case.
#[derive(Debug, Clone, PartialEq)]
struct Pattern(Vec<Pat>);

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Word(Pattern),
    /// Words that follow each other in the line.
    Phrase(Vec<Pattern>),
}

/// A parsed query: lines that match every term of at least one group. No group: every
/// line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    groups: Vec<Vec<Term>>,
}

/// How much matching one search may do: one unit per character compared. When it is
/// spent, the search stops and says its answer may be incomplete.
#[derive(Debug)]
pub struct Budget(u64);

impl Budget {
    /// About a second of matching on a slow core: two full log files (16 MiB) against a
    /// few simple words fit many times over; only a pathological query on long lines
    /// reaches it.
    pub const SEARCH: u64 = 400_000_000;

    pub fn new(units: u64) -> Budget {
        Budget(units)
    }

    pub fn spent(&self) -> bool {
        self.0 == 0
    }

    fn spend(&mut self, units: u64) -> bool {
        self.0 = self.0.saturating_sub(units);
        self.0 > 0
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Phrase(Vec<String>),
    And,
    Or,
}

fn delimiters_text() -> &'static str {
    r#", " ; = ( ) | [ ] { } @ & < > / : \n \t \r and spaces"#
}

fn check_word(word: &str) -> Result<(), String> {
    if let Some(c) = word.chars().find(|c| DELIMITERS.contains(c)) {
        return Err(format!(
            "q: the word {word:?} contains {c:?}, a delimiter; search for the words on either side of it (delimiters: {})",
            delimiters_text()
        ));
    }
    if word.chars().count() > MAX_WORD_CHARS {
        return Err(format!(
            "q: the word {:?}… is longer than {MAX_WORD_CHARS} characters",
            word.chars().take(16).collect::<String>()
        ));
    }
    Ok(())
}

fn tokens(q: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut rest = q;
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\n', '\r']);
        if rest.is_empty() {
            return Ok(out);
        }
        if let Some(r) = rest.strip_prefix("&&") {
            out.push(Token::And);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("||") {
            out.push(Token::Or);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('"') {
            let Some(end) = r.find('"') else {
                return Err("q: a phrase opened with \" is not closed".into());
            };
            let words: Vec<String> = r[..end]
                .split([' ', '\t', '\n', '\r'])
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect();
            if words.is_empty() {
                return Err("q: an empty phrase (\"\"); put words between the quotes".into());
            }
            for w in &words {
                check_word(w)?;
            }
            out.push(Token::Phrase(words));
            rest = &r[end + 1..];
        } else {
            // A word runs to a space, a quote or an operator.
            let end = [
                rest.find([' ', '\t', '\n', '\r', '"']),
                rest.find("&&"),
                rest.find("||"),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
            let word = &rest[..end];
            out.push(match word {
                "AND" => Token::And,
                "OR" => Token::Or,
                _ => {
                    check_word(word)?;
                    Token::Word(word.to_string())
                }
            });
            rest = &rest[end..];
        }
    }
}

fn pattern(word: &str) -> Pattern {
    let mut out: Vec<Pat> = Vec::with_capacity(word.len());
    for c in word.chars() {
        match c {
            '?' => out.push(Pat::One),
            // `**` is `*`.
            '*' if out.last() == Some(&Pat::Any) => {}
            '*' => out.push(Pat::Any),
            c => out.extend(c.to_lowercase().map(Pat::Char)),
        }
    }
    Pattern(out)
}

impl Query {
    /// Parses `q` (empty or blank: every line).
    pub fn parse(q: &str) -> Result<Query, String> {
        if q.len() > MAX_QUERY_BYTES {
            return Err(format!(
                "q is {} bytes long; at most {MAX_QUERY_BYTES}",
                q.len()
            ));
        }
        let mut groups: Vec<Vec<Term>> = Vec::new();
        let mut group: Vec<Term> = Vec::new();
        // The operator just read, if any: a term must follow it.
        let mut pending: Option<&str> = None;
        let mut words = 0usize;
        for t in tokens(q)? {
            match t {
                Token::And | Token::Or => {
                    let name = if t == Token::And {
                        "AND (&&)"
                    } else {
                        "OR (||)"
                    };
                    if group.is_empty() || pending.is_some() {
                        return Err(format!("q: {name} needs a word or phrase on each side"));
                    }
                    if t == Token::Or {
                        groups.push(std::mem::take(&mut group));
                    }
                    pending = Some(name);
                }
                Token::Word(w) => {
                    words += 1;
                    group.push(Term::Word(pattern(&w)));
                    pending = None;
                }
                Token::Phrase(ws) => {
                    words += ws.len();
                    group.push(Term::Phrase(ws.iter().map(|w| pattern(w)).collect()));
                    pending = None;
                }
            }
            if words > MAX_WORDS {
                return Err(format!("q has more than {MAX_WORDS} words"));
            }
        }
        if let Some(name) = pending {
            return Err(format!("q: {name} needs a word or phrase on each side"));
        }
        if !group.is_empty() {
            groups.push(group);
        }
        Ok(Query { groups })
    }

    /// Whether every line matches.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Whether `text` matches; false as well once `budget` is spent.
    pub fn matches(&self, text: &str, budget: &mut Budget) -> bool {
        if self.groups.is_empty() {
            return true;
        }
        if !budget.spend(text.len() as u64 + 1) {
            return false;
        }
        let words = words_of(text);
        self.groups.iter().any(|g| {
            g.iter().all(|t| match t {
                Term::Word(p) => words.iter().any(|w| glob(&p.0, w, budget)),
                Term::Phrase(ps) => words
                    .windows(ps.len())
                    .any(|ws| ps.iter().zip(ws).all(|(p, w)| glob(&p.0, w, budget))),
            })
        })
    }
}

/// `text`'s words, lower case.
fn words_of(text: &str) -> Vec<Vec<char>> {
    text.split(DELIMITERS)
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().flat_map(char::to_lowercase).collect())
        .collect()
}

/// Whether the pattern matches the whole word: the greedy walk that goes back to the last
/// `*` (at most pattern × word steps, each paid from `budget`).
fn glob(p: &[Pat], w: &[char], budget: &mut Budget) -> bool {
    let fixed = p.iter().filter(|c| **c != Pat::Any).count();
    let starred = fixed < p.len();
    if fixed > w.len() || (!starred && fixed != w.len()) {
        return false;
    }
    let (mut pi, mut wi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while wi < w.len() {
        if !budget.spend(1) {
            return false;
        }
        match p.get(pi) {
            Some(Pat::Any) => {
                star = Some((pi, wi));
                pi += 1;
            }
            Some(Pat::One) => {
                pi += 1;
                wi += 1;
            }
            Some(Pat::Char(c)) if *c == w[wi] => {
                pi += 1;
                wi += 1;
            }
            _ => match star {
                Some((sp, sw)) => {
                    pi = sp + 1;
                    wi = sw + 1;
                    star = Some((sp, sw + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == Pat::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(q: &str, text: &str) -> bool {
        let q = Query::parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        q.matches(text, &mut Budget::new(Budget::SEARCH))
    }

    #[test]
    fn words_match_whole_words_of_the_line_the_seeds_way() {
        let line = "[error] Start to refresh the model: failed (code=7)";
        for (q, want) in [
            // The seed's fuzzy examples.
            ("error", true),
            ("er?or", true),
            ("er*r", true),
            ("rro*", false),
            ("*rro*", true),
            ("e*", true),
            ("erro", false),
            ("errors", false),
            ("er??r", true),
            ("er?r", false),
            ("*", true),
            // Case does not matter.
            ("ERROR", true),
            ("Refresh", true),
            // Words come from the delimiters: "model", "code", "7".
            ("model", true),
            ("code", true),
            ("7", true),
            // Spaces AND, && and AND too.
            ("error failed", true),
            ("error missing", false),
            ("error&&failed", true),
            ("error && missing", false),
            ("error AND failed", true),
            // OR.
            ("missing || failed", true),
            ("missing OR absent", false),
            ("missing||absent||code", true),
            // AND binds tighter: (missing AND error) OR refresh.
            ("missing error OR refresh", true),
            ("missing error OR absent", false),
            // Lower-case and/or are words.
            ("error and failed", false),
            // Phrases: words one after another.
            ("\"Start to refresh\"", true),
            ("\"start   TO refresh\"", true),
            ("\"to start\"", false),
            ("\"refresh the m*\"", true),
            ("\"Start refresh\"", false),
            // Empty: every line.
            ("", true),
            ("   ", true),
        ] {
            assert_eq!(hit(q, line), want, "{q:?} on {line:?}");
        }
        // A word ends only at a delimiter.
        assert!(!hit("error", "an error."));
        assert!(hit("error*", "an error."));
        // Case folding both ways, beyond ASCII.
        assert!(hit("ÉCHEC", "un échec"));
    }

    #[test]
    fn delimiters_and_malformed_queries_are_refused_naming_the_culprit() {
        for (q, says) in [
            ("a;b", "\"a;b\" contains ';'"),
            (";", "\";\" contains ';'"),
            ("error a=b", "\"a=b\" contains '='"),
            ("x/y", "'/'"),
            ("a&b", "'&'"),
            ("a|b", "'|'"),
            ("(error)", "'('"),
            ("host:port", "':'"),
            ("\"a; b\"", "\"a;\" contains ';'"),
            ("\"open", "not closed"),
            ("\"\"", "empty phrase"),
            ("&& error", "AND (&&) needs"),
            ("error ||", "OR (||) needs"),
            ("a AND OR b", "needs a word"),
            ("OR", "OR (||) needs"),
        ] {
            let e = Query::parse(q).expect_err(q);
            assert!(e.contains(says), "{q:?}: {e}");
        }
    }

    #[test]
    fn a_huge_query_is_refused_before_any_work() {
        let e = Query::parse(&"a".repeat(MAX_QUERY_BYTES + 1)).unwrap_err();
        assert!(e.contains("at most 512"), "{e}");
        let many = vec!["w"; MAX_WORDS + 1].join(" ");
        let e = Query::parse(&many).unwrap_err();
        assert!(e.contains("more than 16 words"), "{e}");
        let phrase = format!("\"{}\"", vec!["w"; MAX_WORDS + 1].join(" "));
        assert!(Query::parse(&phrase).is_err());
        let e = Query::parse(&"x".repeat(MAX_WORD_CHARS + 1)).unwrap_err();
        assert!(e.contains("longer than 64"), "{e}");
        assert!(Query::parse(&vec!["w"; MAX_WORDS].join(" ")).is_ok());
    }

    #[test]
    fn matching_stops_when_the_budget_is_spent() {
        // Each star makes the walk go back; on a long word of one letter the work is
        // pattern × word per word.
        let q = Query::parse(&format!("{}b", "*a".repeat(30))).unwrap();
        let line = "a".repeat(4096);
        let mut budget = Budget::new(1_000_000);
        let mut lines = 0;
        while !budget.spent() {
            assert!(!q.matches(&line, &mut budget));
            lines += 1;
            assert!(lines < 1000, "the budget is never spent");
        }
        // Ordinary matching does not come near it.
        let q = Query::parse("er?or \"start to\" *fail*").unwrap();
        let mut budget = Budget::new(1_000_000);
        for _ in 0..100 {
            assert!(q.matches("error: start to fail now", &mut budget));
        }
        assert!(!budget.spent());
    }
}

//! Permission queries: [`PermissionQuery`], permissions joined with `AND` / `OR` and
//! grouped with parentheses, its tokenizer and parser, and the jumping code it compiles to.

use serde::{Deserialize, Serialize};

use super::macros::text_impls;
use super::permission::parse_permission;
use super::{Permission, PermissionSet, quote};
use crate::error::InputError;

/// The most permissions (atoms) a [`PermissionQuery`] may name.
pub const MAX_QUERY_ATOMS: usize = 64;
/// The deepest nesting of parentheses a [`PermissionQuery`] may use.
pub const MAX_QUERY_DEPTH: usize = 16;
/// The longest permission query text, in bytes.
pub const MAX_QUERY_LEN: usize = 8192;

/// A requirement on a key's permissions: permissions joined with `AND` and `OR`
/// (keywords in any case), grouped with parentheses, `AND` binding tighter than `OR`:
/// `(docs:read OR docs:write) AND users:view`. A single permission is a query.
///
/// Bounded so that hostile input stays cheap: at most [`MAX_QUERY_LEN`] bytes,
/// [`MAX_QUERY_ATOMS`] permissions and [`MAX_QUERY_DEPTH`] levels of parentheses.
/// Serialises as its text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PermissionQuery {
    text: Box<str>,
    /// The query as jumping code (see [`Step`]); evaluation starts at the first step.
    steps: Box<[Step]>,
}

impl PermissionQuery {
    /// Parses a query.
    ///
    /// # Errors
    /// [`InputError::InvalidQuery`] naming what is wrong and at which byte offset: an
    /// empty query or empty parentheses, an unclosed `(` or unmatched `)`, an operator
    /// without an operand on one side, two permissions without an operator between
    /// them, a bad permission, or a query over the size bounds.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let root = QueryParser::parse(text).map_err(InputError::InvalidQuery)?;
        let mut steps = Vec::with_capacity(root.atoms());
        root.compile(ACCEPT, REJECT, &mut steps);
        Ok(PermissionQuery {
            text: text.into(),
            steps: steps.into_boxed_slice(),
        })
    }

    /// True when `granted` satisfies the query. Does not allocate; short-circuits.
    pub fn evaluate(&self, granted: &PermissionSet) -> bool {
        self.evaluate_with(&|p: &Permission| granted.allows(p))
    }

    /// True when the query holds with `allows` deciding each permission; for grants
    /// kept apart (a role's set and a key's extra set) without building their union
    /// per request: `q.evaluate_with(&|p| role.allows(p) || extra.allows(p))`.
    pub fn evaluate_with<F: Fn(&Permission) -> bool>(&self, allows: &F) -> bool {
        let mut at = 0usize;
        // Every target is a later step or a verdict, so this runs at most once a step.
        while let Some(step) = self.steps.get(at) {
            match if allows(&step.permission) {
                step.on_true
            } else {
                step.on_false
            } {
                ACCEPT => return true,
                REJECT => return false,
                next => at = usize::from(next),
            }
        }
        false
    }

    /// The query text, as it was parsed.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

text_impls!(PermissionQuery);

impl From<Permission> for PermissionQuery {
    fn from(p: Permission) -> Self {
        PermissionQuery {
            text: p.as_str().into(),
            steps: Box::new([Step {
                permission: p,
                on_true: ACCEPT,
                on_false: REJECT,
            }]),
        }
    }
}

/// One permission of a compiled query, and where evaluation goes next when the grants
/// allow it and when they do not: the index of another step, or [`ACCEPT`] / [`REJECT`].
///
/// Compiled from the parse tree in leaf order, so that evaluation decides the same
/// permissions in the same order as a short-circuiting walk of the tree (`a AND b`
/// skips `b` when `a` fails, `a OR b` when `a` holds), without recursion.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    permission: Permission,
    on_true: u16,
    on_false: u16,
}

/// A [`Step`] target: the query holds.
const ACCEPT: u16 = u16::MAX;
/// A [`Step`] target: the query does not hold.
const REJECT: u16 = u16::MAX - 1;

/// A parsed query: a permission, or all / any of two or more sub-queries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Atom(Permission),
    All(Box<[Node]>),
    Any(Box<[Node]>),
}

impl Node {
    /// The number of permissions (leaves) in the tree.
    fn atoms(&self) -> usize {
        match self {
            Node::Atom(_) => 1,
            Node::All(nodes) | Node::Any(nodes) => nodes.iter().map(Node::atoms).sum(),
        }
    }

    /// Appends the steps of this tree: its leaves, in order, each jumping to `on_true` or
    /// `on_false` once the tree's verdict is known, else to the next leaf to decide.
    /// Indexes fit a `u16`: a query has at most [`MAX_QUERY_ATOMS`] leaves.
    fn compile(&self, on_true: u16, on_false: u16, steps: &mut Vec<Step>) {
        match self {
            Node::Atom(p) => steps.push(Step {
                permission: p.clone(),
                on_true,
                on_false,
            }),
            Node::All(nodes) | Node::Any(nodes) => {
                let all = matches!(self, Node::All(_));
                let mut rest = nodes.iter().peekable();
                while let Some(node) = rest.next() {
                    // Where the next operand's first leaf will be.
                    let next = rest
                        .peek()
                        .map(|_| u16::try_from(steps.len() + node.atoms()).unwrap_or(REJECT));
                    match (next, all) {
                        (None, _) => node.compile(on_true, on_false, steps),
                        (Some(next), true) => node.compile(next, on_false, steps),
                        (Some(next), false) => node.compile(on_true, next, steps),
                    }
                }
            }
        }
    }
}

/// A token of a permission query, with its byte offset.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: TokenKind<'a>,
    offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind<'a> {
    Open,
    Close,
    And,
    Or,
    Word(&'a str),
}

impl Token<'_> {
    /// How an error names the token.
    fn describe(&self) -> String {
        match self.kind {
            TokenKind::Open => format!("'(' at offset {}", self.offset),
            TokenKind::Close => format!("')' at offset {}", self.offset),
            TokenKind::And => format!("AND at offset {}", self.offset),
            TokenKind::Or => format!("OR at offset {}", self.offset),
            TokenKind::Word(w) => format!("{} at offset {}", quote(w), self.offset),
        }
    }
}

/// A recursive-descent parser over the tokens of a query:
///
/// ```text
/// query   = or EOF
/// or      = and ("OR" and)*
/// and     = primary ("AND" primary)*
/// primary = permission | "(" or ")"
/// ```
///
/// Recursion is bounded by [`MAX_QUERY_DEPTH`] (each level is one `(`).
struct QueryParser<'a> {
    tokens: Vec<Token<'a>>,
    next: usize,
    atoms: usize,
}

impl<'a> QueryParser<'a> {
    fn parse(text: &'a str) -> Result<Node, String> {
        if text.len() > MAX_QUERY_LEN {
            return Err(format!("it is {} bytes long, the limit is {MAX_QUERY_LEN}", text.len()));
        }
        let mut parser = QueryParser {
            tokens: tokenize(text),
            next: 0,
            atoms: 0,
        };
        if let Some(why) = parser.tokens.iter().find_map(unsupported_operator) {
            return Err(why);
        }
        if parser.tokens.is_empty() {
            return Err("the query is empty; write e.g. docs:read or (docs:read OR docs:write) AND users:view".into());
        }
        let root = parser.or(0, None)?;
        match parser.peek() {
            None => Ok(root),
            Some(t) if t.kind == TokenKind::Close => Err(format!("unmatched ')' at offset {}", t.offset)),
            Some(t) => Err(format!("missing AND or OR before {}", t.describe())),
        }
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.next).copied()
    }

    fn bump(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        if t.is_some() {
            self.next += 1;
        }
        t
    }

    /// `or` at paren `depth`; `after` is the token just before it (`(` or an operator),
    /// None at the start.
    fn or(&mut self, depth: usize, after: Option<Token<'a>>) -> Result<Node, String> {
        let mut nodes = vec![self.and(depth, after)?];
        while let Some(op) = self.peek().filter(|t| t.kind == TokenKind::Or) {
            self.next += 1;
            nodes.push(self.and(depth, Some(op))?);
        }
        Ok(collapse(nodes, Node::Any))
    }

    fn and(&mut self, depth: usize, after: Option<Token<'a>>) -> Result<Node, String> {
        let mut nodes = vec![self.primary(depth, after)?];
        while let Some(op) = self.peek().filter(|t| t.kind == TokenKind::And) {
            self.next += 1;
            nodes.push(self.primary(depth, Some(op))?);
        }
        Ok(collapse(nodes, Node::All))
    }

    fn primary(&mut self, depth: usize, after: Option<Token<'a>>) -> Result<Node, String> {
        let operand_missing = |what: &str| match after {
            Some(op) if matches!(op.kind, TokenKind::And | TokenKind::Or) => {
                format!("{} has no right operand ({what})", op.describe())
            }
            Some(open) => format!("{} is followed by {what}", open.describe()),
            None => format!("the query starts with {what}"),
        };
        let Some(token) = self.bump() else {
            return Err(match after {
                Some(op) if matches!(op.kind, TokenKind::And | TokenKind::Or) => {
                    format!("{} has no right operand (the query ends)", op.describe())
                }
                Some(open) => format!("unclosed {}", open.describe()),
                None => "the query is empty".into(),
            });
        };
        match token.kind {
            TokenKind::Word(word) => {
                self.atoms += 1;
                if self.atoms > MAX_QUERY_ATOMS {
                    return Err(format!(
                        "it names more than {MAX_QUERY_ATOMS} permissions (the {}th at offset {})",
                        self.atoms, token.offset
                    ));
                }
                parse_permission(word)
                    .map(Node::Atom)
                    .map_err(|why| format!("bad permission {} at offset {}: {why}", quote(word), token.offset))
            }
            TokenKind::Open => {
                if depth >= MAX_QUERY_DEPTH {
                    return Err(format!(
                        "parentheses nest deeper than {MAX_QUERY_DEPTH} levels at offset {}",
                        token.offset
                    ));
                }
                if let Some(close) = self.peek().filter(|t| t.kind == TokenKind::Close) {
                    return Err(format!("empty parentheses at offset {}", close.offset));
                }
                let inner = self.or(depth + 1, Some(token))?;
                match self.bump() {
                    Some(t) if t.kind == TokenKind::Close => Ok(inner),
                    Some(t) => Err(format!("missing AND or OR before {}", t.describe())),
                    None => Err(format!("unclosed {}", token.describe())),
                }
            }
            TokenKind::Close if depth == 0 && after.is_none() => {
                Err(format!("unmatched ')' at offset {}", token.offset))
            }
            TokenKind::Close => Err(operand_missing(&token.describe())),
            TokenKind::And | TokenKind::Or => Err(match after {
                Some(op) if matches!(op.kind, TokenKind::And | TokenKind::Or) => {
                    format!(
                        "{} is followed by another operator, {}",
                        op.describe(),
                        token.describe()
                    )
                }
                _ => format!("{} has no left operand", token.describe()),
            }),
        }
    }
}

/// An error for a word that looks like an operator this grammar does not have.
fn unsupported_operator(token: &Token<'_>) -> Option<String> {
    let TokenKind::Word(word) = token.kind else {
        return None;
    };
    let at = token.offset;
    match word {
        "&" | "&&" => Some(format!("unknown operator {word:?} at offset {at}; use AND")),
        "|" | "||" => Some(format!("unknown operator {word:?} at offset {at}; use OR")),
        _ if word == "!" || word.eq_ignore_ascii_case("not") => {
            Some(format!("negation ({word:?} at offset {at}) is not supported"))
        }
        _ => None,
    }
}

/// One node for one operand, else the operator over all of them.
fn collapse(mut nodes: Vec<Node>, op: fn(Box<[Node]>) -> Node) -> Node {
    if nodes.len() == 1
        && let Some(node) = nodes.pop()
    {
        return node;
    }
    op(nodes.into_boxed_slice())
}

/// Splits a query into parentheses, keywords and words (anything else between
/// whitespace and parentheses, to be parsed as a permission).
fn tokenize(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        let offset = text.len() - trimmed.len();
        let mut chars = trimmed.chars();
        let (kind, tail) = match chars.next() {
            None => return tokens,
            Some('(') => (TokenKind::Open, chars.as_str()),
            Some(')') => (TokenKind::Close, chars.as_str()),
            Some(_) => {
                let end = trimmed
                    .find(|c: char| c.is_ascii_whitespace() || c == '(' || c == ')')
                    .unwrap_or(trimmed.len());
                let (word, tail) = trimmed.split_at_checked(end).unwrap_or((trimmed, ""));
                let kind = if word.eq_ignore_ascii_case("and") {
                    TokenKind::And
                } else if word.eq_ignore_ascii_case("or") {
                    TokenKind::Or
                } else {
                    TokenKind::Word(word)
                };
                (kind, tail)
            }
        };
        tokens.push(Token { kind, offset });
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{perm, set};

    fn query_err(q: &str) -> String {
        match PermissionQuery::parse(q) {
            Err(InputError::InvalidQuery(msg)) => msg,
            other => panic!("{q:?} gave {other:?}"),
        }
    }

    #[test]
    fn query_precedence_and_keywords() {
        let granted = set(&["docs:read", "users:view"]);
        for (q, expected) in [
            ("docs:read", true),
            ("docs:write", false),
            ("(docs:read OR docs:write) AND users:view", true),
            ("(docs:write OR docs:read) and users:view", true),
            ("docs:write OR docs:read AND users:view", true),
            // AND binds tighter: this is docs:read OR (docs:write AND x:y).
            ("docs:read or docs:write AND x:y", true),
            ("(docs:read OR docs:write) AND x:y", false),
            ("docs:read AND users:view AND x:y", false),
            ("x:y OR y:z OR users:view", true),
            ("((docs:read))", true),
            ("(docs:read)AND(users:view)", true),
            ("  docs:read\tAnD\nusers:view  ", true),
            ("*", false),
            ("docs:*", false),
        ] {
            let parsed = PermissionQuery::parse(q).unwrap();
            assert_eq!(parsed.evaluate(&granted), expected, "{q}");
            assert_eq!(parsed.as_str(), q);
        }
        assert!(PermissionQuery::parse("*").unwrap().evaluate(&set(&["*"])));
        let q = PermissionQuery::parse("a:b AND c:d").unwrap();
        let role = set(&["a:b"]);
        let extra = set(&["c:d"]);
        assert!(!q.evaluate(&role));
        assert!(q.evaluate_with(&|p| role.allows(p) || extra.allows(p)));
        assert!(PermissionQuery::from(perm("a:b")).evaluate(&role));
    }

    #[test]
    fn query_errors_name_the_problem() {
        for (q, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("()", "empty parentheses at offset 1"),
            ("(docs:read", "unclosed '(' at offset 0"),
            ("((docs:read)", "unclosed '(' at offset 0"),
            ("docs:read)", "unmatched ')' at offset 9"),
            (")", "unmatched ')' at offset 0"),
            ("(a:b))", "unmatched ')' at offset 5"),
            ("AND docs:read", "AND at offset 0 has no left operand"),
            ("docs:read AND", "AND at offset 10 has no right operand"),
            ("docs:read OR", "OR at offset 10 has no right operand"),
            ("a:b AND OR c:d", "followed by another operator, OR at offset 8"),
            ("(OR a:b)", "OR at offset 1 has no left operand"),
            ("(a:b AND)", "AND at offset 5 has no right operand"),
            ("a:b c:d", "missing AND or OR before \"c:d\" at offset 4"),
            ("(a:b) (c:d)", "missing AND or OR before '(' at offset 6"),
            ("(a:b c:d)", "missing AND or OR before \"c:d\" at offset 5"),
            ("docs:read AND Users:view", "bad permission \"Users:view\" at offset 14"),
            ("docs:read AND users", "no ':'"),
            ("a:b && c:d", "unknown operator \"&&\" at offset 4; use AND"),
            ("a:b | c:d", "use OR"),
            ("NOT a:b", "negation"),
            ("a:b AND $", "bad permission \"$\""),
        ] {
            let msg = query_err(q);
            assert!(msg.contains(needle), "{q:?}: {msg}");
        }
    }

    #[test]
    fn query_bounds() {
        let atoms = |n: usize| (0..n).map(|i| format!("p:a{i}")).collect::<Vec<_>>().join(" OR ");
        assert!(PermissionQuery::parse(&atoms(MAX_QUERY_ATOMS)).is_ok());
        assert!(query_err(&atoms(MAX_QUERY_ATOMS + 1)).contains("more than 64 permissions"));
        let nested = |n: usize| format!("{}a:b{}", "(".repeat(n), ")".repeat(n));
        assert!(PermissionQuery::parse(&nested(MAX_QUERY_DEPTH)).is_ok());
        assert!(query_err(&nested(MAX_QUERY_DEPTH + 1)).contains("deeper than 16"));
        // Hostile input is refused before any real work, and errors stay short.
        let huge = "(".repeat(1_000_000);
        let msg = query_err(&huge);
        assert!(msg.contains("limit is 8192"), "{msg}");
        let long_word = "x".repeat(5_000);
        assert!(query_err(&long_word).len() < 300);
    }
}

//! Wildcard (`*`, `?`) matching for actions, resources and string/ARN conditions.
//!
//! Patterns are compiled once, at parse time, into one of four shapes. The three
//! cheap shapes (everything, exact, prefix) cover nearly every real policy; the
//! general shape runs a dynamic-programming matcher that is O(pattern × value) in
//! the worst case, so hostile patterns such as `a*a*a*a*b` cannot make matching
//! exponential.

/// How a pattern's wildcards behave. Chosen by the element or operator that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GlobStyle {
    /// `Action`/`NotAction`: wildcards match anything; ASCII case is ignored.
    Action,
    /// `StringLike` values and non-ARN resources: case-sensitive, wildcards match anything.
    Text,
    /// `Resource`/`NotResource` ARNs: wildcards stay inside their colon-separated
    /// segment, except that a `*` ending a segment may run past colons (IAM user
    /// guide, "Using wildcards in resource ARNs"), and anything goes in the sixth,
    /// resource segment, which may itself contain colons.
    ResourceArn,
    /// `ArnLike`/`ArnEquals`: each of the first five components is matched
    /// separately; only the sixth (resource) component lets wildcards cross colons.
    ConditionArn,
}

/// Index of the ARN segment where the resource part starts (`arn:partition:service:region:account:resource`).
const RESOURCE_SEGMENT: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar { crosses_colon: bool },
    AnyRun { crosses_colon: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Everything,
    Exact(String),
    Prefix(String),
    General(Vec<Token>),
}

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    shape: Shape,
    ignore_ascii_case: bool,
}

impl Glob {
    /// Compiles `pattern`, where every `*` and `?` is a wildcard.
    pub(crate) fn new(pattern: &str, style: GlobStyle) -> Glob {
        let chars: Vec<(char, bool)> = pattern.chars().map(|c| (c, false)).collect();
        Glob::from_chars(&chars, style)
    }

    /// Compiles a pattern given as `(char, is_literal)` pairs: a literal `*` or `?`
    /// (from a `${*}` escape or a substituted policy variable) matches only itself.
    pub(crate) fn from_chars(chars: &[(char, bool)], style: GlobStyle) -> Glob {
        let ignore_ascii_case = style == GlobStyle::Action;
        let tokens = tokenize(chars, style);
        Glob {
            shape: classify(tokens),
            ignore_ascii_case,
        }
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        match &self.shape {
            Shape::Everything => true,
            Shape::Exact(text) => self.same_text(text, value),
            Shape::Prefix(prefix) => value
                .as_bytes()
                .get(..prefix.len())
                .is_some_and(|head| self.same_bytes(prefix.as_bytes(), head)),
            Shape::General(tokens) => matches_tokens(tokens, value, self.ignore_ascii_case),
        }
    }

    fn same_text(&self, pattern: &str, value: &str) -> bool {
        self.same_bytes(pattern.as_bytes(), value.as_bytes())
    }

    fn same_bytes(&self, pattern: &[u8], value: &[u8]) -> bool {
        if self.ignore_ascii_case {
            pattern.eq_ignore_ascii_case(value)
        } else {
            pattern == value
        }
    }
}

fn tokenize(chars: &[(char, bool)], style: GlobStyle) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(chars.len());
    let mut segment = 0usize;
    for (index, &(c, literal)) in chars.iter().enumerate() {
        let ends_segment = chars.get(index + 1).is_none_or(|&(next, _)| next == ':');
        let in_resource = segment >= RESOURCE_SEGMENT;
        let token = match (c, literal) {
            ('*', false) => Token::AnyRun {
                crosses_colon: run_crosses_colon(style, in_resource, ends_segment),
            },
            ('?', false) => Token::AnyChar {
                crosses_colon: char_crosses_colon(style, in_resource),
            },
            _ if style == GlobStyle::Action => Token::Literal(c.to_ascii_lowercase()),
            _ => Token::Literal(c),
        };
        if c == ':' {
            segment += 1;
        }
        tokens.push(token);
    }
    tokens
}

fn run_crosses_colon(style: GlobStyle, in_resource: bool, ends_segment: bool) -> bool {
    match style {
        GlobStyle::Action | GlobStyle::Text => true,
        GlobStyle::ResourceArn => in_resource || ends_segment,
        GlobStyle::ConditionArn => in_resource,
    }
}

fn char_crosses_colon(style: GlobStyle, in_resource: bool) -> bool {
    match style {
        GlobStyle::Action | GlobStyle::Text => true,
        GlobStyle::ResourceArn | GlobStyle::ConditionArn => in_resource,
    }
}

/// Picks the cheapest shape that matches exactly the same strings as `tokens`.
fn classify(tokens: Vec<Token>) -> Shape {
    // A lone `*` means "anything" in every element, including ARN conditions.
    if let [Token::AnyRun { .. }] = tokens.as_slice() {
        return Shape::Everything;
    }
    let wildcard_count = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Literal(_)))
        .count();
    let literal_text = |tokens: &[Token]| -> String {
        tokens
            .iter()
            .filter_map(|t| match t {
                Token::Literal(c) => Some(*c),
                _ => None,
            })
            .collect()
    };
    match (wildcard_count, tokens.last()) {
        (0, _) => Shape::Exact(literal_text(&tokens)),
        (
            1,
            Some(Token::AnyRun {
                crosses_colon: true,
            }),
        ) => Shape::Prefix(literal_text(&tokens)),
        _ => Shape::General(tokens),
    }
}

/// Rows up to this width live on the stack; longer patterns use one heap row.
const INLINE_ROW: usize = 128;

/// Classic glob dynamic programme over one row: `row[j]` is true when the first
/// `j` tokens match the part of `value` consumed so far.
fn matches_tokens(tokens: &[Token], value: &str, ignore_ascii_case: bool) -> bool {
    let width = tokens.len() + 1;
    let mut inline = [false; INLINE_ROW];
    let mut heap = Vec::new();
    let row: &mut [bool] = match inline.get_mut(..width) {
        Some(row) => row,
        None => {
            heap.resize(width, false);
            &mut heap
        }
    };
    initialise_row(tokens, row);
    for c in value.chars() {
        let c = if ignore_ascii_case {
            c.to_ascii_lowercase()
        } else {
            c
        };
        if !advance_row(tokens, row, c) {
            return false;
        }
    }
    row.last().copied().unwrap_or(false)
}

/// Before any input, only a run of leading `*` tokens can have matched (the empty string).
fn initialise_row(tokens: &[Token], row: &mut [bool]) {
    let mut cells = row.iter_mut();
    let mut left = true;
    if let Some(first) = cells.next() {
        *first = true;
    }
    for (token, cell) in tokens.iter().zip(cells) {
        left = left && matches!(token, Token::AnyRun { .. });
        *cell = left;
    }
}

/// Consumes one input character; returns false when no prefix of the pattern can match any more.
fn advance_row(tokens: &[Token], row: &mut [bool], c: char) -> bool {
    let mut cells = row.iter_mut();
    let Some(first) = cells.next() else {
        return false;
    };
    let mut diagonal = *first; // row[j-1] before this character
    *first = false;
    let mut left = false; // row[j-1] after this character
    let mut alive = false;
    for (token, cell) in tokens.iter().zip(cells) {
        let above = *cell; // row[j] before this character
        let next = match *token {
            Token::Literal(expected) => diagonal && expected == c,
            Token::AnyChar { crosses_colon } => diagonal && (crosses_colon || c != ':'),
            Token::AnyRun { crosses_colon } => left || (above && (crosses_colon || c != ':')),
        };
        *cell = next;
        alive |= next;
        diagonal = above;
        left = next;
    }
    alive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(pattern: &str, value: &str) -> bool {
        Glob::new(pattern, GlobStyle::Text).matches(value)
    }

    #[test]
    fn shapes_are_chosen_for_speed() {
        assert_eq!(Glob::new("*", GlobStyle::Text).shape, Shape::Everything);
        assert_eq!(
            Glob::new("kms:Encrypt", GlobStyle::Action).shape,
            Shape::Exact("kms:encrypt".into())
        );
        assert_eq!(
            Glob::new("kms:ReEncrypt*", GlobStyle::Action).shape,
            Shape::Prefix("kms:reencrypt".into())
        );
        assert!(matches!(
            Glob::new("kms:*Grant*", GlobStyle::Action).shape,
            Shape::General(_)
        ));
    }

    #[test]
    fn text_wildcards() {
        assert!(text("a*c", "abbbc"));
        assert!(text("a*c", "ac"));
        assert!(!text("a*c", "ab"));
        assert!(text("a?c", "abc"));
        assert!(!text("a?c", "ac"));
        assert!(text("*", ""));
        assert!(text("", ""));
        assert!(!text("", "a"));
        assert!(text("**", "xyz"));
        assert!(!text("Abc", "abc"));
        assert!(text("home/*/file", "home/a:b/file"));
    }

    #[test]
    fn action_matching_ignores_ascii_case() {
        let glob = Glob::new("KMS:reencrypt*", GlobStyle::Action);
        assert!(glob.matches("kms:ReEncryptFrom"));
        assert!(!glob.matches("kms:Encrypt"));
        assert!(Glob::new("kms:*Grant*", GlobStyle::Action).matches("kms:CreateGRANT"));
    }

    #[test]
    fn resource_arn_segments() {
        let glob = Glob::new("arn:aws:kms:*:111122223333:key/*", GlobStyle::ResourceArn);
        assert!(glob.matches("arn:aws:kms:us-east-1:111122223333:key/abc"));
        assert!(!glob.matches("arn:aws:kms:us-east-1:444455556666:key/abc"));
        // A `*` in the middle of a segment cannot reach into the next one.
        let mid = Glob::new("arn:aws:kms:us-*1:1111:key/x", GlobStyle::ResourceArn);
        assert!(mid.matches("arn:aws:kms:us-east-1:1111:key/x"));
        assert!(!mid.matches("arn:aws:kms:us-east-1:2:1:1111:key/x"));
        // A `*` ending a segment may expand past colons.
        let tail = Glob::new("arn:aws:kms:*", GlobStyle::ResourceArn);
        assert!(tail.matches("arn:aws:kms:us-east-1:111122223333:key/abc"));
        // The resource segment may contain colons.
        let res = Glob::new("arn:aws:logs:r:1:log-group:*", GlobStyle::ResourceArn);
        assert!(res.matches("arn:aws:logs:r:1:log-group:a:b:c"));
    }

    #[test]
    fn condition_arn_components_are_separate() {
        let glob = Glob::new("arn:aws:iam::*:role/Admin", GlobStyle::ConditionArn);
        assert!(glob.matches("arn:aws:iam::111122223333:role/Admin"));
        assert!(!glob.matches("arn:aws:iam::1:2:role/Admin"));
        let q = Glob::new("arn:aws:iam::11112222333?:root", GlobStyle::ConditionArn);
        assert!(q.matches("arn:aws:iam::111122223333:root"));
    }

    #[test]
    fn literal_wildcards_match_only_themselves() {
        let chars = [('a', false), ('*', true), ('b', false)];
        let glob = Glob::from_chars(&chars, GlobStyle::Text);
        assert!(glob.matches("a*b"));
        assert!(!glob.matches("axb"));
    }

    #[test]
    fn long_patterns_use_the_heap_row() {
        let pattern = format!("{}*", "a?".repeat(200));
        let value = "ab".repeat(200) + "tail";
        assert!(text(&pattern, &value));
        assert!(!text(&pattern, "ab"));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let pattern = "a*".repeat(60) + "b";
        let value = "a".repeat(5000);
        assert!(!text(&pattern, &value));
    }

    /// Naive backtracking over the same tokens: exponential, but obviously right, and the
    /// inputs below are tiny.
    fn reference(tokens: &[Token], value: &[char]) -> bool {
        match tokens.split_first() {
            None => value.is_empty(),
            Some((Token::AnyRun { crosses_colon }, rest)) => (0..=value.len()).any(|taken| {
                let (run, tail) = value.split_at(taken);
                (*crosses_colon || !run.contains(&':')) && reference(rest, tail)
            }),
            Some((token, rest)) => match value.split_first() {
                None => false,
                Some((c, tail)) => {
                    let ok = match *token {
                        Token::Literal(l) => l == *c,
                        Token::AnyChar { crosses_colon } => crosses_colon || *c != ':',
                        Token::AnyRun { .. } => false,
                    };
                    ok && reference(rest, tail)
                }
            },
        }
    }

    fn agrees(pattern: &str, value: &str, style: GlobStyle) -> bool {
        let chars: Vec<(char, bool)> = pattern.chars().map(|c| (c, false)).collect();
        let tokens = tokenize(&chars, style);
        let folded: Vec<char> = if style == GlobStyle::Action {
            value.chars().map(|c| c.to_ascii_lowercase()).collect()
        } else {
            value.chars().collect()
        };
        let expected = if let [Token::AnyRun { .. }] = tokens.as_slice() {
            true
        } else {
            reference(&tokens, &folded)
        };
        Glob::new(pattern, style).matches(value) == expected
    }

    proptest::proptest! {
        #[test]
        fn text_glob_agrees_with_reference(pattern in "[ab*?:]{0,10}", value in "[abAB:]{0,12}") {
            proptest::prop_assert!(agrees(&pattern, &value, GlobStyle::Text));
        }

        #[test]
        fn action_glob_agrees_with_reference(pattern in "[aB*?:]{0,10}", value in "[abAB:]{0,12}") {
            proptest::prop_assert!(agrees(&pattern, &value, GlobStyle::Action));
        }

        #[test]
        fn arn_globs_agree_with_reference(pattern in "[a*?:]{0,14}", value in "[ab:]{0,14}") {
            proptest::prop_assert!(agrees(&pattern, &value, GlobStyle::ResourceArn));
            proptest::prop_assert!(agrees(&pattern, &value, GlobStyle::ConditionArn));
        }

        #[test]
        fn unicode_never_panics(pattern in "\\PC{0,16}", value in "\\PC{0,16}") {
            let _ = Glob::new(&pattern, GlobStyle::Action).matches(&value);
            let _ = Glob::new(&pattern, GlobStyle::ResourceArn).matches(&value);
        }
    }
}

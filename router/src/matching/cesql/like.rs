//! LIKE patterns: `%` matches any run of characters, `_` exactly one character,
//! `\%`, `\_` and `\\` match `%`, `_` and `\` literally; any other character,
//! including a backslash before anything else, matches itself (case-sensitive).

/// A compiled LIKE pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    AnyChar,
    AnyRun,
}

impl Pattern {
    pub(crate) fn compile(pattern: &str) -> Pattern {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let wildcard = match c {
                '%' => Part::AnyRun,
                '_' => Part::AnyChar,
                '\\' => {
                    match chars.peek() {
                        Some(&e @ ('%' | '_' | '\\')) => {
                            chars.next();
                            text.push(e);
                        }
                        _ => text.push('\\'),
                    }
                    continue;
                }
                c => {
                    text.push(c);
                    continue;
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            // `%%` is the same as `%`.
            if !(wildcard == Part::AnyRun && parts.last() == Some(&Part::AnyRun)) {
                parts.push(wildcard);
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Pattern { parts }
    }

    /// Whether the whole of `text` matches. Iterative, with backtracking to the
    /// last `%` only: O(len(text) * len(pattern)) at worst, no recursion.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let parts = &self.parts;
        let (mut p, mut t) = (0, 0);
        // After a `%`: the part to resume from and where in the text it last tried.
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if let Some(part) = parts.get(p) {
                match part {
                    Part::AnyRun => {
                        p += 1;
                        resume = Some((p, t));
                        continue;
                    }
                    Part::AnyChar => {
                        if let Some(c) = text[t..].chars().next() {
                            t += c.len_utf8();
                            p += 1;
                            continue;
                        }
                    }
                    Part::Text(s) => {
                        if text[t..].starts_with(s.as_str()) {
                            t += s.len();
                            p += 1;
                            continue;
                        }
                    }
                }
            } else if t == text.len() {
                return true;
            }
            // Mismatch: let the last `%` swallow one more character, or give up.
            match resume {
                Some((rp, rt)) => match text[rt..].chars().next() {
                    Some(c) => {
                        let rt = rt + c.len_utf8();
                        resume = Some((rp, rt));
                        p = rp;
                        t = rt;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(text: &str, pattern: &str) -> bool {
        Pattern::compile(pattern).matches(text)
    }

    #[test]
    fn wildcards() {
        assert!(like("abc", "abc"));
        assert!(!like("abcd", "abc"));
        assert!(like("azzzbzzzc", "a%b%c"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("ab", "_b%"));
        assert!(like("abcd1", "_b%"));
        assert!(!like("b", "_b%"));
        assert!(!like("aBc", "_b%"));
        assert!(like("éb", "_b"));
        assert!(like("ab.cde.", "%.%."));
        assert!(!like("ab.cde", ".%.%."));
        assert!(like("aaa", "%a%a%a%"));
        assert!(!like("aa", "%a%a%a%"));
        assert!(like("mississippi", "m%iss%ppi"));
    }

    #[test]
    fn escapes() {
        assert!(like("a_b", r"a\_b"));
        assert!(!like("azb", r"a\_b"));
        assert!(like("50%", r"50\%"));
        assert!(!like("500", r"50\%"));
        assert!(like(r"a\b", r"a\\b"));
        assert!(like(r"ab\c", r"ab\c"));
        assert!(like(r"ab\", r"ab\"));
    }

    #[test]
    fn worst_case_is_not_exponential() {
        let text = "a".repeat(2000);
        let pattern = format!("{}b", "%a".repeat(50));
        assert!(!like(&text, &pattern));
    }
}

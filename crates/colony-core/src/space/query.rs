//! Searching a namespace by its objects' tags: a conjunction of
//! predicates (equality, prefix, range, presence), written as text for
//! the CLI (`type=matrix row>=10 row<20 owner^=al`) and answered by each
//! partition from its tag index.

use std::fmt;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{SpaceError, TagValue, Tags, MAX_TAG_BYTES};

/// Most predicates in one query.
pub const MAX_PREDICATES: usize = 16;

/// A test on one tag's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Test {
    /// The tag has this value.
    Eq(TagValue),
    /// The tag is a text starting with this.
    Prefix(String),
    /// The tag lies within these bounds, compared within its type (numbers
    /// with numbers, texts with texts).
    Range {
        /// The lower bound.
        min: Bound<TagValue>,
        /// The upper bound.
        max: Bound<TagValue>,
    },
    /// The tag is present.
    Exists,
}

/// One predicate: a tag and the test its value must pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predicate {
    /// The tag's name.
    pub tag: String,
    /// The test.
    pub test: Test,
}

/// A search: objects whose tags pass every predicate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// The predicates, all of which must hold.
    pub predicates: Vec<Predicate>,
}

/// A value as written in a query: a number if it parses as one, else a
/// text; double quotes make a text of anything.
fn parse_value(text: &str) -> TagValue {
    if let Some(quoted) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return TagValue::Text(quoted.to_string());
    }
    match text.parse::<i64>() {
        Ok(n) => TagValue::Int(n),
        Err(_) => TagValue::Text(text.to_string()),
    }
}

impl Query {
    /// Parses a query: terms separated by spaces, each `tag=value`,
    /// `tag^=prefix`, `tag>=v`, `tag>v`, `tag<=v`, `tag<v` or `tag?`
    /// (present). Two bounds on one tag make one range.
    pub fn parse(text: &str) -> Result<Query, SpaceError> {
        let mut query = Query::default();
        for term in text.split_whitespace() {
            let predicate = Self::parse_term(term)?;
            // `a>=1 a<5` is one range: merge bounds on the same tag.
            if let Test::Range { min, max } = &predicate.test {
                let same = query
                    .predicates
                    .iter_mut()
                    .find(|p| p.tag == predicate.tag && matches!(p.test, Test::Range { .. }));
                if let Some(Predicate {
                    test: Test::Range { min: m, max: x },
                    ..
                }) = same
                {
                    if !matches!(min, Bound::Unbounded) {
                        *m = min.clone();
                    }
                    if !matches!(max, Bound::Unbounded) {
                        *x = max.clone();
                    }
                    continue;
                }
            }
            query.predicates.push(predicate);
        }
        query.check()?;
        Ok(query)
    }

    fn parse_term(term: &str) -> Result<Predicate, SpaceError> {
        let bad = |why: &str| SpaceError::InvalidQuery(format!("{term:?}: {why}"));
        if let Some(tag) = term.strip_suffix('?') {
            return Ok(Predicate {
                tag: tag.to_string(),
                test: Test::Exists,
            });
        }
        // Longest operators first: `>=` before `>`, `^=` before `=`.
        for op in ["^=", ">=", "<=", "=", ">", "<"] {
            let Some(at) = term.find(op) else { continue };
            let (tag, value) = (&term[..at], &term[at + op.len()..]);
            if value.is_empty() {
                return Err(bad("no value after the operator"));
            }
            let value_of = || parse_value(value);
            let test = match op {
                "^=" => Test::Prefix(value.to_string()),
                "=" => Test::Eq(value_of()),
                ">=" => Test::Range {
                    min: Bound::Included(value_of()),
                    max: Bound::Unbounded,
                },
                ">" => Test::Range {
                    min: Bound::Excluded(value_of()),
                    max: Bound::Unbounded,
                },
                "<=" => Test::Range {
                    min: Bound::Unbounded,
                    max: Bound::Included(value_of()),
                },
                _ => Test::Range {
                    min: Bound::Unbounded,
                    max: Bound::Excluded(value_of()),
                },
            };
            return Ok(Predicate {
                tag: tag.to_string(),
                test,
            });
        }
        Err(bad(
            "expected tag=value, tag^=prefix, tag>=v, tag>v, tag<=v, tag<v or tag?",
        ))
    }

    /// Why the query cannot be answered, if it cannot (checked by the
    /// client and again by the home).
    pub fn check(&self) -> Result<(), SpaceError> {
        if self.predicates.len() > MAX_PREDICATES {
            return Err(SpaceError::InvalidQuery(format!(
                "{} predicates; at most {MAX_PREDICATES}",
                self.predicates.len()
            )));
        }
        for p in &self.predicates {
            if p.tag.is_empty() || p.tag.len() > MAX_TAG_BYTES {
                return Err(SpaceError::InvalidQuery(format!(
                    "tag names have 1 to {MAX_TAG_BYTES} bytes, not {}",
                    p.tag.len()
                )));
            }
            let text_len = match &p.test {
                Test::Eq(TagValue::Text(t)) | Test::Prefix(t) => t.len(),
                _ => 0,
            };
            if text_len > MAX_TAG_BYTES {
                return Err(SpaceError::InvalidQuery(format!(
                    "values have at most {MAX_TAG_BYTES} bytes"
                )));
            }
            if let Test::Range { min, max } = &p.test {
                let kind = |b: &Bound<TagValue>| match b {
                    Bound::Included(v) | Bound::Excluded(v) => Some(std::mem::discriminant(v)),
                    Bound::Unbounded => None,
                };
                if let (Some(a), Some(b)) = (kind(min), kind(max)) {
                    if a != b {
                        return Err(SpaceError::InvalidQuery(format!(
                            "the bounds on {:?} mix a number and a text",
                            p.tag
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether tags pass every predicate.
    pub fn matches(&self, tags: &Tags) -> bool {
        self.predicates
            .iter()
            .all(|p| p.test.passes(tags.get(&p.tag)))
    }
}

impl Test {
    /// Whether a tag's value (`None`: absent) passes.
    pub fn passes(&self, value: Option<&TagValue>) -> bool {
        let Some(value) = value else {
            return false;
        };
        match self {
            Test::Exists => true,
            Test::Eq(v) => value == v,
            Test::Prefix(prefix) => matches!(value, TagValue::Text(t) if t.starts_with(prefix)),
            Test::Range { min, max } => {
                let same_kind = |b: &Bound<TagValue>| match b {
                    Bound::Included(v) | Bound::Excluded(v) => {
                        std::mem::discriminant(v) == std::mem::discriminant(value)
                    }
                    Bound::Unbounded => true,
                };
                let above = match min {
                    Bound::Included(v) => value >= v,
                    Bound::Excluded(v) => value > v,
                    Bound::Unbounded => true,
                };
                let below = match max {
                    Bound::Included(v) => value <= v,
                    Bound::Excluded(v) => value < v,
                    Bound::Unbounded => true,
                };
                same_kind(min) && same_kind(max) && above && below
            }
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in &self.predicates {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let tag = &p.tag;
            match &p.test {
                Test::Eq(v) => write!(f, "{tag}={v}")?,
                Test::Prefix(s) => write!(f, "{tag}^={s}")?,
                Test::Exists => write!(f, "{tag}?")?,
                Test::Range { min, max } => {
                    match min {
                        Bound::Included(v) => write!(f, "{tag}>={v}")?,
                        Bound::Excluded(v) => write!(f, "{tag}>{v}")?,
                        Bound::Unbounded => {}
                    }
                    if !matches!(min, Bound::Unbounded) && !matches!(max, Bound::Unbounded) {
                        f.write_str(" ")?;
                    }
                    match max {
                        Bound::Included(v) => write!(f, "{tag}<={v}")?,
                        Bound::Excluded(v) => write!(f, "{tag}<{v}")?,
                        Bound::Unbounded => {}
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, TagValue)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn queries_parse_and_match_by_type_equality_prefix_and_range() {
        let q = Query::parse("type=matrix row>=10 row<20 owner^=al done?").expect("parses");
        assert_eq!(q.predicates.len(), 4, "{q}");
        let hit = tags(&[
            ("type", TagValue::Text("matrix".into())),
            ("row", TagValue::Int(12)),
            ("owner", TagValue::Text("alice".into())),
            ("done", TagValue::Int(0)),
        ]);
        assert!(q.matches(&hit));
        let mut miss = hit.clone();
        miss.insert("row".into(), TagValue::Int(20));
        assert!(!q.matches(&miss), "upper bound excluded");
        let mut miss = hit.clone();
        miss.insert("row".into(), TagValue::Text("12".into()));
        assert!(!q.matches(&miss), "a text is not in a number range");
        let mut miss = hit.clone();
        miss.remove("done");
        assert!(!q.matches(&miss));
        assert_eq!(
            Query::parse("id=\"42\"").expect("parses").predicates[0].test,
            Test::Eq(TagValue::Text("42".into()))
        );
        // Printed, it parses back the same.
        assert_eq!(Query::parse(&q.to_string()), Ok(q));
    }

    #[test]
    fn malformed_queries_are_refused_with_the_term_named() {
        for bad in ["row", "row>=", "=5", "a<1 a>\"x\"", &"t=x ".repeat(17)] {
            match Query::parse(bad) {
                Err(SpaceError::InvalidQuery(why)) => assert!(!why.is_empty()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}

//! How many replicas must acknowledge a write before a primary acknowledges it to its client:
//! Postgres's `synchronous_standby_names` (with a `synchronous_commit` that waits for it) and
//! Redis's `min-replicas-to-write` / `min-replicas-max-lag`.
//!
//! A primary whose writes need acknowledgements from replicas that a partition has cut it off
//! from cannot acknowledge a write: it fences itself. [`crate::failover::fence_rule`] uses the
//! rule last seen on a primary to decide whether it may be promoted around when nobody can
//! reach it.

use serde::{Deserialize, Serialize};

/// A primary's acknowledgement rule, as last observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Acks {
    /// How many replicas must acknowledge a write (0: none, the primary acknowledges alone).
    pub required: u32,
    /// The replicas that may acknowledge, by name (Postgres `application_name`, lowercase);
    /// `None`: any replica (`*`, and always for Redis).
    pub names: Option<Vec<String>>,
    /// Replicas connected to the primary when it was observed.
    pub connected: u32,
    /// Seconds a replica still counts after its last acknowledgement (Redis's
    /// `min-replicas-max-lag`; 0 for Postgres, whose commit waits for the standby itself).
    #[serde(default)]
    pub lag_s: u32,
}

impl Acks {
    /// The rule of a Postgres primary: `synchronous_standby_names` as `SHOW` gives it, and
    /// `synchronous_commit` (`off` and `local` do not wait for standbys). A value that cannot
    /// be parsed is taken as no rule: the primary is not counted on to fence itself.
    pub fn postgres(standby_names: &str, synchronous_commit: &str, connected: u32) -> Acks {
        let waits = !matches!(
            synchronous_commit.trim().to_ascii_lowercase().as_str(),
            "off" | "local" | "false" | "no" | "0"
        );
        match parse_standby_names(standby_names) {
            Some((required, names)) if waits => Acks {
                required,
                names,
                connected,
                lag_s: 0,
            },
            _ => Acks {
                required: 0,
                names: None,
                connected,
                lag_s: 0,
            },
        }
    }

    /// The rule of a Redis master: `min-replicas-to-write` and `min-replicas-max-lag` (either
    /// at 0 turns the check off).
    pub fn redis(min_replicas_to_write: u32, min_replicas_max_lag: u32, connected: u32) -> Acks {
        Acks {
            required: if min_replicas_max_lag == 0 {
                0
            } else {
                min_replicas_to_write
            },
            names: None,
            connected,
            lag_s: min_replicas_max_lag,
        }
    }
}

/// A parsed `synchronous_standby_names`: how many must confirm, and from which names (`None`:
/// any standby).
pub type StandbyRule = (u32, Option<Vec<String>>);

/// `synchronous_standby_names` as (number required, names or `None` for `*`); `None` when
/// empty or not understood.
///
/// Forms: `FIRST k (s1, s2)`, `ANY k (s1, s2)`, `k (s1, s2)` (FIRST), `s1, s2` (FIRST 1), each
/// name an identifier, a double-quoted name or `*`.
pub fn parse_standby_names(value: &str) -> Option<StandbyRule> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let (count, list) = match value.find('(') {
        Some(open) => {
            let head = value[..open].trim();
            let inner = value[open + 1..].trim_end().strip_suffix(')')?;
            let mut words = head.split_whitespace();
            let first = words.next()?;
            let count = if first.eq_ignore_ascii_case("first") || first.eq_ignore_ascii_case("any")
            {
                words.next()?
            } else {
                first
            };
            if words.next().is_some() {
                return None;
            }
            (count.parse::<u32>().ok()?, inner)
        }
        None => (1, value),
    };
    let mut names = Vec::new();
    for name in split_names(list)? {
        if name == "*" {
            return (count > 0).then_some((count, None));
        }
        names.push(name);
    }
    (count > 0 && !names.is_empty()).then_some((count, Some(names)))
}

/// The comma-separated names of a list, unquoted (`"a""b"` is `a"b`); unquoted names are
/// lowercased, as Postgres folds identifiers. `None` on an unterminated quote or empty name.
fn split_names(list: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut chars = list.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    '"' => break,
                    c => name.push(c),
                }
            }
            name = name.to_ascii_lowercase();
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                name.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if name.is_empty() {
            return None;
        }
        names.push(name);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Some(names),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn every_form_of_synchronous_standby_names() {
        let cases: &[(&str, Option<StandbyRule>)] = &[
            ("", None),
            ("   ", None),
            ("s1", Some((1, names(&["s1"])))),
            ("s1, s2", Some((1, names(&["s1", "s2"])))),
            (
                "FIRST 2 (s1, s2, s3)",
                Some((2, names(&["s1", "s2", "s3"]))),
            ),
            ("first 1 (S1)", Some((1, names(&["s1"])))),
            ("2 (s1, s2)", Some((2, names(&["s1", "s2"])))),
            (
                r#"ANY 1 ("pg-eu-central-1", "pg-us-east-1")"#,
                Some((1, names(&["pg-eu-central-1", "pg-us-east-1"]))),
            ),
            (r#"ANY 1 ("a""b")"#, Some((1, names(&["a\"b"])))),
            ("ANY 2 (*)", Some((2, None))),
            ("*", Some((1, None))),
            ("ANY 0 (s1)", None),
            ("ANY x (s1)", None),
            ("ANY 1 (s1", None),
            (r#"ANY 1 ("s1)"#, None),
            ("ANY 1 (s1,,s2)", None),
            ("ANY 1 2 (s1)", None),
        ];
        for (value, expected) in cases {
            assert_eq!(&parse_standby_names(value), expected, "{value:?}");
        }
    }

    #[test]
    fn a_commit_that_does_not_wait_needs_no_standby() {
        assert_eq!(Acks::postgres("ANY 1 (a, b)", "on", 2).required, 1);
        assert_eq!(
            Acks::postgres("ANY 1 (a, b)", "remote_apply", 2).required,
            1
        );
        assert_eq!(Acks::postgres("ANY 1 (a, b)", "local", 2).required, 0);
        assert_eq!(Acks::postgres("ANY 1 (a, b)", "off", 2).required, 0);
        assert_eq!(Acks::postgres("", "on", 2).required, 0);
    }

    #[test]
    fn redis_turns_the_check_off_when_either_setting_is_zero() {
        assert_eq!(Acks::redis(1, 10, 1).required, 1);
        assert_eq!(Acks::redis(1, 0, 1).required, 0);
        assert_eq!(Acks::redis(0, 10, 1).required, 0);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(value in ".{0,40}") {
            let _ = parse_standby_names(&value);
        }
    }
}

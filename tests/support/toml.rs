//! Writing TOML: values, tables in order, and the quoting rules for keys and strings. Knows
//! how failoverd writes a few of its types (durations as humantime writes them, secret
//! references, the kebab-case modes) but nothing of which keys a configuration has: that is
//! `config.rs`.

use std::path::Path;
use std::time::Duration;

use failoverd::config::{ConnectionMode, LogFormat, ProbeScope, RedisMode, SecretRef};

/// A TOML value.
pub(super) enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Value>),
    Table(Vec<(String, Value)>),
}

impl Value {
    /// The value inline, as it follows `key = `.
    fn inline(&self) -> String {
        match self {
            Value::Str(s) => quote(s),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::List(items) => {
                let items: Vec<String> = items.iter().map(Value::inline).collect();
                format!("[{}]", items.join(", "))
            }
            Value::Table(entries) => {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{} = {}", key(k), v.inline()))
                    .collect();
                format!("{{ {} }}", entries.join(", "))
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}
impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Str(s.clone())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::Int(i64::from(n))
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i64::try_from(n).expect("a TOML integer"))
    }
}
/// A duration as humantime writes it (`300ms`, `15s`), as the agent reads it.
impl From<Duration> for Value {
    fn from(d: Duration) -> Value {
        Value::Str(humantime::format_duration(d).to_string())
    }
}
impl From<&Path> for Value {
    fn from(p: &Path) -> Value {
        Value::Str(p.display().to_string())
    }
}
/// `{ file = "..." }` or `{ env = "..." }`.
impl From<&SecretRef> for Value {
    fn from(secret: &SecretRef) -> Value {
        match secret {
            SecretRef::File(path) => Entries::default().set("file", path.as_path()).into(),
            SecretRef::Env(name) => Entries::default().set("env", name).into(),
        }
    }
}
impl From<&[String]> for Value {
    fn from(items: &[String]) -> Value {
        Value::List(items.iter().map(Value::from).collect())
    }
}
impl From<ProbeScope> for Value {
    fn from(scope: ProbeScope) -> Value {
        match scope {
            ProbeScope::OwnRegion => "own-region".into(),
            ProbeScope::All => "all".into(),
        }
    }
}
impl From<LogFormat> for Value {
    fn from(format: LogFormat) -> Value {
        match format {
            LogFormat::Auto => "auto".into(),
            LogFormat::Json => "json".into(),
            LogFormat::Text => "text".into(),
        }
    }
}
impl From<ConnectionMode> for Value {
    fn from(mode: ConnectionMode) -> Value {
        match mode {
            ConnectionMode::Fresh => "fresh".into(),
            ConnectionMode::Reuse => "reuse".into(),
        }
    }
}
impl From<RedisMode> for Value {
    fn from(mode: RedisMode) -> Value {
        match mode {
            RedisMode::Replication => "replication".into(),
            RedisMode::Cluster => "cluster".into(),
        }
    }
}
impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::List(items)
    }
}
impl From<Entries> for Value {
    fn from(entries: Entries) -> Value {
        Value::Table(entries.0)
    }
}

/// The keys of one table that are set, in the order they were set.
#[derive(Default)]
pub(super) struct Entries(Vec<(String, Value)>);

impl Entries {
    pub(super) fn set(mut self, key: &str, value: impl Into<Value>) -> Entries {
        self.0.push((key.to_owned(), value.into()));
        self
    }

    /// Whether no key is set.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets `key` when `value` is there.
    pub(super) fn opt(self, key: &str, value: Option<impl Into<Value>>) -> Entries {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }
}

/// A TOML document, written one table after another.
#[derive(Default)]
pub(super) struct Document(String);

impl Document {
    /// `[path]` with its entries; nothing when no entry is set.
    pub(super) fn table(&mut self, path: &[&str], entries: Entries) {
        if !entries.is_empty() {
            self.write(&format!("[{}]", dotted(path)), entries);
        }
    }

    /// `[[path]]` with its entries: one more element of an array of tables.
    pub(super) fn array_item(&mut self, path: &[&str], entries: Entries) {
        self.write(&format!("[[{}]]", dotted(path)), entries);
    }

    /// The text written so far.
    pub(super) fn text(self) -> String {
        self.0
    }

    fn write(&mut self, header: &str, entries: Entries) {
        self.0.push_str(&format!("\n{header}\n"));
        for (k, v) in entries.0 {
            self.0.push_str(&format!("{} = {}\n", key(&k), v.inline()));
        }
    }
}

/// A table's path: its keys joined by dots.
fn dotted(path: &[&str]) -> String {
    path.iter().map(|k| key(k)).collect::<Vec<_>>().join(".")
}

/// A key, bare when TOML allows it, quoted otherwise (`"postgres/main"`).
fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_owned()
    } else {
        quote(k)
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

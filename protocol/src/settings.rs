//! Config files for Tessera's binaries: `key = value` lines, `#` comments,
//! values optionally in double quotes. Flags and environment variables
//! override the file (clap reads those); the file overrides defaults.
//!
//! A tiny format on purpose: a worker's owner writes four lines, and an
//! unknown key is an error that lists the known ones (a typo is never
//! silently ignored). The format lives here because the worker, the
//! coordinator and the client all read it; reading the file is theirs.

use std::collections::BTreeMap;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: expected `key = value`")]
    Syntax { path: String, line: usize },
    #[error("{path}:{line}: unknown setting {key:?} (known: {known})")]
    Unknown { path: String, line: usize, key: String, known: String },
}

/// Parses a config file's `text` (`path` names it in errors), accepting
/// only `known` keys (`_` and `-` are the same).
pub fn parse_config(text: &str, path: &str, known: &[&str]) -> Result<BTreeMap<String, String>, SettingsError> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(SettingsError::Syntax { path: path.to_owned(), line: n + 1 });
        };
        let key = k.trim().replace('_', "-");
        if !known.contains(&key.as_str()) {
            return Err(SettingsError::Unknown { path: path.to_owned(), line: n + 1, key, known: known.join(", ") });
        }
        out.insert(key, v.trim().trim_matches('"').to_string());
    }
    Ok(out)
}

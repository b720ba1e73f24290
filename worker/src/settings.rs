//! Config files for Tessera's binaries: `key = value` lines, `#` comments,
//! values optionally in double quotes. Flags and environment variables
//! override the file (clap reads those); the file overrides defaults.
//!
//! A tiny format on purpose: a worker's owner writes four lines, and an
//! unknown key is an error that lists the known ones (a typo is never
//! silently ignored).

use std::collections::BTreeMap;
use std::path::Path;

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

/// Reads `path`, accepting only `known` keys (`_` and `-` are the same).
pub fn read_config(path: &Path, known: &[&str]) -> Result<BTreeMap<String, String>, SettingsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: shown.clone(), source })?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(SettingsError::Syntax { path: shown, line: n + 1 });
        };
        let key = k.trim().replace('_', "-");
        if !known.contains(&key.as_str()) {
            return Err(SettingsError::Unknown { path: shown, line: n + 1, key, known: known.join(", ") });
        }
        out.insert(key, v.trim().trim_matches('"').to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_known_keys_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.conf");
        std::fs::write(&p, "# worker\ncoordinator = \"farm:7879\"\ncache_mib = 100 # small\n").unwrap();
        let m = read_config(&p, &["coordinator", "cache-mib"]).unwrap();
        assert_eq!(m["coordinator"], "farm:7879");
        assert_eq!(m["cache-mib"], "100");
        std::fs::write(&p, "coordinatr = x\n").unwrap();
        let e = read_config(&p, &["coordinator"]).unwrap_err().to_string();
        assert!(e.contains("coordinatr") && e.contains("known: coordinator"), "{e}");
        std::fs::write(&p, "just words\n").unwrap();
        assert!(matches!(read_config(&p, &["a"]), Err(SettingsError::Syntax { line: 1, .. })));
    }
}

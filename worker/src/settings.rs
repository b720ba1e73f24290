//! Reading a config file in the format `tessera_protocol::settings`
//! defines (`key = value` lines).

use std::collections::BTreeMap;
use std::path::Path;

pub use tessera_protocol::settings::{parse_config, SettingsError};

/// Reads `path`, accepting only `known` keys (`_` and `-` are the same).
pub fn read_config(path: &Path, known: &[&str]) -> Result<BTreeMap<String, String>, SettingsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: shown.clone(), source })?;
    parse_config(&text, &shown, known)
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

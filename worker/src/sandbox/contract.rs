//! Which guests this host can run: the `tessera:render` version check and
//! the allow-list of imports, applied to a component's type before it is
//! instantiated.

use wasmtime::component::Component;
use wasmtime::Engine;

use super::error::SandboxError;
use super::version::ContractVersion;

/// The contract version this host implements (`guest-sdk/wit/render.wit`).
pub const HOST_CONTRACT: ContractVersion = ContractVersion { major: 1, minor: 2, patch: 0 };

const PACKAGE: &str = "tessera:render";
/// Interfaces the host offers for import. Guests may import a subset.
const OFFERED: &[&str] = &["types", "log", "gpu"];
const EXPORT: &str = "renderer";

/// Splits `tessera:render/log@1.0.0` into (`tessera:render`, `log`, Some("1.0.0")).
fn split_name(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (path, version) = match name.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (name, None),
    };
    let (package, interface) = path.split_once('/')?;
    Some((package, interface, version))
}

/// Checks a compiled component against the contract and returns the version
/// it was built for.
pub(crate) fn check(engine: &Engine, component: &Component) -> Result<ContractVersion, SandboxError> {
    let ty = component.component_type();

    let mut guest_version = None;
    let mut other_exports = Vec::new();
    for (name, _) in ty.exports(engine) {
        match split_name(name) {
            Some((PACKAGE, EXPORT, Some(v))) => {
                let v = ContractVersion::parse(v).ok_or_else(|| SandboxError::NotAJob {
                    detail: format!("export {name:?} has an unreadable version"),
                })?;
                guest_version = Some(v);
            }
            _ => other_exports.push(name.to_string()),
        }
    }
    let guest = guest_version.ok_or_else(|| SandboxError::NotAJob {
        detail: format!(
            "it does not export {PACKAGE}/{EXPORT}@{HOST_CONTRACT} (its exports: {})",
            if other_exports.is_empty() { "none".to_string() } else { other_exports.join(", ") }
        ),
    })?;
    if !guest.runs_on(&HOST_CONTRACT) {
        return Err(SandboxError::ContractVersion { guest, host: HOST_CONTRACT });
    }
    // An older minor version runs as it is: wasmtime looks imports and
    // exports up semver-compatibly (`renderer@1.2.0` finds a guest's
    // `renderer@1.0.0`), and minor versions only add imports.

    for (name, _) in ty.imports(engine) {
        let allowed = match split_name(name) {
            Some((PACKAGE, iface, Some(v))) => {
                OFFERED.contains(&iface) && ContractVersion::parse(v).is_some_and(|v| v.runs_on(&HOST_CONTRACT))
            }
            _ => false,
        };
        if !allowed {
            return Err(SandboxError::UnknownImport {
                name: name.to_string(),
                offered: OFFERED.iter().map(|i| format!("{PACKAGE}/{i}@{HOST_CONTRACT}")).collect(),
            });
        }
    }
    Ok(guest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = |s| ContractVersion::parse(s).unwrap();
        assert_eq!(v("1.2.3"), ContractVersion { major: 1, minor: 2, patch: 3 });
        assert!(ContractVersion::parse("1.2").is_none());
        assert!(ContractVersion::parse("1.2.3.4").is_none());
        assert!(v("1.0.0").runs_on(&v("1.1.0")));
        assert!(!v("1.2.0").runs_on(&v("1.1.0")));
        assert!(v("2.0.0").runs_on(&v("2.1.0")));
        assert!(!v("1.0.0").runs_on(&v("2.0.0")));
    }

    #[test]
    fn names() {
        assert_eq!(split_name("tessera:render/log@1.0.0"), Some(("tessera:render", "log", Some("1.0.0"))));
        assert_eq!(split_name("wasi:io/streams"), Some(("wasi:io", "streams", None)));
        assert_eq!(split_name("plain"), None);
    }
}

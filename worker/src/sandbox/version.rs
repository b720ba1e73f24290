//! The version of the `tessera:render` contract a guest was built for,
//! and whether it runs on this host: shared by the contract check and the
//! errors that name versions.

use std::fmt;

/// A `major.minor.patch` version of the `tessera:render` package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContractVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ContractVersion {
    pub(super) fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
        let v = ContractVersion { major: it.next()??, minor: it.next()??, patch: it.next()?? };
        it.next().is_none().then_some(v)
    }

    /// A guest built against `self` runs on a host implementing `host` if the
    /// major versions match and the host is at least as new: minor versions
    /// only add imports.
    pub fn runs_on(&self, host: &ContractVersion) -> bool {
        self.major == host.major && self.minor <= host.minor
    }
}

impl fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

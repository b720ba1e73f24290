use std::fmt;
use std::time::Duration;

use tessera_protocol::TileShapeError;

use super::version::ContractVersion;

/// Why the sandbox refused a module or failed a call.
///
/// Variants fall in three groups: the module is unusable (`NotWasm` ..
/// `CompileTimeout`), the guest broke a limit or trapped (the instance is
/// then poisoned and must be dropped), or the guest refused the work itself
/// (`Job`, the instance stays usable).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("not a WebAssembly module: {detail}")]
    NotWasm { detail: String },
    #[error(
        "this is a core WebAssembly module, not a component: build guests with \
         `cargo xtask build-guests`, which encodes them as components"
    )]
    CoreModule,
    #[error("the module is {size} bytes, over the {limit}-byte limit")]
    ModuleTooLarge { size: usize, limit: usize },
    #[error("invalid component: {detail}")]
    Invalid { detail: String },
    #[error("not a Tessera render job: {detail}")]
    NotAJob { detail: String },
    #[error(
        "the module was built for tessera:render {guest}, but this host implements {host}; \
         rebuild it against a {}.x SDK", host.major
    )]
    ContractVersion { guest: ContractVersion, host: ContractVersion },
    #[error("the module imports {name:?}, which the host does not offer (it offers: {})", offered.join(", "))]
    UnknownImport { name: String, offered: Vec<String> },
    #[error("compiling the module took longer than {0:?}")]
    CompileTimeout(Duration),

    #[error("the guest used its whole fuel budget of {budget} during {call}")]
    FuelExhausted { call: &'static str, budget: u64 },
    #[error("the guest ran past the {limit:?} wall-clock limit during {call}")]
    Timeout { call: &'static str, limit: Duration },
    #[error("the guest exceeded the {kind} limit ({limit}) during {call}")]
    Limit { call: &'static str, kind: LimitKind, limit: u64 },
    #[error("the guest exhausted its call stack during {call} (deep or unbounded recursion)")]
    StackOverflow { call: &'static str },
    #[error("the guest trapped during {call}: {reason}{}", guest_message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Trap { call: &'static str, reason: String, guest_message: Option<String> },
    #[error("the guest's tile result is {bytes} bytes, over the {limit}-byte output limit")]
    OutputTooLarge { bytes: u64, limit: u64 },
    #[error("the guest returned a malformed tile: {0}")]
    BadOutput(#[from] TileShapeError),
    #[error("this instance trapped earlier and cannot be used again; create a new one")]
    Poisoned,

    #[error("the job refused the work: {0}")]
    Job(GuestJobError),

    #[error("sandbox host error: {0}")]
    Host(String),
}

impl SandboxError {
    /// Whether the instance that returned this error must be discarded.
    pub fn poisons_instance(&self) -> bool {
        !matches!(self, SandboxError::Job(_) | SandboxError::OutputTooLarge { .. } | SandboxError::BadOutput(_))
    }
}

/// The limit a guest ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Memory,
    TableElements,
    Instances,
    Tables,
    Memories,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Memory => "linear memory bytes",
            LimitKind::TableElements => "table elements",
            LimitKind::Instances => "instance count",
            LimitKind::Tables => "table count",
            LimitKind::Memories => "memory count",
        })
    }
}

/// A refusal the guest returned (`job-error` in the WIT), shown to users as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuestJobError {
    #[error("invalid scene: {0}")]
    InvalidScene(String),
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the scene was not loaded")]
    NotLoaded,
    #[error("{0}")]
    Failed(String),
}

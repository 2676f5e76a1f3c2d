//! What can go wrong: loading a plugin (refused components), calling one (a typed refusal by
//! the rule, or a failure of the plugin that is contained to that call), and the registry.

use serde::Serialize;

/// One problem a rule found with its input (`crm:rules/types.field-problem`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// JSON Pointer into the rule's input record (`/lines/2/discount`).
    pub pointer: String,
    /// What is wrong.
    pub detail: String,
}

/// A rule's typed refusal (`crm:rules/types.rule-error`): an answer, not a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum RuleError {
    /// The input breaks the rule's preconditions.
    #[error("the rule refused its input: {}", .0.iter().map(|p| format!("{}: {}", p.pointer, p.detail)).collect::<Vec<_>>().join("; "))]
    InvalidInput(Vec<FieldProblem>),
    /// An amount does not fit in 64 bits.
    #[error("amounts are too large")]
    Overflow,
    /// The rule does not handle this case.
    #[error("the rule does not handle this: {0}")]
    Unsupported(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Why a component was refused at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Not a WebAssembly component, or one wasmtime cannot compile.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// It exports neither rule interface of a supported `crm:rules` version.
    #[error("{0}")]
    WrongWorld(String),
    /// It targets a version of the WIT package this host does not run.
    #[error("{0}")]
    UnsupportedVersion(String),
    /// It imports something the sandbox does not grant.
    #[error("{0}")]
    ForbiddenImport(String),
    /// It could not be instantiated (e.g. its start-up code trapped or needs too much memory).
    #[error("the component could not be instantiated: {0}")]
    Instantiate(String),
}

/// How a plugin call failed, by root cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access, a denied import).
    Trap,
    /// It used up its fuel: the per-call deadline.
    Timeout,
    /// It tried to grow its memory past the cap.
    MemoryLimit,
    /// It answered with something that breaks the interface's rules.
    InvalidOutput,
    /// A fresh instance could not be made.
    Instantiate,
}

impl FailureKind {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::InvalidOutput => "invalid_output",
            FailureKind::Instantiate => "instantiate",
        }
    }
}

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The rule refused the input (a typed `rule-error`).
    #[error(transparent)]
    Refused(RuleError),
    /// The plugin failed; the failure is contained to this call.
    #[error("plugin {plugin} failed ({}): {detail}", kind.as_str())]
    Failed {
        /// `name version (hash)`.
        plugin: String,
        /// Root cause.
        kind: FailureKind,
        /// What happened.
        detail: String,
        /// Whether this failure disabled the plugin.
        disabled_now: bool,
    },
    /// The plugin is disabled (by an admin or after repeated failures).
    #[error("plugin {0} is disabled")]
    Disabled(String),
    /// No plugin serves this rule.
    #[error("no {0} plugin is active")]
    NoPlugin(&'static str),
    /// The plugin does not export the interface asked for.
    #[error("plugin {0} does not implement {1}")]
    NotImplemented(String, &'static str),
}

/// A registry operation that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such plugin.
    #[error("no plugin named `{0}`")]
    NotFound(String),
    /// The request is malformed (a bad name or version).
    #[error("{0}")]
    Invalid(String),
    /// The component was refused.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The operation clashes with the registry's state.
    #[error("{0}")]
    Conflict(String),
    /// Reading or writing the plugins directory failed.
    #[error("plugins directory: {0}")]
    Io(#[from] std::io::Error),
}

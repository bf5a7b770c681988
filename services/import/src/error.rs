//! What can go wrong in an import, said so that an operator can act on it.
//!
//! Contract: every error names the source (`anthropic`, `openai`), and, when a provider request was
//! involved, the request as `METHOD /path?query` (credentials travel only in headers, so the
//! line never holds a secret) and the HTTP status. Each says whose fault it is and whether
//! running the import again can help ([`FaregateError`]). A malformed page lists every bad
//! field with its JSON path, not only the first.

use std::fmt;

use faregate_core::{ErrorClass, FaregateError};

/// A request to a provider, as it may be shown: method, path and query, never a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    pub method: &'static str,
    /// Path and query, e.g. `/v1/organizations/usage_report/messages?starting_at=...`.
    pub target: String,
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.target)
    }
}

/// One bad field of a provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path, e.g. `data[2].results[0].output_tokens`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn join(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The provider answered with an error status.
    #[error("{source_name}: {request} answered HTTP {status} after {attempts} attempt(s): {message}{}", hint(*retryable))]
    Status {
        source_name: &'static str,
        request: RequestLine,
        status: u16,
        message: String,
        retryable: bool,
        attempts: u32,
    },
    /// No answer: connection refused, reset, timed out.
    #[error(
        "{source_name}: {request} failed after {attempts} attempt(s): {message} (retrying later may help)"
    )]
    Transport { source_name: &'static str, request: RequestLine, message: String, attempts: u32 },
    /// The answer is not the documented shape; nothing of this page was imported.
    #[error(
        "{source_name}: {request} returned a malformed page, nothing of it was imported: {}",
        join(problems)
    )]
    Malformed { source_name: &'static str, request: RequestLine, problems: Vec<Problem> },
    /// The run used its request budget or passed its deadline.
    #[error("{source_name}: {request} not sent: {message} (import the rest with another run)")]
    Budget { source_name: &'static str, request: RequestLine, message: String },
    /// Usage events could not be written to the usage topic.
    #[error("{source_name}: writing usage events to {topic} failed: {message}")]
    Sink { source_name: &'static str, topic: String, message: String, retryable: bool },
    /// The import was asked for something it cannot do (bad window, missing credential).
    #[error("{source_name}: {message}")]
    Invalid { source_name: &'static str, message: String },
}

fn hint(retryable: bool) -> &'static str {
    if retryable { " (retrying later may help)" } else { " (retrying will not help until this is fixed)" }
}

impl FaregateError for ImportError {
    fn class(&self) -> ErrorClass {
        match self {
            ImportError::Status { status, .. } if (400..500).contains(status) && *status != 429 => {
                ErrorClass::User
            }
            ImportError::Status { .. }
            | ImportError::Transport { .. }
            | ImportError::Malformed { .. }
            | ImportError::Budget { .. }
            | ImportError::Sink { .. } => ErrorClass::External,
            ImportError::Invalid { .. } => ErrorClass::User,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            ImportError::Status { retryable, .. } | ImportError::Sink { retryable, .. } => *retryable,
            ImportError::Transport { .. } | ImportError::Budget { .. } => true,
            // The provider would send the same page again.
            ImportError::Malformed { .. } | ImportError::Invalid { .. } => false,
        }
    }
}

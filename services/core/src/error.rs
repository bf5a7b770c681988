//! Error classification shared by every service: each error says whose fault it is and whether
//! retrying can help. Crates keep their own `thiserror` enums and implement [`FaregateError`].

use std::fmt;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The caller sent something invalid (bad config, bad event, bad request): fix the input.
    User,
    /// A dependency failed (broker, ClickHouse, upstream provider, schema registry).
    External,
    /// A bug or broken invariant in Faregate itself.
    Internal,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::User => "user",
            ErrorClass::External => "external",
            ErrorClass::Internal => "internal",
        })
    }
}

/// Implemented by every error enum in Faregate.
pub trait FaregateError: std::error::Error {
    /// Whose fault this is.
    fn class(&self) -> ErrorClass;
    /// Whether the same operation may succeed if tried again later.
    fn retryable(&self) -> bool {
        self.class() == ErrorClass::External
    }
}

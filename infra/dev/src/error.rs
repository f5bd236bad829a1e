//! [`DevError`]: the one error type of the `cairn` command, its dev server and its console.

use std::error::Error;
use std::fmt;

/// What went wrong, in words a user can act on (it names the file, URL, table or value), and
/// the error underneath (SQLite, HTTP, AWS, I/O) kept as its [`source`](Error::source).
#[derive(Debug)]
pub struct DevError {
    message: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl DevError {
    /// An error with no underlying cause (bad input or configuration).
    pub fn new(message: impl Into<String>) -> Self {
        DevError { message: message.into(), source: None }
    }

    /// An error `source` caused; `message` says what failed.
    pub fn with_source(message: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        DevError { message: message.into(), source: Some(Box::new(source)) }
    }

    /// `source` itself as the error, its text as the message.
    pub fn caused_by(source: impl Error + Send + Sync + 'static) -> Self {
        DevError { message: source.to_string(), source: Some(Box::new(source)) }
    }

    /// The message alone (what the CLI prints and the API answers with).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for DevError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|source| source as &(dyn Error + 'static))
    }
}

impl From<String> for DevError {
    fn from(message: String) -> Self {
        DevError::new(message)
    }
}

impl From<&str> for DevError {
    fn from(message: &str) -> Self {
        DevError::new(message)
    }
}

/// Serialized as its message (the dashboard API and the SDK-facing endpoints answer with it).
impl serde::Serialize for DevError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.message)
    }
}

/// Reads as its message (`starts_with`, `contains`, ...), as the core's input errors do.
impl std::ops::Deref for DevError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl PartialEq<&str> for DevError {
    fn eq(&self, other: &&str) -> bool {
        self.message == *other
    }
}

impl PartialEq<String> for DevError {
    fn eq(&self, other: &String) -> bool {
        &self.message == other
    }
}

impl From<DevError> for String {
    fn from(error: DevError) -> String {
        error.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_its_message_and_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = DevError::with_source("cannot open .cairn/dev.db: no such file", io);
        assert_eq!(error.to_string(), "cannot open .cairn/dev.db: no such file");
        assert_eq!(error.source().map(ToString::to_string).as_deref(), Some("no such file"));
        assert!(DevError::new("bad input").source().is_none());
    }
}

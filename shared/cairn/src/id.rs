//! Step and run identifiers.
//!
//! Step ids are Inngest's (`reference/inngest-protocol.md` section 6): the lowercase hex SHA-1 of
//! the step name, and the n-th repeat of a name within one run hashes `name:n`. Because ids are
//! content hashes, a run can move between Cairn and any Inngest SDK mid-flight.

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::fmt;

/// The hashed id of one step of a run (40 lowercase hex characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    /// The id of the `index`-th occurrence (0-based) of the step `name` in a run.
    ///
    /// ```
    /// use cairn::StepId;
    /// assert_eq!(StepId::for_name("a", 0).as_str(), "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8");
    /// assert_eq!(StepId::for_name("a", 1).as_str(), "de89bfaf06245091a7873290a793604612302247");
    /// ```
    pub fn for_name(name: &str, index: u32) -> Self {
        // `name:index` hashed in pieces: no string is built for it (this runs for every step
        // call of every replay).
        let mut hasher = Sha1::new();
        hasher.update(name.as_bytes());
        if index != 0 {
            let mut digits = [0u8; 10];
            let mut start = digits.len();
            let mut rest = index;
            while rest > 0 {
                start -= 1;
                digits[start] = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            hasher.update(b":");
            hasher.update(&digits[start..]);
        }
        StepId(hex::encode(hasher.finalize()))
    }

    /// The hex SHA-1 of `text`, as Inngest computes every step id.
    pub fn hash(text: &str) -> Self {
        StepId(hex::encode(Sha1::digest(text.as_bytes())))
    }

    /// Wraps an id that is already hashed (read back from a store or a request).
    pub fn from_hashed(hashed: impl Into<String>) -> Self {
        StepId(hashed.into())
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one run of a function.
///
/// A run started by an event gets an id derived from (function id, event id), so EventBridge's
/// at-least-once delivery and Lambda's retries can never start the same run twice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// The run that `function_id` starts for the event `event_id`: the same inputs always give
    /// the same run id.
    ///
    /// ```
    /// use cairn::RunId;
    /// assert_eq!(RunId::for_event("hello", "ev-1"), RunId::for_event("hello", "ev-1"));
    /// assert_ne!(RunId::for_event("hello", "ev-1"), RunId::for_event("other", "ev-1"));
    /// ```
    pub fn for_event(function_id: &str, event_id: &str) -> Self {
        // A separator that cannot appear in a function id keeps ("a-b","c") and ("a","b-c") apart.
        let digest = Sha1::digest(format!("{function_id}\u{0}{event_id}").as_bytes());
        RunId(format!("run_{}", &hex::encode(digest)[..26]))
    }

    /// Wraps an existing run id (read from a store, a payload or a URL).
    pub fn new(id: impl Into<String>) -> Self {
        RunId(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vectors from `reference/inngest-protocol.md` section 6, cross-checked there against
    /// ids the official TypeScript SDK emitted.
    #[test]
    fn step_ids_match_inngest_golden_vectors() {
        let cases = [
            ("my-step-id", 0, "e7d8a2f140845095749d60246ff1110c9d01d76a"),
            ("a", 0, "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"),
            ("a", 1, "de89bfaf06245091a7873290a793604612302247"),
            ("fetch-user", 0, "857c0b3e9253ce40ce09381575f27504abb803ea"),
            ("fetch-user", 1, "9d76ac9c53ae9398d015f690b8e470d52f1ed83f"),
            ("fetch-user", 2, "31db2b12347f1554813ddaf55487227725c4eb2f"),
        ];
        for (name, index, want) in cases {
            assert_eq!(StepId::for_name(name, index).as_str(), want, "{name}:{index}");
        }
        assert_eq!(StepId::hash("complete").as_str(), "0737c22d3bfae812339732d14d8c7dbd6dc4e09c");
        for index in [1, 9, 10, 99, 100, 12_345, u32::MAX] {
            assert_eq!(StepId::for_name("s", index), StepId::hash(&format!("s:{index}")), "{index}");
        }
    }

    #[test]
    fn run_ids_are_stable_and_separate_function_and_event() {
        assert_eq!(RunId::for_event("a-b", "c"), RunId::for_event("a-b", "c"));
        assert_ne!(RunId::for_event("a-b", "c"), RunId::for_event("a", "b-c"));
        assert_eq!(RunId::for_event("f", "e").as_str().len(), 30);
    }
}

//! Step and run identifiers.
//!
//! Step ids are Inngest's (`reference/inngest-protocol.md` section 6): the lowercase hex SHA-1 of
//! the step name, and the n-th repeat of a name within one run hashes `name:n`. Because ids are
//! content hashes, a run can move between Cairn and any Inngest SDK mid-flight.

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::fmt;
use std::sync::Arc;

/// The hashed id of one step of a run (40 lowercase hex characters).
///
/// Shared, not copied: a clone (every record a store loads or the engine keeps) costs a
/// reference count, not an allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(Arc<str>);

impl Serialize for StepId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|id| StepId(id.into()))
    }
}

impl StepId {
    /// The id of the `index`-th occurrence (0-based) of the step `name` in a run.
    ///
    /// ```
    /// use cairn::StepId;
    /// assert_eq!(StepId::for_name("a", 0).as_str(), "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8");
    /// assert_eq!(StepId::for_name("a", 1).as_str(), "de89bfaf06245091a7873290a793604612302247");
    /// ```
    pub fn for_name(name: &str, index: u32) -> Self {
        StepId(HexId::for_name(name, index).as_str().into())
    }

    /// The hex SHA-1 of `text`, as Inngest computes every step id.
    pub fn hash(text: &str) -> Self {
        StepId(HexId::of_digest(&Sha1::digest(text.as_bytes())).as_str().into())
    }

    /// Wraps an id that is already hashed (read back from a store or a request).
    pub fn from_hashed(hashed: impl Into<String>) -> Self {
        StepId(hashed.into().into())
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for StepId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A step id on the stack: what the engine compares with the journal before it needs (and
/// allocates) a [`StepId`].
#[derive(Clone, Copy)]
pub(crate) struct HexId([u8; 40]);

impl HexId {
    /// The id of the `index`-th occurrence of `name`: SHA-1 of `name`, or of `name:index`
    /// hashed in pieces (no string is built for it; this runs for every step call).
    pub(crate) fn for_name(name: &str, index: u32) -> Self {
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
        Self::of_digest(&hasher.finalize())
    }

    fn of_digest(digest: &[u8]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [b'0'; 40];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(digest) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        HexId(hex)
    }

    /// The 40 hex characters.
    pub(crate) fn as_str(&self) -> &str {
        // Hex digits are ASCII, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A seeded multiply-xorshift hash for the engine's and the stores' maps keyed by step ids
/// (already uniform SHA-1 hex) and step names (from code): a few nanoseconds per key where
/// SipHash takes tens, and growing such a map rehashes every key. Not meant for keys an
/// attacker chooses.
#[derive(Clone, Debug)]
pub(crate) struct FastHash {
    seed: u64,
}

impl Default for FastHash {
    fn default() -> Self {
        use std::hash::BuildHasher;
        FastHash { seed: std::hash::RandomState::new().hash_one(0x5eed_u64) }
    }
}

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.seed)
    }
}

/// The hasher of [`FastHash`].
#[derive(Debug)]
pub(crate) struct FastHasher(u64);

impl FastHasher {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

    fn mix(&mut self, word: u64) {
        let hash = (self.0 ^ word).wrapping_mul(Self::MULTIPLIER);
        self.0 = hash ^ (hash >> 29);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        // The length keeps "a" and "a\0" apart.
        self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
    }

    fn write_u8(&mut self, value: u8) {
        self.mix(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }

    fn finish(&self) -> u64 {
        let hash = self.0 ^ (self.0 >> 32);
        hash.wrapping_mul(Self::MULTIPLIER) ^ (hash >> 31)
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

static EVENT_SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A new unique event id (time-ordered): for events that arrive without one.
pub fn new_event_id(now: crate::clock::Millis) -> String {
    let seq = EVENT_SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hashed = StepId::hash(&format!("{now}/{}/{seq}", std::process::id()));
    format!("{now:013x}{}", &hashed.as_str()[..13])
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
    fn step_ids_serialize_as_strings() {
        let id = StepId::for_name("a", 1);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"de89bfaf06245091a7873290a793604612302247\"");
        assert_eq!(serde_json::from_str::<StepId>(&json).unwrap(), id);
        assert_eq!(format!("{id:?}"), "StepId(\"de89bfaf06245091a7873290a793604612302247\")");
    }

    #[test]
    fn fast_hash_tells_ids_apart() {
        use std::hash::BuildHasher;
        let hash = FastHash::default();
        let hashes: std::collections::HashSet<u64> =
            (0..10_000).map(|i| hash.hash_one(StepId::for_name("step", i).as_str())).collect();
        assert_eq!(hashes.len(), 10_000);
        assert_ne!(hash.hash_one("a"), hash.hash_one("a\0"));
        assert_eq!(hash.hash_one("same"), hash.hash_one("same"));
    }

    #[test]
    fn run_ids_are_stable_and_separate_function_and_event() {
        assert_eq!(RunId::for_event("a-b", "c"), RunId::for_event("a-b", "c"));
        assert_ne!(RunId::for_event("a-b", "c"), RunId::for_event("a", "b-c"));
        assert_eq!(RunId::for_event("f", "e").as_str().len(), 30);
    }
}

//! Request signing as Inngest does it (`reference/inngest-protocol.md` section 8):
//! `X-Inngest-Signature: t=<unix seconds>&s=<hex HMAC-SHA256>`, keyed with the signing key minus
//! its `signkey-<env>-` prefix (as UTF-8, not hex-decoded), over the JCS (RFC 8785) form of the
//! request body followed by the timestamp. Responses are signed over their raw bytes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from now, either way.
pub const WINDOW_SECS: i64 = 5 * 60;

/// A signing key (`signkey-prod-<hex>`; the prefix is optional).
#[derive(Clone)]
pub struct SigningKey {
    prefix: String,
    hmac_key: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `X-Inngest-Signature` header.
    #[error("missing X-Inngest-Signature")]
    Missing,
    /// The header is not `t=<seconds>&s=<hex>`.
    #[error("malformed X-Inngest-Signature")]
    Malformed,
    /// The timestamp is more than five minutes from now.
    #[error("X-Inngest-Signature timestamp is outside the 5-minute window")]
    Stale,
    /// No key produced this signature.
    #[error("X-Inngest-Signature does not match")]
    Mismatch,
    /// The body is not JSON, so it has no canonical form.
    #[error("the signed body is not JSON")]
    BodyNotJson,
}

impl SigningKey {
    /// Parses a key, stripping a `signkey-<env>-` prefix.
    pub fn new(key: &str) -> Self {
        let trimmed = key.trim();
        let (prefix, hmac_key) = match trimmed.strip_prefix("signkey-").and_then(|rest| rest.split_once('-')) {
            Some((env, rest)) => (format!("signkey-{env}-"), rest.to_string()),
            None => (String::new(), trimmed.to_string()),
        };
        SigningKey { prefix, hmac_key }
    }

    /// The length of the key's secret part (without the `signkey-<env>-` prefix).
    pub fn material_len(&self) -> usize {
        self.hmac_key.chars().count()
    }

    /// The hex HMAC-SHA256 of `message` followed by `timestamp`.
    pub fn mac(&self, message: &[u8], timestamp: i64) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.hmac_key.as_bytes()).expect("HMAC accepts keys of any length");
        mac.update(message);
        mac.update(timestamp.to_string().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The header value signing `message` (already canonical for requests, raw for responses).
    pub fn header(&self, message: &[u8], timestamp: i64) -> String {
        format!("t={timestamp}&s={}", self.mac(message, timestamp))
    }

    /// The key as sent in `Authorization: Bearer` to Inngest's API: the prefix, then the hex
    /// SHA-256 of the hex-decoded key.
    pub fn hashed(&self) -> String {
        use sha2::Digest;
        let bytes = hex::decode(&self.hmac_key).unwrap_or_else(|_| self.hmac_key.as_bytes().to_vec());
        format!("{}{}", self.prefix, hex::encode(Sha256::digest(bytes)))
    }

    /// The first 12 hex characters of SHA-256 of the hex-decoded key, as Inngest reports it.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let bytes = hex::decode(&self.hmac_key).unwrap_or_else(|_| self.hmac_key.as_bytes().to_vec());
        hex::encode(Sha256::digest(bytes))[..12].to_string()
    }
}

/// The canonical (JCS) form of a JSON body; an empty body stays empty (GET requests).
///
/// # Errors
/// [`SignatureError::BodyNotJson`] when the body does not parse.
pub fn canonical(body: &[u8]) -> Result<Vec<u8>, SignatureError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| SignatureError::BodyNotJson)?;
    serde_json_canonicalizer::to_vec(&value).map_err(|_| SignatureError::BodyNotJson)
}

/// Checks a request's signature against `keys` in order (the primary, then the fallback) and
/// returns the key that verified it, which signs the response.
///
/// # Errors
/// Why the request was refused.
pub fn verify<'a>(
    header: Option<&str>,
    body: &[u8],
    keys: &'a [SigningKey],
    now: i64,
) -> Result<&'a SigningKey, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split('&') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("s", value)) => signature = Some(value),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else { return Err(SignatureError::Malformed) };
    // abs_diff: `now - t` overflows for a `t` near i64::MIN, which would wrap into the window.
    if now.abs_diff(timestamp) > WINDOW_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let message = canonical(body)?;
    // A key with no secret part verifies nothing: an HMAC with an empty key is one anyone can make.
    keys.iter()
        .filter(|key| !key.hmac_key.is_empty())
        .find(|key| constant_time_eq(key.mac(&message, timestamp).as_bytes(), signature.as_bytes()))
        .ok_or(SignatureError::Mismatch)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "signkey-test-8ee2262a15e8d3c42d6a840db7af3de2aab08ef632b32a37a687f24b34dba3ff";

    /// The worked example of `reference/inngest-protocol.md` section 8.2, cross-checked there
    /// against the official TypeScript SDK.
    #[test]
    fn signatures_match_inngests_worked_example() {
        let key = SigningKey::new(KEY);
        // Keys in another order and with whitespace: the canonical form is what is signed.
        let body = br#"{ "event": {"name": "demo/hello", "data": {"hello": "world"}}, "ctx": {"run_id": "01J0000000000000000000RUN1", "attempt": 0} }"#;
        let message = canonical(body).unwrap();
        assert_eq!(
            String::from_utf8(message.clone()).unwrap(),
            r#"{"ctx":{"attempt":0,"run_id":"01J0000000000000000000RUN1"},"event":{"data":{"hello":"world"},"name":"demo/hello"}}"#
        );
        assert_eq!(
            key.header(&message, 1_700_000_000),
            "t=1700000000&s=d96e80156cf53fa6976260b253bf0e5416ca4876a5a2c9e0b46986aab87085da"
        );
        assert_eq!(key.mac(b"", 1_700_000_000), "184c94497772c48c5a48f48d89e62f7a0ab3199f6ba6d29d23b3db67eed57ea3");
        // Section 8.5: the Bearer form of this key, as the TypeScript SDK sent it.
        assert_eq!(key.hashed(), "signkey-test-e4bf4a2e7f55c7eb954b6e72f8f69628fbc409fe7da6d0f6958770987dcf0e02");
        assert_eq!(key.hash(), "e4bf4a2e7f55");
    }

    #[test]
    fn verification_accepts_the_fallback_and_refuses_bad_stale_or_missing_signatures() {
        let primary = SigningKey::new("signkey-prod-aaaa");
        let fallback = SigningKey::new(KEY);
        let keys = [primary.clone(), fallback.clone()];
        let body = br#"{"a":1}"#;
        let now = 1_700_000_000;
        let signed = fallback.header(&canonical(body).unwrap(), now);
        assert!(verify(Some(&signed), body, &keys, now + 299).is_ok());
        assert_eq!(verify(Some(&signed), body, &keys, now + 301).unwrap_err(), SignatureError::Stale);
        assert_eq!(verify(Some(&signed), br#"{"a":2}"#, &keys, now).unwrap_err(), SignatureError::Mismatch);
        assert_eq!(verify(None, body, &keys, now).unwrap_err(), SignatureError::Missing);
        assert_eq!(verify(Some("s=abc"), body, &keys, now).unwrap_err(), SignatureError::Malformed);
        assert_eq!(verify(Some(&signed), b"not json", &keys, now).unwrap_err(), SignatureError::BodyNotJson);
    }

    #[test]
    fn timestamps_at_the_ends_of_i64_are_stale_not_a_panic() {
        let key = SigningKey::new(KEY);
        let body = br#"{"a":1}"#;
        let now = 1_700_000_000;
        for t in [i64::MIN, i64::MIN + 1, now - (1 << 62) - (1 << 62), i64::MAX] {
            let header = key.header(&canonical(body).unwrap(), t);
            assert_eq!(
                verify(Some(&header), body, std::slice::from_ref(&key), now).unwrap_err(),
                SignatureError::Stale
            );
        }
        assert_eq!(
            verify(Some("t=-9223372036854775808&s=00"), body, &[key], i64::MAX).unwrap_err(),
            SignatureError::Stale
        );
    }
}

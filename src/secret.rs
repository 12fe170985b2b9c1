//! Secret values that cannot leak: access tokens, app secrets, passwords.
//!
//! [`Secret`] is the only type that holds a secret in memory. Its `Debug` and `Display` print a
//! redaction, it has no `Serialize`, and its bytes are zeroed when it is dropped. Logs and emails
//! identify a secret by its [`Fingerprint`] instead: the first 8 hex digits of its SHA-256, enough
//! to tell two tokens apart, far too little to recover one.
//!
//! This module also computes Meta's `appsecret_proof` (reference section 4), because it is the one
//! place that may look inside two secrets at once.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A secret string: an access token, an app secret, an admin token or a password.
///
/// Cloning copies the secret; both copies are zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

/// The Graph API access token that tokenwarden manages. Same guarantees as [`Secret`].
pub type AccessToken = Secret;

impl Secret {
    /// Wraps a value. The caller should drop any other copy of `value` it holds.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself, for the few places that must send it: an HTTP header, a store write,
    /// a child's standard input. Never format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, stable identifier safe for logs, emails and state files.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.expose())
    }

    /// Whether the value is empty (for example a variable that was never loaded).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(redacted, {})", self.fingerprint())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted {}]", self.fingerprint())
    }
}

/// First 8 hex digits of a secret's SHA-256: names a token without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 4]);

impl Fingerprint {
    /// Fingerprint of a raw value.
    pub fn of(value: &str) -> Self {
        let digest = Sha256::digest(value.as_bytes());
        Fingerprint([digest[0], digest[1], digest[2], digest[3]])
    }

    /// Parses the 8-hex-digit form produced by `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 8 {
            return None;
        }
        let mut out = [0u8; 4];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Fingerprint::parse(&s).ok_or_else(|| serde::de::Error::custom("expected 8 hex digits"))
    }
}

/// `hex(HMAC-SHA256(key = app secret, message = access token))`, lowercase: Meta's
/// `appsecret_proof` for a call that carries `access_token`.
pub fn appsecret_proof(app_secret: &Secret, access_token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(access_token.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let t = Secret::new("EAAGcanary1234567890");
        for shown in [format!("{t:?}"), format!("{t}"), format!("{t:#?}")] {
            assert!(!shown.contains("canary"), "{shown}");
            assert!(shown.contains(&t.fingerprint().to_string()), "{shown}");
        }
    }

    #[test]
    fn fingerprint_is_first_8_hex_of_sha256_and_round_trips() {
        // sha256("abc") = ba7816bf8f01cfea...
        let f = Fingerprint::of("abc");
        assert_eq!(f.to_string(), "ba7816bf");
        assert_eq!(Fingerprint::parse("ba7816bf"), Some(f));
        assert_eq!(Fingerprint::parse("ba7816b"), None);
        assert_eq!(Fingerprint::parse("zz7816bf"), None);
    }

    #[test]
    fn appsecret_proof_matches_rfc4231_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let proof = appsecret_proof(&Secret::new("Jefe"), "what do ya want for nothing?");
        assert_eq!(
            proof,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

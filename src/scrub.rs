//! Removing known secrets from text that came from outside: a Graph error that echoes the
//! request, an SMTP server that echoes `AUTH PLAIN`, a proxy's error page.
//!
//! Such text is copied into output, the state file, the audit log and emails, so every secret
//! tokenwarden sent with the request is taken out of it first, in each form a server may echo
//! it in: as is, URL-encoded (a query string or form body read back), and base64 (an
//! `Authorization` or `AUTH` argument). Base64 is matched at each of the three byte alignments
//! a secret can have inside a longer encoded value (`AUTH PLAIN` encodes
//! `\0user\0password`, not the password alone), by the characters that depend only on the
//! secret's own bytes. What is left of an echo is at most two characters on each side, a few
//! bits: never enough to use.
//!
//! Secrets shorter than [`MIN_LEN`] are not looked for: real ones are far longer (a token is
//! about 200 characters, an app secret 32), and scrubbing a short word would mangle text.

use zeroize::Zeroizing;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Shortest value scrubbed (see the module comment).
pub const MIN_LEN: usize = 8;

/// The secrets to take out of a text, in every form looked for. Not `Debug`: it holds them.
#[derive(Default, Clone)]
pub struct Scrubber {
    /// Longest first, so a form that contains another is replaced whole.
    needles: Vec<Zeroizing<Vec<u8>>>,
    /// A bit per two-byte prefix of some needle: most positions of a text are passed over
    /// with one look-up (a batch answer is scanned for 50 tokens in 18 forms each).
    prefixes: Vec<u64>,
}

impl Scrubber {
    /// A scrubber that knows no secret yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `secret` in every form (as is, URL-encoded, base64 at each alignment). Ignored
    /// when shorter than [`MIN_LEN`].
    pub fn add(&mut self, secret: &str) -> &mut Self {
        if secret.len() < MIN_LEN {
            return self;
        }
        let raw = secret.as_bytes();
        self.push(raw.to_vec());
        // Form encoding (`+` for a space) and strict percent-encoding: both are seen.
        let form: String = url::form_urlencoded::byte_serialize(raw).collect();
        self.push(form.clone().into_bytes());
        self.push(form.replace('+', "%20").into_bytes());
        // Lower-case percent escapes, as some servers write them back.
        self.push(lower_escapes(&form).into_bytes());
        for offset in 0..3 {
            self.push(base64_core(raw, offset, STANDARD));
            self.push(base64_core(raw, offset, URL_SAFE));
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        self
    }

    /// Whether no secret is known.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    fn push(&mut self, needle: Vec<u8>) {
        // A base64 core of a short secret can be short itself; keep only forms that are long
        // enough to identify the secret.
        if needle.len() >= MIN_LEN && !self.needles.iter().any(|n| n[..] == needle[..]) {
            if self.prefixes.is_empty() {
                self.prefixes = vec![0; 65536 / 64];
            }
            let p = prefix(&needle);
            self.prefixes[p / 64] |= 1 << (p % 64);
            self.needles.push(Zeroizing::new(needle));
        }
    }

    /// `text` with every known secret replaced by [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        if self.needles.is_empty() {
            return text.to_string();
        }
        // Replacing whole needles (ASCII or whole UTF-8 sequences of the secret) keeps valid
        // UTF-8 valid.
        String::from_utf8_lossy(&self.scrub_bytes(text.as_bytes())).into_owned()
    }

    /// `bytes` with every known secret replaced by [`REDACTED`]. The replacement holds no
    /// quote or backslash, so a JSON document stays a JSON document.
    pub fn scrub_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        'outer: while i < bytes.len() {
            let p = prefix(&bytes[i..]);
            if self
                .prefixes
                .get(p / 64)
                .is_none_or(|w| w & (1 << (p % 64)) == 0)
            {
                out.push(bytes[i]);
                i += 1;
                continue;
            }
            for n in &self.needles {
                if bytes[i..].starts_with(n) {
                    out.extend_from_slice(REDACTED.as_bytes());
                    i += n.len();
                    continue 'outer;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    /// Whether `bytes` holds a known secret in any form.
    pub fn finds(&self, bytes: &[u8]) -> bool {
        self.needles
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == &n[..]))
    }
}

/// The first two bytes of `bytes` as an index (a lone last byte pairs with 0, which no
/// needle's prefix has: needles are at least [`MIN_LEN`] long).
fn prefix(bytes: &[u8]) -> usize {
    (usize::from(bytes[0]) << 8) | usize::from(bytes.get(1).copied().unwrap_or(0))
}

fn lower_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for h in chars.by_ref().take(2) {
                out.push(h.to_ascii_lowercase());
            }
        }
    }
    out
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The base64 characters of `secret` placed `offset` bytes (0..3) into a longer value: those
/// that depend on the secret's bytes alone, whatever comes before and after it.
fn base64_core(secret: &[u8], offset: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut padded = Zeroizing::new(vec![0u8; offset]);
    padded.extend_from_slice(secret);
    // Output character i covers input bits 6i..6i+6: keep those within the secret's bits.
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + secret.len()) / 6;
    let mut out = Vec::with_capacity(end.saturating_sub(first));
    for i in first..end {
        let bit = 6 * i;
        let (byte, shift) = (bit / 8, bit % 8);
        let hi = u16::from(padded[byte]) << 8;
        let lo = padded.get(byte + 1).copied().map_or(0, u16::from);
        let v = ((hi | lo) >> (10 - shift)) & 0x3f;
        out.push(alphabet[v as usize]);
    }
    out
}

/// Plain base64 (RFC 4648, padded): what the tests and the sandbox's echo fault encode a
/// secret with, to prove the scrubber finds it.
pub fn base64(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(STANDARD[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(input: &[u8]) -> String {
        base64(input)
    }

    #[test]
    fn every_form_of_a_secret_is_replaced() {
        let token = "EAAGm0PX4ZCpsBAKZC7yZB+/secret=value|x";
        let mut s = Scrubber::new();
        s.add(token);
        let form: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
        for text in [
            format!("Invalid OAuth access token {token}."),
            format!("GET /debug_token?input_token={form}&x=1"),
            format!("Authorization: Bearer {}", b64(token.as_bytes())),
            format!("lower {}", lower_escapes(&form)),
        ] {
            let out = s.scrub(&text);
            assert!(out.contains(REDACTED), "{out}");
            assert!(!out.contains("secret=value"), "{out}");
            assert!(!s.finds(out.as_bytes()), "{out}");
        }
    }

    #[test]
    fn base64_inside_a_longer_value_is_found_at_every_alignment() {
        let password = "correct horse battery staple";
        let mut s = Scrubber::new();
        s.add(password);
        for user in ["", "a", "ab", "abc", "mailer@example.com"] {
            // What `AUTH PLAIN` sends: base64 of "\0user\0password".
            let plain = b64(format!("\0{user}\0{password}").as_bytes());
            let head = "535 5.7.8 bad credentials ";
            let out = s.scrub(&format!("{head}{plain}"));
            assert!(out.contains(REDACTED), "{user}: {out}");
            // What survives: the user's part, and at most two characters of the secret's
            // encoding on each side (plus padding).
            let kept = out.len() - head.len() - REDACTED.len();
            assert!(kept <= (user.len() + 2) * 4 / 3 + 2 + 4, "{user}: {out}");
        }
    }

    #[test]
    fn short_values_and_unrelated_text_are_left_alone() {
        let mut s = Scrubber::new();
        s.add("short").add("");
        assert!(s.is_empty());
        assert_eq!(s.scrub("a short text"), "a short text");
        s.add("a3f1c0de5b7e4d2c9f8a6b4c2d0e1f37");
        let json = r#"{"error":{"message":"bad a3f1c0de5b7e4d2c9f8a6b4c2d0e1f37","code":1}}"#;
        let out = String::from_utf8(s.scrub_bytes(json.as_bytes())).unwrap();
        assert_eq!(out, r#"{"error":{"message":"bad [redacted]","code":1}}"#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["error"]["code"], 1);
        assert_eq!(s.scrub("nothing to see"), "nothing to see");
    }
}

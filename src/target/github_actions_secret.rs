//! The `github_actions_secret` target: a GitHub Actions secret of a repository, of one of its
//! environments, or of an organisation, so the deploy pipeline gets the new token.
//!
//! Source: GitHub's REST API reference, "REST API endpoints for GitHub Actions Secrets"
//! (<https://docs.github.com/en/rest/actions/secrets>), API version `2022-11-28` (sent as
//! `X-GitHub-Api-Version`, with `Accept: application/vnd.github+json` and the token as
//! `Authorization: Bearer`). A push:
//!
//! 1. `GET …/secrets/public-key` (`/repos/{owner}/{repo}/actions/secrets/public-key`,
//!    `/repos/{owner}/{repo}/environments/{environment_name}/secrets/public-key` or
//!    `/orgs/{org}/actions/secrets/public-key`): `{key_id, key}`, the key a base64 Curve25519
//!    public key;
//! 2. seals the token for that key as libsodium's `crypto_box_seal` does (an anonymous sealed
//!    box: ephemeral key, XSalsa20-Poly1305; the RustCrypto `crypto_box` crate, no C);
//! 3. `PUT …/secrets/{secret_name}` with `{encrypted_value (base64), key_id}` (and
//!    `visibility` for an organisation secret): 201 created, 204 updated.
//!
//! GitHub never gives a secret's value back: the target is write-only, so a push always counts
//! as a change, a drift check cannot see it (it is pushed again only when its last push did not
//! deliver the current token), and it is verified by its `verify_url` or `verify_command` only
//! (`rotate --dry-run` says so). A 404 is also what GitHub answers a token that may not see a
//! private repository. Base URL: `https://api.github.com`, or a GitHub Enterprise Server's
//! `https://HOST/api/v3`.

use reqwest::Method;

use super::TargetError;
use super::rest::Api;
use crate::config::GithubScope;
use crate::secret::Secret;

/// The API version this module is written against.
pub const API_VERSION: &str = "2022-11-28";

/// A GitHub Actions secret receiving the token.
#[derive(Debug, Clone)]
pub struct GithubSecretTarget {
    api: Api,
    scope: GithubScope,
    name: String,
}

impl GithubSecretTarget {
    /// The secret `name` in `scope`, through the API at `api_url` with `api_token`.
    ///
    /// # Errors
    /// [`TargetError::Refused`] when the URL or the token is refused ([`Api::new`]).
    pub fn new(
        scope: GithubScope,
        name: String,
        api_url: &reqwest::Url,
        api_token: Secret,
        timeout: std::time::Duration,
    ) -> Result<GithubSecretTarget, TargetError> {
        let denied = match &scope {
            GithubScope::Repository { owner, repo } => format!(
                "the api_token needs the \"Secrets\" repository permission (write) on {owner}/{repo} (a fine-grained token or a GitHub App installation), or the `repo` scope (classic token)"
            ),
            GithubScope::Environment { owner, repo, .. } => format!(
                "the api_token needs the \"Environments\" repository permission (write) and \"Secrets\" (read) on {owner}/{repo} (a fine-grained token or a GitHub App installation), or the `repo` scope (classic token)"
            ),
            GithubScope::Organization { org, .. } => format!(
                "the api_token needs the \"Secrets\" organization permission (write) on {org} (a fine-grained token or a GitHub App installation), or the `admin:org` scope (classic token)"
            ),
        };
        let api = Api::new("GitHub", api_url, api_token, timeout, denied)?
            .with_header("accept", "application/vnd.github+json")
            .with_header("x-github-api-version", API_VERSION);
        Ok(GithubSecretTarget { api, scope, name })
    }

    /// The secret in words.
    pub fn describe(&self) -> String {
        let place = match &self.scope {
            GithubScope::Repository { owner, repo } => format!("repository {owner}/{repo}"),
            GithubScope::Environment {
                owner,
                repo,
                environment,
            } => format!("environment {environment} of {owner}/{repo}"),
            GithubScope::Organization { org, .. } => format!("organization {org}"),
        };
        format!("GitHub Actions secret {} of {place}", self.name)
    }

    /// The path segments of the scope's secrets.
    fn secrets(&self) -> Vec<&str> {
        match &self.scope {
            GithubScope::Repository { owner, repo } => {
                vec!["repos", owner, repo, "actions", "secrets"]
            }
            GithubScope::Environment {
                owner,
                repo,
                environment,
            } => vec!["repos", owner, repo, "environments", environment, "secrets"],
            GithubScope::Organization { org, .. } => vec!["orgs", org, "actions", "secrets"],
        }
    }

    /// Seals `token` for the scope's public key and writes it; always a change (GitHub cannot
    /// say what the secret held).
    ///
    /// # Errors
    /// [`TargetError::Refused`] for a missing scope, a refused token (naming the permission),
    /// a public key that is not one; [`TargetError::Transient`] as [`Api::call`].
    pub async fn push(&self, token: &Secret) -> Result<bool, TargetError> {
        let mut path = self.secrets();
        path.push("public-key");
        let answer = self.api.call(Method::GET, &path, &[], None, &[]).await?;
        if answer.status.as_u16() == 404 {
            return Err(TargetError::Refused(format!(
                "{}: GitHub answered 404 for the public key: {} (the {} does not exist, or the api_token may not see it)",
                self.describe(),
                answer.message,
                match self.scope {
                    GithubScope::Organization { .. } => "organization",
                    GithubScope::Environment { .. } => "repository or environment",
                    GithubScope::Repository { .. } => "repository",
                }
            )));
        }
        let key = answer.ok(&self.api, "public key")?;
        let (Some(key_id), Some(public)) = (key["key_id"].as_str(), key["key"].as_str()) else {
            return Err(TargetError::Refused(format!(
                "{}: the public-key answer has no `key_id` and `key`",
                self.describe()
            )));
        };
        let sealed = seal(public, token).map_err(|why| {
            TargetError::Refused(format!("{}: public key {key_id}: {why}", self.describe()))
        })?;
        let mut body = serde_json::json!({
            "encrypted_value": sealed,
            "key_id": key_id,
        });
        if let GithubScope::Organization { visibility, .. } = &self.scope {
            body["visibility"] = serde_json::Value::from(visibility.as_str());
        }
        path.pop();
        path.push(&self.name);
        let answer = self
            .api
            .call(Method::PUT, &path, &[], Some(&body), &[token])
            .await?;
        answer
            .ok(&self.api, &format!("PUT secret {}", self.name))
            .map(|_| true)
    }
}

/// `token` sealed for the base64 Curve25519 key `public` (libsodium's `crypto_box_seal`),
/// base64-encoded as GitHub wants `encrypted_value`.
fn seal(public: &str, token: &Secret) -> Result<String, String> {
    let raw = base64_decode(public).ok_or("the key is not base64")?;
    let bytes: [u8; crypto_box::KEY_SIZE] = raw
        .try_into()
        .map_err(|_| "the key is not 32 bytes (a Curve25519 public key)".to_string())?;
    let sealed = crypto_box::PublicKey::from(bytes)
        .seal(&mut crypto_box::aead::OsRng, token.expose().as_bytes())
        .map_err(|_| "sealing failed".to_string())?;
    Ok(crate::scrub::base64(&sealed))
}

/// Standard base64 (padding optional), `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_with_the_encoder() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(
                base64_decode(&crate::scrub::base64(&bytes)),
                Some(bytes),
                "{len}"
            );
        }
        assert_eq!(base64_decode("not base64!"), None);
    }

    #[test]
    fn a_sealed_token_opens_with_the_secret_key_only() {
        let sk = crypto_box::SecretKey::from([7u8; 32]);
        let pk = crate::scrub::base64(sk.public_key().as_bytes());
        let token = Secret::new("EAAGsealedtokenvalue123");
        let sealed = base64_decode(&seal(&pk, &token).unwrap()).unwrap();
        // 32 bytes of ephemeral key, 16 of tag, then the message's length.
        assert_eq!(sealed.len(), 32 + 16 + token.expose().len());
        assert_eq!(sk.unseal(&sealed).unwrap(), token.expose().as_bytes());
        assert!(
            crypto_box::SecretKey::from([8u8; 32])
                .unseal(&sealed)
                .is_err()
        );
        assert!(seal("c2hvcnQ=", &token).is_err(), "a 5-byte key");
    }
}

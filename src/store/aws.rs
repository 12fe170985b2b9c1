//! The AWS Secrets Manager store: the token is the `AWSCURRENT` version of a secret, either the
//! whole secret string or one key of a JSON secret (so an existing app secret with other keys
//! keeps them).
//!
//! Credentials come from the AWS default chain (environment, profile, instance role); an
//! endpoint override serves VPC endpoints and tests (moto's server). The stage is always named
//! explicitly: some emulators answer an unstaged read with another version.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use super::{AWSCURRENT, SecretStore, StoreError};
use crate::secret::Secret;

/// One secret in Secrets Manager.
#[derive(Debug, Clone)]
pub struct AwsStore {
    client: Client,
    secret_id: String,
    json_key: Option<String>,
}

impl AwsStore {
    /// A store for `secret_id`, with the default credential chain, an optional region and
    /// endpoint override.
    pub async fn connect(
        secret_id: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
        json_key: Option<String>,
    ) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_string()));
        }
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        let conf = loader.load().await;
        Self::from_sdk_config(&conf, secret_id, json_key)
    }

    /// A store using an already loaded SDK configuration (explicit credentials, shared clients).
    pub fn from_sdk_config(
        conf: &aws_config::SdkConfig,
        secret_id: &str,
        json_key: Option<String>,
    ) -> Self {
        AwsStore {
            client: Client::new(conf),
            secret_id: secret_id.to_string(),
            json_key,
        }
    }

    /// Maps an SDK error to what the caller does next.
    pub(crate) fn map_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        e: SdkError<E>,
    ) -> StoreError {
        let store = self.describe();
        match &e {
            SdkError::ServiceError(se) => {
                let code = se.err().code().unwrap_or("Unknown").to_string();
                let msg = se.err().message().unwrap_or_default().to_string();
                match code.as_str() {
                    "ResourceNotFoundException" => StoreError::Missing {
                        store,
                        hint: format!(
                            "create the secret or give it an {AWSCURRENT} version: `aws secretsmanager put-secret-value --secret-id {} --secret-string file:///dev/stdin`",
                            self.secret_id
                        ),
                    },
                    "ThrottlingException"
                    | "InternalServiceError"
                    | "InternalFailure"
                    | "ServiceUnavailable"
                    | "RequestTimeout" => StoreError::Unavailable {
                        store,
                        cause: format!("{code}: {msg}"),
                    },
                    _ => StoreError::Broken {
                        store,
                        problem: format!("{code}: {msg}"),
                    },
                }
            }
            SdkError::ConstructionFailure(_) => StoreError::Broken {
                store,
                problem: error_chain(&e),
            },
            _ => StoreError::Unavailable {
                store,
                cause: error_chain(&e),
            },
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

impl SecretStore for AwsStore {
    async fn current(&self) -> Result<Secret, StoreError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(AWSCURRENT)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let Some(text) = out.secret_string() else {
            return Err(StoreError::Broken {
                store: self.describe(),
                problem: "the secret has no SecretString (binary secrets are not supported)".into(),
            });
        };
        let text = Secret::new(text);
        match &self.json_key {
            None => Ok(text),
            Some(key) => extract_key(text.expose(), key).map_err(|problem| StoreError::Broken {
                store: self.describe(),
                problem,
            }),
        }
    }

    fn describe(&self) -> String {
        match &self.json_key {
            Some(k) => format!("AWS secret `{}` key `{k}`", self.secret_id),
            None => format!("AWS secret `{}`", self.secret_id),
        }
    }
}

/// The string under `key` of a JSON object secret. Errors never quote the secret.
pub(crate) fn extract_key(text: &str, key: &str) -> Result<Secret, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        format!("`json_key = \"{key}\"` is set but the secret is not a JSON object")
    })?;
    let obj = v.as_object().ok_or_else(|| {
        format!("`json_key = \"{key}\"` is set but the secret is not a JSON object")
    })?;
    match obj.get(key) {
        Some(serde_json::Value::String(s)) => Ok(Secret::new(s.clone())),
        Some(_) => Err(format!("key `{key}` of the secret is not a string")),
        None => {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            Err(format!(
                "the secret has no key `{key}` (its keys: {})",
                keys.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_key_extraction_never_quotes_values() {
        let text = r#"{"DB_PASSWORD":"pw-canary","WHATSAPP_ACCESS_TOKEN":"EAAtoken"}"#;
        assert_eq!(
            extract_key(text, "WHATSAPP_ACCESS_TOKEN").unwrap().expose(),
            "EAAtoken"
        );
        let e = extract_key(text, "TOKEN").unwrap_err();
        assert!(e.contains("DB_PASSWORD") && !e.contains("canary"), "{e}");
        assert!(
            extract_key("EAAcanary", "TOKEN")
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            !extract_key(r#"{"TOKEN": 5}"#, "TOKEN")
                .unwrap_err()
                .contains('5')
        );
    }
}

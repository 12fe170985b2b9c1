//! The `ssm_parameter` target: an AWS Systems Manager Parameter Store parameter of type
//! `SecureString`, through the AWS default credential chain as Secrets Manager is.
//!
//! Source: the Systems Manager API Reference, API version 2014-11-06
//! (<https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_PutParameter.html> and
//! `API_GetParameter.html`), called through `aws-sdk-ssm`. A push reads the parameter with
//! `GetParameter` (`WithDecryption`), and when it does not already hold the token writes it with
//! `PutParameter` (`Type = SecureString`, `Overwrite = true`, the configured `KeyId` if any, else
//! the account's `alias/aws/ssm`). A parameter that does not exist yet is created. Parameter
//! Store keeps every write as a new version, so the value is read back after the push and on
//! each drift check.
//!
//! Least privilege: `ssm:GetParameter` and `ssm:PutParameter` on the parameter's ARN, and with
//! a customer managed key `kms:Encrypt` and `kms:Decrypt` on that key (README, *Targets*).
//!
//! Retries are the SDK's (throttling, `TooManyUpdates`, 5xx, timeouts) within the store's
//! timeouts; what is left is transient. Access denied names the IAM action that is missing.
//! Errors never carry the value: Parameter Store's messages are scrubbed of the token anyway.

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::ParameterType;

use super::TargetError;
use crate::scrub::Scrubber;
use crate::secret::{Fingerprint, Secret};

/// A `SecureString` parameter receiving the token.
#[derive(Debug, Clone)]
pub struct SsmParameterTarget {
    client: aws_sdk_ssm::Client,
    name: String,
    kms_key_id: Option<String>,
}

impl SsmParameterTarget {
    /// Connects with the default credential chain (the SDK configuration is shared with the
    /// Secrets Manager store, loaded once per region and endpoint). A call, the SDK's retries
    /// included, takes at most `timeout` (the target's): a parameter that does not answer
    /// fails the push in time for the rollout to put the old token back.
    pub async fn connect(
        name: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
        kms_key_id: Option<String>,
        timeout: std::time::Duration,
    ) -> SsmParameterTarget {
        use crate::store::aws::{STORE_ATTEMPT_TIMEOUT, STORE_CONNECT_TIMEOUT};
        let conf = crate::store::aws::sdk_config(region, endpoint).await;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(STORE_CONNECT_TIMEOUT.min(timeout))
            .operation_attempt_timeout(STORE_ATTEMPT_TIMEOUT.min(timeout))
            .operation_timeout(timeout)
            .build();
        let client = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(&conf)
                .timeout_config(timeouts)
                .interceptor(crate::store::aws::BodyCap)
                .build(),
        );
        SsmParameterTarget {
            client,
            name: name.to_string(),
            kms_key_id,
        }
    }

    /// The parameter in words.
    pub fn describe(&self) -> String {
        format!("SSM parameter {}", self.name)
    }

    /// Makes `token` the parameter's value; returns whether it changed.
    ///
    /// # Errors
    /// [`TargetError::Transient`] when Parameter Store is throttling or unreachable after the
    /// SDK's retries; [`TargetError::Refused`] when access is denied (naming the action) or
    /// the request is invalid.
    pub async fn push(&self, token: &Secret) -> Result<bool, TargetError> {
        if self.read().await? == Some(token.fingerprint()) {
            return Ok(false);
        }
        let mut put = self
            .client
            .put_parameter()
            .name(&self.name)
            .value(token.expose())
            .r#type(ParameterType::SecureString)
            .overwrite(true);
        if let Some(k) = &self.kms_key_id {
            put = put.key_id(k);
        }
        put.send()
            .await
            .map_err(|e| self.err(e, "ssm:PutParameter", token))?;
        Ok(true)
    }

    /// The fingerprint of the token the parameter holds, `None` when it does not exist.
    ///
    /// # Errors
    /// As [`SsmParameterTarget::push`].
    pub async fn read_back(&self) -> Result<Option<Fingerprint>, TargetError> {
        self.read().await
    }

    async fn read(&self) -> Result<Option<Fingerprint>, TargetError> {
        let got = self
            .client
            .get_parameter()
            .name(&self.name)
            .with_decryption(true)
            .send()
            .await;
        match got {
            Ok(out) => Ok(out
                .parameter()
                .and_then(|p| p.value())
                .map(|v| Secret::new(v).fingerprint())),
            Err(SdkError::ServiceError(se)) if se.err().is_parameter_not_found() => Ok(None),
            Err(e) => Err(self.err(e, "ssm:GetParameter", &Secret::new(""))),
        }
    }

    /// An SDK error in words, scrubbed of `token`, as what the caller does next.
    fn err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        e: SdkError<E>,
        action: &str,
        token: &Secret,
    ) -> TargetError {
        let mut scrub = Scrubber::new();
        scrub.add(token.expose());
        let place = self.describe();
        match &e {
            SdkError::ServiceError(se) => {
                let code = se.err().code().unwrap_or("Unknown");
                let msg = scrub.scrub(se.err().message().unwrap_or_default());
                match code {
                    "AccessDeniedException" | "UnrecognizedClientException" => {
                        TargetError::Refused(format!(
                            "{place}: access denied ({code}: {msg}); the role needs `{action}` on the parameter{}",
                            if self.kms_key_id.is_some() {
                                " and `kms:Encrypt`/`kms:Decrypt` on its key"
                            } else {
                                ""
                            }
                        ))
                    }
                    "ThrottlingException"
                    | "TooManyUpdates"
                    | "InternalServerError"
                    | "ServiceUnavailable" => {
                        TargetError::Transient(format!("{place}: {code}: {msg}"))
                    }
                    _ => TargetError::Refused(format!("{place}: {code}: {msg}")),
                }
            }
            SdkError::ConstructionFailure(_) => TargetError::Refused(format!(
                "{place}: {}",
                scrub.scrub(&crate::store::aws::error_chain(&e))
            )),
            _ if crate::store::aws::over_size(&e) => TargetError::Transient(format!(
                "{place}: an answer larger than {} MiB, not read further (is the endpoint Systems Manager?)",
                crate::store::aws::MAX_AWS_BODY / (1024 * 1024)
            )),
            _ => TargetError::Transient(format!(
                "{place}: {}",
                scrub.scrub(&crate::store::aws::error_chain(&e))
            )),
        }
    }
}

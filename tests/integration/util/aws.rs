//! AWS Secrets Manager for the tests: moto's server, one per test binary, and SDK clients for it.

use std::process::Child;
use std::sync::OnceLock;

use super::{spawn_server, support_script};

/// moto's server, one per test binary; it exits when this process does (its stdin closes).
pub struct Moto {
    _child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// The shared moto server. Tests use unique secret names so they never collide.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let (child, port) = spawn_server(&mut support_script("moto_server.py"));
        Moto {
            _child: child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    })
}

/// An AWS SDK client for moto, with static test credentials.
pub async fn moto_client() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&moto_sdk_config().await)
}

/// SDK config for moto.
pub async fn moto_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto().endpoint)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .load()
        .await
}

/// Creates secret `name` in moto holding `body`.
pub async fn moto_create(name: &str, body: &str) {
    moto_client()
        .await
        .create_secret()
        .name(name)
        .secret_string(body)
        .send()
        .await
        .unwrap();
}

/// The string of secret `id`'s `AWSCURRENT` version, named explicitly: moto's default
/// version does not follow label moves.
pub async fn moto_current(id: &str) -> String {
    moto_client()
        .await
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap()
        .to_string()
}

/// Static credentials for the tokenwarden binary talking to moto.
pub const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// An SSM (Parameter Store) client for moto, with static test credentials.
pub async fn moto_ssm() -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&moto_sdk_config().await)
}

/// The decrypted value of moto's SSM parameter `name`.
pub async fn moto_parameter(name: &str) -> String {
    moto_ssm()
        .await
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .unwrap()
        .parameter()
        .and_then(|p| p.value())
        .unwrap()
        .to_string()
}

/// Writes `value` to moto's SSM parameter `name` as a `SecureString` (created or overwritten).
pub async fn moto_put_parameter(name: &str, value: &str) {
    moto_ssm()
        .await
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

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

//! The `aws` store against moto's Secrets Manager on loopback.

use tokenwarden::store::aws::AwsStore;
use tokenwarden::store::{SecretStore, StoreError};

use crate::util::{moto_client, moto_create, moto_sdk_config, unique};

async fn store(secret_id: &str, json_key: Option<&str>) -> AwsStore {
    AwsStore::from_sdk_config(
        &moto_sdk_config().await,
        secret_id,
        json_key.map(str::to_string),
    )
}

#[tokio::test]
async fn reads_the_current_version_of_a_whole_string_secret() {
    let id = unique("whole");
    moto_create(&id, "EAAGwholeValue123").await;
    assert_eq!(
        store(&id, None).await.current().await.unwrap().expose(),
        "EAAGwholeValue123"
    );
}

#[tokio::test]
async fn a_pending_version_does_not_change_the_current_token() {
    let id = unique("pending");
    let c = moto_client().await;
    c.create_secret()
        .name(&id)
        .secret_string("EAAGcurrent")
        .send()
        .await
        .unwrap();
    c.put_secret_value()
        .secret_id(&id)
        .secret_string("EAAGcandidate")
        .version_stages("AWSPENDING")
        .client_request_token("11111111-2222-3333-4444-555555555555")
        .send()
        .await
        .unwrap();
    assert_eq!(
        store(&id, None).await.current().await.unwrap().expose(),
        "EAAGcurrent"
    );
}

#[tokio::test]
async fn reads_one_key_of_a_json_secret_and_never_quotes_the_others() {
    let id = unique("json");
    let body = r#"{"DB_PASSWORD":"pw-canary-77","WHATSAPP_ACCESS_TOKEN":"EAAGfromJson"}"#;
    moto_create(&id, body).await;
    assert_eq!(
        store(&id, Some("WHATSAPP_ACCESS_TOKEN"))
            .await
            .current()
            .await
            .unwrap()
            .expose(),
        "EAAGfromJson"
    );
    let e = store(&id, Some("TOKEN")).await.current().await.unwrap_err();
    assert!(matches!(e, StoreError::Broken { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("no key `TOKEN`") && msg.contains("DB_PASSWORD"),
        "{msg}"
    );
    assert!(
        !msg.contains("pw-canary-77") && !msg.contains("EAAGfromJson"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_missing_secret_says_how_to_create_it() {
    let id = unique("absent");
    let e = store(&id, None).await.current().await.unwrap_err();
    assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("put-secret-value"), "{e}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_not_missing() {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "t", "t", None, None, "static",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let e = AwsStore::from_sdk_config(&conf, "x", None)
        .current()
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
}

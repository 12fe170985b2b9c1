//! The Graph sandbox, driven over HTTP like tokenwarden and its users drive it: response shapes,
//! proof checks, token life cycle, WhatsApp reads and sends, batches, faults and the admin API.

use std::time::Duration;

use serde_json::{Value, json};
use tokenwarden::sandbox::{
    DEMO_APP_ID, DEMO_APP_SECRET, DEMO_PHONE_NUMBER_ID, DEMO_SYSTEM_USER_ID, DEMO_WABA_ID,
    Endpoint, Fault, OTHER_APP_ID, OTHER_APP_SECRET, OTHER_PHONE_NUMBER_ID, OTHER_WABA_ID, Sandbox,
    Scenario, TokenSpec, UNINSTALLED_SYSTEM_USER_ID, UsageModel,
};
use tokenwarden::secret::{Secret, appsecret_proof};

/// Small helpers: start a sandbox, make calls, pick answers apart.
mod h {
    use super::*;

    pub const V: &str = "/v21.0";

    pub async fn start() -> Sandbox {
        start_with(Scenario::demo()).await
    }

    pub async fn start_with(s: Scenario) -> Sandbox {
        Sandbox::start("127.0.0.1:0".parse().unwrap(), s)
            .await
            .expect("sandbox starts")
    }

    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    pub fn proof(token: &str) -> String {
        appsecret_proof(&Secret::new(DEMO_APP_SECRET), token)
    }

    pub fn app_token() -> String {
        format!("{DEMO_APP_ID}|{DEMO_APP_SECRET}")
    }

    /// An answer: status, headers, raw body.
    pub struct Resp {
        pub status: u16,
        pub headers: reqwest::header::HeaderMap,
        pub text: String,
    }

    impl Resp {
        pub fn json(&self) -> Value {
            serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
        }
        pub fn header(&self, name: &str) -> Option<String> {
            self.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        }
        pub fn code(&self) -> i64 {
            self.json()["error"]["code"].as_i64().expect("error code")
        }
    }

    pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.expect("request");
        Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    pub async fn get(sb: &Sandbox, path: &str, query: &[(&str, &str)]) -> Resp {
        send(
            client()
                .get(format!("{}{V}{path}", sb.base_url()))
                .query(query),
        )
        .await
    }

    /// GET with a bearer token and its proof.
    pub async fn get_as(sb: &Sandbox, path: &str, token: &str, query: &[(&str, &str)]) -> Resp {
        let p = proof(token);
        let mut q = query.to_vec();
        q.push(("appsecret_proof", &p));
        send(
            client()
                .get(format!("{}{V}{path}", sb.base_url()))
                .bearer_auth(token)
                .query(&q),
        )
        .await
    }

    /// debug_token with the demo app token; returns `data`.
    pub async fn inspect(sb: &Sandbox, input: &str) -> Value {
        let r = get(
            sb,
            "/debug_token",
            &[("input_token", input), ("access_token", &app_token())],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["data"].clone()
    }

    pub async fn send_message(sb: &Sandbox, token: &str, body: Value) -> Resp {
        send(
            client()
                .post(format!(
                    "{}{V}/{DEMO_PHONE_NUMBER_ID}/messages",
                    sb.base_url()
                ))
                .bearer_auth(token)
                .query(&[("appsecret_proof", proof(token))])
                .json(&body),
        )
        .await
    }

    pub fn text_to(to: &str) -> Value {
        json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "Your receipt"}})
    }

    pub async fn admin_post(sb: &Sandbox, path: &str, body: Value) -> Resp {
        send(
            client()
                .post(format!("{}/_sandbox/{path}", sb.base_url()))
                .json(&body),
        )
        .await
    }
}

use h::*;

#[tokio::test]
async fn debug_token_valid_system_user_60_days_on_the_hour() {
    let sb = start().await;
    let t = sb.issue_token(TokenSpec::system_user_60d());
    let d = inspect(&sb, &t).await;
    assert_eq!(d["is_valid"], true);
    assert_eq!(d["type"], "SYSTEM_USER");
    assert_eq!(d["app_id"], DEMO_APP_ID, "ids are strings");
    assert_eq!(d["user_id"], DEMO_SYSTEM_USER_ID);
    assert_eq!(d["application"], "BillByteKOT Receipts");
    assert_eq!(d["data_access_expires_at"], 0);
    let issued = d["issued_at"].as_i64().unwrap();
    let expires = d["expires_at"].as_i64().unwrap();
    assert!((issued - sb.now()).abs() <= 2);
    assert_eq!(expires % 3600, 0, "expiry lands on the hour");
    assert!(expires - issued >= 60 * 86_400 && expires - issued < 60 * 86_400 + 3600);
    let scopes: Vec<&str> = d["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(scopes.contains(&"whatsapp_business_management"));
    for g in d["granular_scopes"].as_array().unwrap() {
        assert_eq!(g["target_ids"], json!([DEMO_WABA_ID]));
    }
}

#[tokio::test]
async fn debug_token_never_user_and_shuffled_targets() {
    let sb = start().await;
    let never = sb.issue_token(TokenSpec::system_user_never());
    let d = inspect(&sb, &never).await;
    assert_eq!(d["expires_at"], 0);
    assert_eq!(d["data_access_expires_at"], 0);

    let user = sb.issue_token(TokenSpec::user());
    let d = inspect(&sb, &user).await;
    assert_eq!(d["type"], "USER");
    let issued = d["issued_at"].as_i64().unwrap();
    assert_eq!(
        d["data_access_expires_at"].as_i64().unwrap(),
        issued + 90 * 86_400
    );

    let temp = sb.issue_token(TokenSpec::temporary_24h());
    let d = inspect(&sb, &temp).await;
    let exp = d["expires_at"].as_i64().unwrap();
    assert_eq!(exp % 3600, 0);
    assert!(exp - sb.now() <= 25 * 3600 && exp - sb.now() >= 24 * 3600 - 2);

    let many = sb.issue_token(TokenSpec::system_user_60d().wabas(&[
        DEMO_WABA_ID,
        OTHER_WABA_ID,
        "100000000000001",
        "100000000000002",
    ]));
    let mut orders = std::collections::HashSet::new();
    for _ in 0..12 {
        let d = inspect(&sb, &many).await;
        orders.insert(d["granular_scopes"][0]["target_ids"].to_string());
    }
    assert!(orders.len() > 1, "target_ids order must vary: {orders:?}");
}

#[tokio::test]
async fn debug_token_expired_by_the_clock_quotes_pacific_time() {
    let sb = start().await;
    let t = sb.issue_token(TokenSpec::temporary_24h());
    assert_eq!(inspect(&sb, &t).await["is_valid"], true);
    sb.advance_clock(25 * 3600);
    let d = inspect(&sb, &t).await;
    assert_eq!(d["is_valid"], false);
    assert_eq!(d["type"], "USER");
    assert_eq!(d["app_id"], DEMO_APP_ID);
    assert!(d["expires_at"].as_i64().unwrap() > 0);
    assert_eq!(d["error"]["code"], 190);
    assert_eq!(d["error"]["subcode"], 463);
    let msg = d["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("Error validating access token: Session has expired on "));
    assert!(msg.contains(" PDT.") || msg.contains(" PST."), "{msg}");
}

#[tokio::test]
async fn scenario_file_fixes_clock_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("world.toml");
    std::fs::write(
        &path,
        r#"
now = 1719857190   # Monday 2024-07-01 11:06:30 PDT
latency_ms = 0

[usage]
call_limit = 20

[[token]]
value = "EAAfixedvalid"
lifetime = "never"

[[token]]
value = "EAAfixedexpired"
expires_at = 1719676800   # Saturday 2024-06-29 09:00:00 PDT

[[token]]
value = "EAAfixedgone"
status = "invalidated"
subcode = 467

[[waba]]
id = "111111111111111"
name = "Extra"
[[waba.phone]]
id = "222222222222222"
display_phone_number = "+1 555-010-1234"
verified_name = "Extra"

[[fault]]
kind = "server_error"
endpoint = "phone_numbers"
code = 1
"#,
    )
    .unwrap();
    let scenario = Scenario::load(&path).unwrap();
    assert_eq!(
        scenario.usage,
        UsageModel {
            window_secs: 3600,
            call_limit: 20,
            enforce: false
        }
    );
    let sb = start_with(scenario).await;
    assert!((sb.now() - 1_719_857_190).abs() <= 2);
    assert_eq!(inspect(&sb, "EAAfixedvalid").await["is_valid"], true);
    let d = inspect(&sb, "EAAfixedexpired").await;
    let msg = d["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Error validating access token: Session has expired on Saturday, 29-Jun-24 09:00:00 PDT. The current time is Monday, 01-Jul-24 11:06:3"),
        "{msg}"
    );
    let d = inspect(&sb, "EAAfixedgone").await;
    assert_eq!(d["error"]["subcode"], 467);
    // The initial fault is pending.
    let r = get_as(
        &sb,
        &format!("/{DEMO_WABA_ID}/phone_numbers"),
        "EAAfixedvalid",
        &[],
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.code(), 1);

    // Mistakes are reported with the file name and the cause.
    std::fs::write(&path, "now = 1\nbogus = 2\n").unwrap();
    let e = Scenario::load(&path).unwrap_err().to_string();
    assert!(e.contains("world.toml") && e.contains("bogus"), "{e}");
    std::fs::write(&path, "[[system_user]]\nid = \"1\"\napps = [\"42\"]\n").unwrap();
    let e = Scenario::load(&path).unwrap_err().to_string();
    assert!(e.contains("unknown app 42"), "{e}");
}

#[tokio::test]
async fn debug_token_invalidated_revoked_and_unknown() {
    let sb = start().await;
    for sub in [460u32, 467, 458, 466] {
        let t = sb.issue_token(TokenSpec::system_user_60d());
        sb.invalidate(&t, sub);
        let d = inspect(&sb, &t).await;
        assert_eq!(d["is_valid"], false);
        assert_eq!(d["error"]["code"], 190);
        assert_eq!(d["error"]["subcode"], sub);
        assert!(d["error"].get("error_subcode").is_none());
        assert_eq!(d["scopes"], json!([]));
    }
    let d = inspect(&sb, "EAAnotatokenweknow123").await;
    assert_eq!(
        d["error"]["message"],
        "The access token could not be decrypted"
    );
    assert!(d.get("app_id").is_none() && d.get("type").is_none());
    assert_eq!(d["scopes"], json!([]));
    let d = inspect(&sb, "my-webhook-verify-token").await;
    assert_eq!(
        d["error"]["message"],
        "Invalid OAuth access token - Cannot parse access token"
    );
}

#[tokio::test]
async fn debug_token_inspector_errors() {
    let sb = start().await;
    let t = sb.issue_token(TokenSpec::system_user_60d());

    // A system-user token cannot inspect.
    let r = get(
        &sb,
        "/debug_token",
        &[("input_token", &t), ("access_token", &t)],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 100);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("(#100) You must provide an app access token")
    );
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("\"invalid_request\"")
    );

    // A token of another app.
    let other = sb.issue_token(TokenSpec::system_user_60d().app(OTHER_APP_ID));
    let r = get(
        &sb,
        "/debug_token",
        &[("input_token", &other), ("access_token", &app_token())],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "(#100) The App_id in the input_token did not match the Viewing App"
    );
    // ...which its own app can inspect.
    let r = get(
        &sb,
        "/debug_token",
        &[
            ("input_token", &other),
            (
                "access_token",
                &format!("{OTHER_APP_ID}|{OTHER_APP_SECRET}"),
            ),
        ],
    )
    .await;
    assert_eq!(r.json()["data"]["is_valid"], true);

    // POST is refused.
    let r = send(
        client()
            .post(format!("{}{V}/debug_token", sb.base_url()))
            .form(&[("input_token", t.as_str()), ("access_token", &app_token())]),
    )
    .await;
    assert_eq!(r.code(), 100);
    assert_eq!(r.json()["error"]["error_subcode"], 33);

    // After the app secret is reset, the old app token fails on its signature.
    sb.reset_app_secret("00112233445566778899aabbccddeeff");
    let r = get(
        &sb,
        "/debug_token",
        &[("input_token", &t), ("access_token", &app_token())],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 190);
    assert_eq!(
        r.json()["error"]["message"],
        "Invalid OAuth access token signature."
    );
    let www = r.header("www-authenticate").unwrap();
    assert!(
        www.starts_with("OAuth \"Facebook Platform\" \"invalid_token\""),
        "{www}"
    );
    assert_eq!(sb.app_secret(), "00112233445566778899aabbccddeeff");
    let r = get(
        &sb,
        "/debug_token",
        &[("input_token", &t), ("access_token", &sb.app_token())],
    )
    .await;
    assert_eq!(r.json()["data"]["is_valid"], true);
    // Proofs made with the old secret now fail too.
    let r = get_as(&sb, &format!("/{DEMO_PHONE_NUMBER_ID}"), &t, &[]).await;
    assert_eq!(
        r.json()["error"]["message"],
        "Invalid appsecret_proof provided in the API argument"
    );
}

#[tokio::test]
async fn appsecret_proof_checks() {
    let sb = start().await;
    let t = sb.issue_token(TokenSpec::system_user_60d());
    let url = format!("{}{V}/{DEMO_PHONE_NUMBER_ID}", sb.base_url());

    let r = send(client().get(&url).bearer_auth(&t)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 100);
    assert_eq!(
        r.json()["error"]["message"],
        "API calls from the server require an appsecret_proof argument"
    );
    let r = send(
        client()
            .get(&url)
            .bearer_auth(&t)
            .query(&[("appsecret_proof", "00ff")]),
    )
    .await;
    assert_eq!(
        r.json()["error"]["message"],
        "Invalid appsecret_proof provided in the API argument"
    );
    // access_token in the query works as well as the header.
    let r = send(client().get(&url).query(&[
        ("access_token", t.as_str()),
        ("appsecret_proof", &proof(&t)),
    ]))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The time-stamped form.
    let now = sb.now().to_string();
    let p = appsecret_proof(&Secret::new(DEMO_APP_SECRET), &format!("{t}|{now}"));
    let r = send(
        client()
            .get(&url)
            .bearer_auth(&t)
            .query(&[("appsecret_proof", p.as_str()), ("appsecret_time", &now)]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let old = (sb.now() - 900).to_string();
    let p = appsecret_proof(&Secret::new(DEMO_APP_SECRET), &format!("{t}|{old}"));
    let r = send(
        client()
            .get(&url)
            .bearer_auth(&t)
            .query(&[("appsecret_proof", p.as_str()), ("appsecret_time", &old)]),
    )
    .await;
    assert_eq!(r.code(), 100, "a proof older than 5 minutes is refused");
}

#[tokio::test]
async fn refresh_gives_a_new_token_on_the_hour_and_keeps_the_old() {
    let sb = start().await;
    let old = sb.issue_token(TokenSpec::system_user_60d().issued_ago(50 * 86_400));
    let old_exp = inspect(&sb, &old).await["expires_at"].as_i64().unwrap();
    let q = |secret: &str, tok: &str| {
        vec![
            ("grant_type".to_string(), "fb_exchange_token".to_string()),
            ("client_id".into(), DEMO_APP_ID.into()),
            ("client_secret".into(), secret.into()),
            ("set_token_expires_in_60_days".into(), "true".into()),
            ("fb_exchange_token".into(), tok.into()),
        ]
    };
    let r = send(
        client()
            .get(format!("{}{V}/oauth/access_token", sb.base_url()))
            .query(&q(DEMO_APP_SECRET, &old)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let j = r.json();
    assert_eq!(j["token_type"], "bearer");
    let new = j["access_token"].as_str().unwrap().to_string();
    assert!(new.starts_with("EAA") && new.len() > 150 && new != old);
    let expires_in = j["expires_in"].as_i64().unwrap();
    assert!(expires_in > 60 * 86_400 - 5 && expires_in <= 60 * 86_400 + 3600);
    let d = inspect(&sb, &new).await;
    assert_eq!(d["expires_at"].as_i64().unwrap() % 3600, 0);
    assert_eq!(d["type"], "SYSTEM_USER");
    let d = inspect(&sb, &old).await;
    assert_eq!(d["is_valid"], true, "the old token keeps working");
    assert_eq!(d["expires_at"].as_i64().unwrap(), old_exp);
    assert_eq!(sb.stats().refreshed, 1);

    let r = send(
        client()
            .get(format!("{}{V}/oauth/access_token", sb.base_url()))
            .query(&q("wrong", &old)),
    )
    .await;
    assert_eq!(r.code(), 1);
    assert_eq!(
        r.json()["error"]["message"],
        "Error validating client secret."
    );

    sb.advance_clock(11 * 86_400);
    let r = send(
        client()
            .get(format!("{}{V}/oauth/access_token", sb.base_url()))
            .query(&q(DEMO_APP_SECRET, &old)),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 190);
    assert_eq!(r.json()["error"]["error_subcode"], 463);
}

#[tokio::test]
async fn mint_and_its_refusals() {
    let sb = start().await;
    let admin = sb.issue_token(TokenSpec::system_user_never());
    let mint = |su: &str, with_proof: bool| {
        let mut form = vec![
            ("business_app", DEMO_APP_ID.to_string()),
            (
                "scope",
                "whatsapp_business_management,whatsapp_business_messaging".into(),
            ),
            ("access_token", admin.clone()),
            ("set_token_expires_in_60_days", "true".into()),
        ];
        if with_proof {
            form.push(("appsecret_proof", proof(&admin)));
        }
        client()
            .post(format!("{}{V}/{su}/access_tokens", sb.base_url()))
            .form(&form)
    };
    let r = send(mint(DEMO_SYSTEM_USER_ID, true)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let j = r.json();
    assert_eq!(j.as_object().unwrap().len(), 1, "only access_token: {j}");
    let t = j["access_token"].as_str().unwrap();
    let d = inspect(&sb, t).await;
    assert_eq!(d["is_valid"], true);
    assert_eq!(d["user_id"], DEMO_SYSTEM_USER_ID);
    assert_eq!(d["expires_at"].as_i64().unwrap() % 3600, 0);
    assert_eq!(sb.stats().minted, 1);

    let r = send(mint(UNINSTALLED_SYSTEM_USER_ID, true)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 100);
    assert!(
        r.json()["error"]["error_user_msg"]
            .as_str()
            .unwrap()
            .contains("not installed")
    );

    let r = send(mint("104169029240000", true)).await;
    assert_eq!(r.code(), 100);
    assert_eq!(r.json()["error"]["error_subcode"], 33);

    let r = send(mint(DEMO_SYSTEM_USER_ID, false)).await;
    assert_eq!(r.code(), 100);
    assert!(r.text.contains("appsecret_proof"));
}

#[tokio::test]
async fn revoke_answers_leniently_then_466() {
    let sb = start().await;
    let caller = sb.issue_token(TokenSpec::system_user_never());
    let victim = sb.issue_token(TokenSpec::system_user_60d());
    let revoke = |proof: Option<String>| {
        let mut q = vec![
            ("client_id", DEMO_APP_ID.to_string()),
            ("client_secret", DEMO_APP_SECRET.to_string()),
            ("revoke_token", victim.clone()),
            ("access_token", caller.clone()),
        ];
        if let Some(p) = proof {
            q.push(("appsecret_proof", p));
        }
        client()
            .get(format!("{}{V}/oauth/revoke", sb.base_url()))
            .query(&q)
    };
    // "Require App Secret" (on for the demo app): a system-user caller needs its proof.
    let r = send(revoke(None)).await;
    assert_eq!(r.code(), 100, "{}", r.text);
    assert!(r.text.contains("appsecret_proof"), "{}", r.text);
    assert_eq!(inspect(&sb, &victim).await["is_valid"], true);
    let r = send(revoke(Some(proof(&caller)))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, "{\"success\":\"true\",}");
    assert!(
        serde_json::from_str::<Value>(&r.text).is_err(),
        "documented invalid JSON"
    );
    let d = inspect(&sb, &victim).await;
    assert_eq!(d["error"]["subcode"], 466);
    assert_eq!(inspect(&sb, &caller).await["is_valid"], true);
    assert_eq!(sb.stats().revoked, 1);
}

#[tokio::test]
async fn phone_and_waba_reads() {
    let sb = start().await;
    let t = sb.issue_token(TokenSpec::system_user_60d());
    let r = get_as(
        &sb,
        &format!("/{DEMO_PHONE_NUMBER_ID}"),
        &t,
        &[("fields", "display_phone_number,verified_name,quality_rating,code_verification_status,name_status")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let j = r.json();
    assert_eq!(j["id"], DEMO_PHONE_NUMBER_ID);
    assert_eq!(j["display_phone_number"], "+1 555-010-4477");
    assert_eq!(j["verified_name"], "BillByteKOT");
    assert_eq!(j["quality_rating"], "GREEN");
    assert!(j["code_verification_status"].is_string() && j["name_status"].is_string());

    // Another WABA's phone: permissions error.
    let r = get_as(&sb, &format!("/{OTHER_PHONE_NUMBER_ID}"), &t, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 200);
    assert_eq!(r.json()["error"]["message"], "(#200) Permissions error");

    // The display number used as the id: unsupported get request, slashes escaped.
    let r = get_as(&sb, "/15550104477", &t, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 100);
    let j = r.json();
    assert_eq!(j["error"]["error_subcode"], 33);
    assert_eq!(j["error"]["type"], "GraphMethodException");
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Unsupported get request. Object with ID '15550104477' does not exist")
    );
    assert!(
        r.text
            .contains(r"https:\/\/developers.facebook.com\/docs\/graph-api"),
        "{}",
        r.text
    );
    // An empty id.
    let r = get_as(&sb, "/", &t, &[]).await;
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Object with ID ''")
    );

    // The WABA id is an object too, so a mix-up shows.
    let r = get_as(&sb, &format!("/{DEMO_WABA_ID}"), &t, &[]).await;
    assert_eq!(r.json()["name"], "BillByteKOT");

    let r = get_as(&sb, &format!("/{DEMO_WABA_ID}/phone_numbers"), &t, &[]).await;
    let j = r.json();
    assert_eq!(j["data"][0]["id"], DEMO_PHONE_NUMBER_ID);
    assert_eq!(j["data"][0]["quality_rating"], "GREEN");
    assert!(
        j["paging"]["cursors"]["before"].is_string() && j["paging"]["cursors"]["after"].is_string()
    );
    let r = get_as(&sb, &format!("/{OTHER_WABA_ID}/phone_numbers"), &t, &[]).await;
    assert_eq!(r.code(), 200);

    // No WhatsApp scope at all: code 10; no WABA at all: code 200.
    let bare = sb.issue_token(
        TokenSpec::system_user_60d()
            .scopes(&["business_management"])
            .wabas(&[]),
    );
    assert_eq!(
        get_as(&sb, &format!("/{DEMO_PHONE_NUMBER_ID}"), &bare, &[])
            .await
            .code(),
        10
    );
    let no_assets = sb.issue_token(TokenSpec::system_user_60d().wabas(&[]));
    assert_eq!(
        get_as(&sb, &format!("/{DEMO_PHONE_NUMBER_ID}"), &no_assets, &[])
            .await
            .code(),
        200
    );

    // A dead token on a classic read: HTTP 400.
    sb.invalidate(&t, 460);
    let r = get_as(&sb, &format!("/{DEMO_PHONE_NUMBER_ID}"), &t, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 190);
    assert_eq!(r.json()["error"]["error_subcode"], 460);
}

#[tokio::test]
async fn messages_send_and_refuse() {
    let sb = start().await;
    let t = sb.issue_token(TokenSpec::system_user_60d());
    let r = send_message(&sb, &t, text_to("15550001111")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let j = r.json();
    assert_eq!(j["messaging_product"], "whatsapp");
    assert_eq!(j["contacts"][0]["input"], "15550001111");
    assert_eq!(j["contacts"][0]["wa_id"], "15550001111");
    let id = j["messages"][0]["id"].as_str().unwrap();
    assert!(id.starts_with("wamid."));
    let template = json!({"messaging_product": "whatsapp", "to": "15550002222", "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}}});
    assert_eq!(send_message(&sb, &t, template).await.status, 200);
    let sent = sb.sent_messages();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].id, id);
    assert_eq!(sent[0].body.as_deref(), Some("Your receipt"));
    assert_eq!(sent[1].template.as_deref(), Some("hello_world"));
    assert_eq!(sb.stats().messages_sent, 2);

    let r = send_message(&sb, &t, text_to("15559999999")).await;
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(j["error"]["code"], 131030);
    assert_eq!(
        j["error"]["message"],
        "(#131030) Recipient phone number not in allowed list"
    );
    assert_eq!(j["error"]["error_data"]["messaging_product"], "whatsapp");
    assert!(
        j["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .starts_with("Recipient phone number not in allowed list")
    );

    let bad = json!({"messaging_product": "whatsapp", "to": "15550001111", "type": "template",
        "template": {"name": "receipt_v9", "language": {"code": "en_US"}}});
    let r = send_message(&sb, &t, bad).await;
    assert_eq!(r.code(), 132001);
    assert_eq!(
        r.json()["error"]["message"],
        "(#132001) Template name does not exist in the translation"
    );

    // A string that is no token at all: the bare envelope, no subcode, no fbtrace_id.
    let r = send_message(&sb, "Bearer my-verify-token", text_to("15550001111")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "Authentication Error", "type": "OAuthException", "code": 190}})
    );

    sb.advance_clock(61 * 86_400);
    let r = send_message(&sb, &t, text_to("15550001111")).await;
    assert_eq!(r.status, 401, "WhatsApp endpoints answer 401 on 190");
    assert_eq!(r.code(), 190);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn batch_evaluates_items_and_caps_at_50() {
    let sb = start().await;
    let good = sb.issue_token(TokenSpec::system_user_60d());
    let items: Vec<Value> = [good.as_str(), "EAAgarbage", good.as_str()]
        .iter()
        .map(|t| json!({"method": "GET", "relative_url": format!("debug_token?input_token={t}")}))
        .collect();
    let r = send(client().post(format!("{}{V}/", sb.base_url())).form(&[
        ("batch", serde_json::to_string(&items).unwrap()),
        ("access_token", app_token()),
    ]))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let arr = r.json();
    let arr = arr.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    for (i, item) in arr.iter().enumerate() {
        assert_eq!(item["code"], 200);
        assert!(item["headers"].is_array());
        let body: Value = serde_json::from_str(item["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["data"]["is_valid"], i != 1);
    }
    assert_eq!(sb.stats().batch_calls, 1);
    assert!(sb.stats().requests_for(Endpoint::DebugToken) >= 3);

    let many: Vec<Value> = (0..51)
        .map(
            |_| json!({"method": "GET", "relative_url": format!("debug_token?input_token={good}")}),
        )
        .collect();
    let r = send(client().post(format!("{}{V}", sb.base_url())).form(&[
        ("batch", serde_json::to_string(&many).unwrap()),
        ("access_token", app_token()),
    ]))
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 100);
    assert_eq!(
        r.json()["error"]["message"],
        "Too many requests in batch message. Maximum batch size is 50"
    );
}

/// A batch of `debug_token` items for `tokens`, sent with the demo app token.
async fn batch_of(sb: &Sandbox, tokens: &[&str], extra: &[(&str, &str)]) -> Resp {
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| json!({"method": "GET", "relative_url": format!("debug_token?input_token={t}")}))
        .collect();
    let mut form = vec![
        ("batch".to_string(), serde_json::to_string(&items).unwrap()),
        ("access_token".to_string(), app_token()),
    ];
    form.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    send(client().post(format!("{}{V}/", sb.base_url())).form(&form)).await
}

fn call_count(r: &Resp) -> i64 {
    let usage: Value = serde_json::from_str(&r.header("x-app-usage").unwrap()).unwrap();
    usage["call_count"].as_i64().unwrap()
}

#[tokio::test]
async fn a_batch_costs_one_latency_and_each_item_counts_toward_usage() {
    let mut s = Scenario::demo();
    s.latency_ms = 100;
    s.usage = UsageModel {
        window_secs: 3600,
        call_limit: 1000,
        enforce: false,
    };
    let sb = start_with(s).await;
    let t = sb.issue_token(TokenSpec::system_user_60d());
    let fifty = vec![t.as_str(); 50];
    let started = std::time::Instant::now();
    let r = batch_of(&sb, &fifty, &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json().as_array().unwrap().len(), 50);
    assert!(took >= Duration::from_millis(100), "{took:?}");
    // 50 items each paying the latency would take 5 s.
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // The batch request and its 50 items: 51 calls of 1000.
    assert_eq!(call_count(&r), 5);
    assert_eq!(sb.app_usage(), 5);
    let r = batch_of(&sb, &fifty, &[]).await;
    assert_eq!(call_count(&r), 10);
    let r = get(
        &sb,
        "/debug_token",
        &[("input_token", &t), ("access_token", &app_token())],
    )
    .await;
    assert_eq!(call_count(&r), 10, "103 calls");
    assert_eq!(sb.stats().requests_for(Endpoint::Batch), 2);
    assert_eq!(sb.stats().requests_for(Endpoint::DebugToken), 101);
    // The window rolls: an hour later only the new call counts.
    sb.advance_clock(3601);
    let r = get(
        &sb,
        "/debug_token",
        &[("input_token", &t), ("access_token", &app_token())],
    )
    .await;
    assert_eq!(call_count(&r), 0);
    assert_eq!(sb.stats().peak_in_flight, 1);
    assert_eq!(sb.concurrency_log(), vec![1, 1, 1, 1]);
}

#[tokio::test]
async fn batch_items_are_rate_limited_one_by_one_and_headers_can_be_left_out() {
    let sb = start().await;
    let t = sb.issue_token(TokenSpec::system_user_60d());
    sb.add_fault(Fault::RateLimit {
        endpoint: Endpoint::DebugToken,
        count: 2,
        code: 613,
        retry_after_secs: 5,
        // Seconds as a gateway would add them; Meta itself sends only minutes.
        retry_after_header: true,
    });
    let r = batch_of(&sb, &[&t, &t, &t], &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let arr = r.json();
    let codes: Vec<i64> = arr
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [400, 400, 200]);
    let first: Value = serde_json::from_str(arr[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(first["error"]["code"], 613);
    let names: Vec<&str> = arr[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Retry-After"), "{names:?}");
    let last: Value = serde_json::from_str(arr[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(last["data"]["is_valid"], true);

    let r = batch_of(&sb, &[&t, "EAAgarbage"], &[("include_headers", "false")]).await;
    for item in r.json().as_array().unwrap() {
        assert_eq!(item["code"], 200);
        assert!(item.get("headers").is_none(), "{item}");
        assert!(item["body"].is_string());
    }
}

#[tokio::test]
async fn common_headers_on_every_answer() {
    let sb = start().await;
    let t = sb.issue_token(TokenSpec::system_user_60d());
    for r in [
        inspect_raw(&sb, &t).await,
        get_as(&sb, "/999", &t, &[]).await,
    ] {
        for h in ["x-fb-trace-id", "x-fb-request-id"] {
            assert!(r.header(h).is_some(), "{h}");
        }
        assert_eq!(r.header("cache-control").unwrap(), "no-store");
        assert_eq!(
            r.header("content-type").unwrap(),
            "application/json; charset=UTF-8"
        );
        let usage: Value = serde_json::from_str(&r.header("x-app-usage").unwrap()).unwrap();
        assert!(usage["call_count"].is_number() && usage["total_cputime"].is_number());
    }
    let r = get_as(&sb, "/999", &t, &[]).await;
    assert!(r.json()["error"]["fbtrace_id"].is_string());
}

async fn inspect_raw(sb: &Sandbox, input: &str) -> Resp {
    get(
        sb,
        "/debug_token",
        &[("input_token", input), ("access_token", &app_token())],
    )
    .await
}

#[tokio::test]
async fn faults_of_every_kind() {
    let sb = start().await;
    let t = sb.issue_token(TokenSpec::system_user_60d());

    sb.add_fault(Fault::server_error(Endpoint::DebugToken, 503, 2).times(2));
    for _ in 0..2 {
        let r = inspect_raw(&sb, &t).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.code(), 2);
        assert_eq!(r.json()["error"]["is_transient"], true);
    }
    assert_eq!(inspect_raw(&sb, &t).await.status, 200, "count ran out");

    sb.add_fault(Fault::html(Endpoint::Any));
    let r = inspect_raw(&sb, &t).await;
    assert_eq!(r.status, 502);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text.contains("502 Bad Gateway"));

    sb.add_fault(Fault::empty(Endpoint::DebugToken));
    let r = inspect_raw(&sb, &t).await;
    assert_eq!((r.status, r.text.as_str()), (200, ""));

    sb.add_fault(Fault::truncated(Endpoint::DebugToken));
    let r = inspect_raw(&sb, &t).await;
    assert_eq!(r.status, 200);
    assert!(!r.text.is_empty() && serde_json::from_str::<Value>(&r.text).is_err());

    sb.add_fault(Fault::rate_limit(Endpoint::Messages, 130429));
    let r = send_message(&sb, &t, text_to("15550001111")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 130429);
    // Meta documents no Retry-After: the wait is only in the usage header, in minutes.
    assert!(r.header("retry-after").is_none());
    let buc: Value = serde_json::from_str(&r.header("x-business-use-case-usage").unwrap()).unwrap();
    assert!(buc[DEMO_WABA_ID][0]["estimated_time_to_regain_access"].is_number());
    sb.add_fault(Fault::rate_limit(Endpoint::Any, 4));
    let r = inspect_raw(&sb, &t).await;
    assert_eq!(r.code(), 4);
    assert_eq!(r.json()["error"]["is_transient"], true);

    sb.add_fault(Fault::auth_exception(Endpoint::Messages));
    let r = send_message(&sb, &t, text_to("15550001111")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), 0);

    // A delay longer than the client's patience makes it time out; the next call is normal.
    sb.add_fault(Fault::delay(Endpoint::DebugToken, 400));
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let e = quick
        .get(format!("{}{V}/debug_token", sb.base_url()))
        .query(&[("input_token", t.as_str()), ("access_token", &app_token())])
        .send()
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(inspect_raw(&sb, &t).await.status, 200);

    sb.add_fault(Fault::html(Endpoint::Phone).times(0));
    for _ in 0..3 {
        assert_eq!(
            get_as(&sb, &format!("/{DEMO_PHONE_NUMBER_ID}"), &t, &[])
                .await
                .status,
            502
        );
    }
    sb.clear_faults();
    assert_eq!(
        get_as(&sb, &format!("/{DEMO_PHONE_NUMBER_ID}"), &t, &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn admin_api_end_to_end() {
    let sb = start().await;
    let r = admin_post(
        &sb,
        "tokens",
        json!({"kind": "SYSTEM_USER", "lifetime": "24h"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.json()["access_token"].as_str().unwrap().to_string();
    let d = inspect(&sb, &t).await;
    assert_eq!(d["is_valid"], true);
    assert_eq!(d["type"], "SYSTEM_USER");

    let state = send(client().get(format!("{}/_sandbox/state", sb.base_url()))).await;
    assert!(!state.text.contains(&t), "state never shows token values");
    assert!(!state.text.contains(DEMO_APP_SECRET), "nor secrets");
    let s = state.json();
    let fp = tokenwarden::secret::Fingerprint::of(&t).to_string();
    assert_eq!(s["tokens"][0]["fingerprint"], fp);
    assert_eq!(s["tokens"][0]["status"], "valid");
    assert!(s["stats"]["requests"]["debug_token"].as_u64().unwrap() >= 1);

    let before = sb.now();
    let r = admin_post(&sb, "clock", json!({"advance_secs": 2 * 86_400})).await;
    assert!(r.json()["now"].as_i64().unwrap() >= before + 2 * 86_400);
    assert_eq!(inspect(&sb, &t).await["error"]["subcode"], 463);
    let r = admin_post(&sb, "clock", json!({"set": before})).await;
    assert!((r.json()["now"].as_i64().unwrap() - before).abs() <= 2);
    assert_eq!(inspect(&sb, &t).await["is_valid"], true);

    let r = admin_post(&sb, "invalidate", json!({"token": t, "subcode": 467})).await;
    assert_eq!(r.status, 200);
    assert_eq!(inspect(&sb, &t).await["error"]["subcode"], 467);
    let r = admin_post(
        &sb,
        "invalidate",
        json!({"token": "EAAnope", "subcode": 460}),
    )
    .await;
    assert_eq!(r.status, 404);

    let r = admin_post(
        &sb,
        "faults",
        json!({"kind": "server_error", "endpoint": "debug_token", "status": 500, "code": 1}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(inspect_raw(&sb, &t).await.status, 500);
    admin_post(&sb, "faults", json!({"kind": "empty", "count": 0})).await;
    let r = send(client().delete(format!("{}/_sandbox/faults", sb.base_url()))).await;
    assert_eq!(r.json()["cleared"], 1);
    let r = admin_post(&sb, "faults", json!({"kind": "meteor"})).await;
    assert_eq!(r.status, 400);

    let t2 = sb.issue_token(TokenSpec::system_user_60d());
    send_message(&sb, &t2, text_to("15550002222")).await;
    let r = send(client().get(format!("{}/_sandbox/messages", sb.base_url()))).await;
    assert_eq!(r.json()[0]["to"], "15550002222");

    let r = admin_post(
        &sb,
        "app_secret",
        json!({"secret": "ffeeddccbbaa99887766554433221100"}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = inspect_raw(&sb, &t2).await;
    assert_eq!(r.code(), 190);

    sb.shutdown().await;
}

#[tokio::test]
async fn scenario_latency_slows_graph_calls_only() {
    let mut s = Scenario::demo();
    s.latency_ms = 120;
    let sb = start_with(s).await;
    let t = sb.issue_token(TokenSpec::system_user_60d());
    let started = std::time::Instant::now();
    assert_eq!(inspect_raw(&sb, &t).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(120));
    let started = std::time::Instant::now();
    send(client().get(format!("{}/_sandbox/state", sb.base_url()))).await;
    assert!(
        started.elapsed() < Duration::from_millis(120),
        "admin calls are not delayed"
    );
}

/// Issue 13: the sandbox is at least as strict as Meta's documentation by default.
#[tokio::test]
async fn strict_by_default_as_metas_documentation() {
    let sb = start().await;
    let good = sb.issue_token(TokenSpec::system_user_60d());

    // Batch: the token only as the top-level form parameter ("Batch requests"), never from
    // an Authorization header of the batch request.
    let items =
        json!([{"method": "GET", "relative_url": format!("debug_token?input_token={good}")}]);
    let r = send(
        client()
            .post(format!("{}{V}/", sb.base_url()))
            .bearer_auth(app_token())
            .form(&[("batch", items.to_string())]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let item = &r.json()[0];
    let body: Value = serde_json::from_str(item["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], 104, "{body}");

    // Revoke: client_id, the caller's app and the token's app must agree.
    let other = sb.issue_token(TokenSpec::system_user_60d().app(OTHER_APP_ID));
    let r = get(
        &sb,
        "/oauth/revoke",
        &[
            ("client_id", DEMO_APP_ID),
            ("client_secret", DEMO_APP_SECRET),
            ("revoke_token", &other),
            ("access_token", &app_token()),
        ],
    )
    .await;
    assert_eq!(r.code(), 100, "{}", r.text);
    let r = get(
        &sb,
        "/debug_token",
        &[
            ("input_token", &other),
            (
                "access_token",
                &format!("{OTHER_APP_ID}|{OTHER_APP_SECRET}"),
            ),
        ],
    )
    .await;
    assert_eq!(r.json()["data"]["is_valid"], true, "not revoked");

    // Mint: only an admin system user of the business, and only known scopes.
    let person = sb.issue_token(TokenSpec::user());
    let mint = |token: &str, scope: &str| {
        client()
            .post(format!(
                "{}{V}/{DEMO_SYSTEM_USER_ID}/access_tokens",
                sb.base_url()
            ))
            .bearer_auth(token)
            .form(&[
                ("business_app", DEMO_APP_ID.to_string()),
                ("scope", scope.to_string()),
                ("appsecret_proof", proof(token)),
                ("set_token_expires_in_60_days", "true".to_string()),
            ])
    };
    let r = send(mint(&person, "whatsapp_business_messaging")).await;
    assert_eq!(r.code(), 200, "a person's token may not mint: {}", r.text);
    let admin = sb.issue_token(TokenSpec::system_user_never());
    let r = send(mint(&admin, "whatsapp_business_messaging,whatsap_typo")).await;
    assert_eq!(r.code(), 100, "{}", r.text);
    assert!(r.text.contains("whatsap_typo"), "{}", r.text);
    assert_eq!(sb.stats().minted, 0);

    // Refresh: never a page token, an app token or a token that never expires.
    let refresh = |tok: &str| {
        client()
            .get(format!("{}{V}/oauth/access_token", sb.base_url()))
            .query(&[
                ("grant_type", "fb_exchange_token"),
                ("client_id", DEMO_APP_ID),
                ("client_secret", DEMO_APP_SECRET),
                ("set_token_expires_in_60_days", "true"),
                ("fb_exchange_token", tok),
            ])
    };
    let page =
        sb.issue_token(TokenSpec::system_user_60d().kind(tokenwarden::sandbox::TokenKind::Page));
    for tok in [page.as_str(), admin.as_str()] {
        let r = send(refresh(tok)).await;
        assert_eq!(r.code(), 100, "{}", r.text);
    }
    assert_eq!(sb.stats().refreshed, 0);
}

/// Issue 13: each quirk can be switched by the scenario file and by the admin API.
#[tokio::test]
async fn quirks_switch_from_the_scenario_file_and_the_admin_api() {
    let s = Scenario::from_toml(
        "[quirks]\nomit_target_ids = true\nrefresh_same_string = true\nrequire_expiring_tokens = true\nomit_debug_fields = [\"issued_at\"]\n[usage]\nenforce = true\ncall_limit = 1000\n",
    )
    .unwrap();
    assert!(s.quirks.omit_target_ids && s.quirks.refresh_same_string);
    assert!(s.quirks.require_expiring_tokens && s.usage.enforce);
    let sb = start_with(s).await;
    let t = sb.issue_token(TokenSpec::system_user_60d());
    let d = inspect(&sb, &t).await;
    assert!(d.get("issued_at").is_none(), "{d}");
    assert!(
        d["granular_scopes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g.get("target_ids").is_none()),
        "{d}"
    );

    let http = client();
    let r = http
        .post(format!("{}/_sandbox/quirks", sb.base_url()))
        .json(&json!({"omit_target_ids": false, "omit_debug_fields": [], "business_throttle_minutes": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d = inspect(&sb, &t).await;
    assert!(
        d.get("issued_at").is_some() && d["granular_scopes"][0]["target_ids"].is_array(),
        "{d}"
    );
    // Throttled for five minutes: the phone read is refused with 80008 and minutes to wait.
    let r = get_as(&sb, &format!("/{DEMO_PHONE_NUMBER_ID}"), &t, &[]).await;
    assert_eq!(r.code(), 80008, "{}", r.text);
    let buc: Value = serde_json::from_str(&r.header("x-business-use-case-usage").unwrap()).unwrap();
    assert_eq!(buc[DEMO_WABA_ID][0]["estimated_time_to_regain_access"], 5);
    assert!(
        r.header("retry-after").is_none(),
        "Meta documents no Retry-After"
    );

    let r = http
        .post(format!("{}/_sandbox/app_settings", sb.base_url()))
        .json(&json!({"require_app_secret": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{}/_sandbox/usage", sb.base_url()))
        .json(&json!({"enforce": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{}/_sandbox/quirks", sb.base_url()))
        .json(&json!({"bogus": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unknown switches are refused");
}

//! A hostile network, on loopback: servers that redirect, echo secrets, send endless bodies,
//! keep paging, hold connections open. Each answers what a captive portal, a broken gateway
//! or an attacker on the path could, and the tests check what tokenwarden does with it
//! (issue 14, points 1, 5, 7, 9, 10, 11, 12).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tokenwarden::graph::{GraphClient, GraphError, Transient};
use tokenwarden::sandbox;
use tokenwarden::secret::Secret;

/// What a hostile server answers to one request.
pub enum Reply {
    /// A complete answer.
    Fixed {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A 200 with a chunked body of `n` bytes (no `Content-Length`, so only reading tells).
    Chunked(usize),
    /// A 200 with a chunked body that never ends.
    Endless,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Fixed {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

/// A request as the server read it: the head (request line and headers) and the body.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: String,
}

/// A loopback HTTP/1.1 server answering every request with `reply(request)`.
pub struct Hostile {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    /// `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The requests it got so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts a server on `ip` (a loopback address) and a free port.
pub async fn serve(ip: &str, reply: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Hostile {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reply = Arc::new(reply);
    let log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (log, reply) = (log.clone(), reply.clone());
            tokio::spawn(async move {
                let _ = answer(stream, &log, &*reply).await;
            });
        }
    });
    Hostile { addr, seen, task }
}

async fn answer(
    mut stream: TcpStream,
    log: &Mutex<Vec<Seen>>,
    reply: &(dyn Fn(&Seen) -> Reply + Send + Sync),
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let seen = Seen {
        head,
        body: String::from_utf8_lossy(&buf[head_end..]).into_owned(),
    };
    log.lock().unwrap().push(seen.clone());
    match reply(&seen) {
        Reply::Fixed {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
        }
        Reply::Chunked(n) => {
            stream.write_all(CHUNKED_HEAD).await?;
            let block = vec![b' '; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(block.len());
                write_chunk(&mut stream, &block[..k]).await?;
                left -= k;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
        Reply::Endless => {
            stream.write_all(CHUNKED_HEAD).await?;
            let block = vec![b' '; 64 * 1024];
            loop {
                write_chunk(&mut stream, &block).await?;
            }
        }
    }
    stream.shutdown().await
}

const CHUNKED_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

async fn write_chunk(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    stream.write_all(data).await?;
    stream.write_all(b"\r\n").await
}

/// Base64 (standard, padded), written out here so the tests do not trust the code they check.
pub fn b64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[((n >> (18 - 6 * k)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `secret` as is, form-encoded and base64: the forms a server may echo.
pub fn forms(secret: &str) -> Vec<String> {
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let b = b64(secret.as_bytes());
    // The padding and the last characters depend on what follows; the head does not.
    vec![secret.to_string(), encoded, b[..b.len() - 4].to_string()]
}

/// Asserts that no form of any of `secrets` is in `text`.
pub fn assert_clean(text: &str, secrets: &[&str], what: &str) {
    for s in secrets {
        for f in forms(s) {
            assert!(
                !text.contains(&f),
                "{what} holds a secret ({f:.12}...):\n{text}"
            );
        }
    }
}

/// A Graph client for `base`, the demo app secret, one attempt.
pub fn graph(base: &str, proxy: Option<&str>) -> GraphClient {
    crate::util::graph_client(
        base,
        sandbox::DEMO_APP_SECRET,
        1,
        Duration::from_secs(5),
        proxy,
    )
}

/// A token shaped like Meta's, unique to the test.
fn token(tag: &str) -> String {
    format!("EAAG{tag}ZCanaryZB{}", "x".repeat(150))
}

// ---------------------------------------------------------------------------------------------
// Point 1: redirects.

#[tokio::test]
async fn graph_never_follows_a_redirect_and_names_only_its_host() {
    // Where the redirect points: another loopback address, which must receive nothing.
    let thief = serve("127.0.0.2", |_| Reply::json(200, r#"{"data":{}}"#)).await;
    let location = format!("http://{}/steal?session=abc", thief.addr);
    for status in [301u16, 302, 303, 307, 308] {
        let location = location.clone();
        let portal = serve("127.0.0.1", move |_| Reply::Fixed {
            status,
            headers: vec![("Location".into(), location.clone())],
            body: Vec::new(),
        })
        .await;
        let c = graph(&portal.url(), None);
        let t = Secret::new(token("redir"));
        let errors = [
            c.debug_token(&t).await.map(drop),
            c.refresh_token(&t).await.map(drop),
            c.revoke_token(&t, &t).await,
            c.mint_token(&t, "4242", true, &[]).await.map(drop),
            c.phone_number(&t, "106540352242922").await.map(drop),
        ];
        for e in errors {
            let e = e.expect_err("a redirect is an error");
            assert!(
                matches!(&e, GraphError::Transient(Transient::Redirected { status: s, host }) if *s == status && host == "127.0.0.2"),
                "{e:?}"
            );
            let text = format!("{e} {e:?}");
            assert!(text.contains("127.0.0.2"), "{text}");
            assert!(
                !text.contains("steal") && !text.contains("session"),
                "{text}"
            );
        }
        assert_eq!(portal.requests().len(), 5);
    }
    assert!(
        thief.requests().is_empty(),
        "a redirect was followed: {:?}",
        thief.requests()
    );
}

// ---------------------------------------------------------------------------------------------
// Point 10: body caps.

#[tokio::test]
async fn graph_stops_reading_an_endless_or_huge_body_at_the_cap() {
    for (what, reply) in [
        ("endless", 0usize),
        ("100 MB", 100 * 1024 * 1024),
        ("just over the cap", tokenwarden::graph::MAX_BODY + 1),
    ] {
        let server = serve("127.0.0.1", move |_| {
            if reply == 0 {
                Reply::Endless
            } else {
                Reply::Chunked(reply)
            }
        })
        .await;
        let c = graph(&server.url(), None);
        let started = Instant::now();
        let e = c
            .debug_token(&Secret::new(token("cap")))
            .await
            .expect_err(what);
        assert!(
            matches!(
                e,
                GraphError::Transient(Transient::TooLarge { status: 200, limit }) if limit == tokenwarden::graph::MAX_BODY
            ),
            "{what}: {e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{what}: {:?}",
            started.elapsed()
        );
    }
    // Below the cap, a body is read (and, here, is not Graph JSON).
    let server = serve("127.0.0.1", |_| Reply::Chunked(1024 * 1024)).await;
    let e = graph(&server.url(), None)
        .debug_token(&Secret::new(token("cap")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, GraphError::Transient(Transient::BadBody { .. })),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Point 5: Graph error text that echoes the request.

/// An error envelope that quotes everything the request carried: its request line (the query
/// with `input_token`, `client_secret`, ...), its `Authorization` header, and its body, as is,
/// in the user message, and in the details.
fn echo_envelope(seen: &Seen, status: u16, code: i64) -> Reply {
    let auth = seen
        .head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .unwrap_or("")
        .to_string();
    let request_line = seen.head.lines().next().unwrap_or("").to_string();
    let decoded: String = url::form_urlencoded::parse(request_line.as_bytes())
        .map(|(k, v)| format!("{k}={v} "))
        .collect();
    let envelope = serde_json::json!({"error": {
        "message": format!("Invalid request {request_line} with {auth}"),
        "type": "OAuthException",
        "code": code,
        "error_user_title": format!("Body {}", seen.body),
        "error_user_msg": format!("decoded {decoded} / {}", b64(auth.as_bytes())),
        "error_data": {"details": format!("auth in base64 {}", b64(auth.split_once(' ').map_or("", |p| p.1).trim().as_bytes()))},
        "fbtrace_id": format!("{}", b64(seen.body.as_bytes())),
    }});
    Reply::json(status, &envelope.to_string())
}

#[tokio::test]
async fn graph_errors_that_echo_the_request_carry_no_secret() {
    let admin = token("admin");
    let managed = token("managed");
    let secrets = [managed.as_str(), admin.as_str(), sandbox::DEMO_APP_SECRET];
    for (status, code) in [(400u16, 100i64), (400, 190), (500, 2), (403, 200), (429, 4)] {
        let server = serve("127.0.0.1", move |seen| echo_envelope(seen, status, code)).await;
        let c = graph(&server.url(), None);
        let t = Secret::new(managed.clone());
        let a = Secret::new(admin.clone());
        let errors = [
            c.debug_token(&t).await.map(drop),
            c.refresh_token(&t).await.map(drop),
            c.revoke_token(&t, &a).await,
            c.mint_token(&a, "4242", true, &[]).await.map(drop),
            c.phone_number(&t, "106540352242922").await.map(drop),
            c.send_text(&t, "106540352242922", "15550001111", "hi")
                .await
                .map(drop),
        ];
        let mut text = String::new();
        for e in errors {
            let e = e.expect_err("an error envelope");
            text.push_str(&format!("{e}\n{e:?}\n"));
        }
        // The echo did arrive (the server quoted the request), and was scrubbed.
        assert!(text.contains("[redacted]"), "{text}");
        assert_clean(&text, &secrets, "a Graph error");
        // The batch path: every item of a batch answers with the same echo.
        let results = c.debug_tokens(&[t.clone(), a.clone()], 1).await;
        let batch: String = results.iter().map(|r| format!("{r:?}\n")).collect();
        assert_clean(&batch, &secrets, "a batched Graph error");
    }
}

#[tokio::test]
async fn debug_token_data_error_that_echoes_the_token_is_scrubbed() {
    let managed = token("dataerr");
    let server = serve("127.0.0.1", |seen| {
        let line = seen.head.lines().next().unwrap_or("").to_string();
        let body = serde_json::json!({"data": {
            "is_valid": false, "scopes": [],
            "error": {"code": 190, "subcode": 463, "message": format!("Session expired for {line}")}
        }});
        Reply::json(200, &body.to_string())
    })
    .await;
    let info = graph(&server.url(), None)
        .debug_token(&Secret::new(managed.clone()))
        .await
        .unwrap();
    let text = format!("{info:?} {}", info.invalid_reason().unwrap());
    assert!(text.contains("[redacted]"), "{text}");
    assert_clean(
        &text,
        &[managed.as_str(), sandbox::DEMO_APP_SECRET],
        "debug_token's data.error",
    );
    assert_eq!(info.invalid_reason().unwrap().subcode, Some(463));
}

// ---------------------------------------------------------------------------------------------
// Point 9: proxies.

#[tokio::test]
async fn meta_proxy_carries_graph_requests_but_never_loopback_ones() {
    // An http proxy on loopback that refuses every tunnel: what it is asked is the proof.
    let proxy = serve("127.0.0.1", |_| Reply::Fixed {
        status: 403,
        headers: Vec::new(),
        body: Vec::new(),
    })
    .await;
    let proxy_url = proxy.url();
    let c = graph("https://graph.facebook.com/", Some(&proxy_url));
    let e = c
        .debug_token(&Secret::new(token("proxy")))
        .await
        .unwrap_err();
    assert!(matches!(e, GraphError::Transient(_)), "{e:?}");
    let asked = proxy.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].head.starts_with("CONNECT graph.facebook.com:443 "),
        "{asked:?}"
    );
    // The tunnel request names the host only: the secrets travel inside TLS.
    assert_clean(
        &format!("{asked:?}"),
        &[&token("proxy"), sandbox::DEMO_APP_SECRET],
        "the proxy's view",
    );

    // A loopback Graph (a sandbox) is reached directly even with a proxy configured.
    let sb = crate::util::sandbox().await;
    let t = sb.issue_token(sandbox::TokenSpec::system_user_60d());
    let info = graph(&sb.base_url(), Some(&proxy_url))
        .debug_token(&Secret::new(t))
        .await
        .unwrap();
    assert!(info.valid());
    assert_eq!(proxy.requests().len(), 1, "loopback went through the proxy");
}

/// `http_proxy`, `https_proxy` and `all_proxy` (both cases) pointing at `proxy`.
fn proxy_env(proxy: &str) -> Vec<(&'static str, String)> {
    [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ]
    .into_iter()
    .map(|k| (k, proxy.to_string()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_from_the_environment_are_ignored_by_graph_webhooks_and_verify_urls() {
    use crate::util::{TokenEntry, Workspace, tw};
    // A proxy that would see everything: it answers 502, so using it fails the run.
    let proxy = serve("127.0.0.1", |_| Reply::Fixed {
        status: 502,
        headers: Vec::new(),
        body: Vec::new(),
    })
    .await;
    let hook = serve("127.0.0.1", |_| Reply::json(200, "{}")).await;
    let sb = crate::util::sandbox().await;
    let old = sb.issue_token(sandbox::TokenSpec::system_user_60d().issued_ago(45 * 86_400));
    let admin = sb.issue_token(sandbox::TokenSpec::system_user_never());
    let secrets = tempfile::tempdir().unwrap();
    let admin_file = secrets.path().join("admin");
    crate::util::write_private(&admin_file, &admin);
    let hook_file = secrets.path().join("hook");
    crate::util::write_private(&hook_file, "whsec_proxy_test_1234");
    let extra = format!(
        r#"source = "mint"
mint = {{ system_user_id = "{su}", admin_token = {{ file = "{admin}" }} }}
revoke_after = "0s"
[[token.target]]
name = "pos"
kind = "webhook"
url = "{hook}hook"
secret = {{ file = "{hook_secret}" }}
verify_url = "{hook}health"
"#,
        su = sandbox::DEMO_SYSTEM_USER_ID,
        admin = admin_file.display(),
        hook = hook.url(),
        hook_secret = hook_file.display(),
    );
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: &extra,
        }],
    );
    let env = proxy_env(&proxy.url());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = tw(&ws.config, &["check"], &env, None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &env, None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let heads: Vec<String> = hook.requests().into_iter().map(|s| s.head).collect();
    assert!(
        heads.iter().any(|h| h.starts_with("POST /hook "))
            && heads.iter().any(|h| h.starts_with("GET /health ")),
        "{heads:?}"
    );
    assert!(
        proxy.requests().is_empty(),
        "the environment's proxy was used: {:?}",
        proxy.requests()
    );
}

#[tokio::test]
async fn webhook_redirect_is_refused_naming_only_the_host_and_an_endless_answer_is_not_read() {
    use tokenwarden::target::TargetError;
    use tokenwarden::target::webhook::{Delivery, Webhook};
    let thief = serve("127.0.0.2", |_| Reply::json(200, "{}")).await;
    let location = format!("https://{}/steal?session=abc", thief.addr);
    let portal = serve("127.0.0.1", move |_| Reply::Fixed {
        status: 307,
        headers: vec![("Location".into(), location.clone())],
        body: Vec::new(),
    })
    .await;
    let t = Secret::new(token("hook"));
    let d = Delivery {
        token_name: "prod",
        token: &t,
        expires_at: None,
        event: tokenwarden::target::PushEvent::Rotation,
    };
    let hook = |url: String| {
        Webhook::new(url.parse().unwrap(), Secret::new("whsec_hostile_1234"))
            .unwrap()
            .with_timeout(Duration::from_secs(5))
            .with_retries(1, Duration::from_millis(5))
    };
    let e = hook(format!("{}hook", portal.url()))
        .push(&d, jiff::Timestamp::now())
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(matches!(e, TargetError::Refused(_)), "{text}");
    assert!(text.contains("307") && text.contains("127.0.0.2"), "{text}");
    assert!(
        !text.contains("steal") && !text.contains("session"),
        "{text}"
    );
    assert!(thief.requests().is_empty());

    // A 200 whose body never ends: the status is the answer, the body is never read.
    let endless = serve("127.0.0.1", |_| Reply::Endless).await;
    let started = Instant::now();
    hook(format!("{}hook", endless.url()))
        .push(&d, jiff::Timestamp::now())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ---------------------------------------------------------------------------------------------
// Point 7: an SMTP server that echoes the AUTH argument.

/// A loopback SMTP server that offers `mechanism` and answers every login with a 535 that
/// quotes what the client sent. Returns its port.
async fn echoing_smtp(mechanism: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncBufReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(r).lines();
                w.write_all(b"220 hostile ESMTP\r\n").await.ok()?;
                let mut said = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        format!("250-hostile\r\n250 AUTH {mechanism}\r\n")
                    } else if upper == "AUTH LOGIN" {
                        "334 VXNlcm5hbWU6\r\n".to_string()
                    } else if upper.starts_with("AUTH PLAIN ") || said.len() == 1 {
                        // PLAIN's one line, or LOGIN's password after its user name.
                        said.push(line.clone());
                        format!("535 5.7.8 authentication failed for {}\r\n", said.join(" "))
                    } else if upper == "QUIT" {
                        w.write_all(b"221 bye\r\n").await.ok()?;
                        return Some(());
                    } else if said.is_empty() && mechanism == "LOGIN" {
                        // LOGIN's user name, after `334 Username:`.
                        said.push(line.clone());
                        "334 UGFzc3dvcmQ6\r\n".to_string()
                    } else {
                        "250 ok\r\n".to_string()
                    };
                    w.write_all(reply.as_bytes()).await.ok()?;
                }
                Some(())
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn an_smtp_server_echoing_auth_never_puts_the_password_in_an_error() {
    use tokenwarden::notify::{Email, EmailConfig, Mailer};
    const PASSWORD: &str = "smtp-Canary-pass-42";
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("smtp-password");
    crate::util::write_private(&pw, PASSWORD);
    for mechanism in ["PLAIN", "LOGIN"] {
        let (port, task) = echoing_smtp(mechanism).await;
        #[derive(serde::Deserialize)]
        struct File {
            email: EmailConfig,
        }
        let cfg = toml::from_str::<File>(&format!(
            "[email]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             username = \"mailer@example.com\"\npassword = {{ file = \"{}\" }}\n\
             from = \"tw@example.com\"\nto = [\"oncall@example.com\"]\ntimeout = \"5s\"",
            pw.display()
        ))
        .unwrap()
        .email;
        let mailer = Mailer::new(&cfg).unwrap();
        let e = mailer
            .send(&Email {
                id: "w-1".into(),
                token: "prod".into(),
                subject: "s".into(),
                text: "t".into(),
                html: "<p>h</p>".into(),
            })
            .await
            .unwrap_err();
        let text = format!("{e}\n{e:?}");
        // The server did echo the argument, and it was scrubbed.
        assert!(text.contains("authentication failed for"), "{text}");
        assert!(text.contains("[redacted]"), "{mechanism}: {text}");
        let plain = b64(format!("\0mailer@example.com\0{PASSWORD}").as_bytes());
        assert!(
            !text.contains(&plain[12..plain.len() - 4]),
            "{mechanism}: {text}"
        );
        assert_clean(&text, &[PASSWORD], "an SMTP error");
        task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Point 11: a flood of idle connections to /metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_metrics_connections_do_not_starve_the_daemon() {
    use crate::util::{TokenEntry, Workspace};
    const FILES: u32 = 128;
    const IDLE: usize = 300;
    let sb = crate::util::sandbox().await;
    let token = sb.issue_token(crate::util::prod_spec());
    let mail = tempfile::tempdir().unwrap();
    let port = crate::util::free_port();
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &token)],
        &format!(
            "attempts = 1\ntimeout = \"2s\"\n[schedule]\ncron = \"* * * * * *\"\n\
             [email]\nkind = \"folder\"\npath = \"{}\"\nfrom = \"tw@example.com\"\nto = [\"oncall@example.com\"]\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            mail.path().display()
        ),
    );
    let state = ws.config.parent().unwrap().join("state.json");
    // The daemon under a small descriptor limit, as a shared host's might be.
    let mut child = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            &format!("ulimit -n {FILES} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_tokenwarden"),
            "--config",
            ws.config.to_str().unwrap(),
            "run",
        ])
        .env("TOKENWARDEN_LOG", "tokenwarden=info,warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"prod\"")) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no first check"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let emails = || std::fs::read_dir(mail.path()).map_or(0, |d| d.count());
    assert_eq!(emails(), 0, "a healthy token: no email yet");

    // More idle connections than the daemon has descriptors, held open and silent. Once the
    // kernel's queue is full, further connects wait in SYN retries: they are attempted all at
    // once, and held for as long as the test runs.
    let (release, held) = tokio::sync::watch::channel(false);
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..IDLE {
        let (mut held, connected) = (held.clone(), connected.clone());
        tokio::spawn(async move {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
                connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = held.wait_for(|done| *done).await;
                drop(stream);
            }
        });
    }
    let opened = Instant::now();
    // The kernel queues a couple of hundred beyond what is accepted; more than the daemon has
    // descriptors is the point.
    while connected.load(std::sync::atomic::Ordering::SeqCst) <= FILES as usize + 16 {
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "{connected:?} connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The token dies: the next checks must record it and queue the email.
    sb.invalidate(&token, 460);
    let started = Instant::now();
    while !(std::fs::read_to_string(&state).is_ok_and(|s| s.contains("invalid")) && emails() > 0) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the daemon did not record the dead token or queue its email with {IDLE} idle connections open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once the flood goes away, /metrics answers again at once (the closed connections still
    // in the backlog are accepted and finished without waiting for their header timeout).
    release.send(true).unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let scrape = tokio::time::timeout(
        Duration::from_secs(5),
        client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send(),
    )
    .await
    .expect("a scrape soon after the flood")
    .unwrap();
    assert!(scrape.status().is_success());

    crate::util::signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}\n{err}");
    assert!(!err.contains("Too many open files"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Point 12: a Secrets Manager endpoint that never stops paging (moto cannot be made to).

/// A Secrets Manager endpoint (AWS JSON 1.1) whose list answers always carry a `NextToken`:
/// the same one when `repeat`, a new one each time otherwise.
async fn paging_forever(repeat: bool) -> Hostile {
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    serve("127.0.0.1", move |seen| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let next = if repeat {
            "same-token".to_string()
        } else {
            format!("token-{i}")
        };
        let target = seen
            .head
            .lines()
            .find_map(|l| l.strip_prefix("x-amz-target: "))
            .unwrap_or("")
            .to_string();
        let body = if target.ends_with("ListSecrets") {
            serde_json::json!({"SecretList": [{"Name": format!("cust/m{i}"), "ARN": format!("arn:aws:secretsmanager:us-east-1:1:secret:cust/m{i}"),
                "Tags": [{"Key": "tokenwarden", "Value": "managed"}]}], "NextToken": next})
        } else {
            serde_json::json!({"Versions": [{"VersionId": format!("v{i}"), "VersionStages": ["AWSPREVIOUS"]}],
                "Name": "prod", "ARN": "arn:aws:secretsmanager:us-east-1:1:secret:prod", "NextToken": next})
        };
        Reply::Fixed {
            status: 200,
            headers: vec![(
                "Content-Type".into(),
                "application/x-amz-json-1.1".into(),
            )],
            body: body.to_string().into_bytes(),
        }
    })
    .await
}

#[tokio::test]
async fn secret_versions_paging_stops_on_a_repeated_token_and_after_its_bound() {
    use aws_config::BehaviorVersion;
    use aws_sdk_secretsmanager::config::Credentials;
    use tokenwarden::store::aws::{AwsStore, MAX_VERSION_PAGES};
    use tokenwarden::store::{SecretStore, StoreError};
    for repeat in [true, false] {
        let server = paging_forever(repeat).await;
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{}", server.addr))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
            .load()
            .await;
        let store = AwsStore::from_sdk_config(&conf, "prod", None);
        let started = Instant::now();
        let e = tokio::time::timeout(Duration::from_secs(20), store.previous())
            .await
            .expect("paging stopped")
            .unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
        let calls = server.requests().len();
        if repeat {
            assert!(e.to_string().contains("already sent"), "{e}");
            assert_eq!(calls, 2, "{e}");
        } else {
            assert!(e.to_string().contains("pages"), "{e}");
            assert_eq!(calls, MAX_VERSION_PAGES, "{e}");
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_listing_that_pages_forever_stops_and_the_tokens_are_still_checked() {
    use crate::util::{AWS_ENV, TokenEntry, Workspace, tw};
    let sb = crate::util::sandbox().await;
    let token = sb.issue_token(crate::util::prod_spec());
    for repeat in [true, false] {
        let server = paging_forever(repeat).await;
        let ws = Workspace::new(&sb, &[TokenEntry::new("prod", &token)]);
        let mut text = std::fs::read_to_string(&ws.config).unwrap();
        text.push_str(&format!(
            "\n[[group]]\nname = \"cust\"\ndiscover = {{ kind = \"aws\", name_prefix = \"cust/\", region = \"us-east-1\", endpoint = \"http://{}\" }}\n",
            server.addr
        ));
        crate::util::write_private(&ws.config, &text);
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            tw(&ws.config, &["check"], &AWS_ENV, None),
        )
        .await
        .expect("check finished");
        let calls = server.requests().len();
        assert!(r.all().contains("stopped paging"), "repeat {repeat}: {r:?}");
        if repeat {
            assert_eq!(calls, 2, "{r:?}");
        } else {
            assert_eq!(calls, tokenwarden::store::aws::MAX_LIST_PAGES, "{r:?}");
        }
        // The [[token]] is still checked.
        assert!(r.stdout.contains("prod"), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}

#[tokio::test]
async fn a_huge_or_endless_secrets_manager_answer_stops_at_the_cap() {
    use aws_config::BehaviorVersion;
    use aws_sdk_secretsmanager::config::Credentials;
    use tokenwarden::store::aws::AwsStore;
    use tokenwarden::store::{SecretStore, StoreError};
    // The 100 MB case first: without a cap it is read whole (and then fails to parse), which
    // a run without the fix survives; the endless one would be read for the whole timeout.
    for size in [100 * 1024 * 1024, 0] {
        let server = serve("127.0.0.1", move |_| {
            if size == 0 {
                Reply::Endless
            } else {
                Reply::Chunked(size)
            }
        })
        .await;
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{}", server.addr))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
            .load()
            .await;
        let store = AwsStore::from_sdk_config(&conf, "prod", None);
        let started = Instant::now();
        let e = tokio::time::timeout(Duration::from_secs(10), store.current())
            .await
            .expect("the read stopped")
            .unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{size}: {e:?}");
        assert!(e.to_string().contains("larger than 4 MiB"), "{size}: {e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Point 5, the exec side: a command that prints the token encoded.

#[tokio::test]
async fn a_command_printing_the_token_in_base64_or_url_encoded_is_scrubbed() {
    use tokenwarden::target::exec;
    let t = format!("{}/+=x", token("exec"));
    let secret = Secret::new(t.clone());
    let e = exec::run(
        &[
            "/bin/sh".to_string(),
            "-c".to_string(),
            "t=$(cat); printf 'b64 %s url %s\\n' \"$(printf '%s' \"$t\" | base64 -w0)\" \
             \"$(printf '%s' \"$t\" | sed 's#/#%2F#g; s#+#%2B#g; s#=#%3D#g')\" >&2; exit 3"
                .to_string(),
        ],
        Some(&secret),
        &[],
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    let text = format!("{e}\n{e:?}");
    // Both forms were printed (on the line the error quotes), and both scrubbed.
    assert!(
        text.contains("b64 [redacted]") && text.contains("url [redacted]"),
        "{text}"
    );
    assert_clean(&text, &[&t], "an exec error");
}

#[tokio::test]
async fn batch_items_that_echo_their_tokens_carry_no_secret() {
    // A batch answer whose every item is an error quoting that item's request.
    let server = serve("127.0.0.1", |seen| {
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(seen.body.as_bytes())
                .into_owned()
                .collect();
        let items: Vec<serde_json::Value> =
            serde_json::from_str(form.get("batch").map_or("[]", String::as_str))
                .unwrap_or_default();
        let answers: Vec<serde_json::Value> = items
            .iter()
            .map(|item| {
                let url = item["relative_url"].as_str().unwrap_or("");
                let envelope = serde_json::json!({"error": {
                    "message": format!("Malformed access token in {url}"),
                    "type": "OAuthException", "code": 190,
                    "error_user_msg": b64(url.as_bytes()),
                }});
                serde_json::json!({"code": 400, "body": envelope.to_string()})
            })
            .collect();
        Reply::json(200, &serde_json::Value::Array(answers).to_string())
    })
    .await;
    let tokens: Vec<String> = (0..3).map(|i| token(&format!("batch{i}"))).collect();
    let secrets: Vec<Secret> = tokens.iter().map(|t| Secret::new(t.clone())).collect();
    let results = graph(&server.url(), None).debug_tokens(&secrets, 1).await;
    let text: String = results.iter().map(|r| format!("{r:?}\n")).collect();
    assert_eq!(results.len(), 3);
    // Each item's echo arrived (as the item's error), and was scrubbed.
    assert_eq!(text.matches("Malformed access token").count(), 3, "{text}");
    assert!(text.contains("[redacted]"), "{text}");
    let all: Vec<&str> = tokens
        .iter()
        .map(String::as_str)
        .chain([sandbox::DEMO_APP_SECRET])
        .collect();
    assert_clean(&text, &all, "batched Graph errors");
}

//! A real Alertmanager (Debian's `prometheus-alertmanager`, installed by `tests/run.sh`) on
//! loopback, routing every alert to a webhook receiver this process serves, so a test sees both
//! what Alertmanager holds (`/api/v2/alerts`) and what it notifies (firing, then resolved).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;

/// One Alertmanager process and its webhook receiver; both stop when dropped.
pub struct Alertmanager {
    child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    notified: Arc<Mutex<Vec<serde_json::Value>>>,
    _dir: tempfile::TempDir,
    _hook: tokio::task::JoinHandle<()>,
}

impl Alertmanager {
    /// Starts Alertmanager (no clustering: an HA pair is two of these, as tokenwarden sends
    /// to each) with a route that notifies the webhook within a second, resolved included.
    pub async fn start() -> Alertmanager {
        Alertmanager::start_at(super::free_port()).await
    }

    /// As [`Alertmanager::start`], on `port` (a test that starts it after tokenwarden has
    /// already tried to reach it).
    pub async fn start_at(port: u16) -> Alertmanager {
        let notified = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_addr: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |State(n): State<Arc<Mutex<Vec<serde_json::Value>>>>,
                     body: axum::body::Bytes| async move {
                        if let Ok(v) = serde_json::from_slice(&body) {
                            n.lock().unwrap().push(v);
                        }
                        "ok"
                    },
                ),
            )
            .with_state(notified.clone());
        let hook = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: hook\n  group_by: ['alertname', 'token', 'severity']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook_addr}/hook\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager is installed by tests/run.sh");
        let url = format!("http://127.0.0.1:{port}");
        let am = Alertmanager {
            child,
            url,
            notified,
            _dir: dir,
            _hook: hook,
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/-/ready", am.url)).send().await
                && r.status().is_success()
            {
                return am;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Alertmanager did not become ready at {}", am.url);
    }

    /// The alerts Alertmanager holds now (`GET /api/v2/alerts`: the active ones).
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let r = reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await
            .unwrap();
        assert!(r.status().is_success(), "{r:?}");
        r.json::<Vec<serde_json::Value>>().await.unwrap()
    }

    /// Waits until Alertmanager holds an alert whose labels include `labels`; returns it.
    pub async fn wait_alert(&self, labels: &[(&str, &str)]) -> serde_json::Value {
        for _ in 0..100 {
            if let Some(a) = self.alerts().await.into_iter().find(|a| {
                labels
                    .iter()
                    .all(|(k, v)| a["labels"][*k].as_str() == Some(*v))
            }) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no alert with {labels:?}: {:#?}", self.alerts().await);
    }

    /// The webhook notifications so far (Alertmanager's `status` is `firing` or `resolved`).
    pub fn notified(&self) -> Vec<serde_json::Value> {
        self.notified.lock().unwrap().clone()
    }

    /// Waits until a notification with `status` names an alert with `labels`.
    pub async fn wait_notified(&self, status: &str, labels: &[(&str, &str)]) {
        for _ in 0..150 {
            let hit = self.notified().iter().any(|n| {
                n["status"] == status
                    && n["alerts"].as_array().is_some_and(|list| {
                        list.iter().any(|a| {
                            labels
                                .iter()
                                .all(|(k, v)| a["labels"][*k].as_str() == Some(*v))
                        })
                    })
            });
            if hit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no {status} notification for {labels:?}: {:#?}",
            self.notified()
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

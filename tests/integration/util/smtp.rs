//! Mail for the tests: the aiosmtpd sink (`tests/support/smtp_sink.py`) and what it received, a
//! relay that is down, and the test CA for TLS.

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::{spawn_server, support_script, write_private};

/// How a [`SmtpSink`] behaves (see `tests/support/smtp_sink.py`).
#[derive(Debug, Default, Clone)]
pub struct SinkOpts {
    /// Listen on this port instead of a free one (a server that "comes back").
    pub port: Option<u16>,
    /// STARTTLS, required, with this certificate and key.
    pub starttls: Option<(PathBuf, PathBuf)>,
    /// Implicit TLS with this certificate and key.
    pub implicit: Option<(PathBuf, PathBuf)>,
    /// Require AUTH with this user and password.
    pub auth: Option<(String, String)>,
    /// Answer every DATA with this code.
    pub reject: Option<u16>,
    /// Refuse every AUTH with a 535 that quotes what the client sent (base64 and plain).
    pub echo_auth: bool,
}

/// An aiosmtpd server on loopback that stores what it accepts; killed on drop.
pub struct SmtpSink {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Where messages are stored.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts the server and waits until it listens.
    pub fn start(opts: &SinkOpts) -> SmtpSink {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut cmd = support_script("smtp_sink.py");
        cmd.arg(&dir);
        if let Some(p) = opts.port {
            cmd.arg("--port").arg(p.to_string());
        }
        if let Some((c, k)) = &opts.starttls {
            cmd.arg("--starttls").arg(c).arg(k);
        }
        if let Some((c, k)) = &opts.implicit {
            cmd.arg("--implicit").arg(c).arg(k);
        }
        if let Some((u, p)) = &opts.auth {
            cmd.arg("--auth").arg(u).arg(p);
        }
        if let Some(code) = opts.reject {
            cmd.arg("--reject").arg(code.to_string());
        }
        if opts.echo_auth {
            cmd.arg("--echo-auth");
        }
        let (child, port) = spawn_server(&mut cmd);
        SmtpSink {
            child,
            port,
            dir,
            _tmp: tmp,
        }
    }

    /// Every stored message in arrival order: (envelope JSON, raw message).
    pub fn messages(&self) -> Vec<(serde_json::Value, String)> {
        let mut out = Vec::new();
        for n in 1.. {
            let Ok(meta) = std::fs::read_to_string(self.dir.join(format!("{n}.json"))) else {
                break;
            };
            let raw = std::fs::read_to_string(self.dir.join(format!("{n}.eml"))).unwrap();
            out.push((serde_json::from_str(&meta).unwrap(), raw));
        }
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // Closing stdin would do; killing is immediate and frees the port before the next test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Subject of every message, unfolded (long headers wrap onto indented lines).
pub fn subjects(sink: &SmtpSink) -> Vec<String> {
    sink.messages()
        .iter()
        .map(|(_, raw)| {
            let mut lines = raw.lines().skip_while(|l| !l.starts_with("Subject: "));
            let mut subject = lines
                .next()
                .unwrap_or("")
                .trim_start_matches("Subject: ")
                .to_string();
            for cont in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
                subject.push(' ');
                subject.push_str(cont.trim());
            }
            subject
        })
        .collect()
}

/// Every `Message-ID` the sink received, in arrival order.
pub fn message_ids(sink: &SmtpSink) -> Vec<String> {
    sink.messages()
        .iter()
        .filter_map(|(_, raw)| {
            raw.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .map(|l| l.to_string())
        })
        .collect()
}

/// An SMTP relay that is down: its port stays held, so no other test's server can take it, and
/// every connection is closed before the greeting (a relay stopped behind its load balancer).
/// It fails fast, unlike a port that never answers, so a day of retries costs no real time.
pub struct SmtpDown {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl SmtpDown {
    /// Binds a free loopback port and starts closing every connection to it.
    pub fn start() -> SmtpDown {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        SmtpDown {
            port,
            connections,
            stop,
            thread,
        }
    }

    /// Frees the port (the listener goes with the thread) and says how many connections came.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        self.connections.load(Ordering::SeqCst)
    }
}

/// A test CA and a server certificate it signed, as PEM files.
pub struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA certificate: the root a client must trust.
    pub ca_cert: PathBuf,
    /// The leaf certificate (CA:FALSE, serverAuth, SANs localhost and 127.0.0.1).
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

/// The shared test CA, made once per test binary. rustls refuses a self-signed server
/// certificate (`CaUsedAsEndEntity`), hence a CA and a separate leaf.
pub fn test_ca() -> &'static TestCa {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tokenwarden test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        let cert = dir.path().join("leaf.pem");
        let key = dir.path().join("leaf.key");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        std::fs::write(&cert, leaf_cert.pem()).unwrap();
        write_private(&key, &leaf_key.serialize_pem());
        TestCa {
            _dir: dir,
            ca_cert: ca_path,
            cert,
            key,
        }
    })
}

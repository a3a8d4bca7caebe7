//! HTTP and TCP stand-ins: an in-process HTTP server ([`HttpServer`]), a webhook receiver
//! ([`WebhookReceiver`]), an HTTPS server with a throw-away CA ([`HttpsServer`],
//! [`TestCerts`]), a target that never answers ([`BlackHole`]) and a proxy that cuts or delays
//! a link ([`FaultProxy`]). They stand for the APIs the agents probe, the services they call
//! and the network between agents; none of them runs an agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::process::{free_port, run};
use super::wait::wait_for;

/// An HTTP server in this process on a free port.
pub struct HttpServer {
    /// Its address.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl HttpServer {
    /// Serves `router` until dropped.
    pub async fn start(router: axum::Router) -> anyhow::Result<HttpServer> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), router).await
    }

    /// Serves `router` on `addr` (a stopped server's, to bring it back) until dropped.
    pub async fn start_at(addr: SocketAddr, router: axum::Router) -> anyhow::Result<HttpServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(HttpServer { addr, shutdown })
    }

    /// Base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A webhook receiver that keeps every JSON body POSTed to `/hook`, in arrival order.
pub struct WebhookReceiver {
    server: HttpServer,
    events: Arc<Mutex<Vec<Value>>>,
}

impl WebhookReceiver {
    /// Starts it on a free port.
    pub async fn start() -> anyhow::Result<WebhookReceiver> {
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = events.clone();
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let store = store.clone();
                async move {
                    if let Ok(v) = serde_json::from_str::<Value>(&body) {
                        store.lock().unwrap().push(v);
                    }
                    "ok"
                }
            }),
        );
        Ok(WebhookReceiver {
            server: HttpServer::start(router).await?,
            events,
        })
    }

    /// The URL the agents post to.
    pub fn url(&self) -> String {
        self.server.url("/hook")
    }

    /// What it received so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }
}

/// The JSON body of a GET answered within 800 ms, or `None` (for conditions waited on).
pub async fn get_json(url: &str) -> Option<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .ok()?;
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    serde_json::from_str(&text).ok()
}

/// A server that accepts TCP connections and never answers: a black-holed target.
pub struct BlackHole {
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    /// Starts accepting.
    pub async fn start() -> anyhow::Result<BlackHole> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Ok(BlackHole { addr, task })
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A throw-away CA and a server certificate for 127.0.0.1 and localhost, made with `openssl`.
pub struct TestCerts {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM), signed by the CA.
    pub cert: PathBuf,
    /// The server key (PEM).
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCerts {
    /// Generates the CA and the server certificate (P-256 keys, valid one day).
    pub fn generate() -> anyhow::Result<TestCerts> {
        let dir = tempfile::Builder::new()
            .prefix("failoverd-certs-")
            .tempdir()?;
        let p = |name: &str| dir.path().join(name).display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=failoverd test CA",
                ])
                .args(ec)
                .args(["-keyout", &p("ca.key"), "-out", &p("ca.pem")]),
            "openssl: CA",
        )?;
        run(
            Command::new("openssl")
                .args(["req", "-subj", "/CN=127.0.0.1"])
                .args(ec)
                .args(["-keyout", &p("server.key"), "-out", &p("server.csr")]),
            "openssl: server key",
        )?;
        std::fs::write(
            dir.path().join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )?;
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "1", "-in", &p("server.csr")])
                .args([
                    "-CA",
                    &p("ca.pem"),
                    "-CAkey",
                    &p("ca.key"),
                    "-CAcreateserial",
                ])
                .args(["-extfile", &p("san.ext"), "-out", &p("server.pem")]),
            "openssl: sign",
        )?;
        Ok(TestCerts {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            _dir: dir,
        })
    }
}

/// An HTTPS server (python3's http.server behind `ssl`) answering 200 `ok` on every path.
pub struct HttpsServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl HttpsServer {
    /// Starts it with the given certificate and waits until it accepts connections.
    pub async fn start(certs: &TestCerts) -> anyhow::Result<HttpsServer> {
        let port = free_port();
        let script = r#"
import http.server, ssl, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Ok)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;
        let child = Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .arg(&certs.cert)
            .arg(&certs.key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start python3")?;
        let server = HttpsServer { port, child };
        wait_for(
            "the HTTPS server to listen",
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        )
        .await?;
        Ok(server)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// A TCP proxy that can cut a link (it closes open connections and drops new ones) and can
/// delay every byte by a fixed time in each direction, standing in for `tc netem` where the
/// kernel has no netem.
pub struct FaultProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies connections to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<FaultProxy> {
        Self::start_with_delay(target, Duration::ZERO).await
    }

    /// Proxies connections to `target`, delaying each direction by `delay`.
    pub async fn start_with_delay(
        target: SocketAddr,
        delay: Duration,
    ) -> anyhow::Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (cut2, conns2) = (cut.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the link is cut
                }
                let handle = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    if delay.is_zero() {
                        // Ends when either side closes or the link is cut (task aborted).
                        let _copied =
                            tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        delayed_copy(in_read, out_write, delay),
                        delayed_copy(out_read, in_write, delay)
                    );
                });
                conns2.lock().unwrap().push(handle);
            }
        });
        Ok(FaultProxy {
            addr,
            cut,
            conns,
            task,
        })
    }

    /// Cuts the link: open connections close, new ones are dropped.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for handle in self.conns.lock().unwrap().drain(..) {
            handle.abort();
        }
    }

    /// Heals the link.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; reading goes on
/// meanwhile, so the link keeps its bandwidth and only gains latency.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // The reader ended: pass the close on.
        let _closed = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        for handle in self.conns.lock().unwrap().drain(..) {
            handle.abort();
        }
    }
}

//! TLS for the tests: a certificate authority made at test time (rcgen),
//! server certificates it signs, written as PEM files the binaries read,
//! and a TLS-terminating proxy to put in front of the local RabbitMQ (which
//! listens in plain text) so that `amqps://` is tested against the real
//! broker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use keyward_core::http::{CallError, HttpClient};
use serde_json::Value;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A test CA and the PEM files of what it signed, in a temporary directory
/// that lives as long as this value.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// A new CA named `name` (its certificate in `{name}-ca.pem`).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Keyward test CA {name}"));
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Self { dir, ca }
    }

    /// The CA's certificate (PEM), what clients are given to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (DNS names or IP addresses),
    /// written as `{file}.pem` and `{file}.key`.
    pub fn server(&self, file: &str, names: &[&str]) -> ServerFiles {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).expect("server params");
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("server certificate");
        let files = ServerFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl ServerFiles {
    /// The server configuration the binaries would make of these files.
    pub fn server_config(&self) -> rustls::ServerConfig {
        keyward_core::tls::ServerTlsSettings {
            tls_cert: Some(self.cert.clone()),
            tls_key: Some(self.key.clone()),
        }
        .server_config()
        .expect("server TLS config")
        .expect("TLS configured")
    }
}

/// An HTTPS client of one server (`base`, e.g. `https://localhost:port`)
/// that trusts `ca` only: the client the ingestor itself uses.
pub struct Https(HttpClient);

/// How a request proves who it is.
pub enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

impl Https {
    pub fn new(base: &str, ca: &Path) -> Self {
        let base = url::Url::parse(base).expect("base URL");
        Self(
            HttpClient::new(&base, "test CA", Some(ca), Duration::from_secs(10))
                .expect("HTTPS client"),
        )
    }

    /// The status and the JSON answer (`null` when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> Result<(u16, Value), CallError> {
        use base64::Engine;
        let value = match auth {
            Auth::None => None,
            Auth::Basic(user, password) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
        };
        let headers: Vec<_> = value
            .iter()
            .map(|v| (http::header::AUTHORIZATION, v.as_str()))
            .collect();
        let body = body.map(|b| serde_json::to_vec(&b).expect("JSON body"));
        let (status, bytes) = self.0.call(method, path, &headers, body).await?;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status.as_u16(), json))
    }

    /// Whether `GET path` answers 200.
    pub async fn ok(&self, path: &str) -> bool {
        self.call(Method::GET, path, Auth::None, None)
            .await
            .is_ok_and(|(status, _)| status == 200)
    }
}

/// Terminates TLS with `files`' certificate and forwards the plain bytes
/// to `upstream`: the local RabbitMQ as an `amqps://` broker.
pub struct TlsProxy {
    pub addr: SocketAddr,
    accept: AbortHandle,
}

impl TlsProxy {
    pub async fn start(files: &ServerFiles, upstream: SocketAddr) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(files.server_config()));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS proxy");
        let addr = listener.local_addr().expect("TLS proxy address");
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate just goes away.
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self {
            addr,
            accept: accept.abort_handle(),
        }
    }

    /// An `amqps://` URL through this proxy, by host name `host`.
    pub fn amqps_url(&self, host: &str) -> String {
        format!("amqps://guest:guest@{host}:{}/%2f", self.addr.port())
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

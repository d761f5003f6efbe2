//! TLS with rustls and its `ring` provider (nothing to install, no
//! OpenSSL): the server side of the API and the reference ingestor
//! (`KEYWARD_TLS_CERT`, `KEYWARD_TLS_KEY`) and the client side of an
//! ingestor's calls to the API (`https://`, the system's roots or
//! `KEYWARD_API_CA_FILE`). The broker's and the database's TLS are their
//! client libraries' (`amqps://` with `KEYWARD_AMQP_CA_FILE`; PostgreSQL's
//! `sslmode=` and `sslrootcert=` in the URL).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up. Messages name the setting and the file,
/// never a key's content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting}: {} holds no {what} in PEM form", path.display())]
    Empty {
        setting: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{setting}: {} is not valid PEM ({reason})", path.display())]
    NotPem {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("KEYWARD_TLS_CERT and KEYWARD_TLS_KEY do not make a usable pair: {0}")]
    Pair(rustls::Error),
    #[error("no usable root certificates: {0}")]
    Roots(String),
}

/// The crypto provider every TLS setting here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process's default provider, for client libraries that
/// build their own rustls configuration (the broker's, the database's).
/// Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `KEYWARD_TLS_CERT` and `KEYWARD_TLS_KEY`: serve HTTPS instead of HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ServerTlsSettings {
    /// PEM file with the server's certificate chain (leaf first); with
    /// `--tls-key`, the server speaks HTTPS only.
    #[arg(long = "tls-cert", env = "KEYWARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "tls-key", env = "KEYWARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServerTlsSettings {
    /// The server's TLS configuration, or `None` for plain HTTP. HTTP/1.1
    /// is the one protocol offered (ALPN), as served.
    pub fn server_config(&self) -> Result<Option<rustls::ServerConfig>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let chain = read_certificates("KEYWARD_TLS_CERT", cert, "certificate")?;
        let key = read_private_key(key)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Pair)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Pair)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(config))
    }

    /// Says once, at start, that a server others can reach speaks plain
    /// HTTP: what crosses the network (API keys, passwords) is then
    /// readable on the way.
    pub fn warn_if_plain(&self, listen: SocketAddr, binary: &str) {
        if self.tls_cert.is_none() && !listen.ip().is_loopback() {
            tracing::warn!(
                %listen,
                "{binary} serves plain HTTP on a non-loopback address: API keys and passwords \
                 cross the network readable; set KEYWARD_TLS_CERT and KEYWARD_TLS_KEY"
            );
        }
    }
}

/// A client configuration that trusts the certificates of `ca_file` only
/// (a private CA), or the system's roots when there is none.
pub fn client_config(
    setting: &'static str,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certificates(setting, path, "certificate")? {
                roots.add(cert).map_err(|e| TlsError::NotPem {
                    setting,
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "the system has none".to_owned(), ToString::to_string);
                return Err(TlsError::Roots(format!(
                    "{why}; install the system's CA certificates or set {setting}"
                )));
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| TlsError::Roots(e.to_string()))
}

/// A client configuration that trusts nothing: for a client that speaks
/// plain HTTP only, so that no roots need to be found.
pub fn no_roots_config() -> Result<rustls::ClientConfig, TlsError> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .map_err(|e| TlsError::Roots(e.to_string()))
}

/// Reads a PEM file's text, for a client library that takes the CA's PEM
/// itself (the broker's).
pub fn read_pem_text(setting: &'static str, path: &Path) -> Result<String, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TlsError::Unreadable {
        setting,
        path: path.to_owned(),
        source,
    })?;
    // Parsed here too, so that a wrong file fails at start with its name.
    read_certificates(setting, path, "certificate")?;
    Ok(text)
}

fn read_certificates(
    setting: &'static str,
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Unreadable {
        setting,
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            setting,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            setting,
            path: path.to_owned(),
            what,
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const SETTING: &str = "KEYWARD_TLS_KEY";
    let bytes = crate::secret::SecretBytes::new(std::fs::read(path).map_err(|source| {
        TlsError::Unreadable {
            setting: SETTING,
            path: path.to_owned(),
            source,
        }
    })?);
    PrivateKeyDer::from_pem_slice(bytes.expose()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            setting: SETTING,
            path: path.to_owned(),
            what: "private key",
        },
        other => TlsError::NotPem {
            setting: SETTING,
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

//! TLS termination with rustls (ring provider) from PEM files, offering HTTP/2 and HTTP/1.1
//! over ALPN.

use crate::config::TlsFiles;
use crate::GatewayError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, GatewayError> {
    let tls_error = |what: &str, detail: String| GatewayError::Tls(format!("{what}: {detail}"));
    let certs = CertificateDer::pem_file_iter(&files.cert_chain)
        .map_err(|error| tls_error(&files.cert_chain.display().to_string(), error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| tls_error(&files.cert_chain.display().to_string(), error.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error(
            &files.cert_chain.display().to_string(),
            "no certificate in the file".to_string(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .map_err(|error| tls_error(&files.private_key.display().to_string(), error.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| tls_error("protocol versions", error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| tls_error("certificate and key", error.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

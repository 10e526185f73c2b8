//! TLS for the listener: the operator's certificate, or a generated local CA and server
//! certificate that clients can trust with `--ca-bundle`.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// Files of a generated local certificate authority and server certificate.
#[derive(Debug, Clone)]
pub struct GeneratedTls {
    /// The CA certificate clients should trust (`aws --ca-bundle FILE`).
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Builds an acceptor from PEM files (certificate chain and private key).
pub fn acceptor_from_pem(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|_| TlsError::Pem {
            path: cert_file.to_owned(),
            what: "certificate",
        })?
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem {
            path: cert_file.to_owned(),
            what: "certificate",
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_file.to_owned(),
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|_| TlsError::Pem {
        path: key_file.to_owned(),
        what: "private key",
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A freshly generated local CA and a server certificate it signed, in PEM.
pub struct GeneratedCertificate {
    /// The CA certificate clients trust.
    pub ca_pem: String,
    /// The server certificate followed by the CA certificate (the chain to serve).
    pub chain_pem: String,
    pub key_pem: kura_crypto::SecretBytes,
}

/// Generates a local CA and a server certificate for `localhost`, `127.0.0.1`, `::1`
/// and `extra_names`. Used for kura's own listener and for the databases it runs.
pub fn generate_certificate(
    common_name: &str,
    extra_names: &[String],
) -> Result<GeneratedCertificate, TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{common_name} local CA"));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(extra_names.iter().cloned());
    let server_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut server_params = rcgen::CertificateParams::new(names).map_err(generate)?;
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .map_err(generate)?;
    Ok(GeneratedCertificate {
        ca_pem: ca_cert.pem(),
        chain_pem: format!("{}{}", server_cert.pem(), ca_cert.pem()),
        key_pem: kura_crypto::SecretBytes::new(server_key.serialize_pem().into_bytes()),
    })
}

/// Returns the generated CA and server certificate in `dir`, creating them on first use.
/// The server certificate names `localhost`, `127.0.0.1`, `::1` and `extra_names`.
pub fn ensure_generated(dir: &Path, extra_names: &[String]) -> Result<GeneratedTls, TlsError> {
    let files = GeneratedTls {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
    };
    if files.ca_file.exists() && files.cert_file.exists() && files.key_file.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let generated = generate_certificate("kura", extra_names)?;
    write_file(&files.ca_file, generated.ca_pem.as_bytes(), 0o644)?;
    write_file(&files.cert_file, generated.chain_pem.as_bytes(), 0o644)?;
    write_file(&files.key_file, generated.key_pem.expose(), 0o600)?;
    Ok(files)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    let io_error = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

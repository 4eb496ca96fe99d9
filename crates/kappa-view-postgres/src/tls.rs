//! TLS to the server, with rustls: PostgreSQL's `SSLRequest`, the `sslmode`
//! checks with libpq's meanings, and the server certificate's hash for SCRAM
//! channel binding (`tls-server-end-point`, RFC 5929).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme, StreamOwned,
};
use sha2::Digest;

use crate::config::SslMode;
use crate::error::{Cause, PgError};

/// A TLS connection to the server.
pub(crate) type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// PostgreSQL's `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// What asking the server for TLS gave.
pub(crate) enum Negotiated {
    /// TLS is up.
    Tls(Box<TlsStream>),
    /// The server has no TLS, and the mode allows going on without.
    Plain(TcpStream),
}

/// Asks the server at `host` for TLS over `tcp` and, if it agrees, makes the
/// handshake, checking its certificate as `mode` says.
pub(crate) fn negotiate(
    mut tcp: TcpStream,
    host: &str,
    mode: SslMode,
    root_cert: Option<&Path>,
    at: &str,
) -> Result<Negotiated, PgError> {
    let tls_err = |(reason, source): Failure| PgError::Tls { at: at.to_owned(), reason, source };
    if !ask_for_tls(&mut tcp, mode, at)? {
        return Ok(Negotiated::Plain(tcp));
    }
    let config = client_config(mode, root_cert).map_err(tls_err)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        tls_err((format!("{host:?} is not a host name TLS can check: {e}"), Some(Arc::new(e))))
    })?;
    let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| tls_err(caused(e)))?;
    let mut stream = StreamOwned::new(conn, tcp);
    // The handshake now, so that a refused certificate is this error and not
    // a failed login later.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).map_err(|e| {
            // rustls reports its own errors inside an io::Error: the
            // rustls::Error is the cause then, else the I/O error.
            let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).cloned();
            tls_err(match tls {
                Some(tls) => (format!("the TLS handshake failed: {tls}"), Some(Arc::new(tls))),
                None => (format!("the TLS handshake failed: {e}"), Some(Arc::new(e))),
            })
        })?;
    }
    Ok(Negotiated::Tls(Box::new(stream)))
}

/// Sends `SSLRequest` and reads the answer: `true` if the server starts TLS,
/// `false` if it has none and `mode` allows going on without (`prefer`).
pub(crate) fn ask_for_tls<S: Read + Write>(stream: &mut S, mode: SslMode, at: &str) -> Result<bool, PgError> {
    let tls_err = |reason: String| PgError::tls(at, reason);
    let io_err = |e: io::Error| PgError::connection_io(at, e);
    stream.write_all(&SSL_REQUEST).map_err(io_err)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).map_err(io_err)?;
    match answer[0] {
        b'S' => Ok(true),
        b'N' if mode == SslMode::Prefer => Ok(false),
        b'N' => {
            Err(tls_err(format!("the server does not offer TLS, and sslmode={} requires it", mode.as_str())))
        }
        // An error message from a server too old for SSLRequest, or garbage.
        other => Err(tls_err(format!("the server answered the TLS request with byte {other:#04x}"))),
    }
}

/// Why TLS could not be set up: the message, and the error that caused it.
type Failure = (String, Option<Cause>);

/// The failure `e` caused: its message, and `e` as the cause.
fn caused(e: impl std::error::Error + Send + Sync + 'static) -> Failure {
    (e.to_string(), Some(Arc::new(e)))
}

/// The rustls configuration for `mode`.
fn client_config(mode: SslMode, root_cert: Option<&Path>) -> Result<ClientConfig, Failure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(caused)?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        // libpq: encrypt, check nothing about the certificate.
        SslMode::Prefer | SslMode::Require => Arc::new(Lenient { provider, chain: None }),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = load_roots(root_cert)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(caused)?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(Lenient { provider, chain: Some(webpki) })
            }
        }
        SslMode::Disable => return Err(("sslmode=disable asks for no TLS".into(), None)),
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

/// The trusted certificates: `sslrootcert`, else libpq's default
/// `~/.postgresql/root.crt`.
fn load_roots(root_cert: Option<&Path>) -> Result<RootCertStore, Failure> {
    let default;
    let path = match root_cert {
        Some(p) => p,
        None => {
            let home = std::env::var_os("HOME").ok_or_else(|| {
                ("no sslrootcert given and no HOME to find ~/.postgresql/root.crt".to_string(), None)
            })?;
            default = Path::new(&home).join(".postgresql/root.crt");
            &default
        }
    };
    let unreadable = |e: rustls::pki_types::pem::Error| -> Failure {
        let reason = format!("cannot read the root certificates in {}: {e}", path.display());
        (reason, Some(Arc::new(e)))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err((format!("{} holds no usable certificate", path.display()), None));
    }
    Ok(roots)
}

/// The certificate checks of `sslmode=require` and `prefer` (`chain: None`:
/// any certificate, as libpq) and of `verify-ca` (a chain to a trusted root,
/// whatever name the certificate is for). The handshake's signatures are
/// checked either way.
#[derive(Debug)]
struct Lenient {
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The `tls-server-end-point` channel binding data of the server's
/// certificate: its hash with the hash function of its signature algorithm
/// (SHA-256 for MD5, SHA-1 and SHA-256; RFC 5929 section 4.1). `None` for a
/// certificate signed otherwise (Ed25519, say), for which the binding is
/// not defined, or one that does not parse.
pub(crate) fn server_end_point(stream: &TlsStream) -> Option<Vec<u8>> {
    let cert = stream.conn.peer_certificates()?.first()?;
    let der = cert.as_ref();
    Some(match signature_hash(der)? {
        SigHash::Sha256 => sha2::Sha256::digest(der).to_vec(),
        SigHash::Sha384 => sha2::Sha384::digest(der).to_vec(),
        SigHash::Sha512 => sha2::Sha512::digest(der).to_vec(),
    })
}

enum SigHash {
    Sha256,
    Sha384,
    Sha512,
}

/// The hash of a certificate's signature algorithm, from its DER:
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm
/// AlgorithmIdentifier, signatureValue }`.
fn signature_hash(der: &[u8]) -> Option<SigHash> {
    let (_, cert) = der_item(der, 0x30)?;
    let (after_tbs, _tbs) = der_item(cert, 0x30)?;
    let (_, alg) = der_item(after_tbs, 0x30)?;
    let (_, oid) = der_item(alg, 0x06)?;
    // The OIDs' content bytes.
    const MD5_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
    const SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const SHA1_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const SHA256_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const SHA384_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const SHA512_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    match oid {
        MD5_RSA | SHA1_RSA | SHA256_RSA | SHA1_ECDSA | SHA256_ECDSA => Some(SigHash::Sha256),
        SHA384_RSA | SHA384_ECDSA => Some(SigHash::Sha384),
        SHA512_RSA | SHA512_ECDSA => Some(SigHash::Sha512),
        _ => None,
    }
}

/// The DER item at the start of `bytes` with tag `tag`: (what follows it, its
/// contents).
fn der_item(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = bytes.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((&rest[len..], &rest[..len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_items_never_read_past_the_end() {
        assert!(der_item(&[], 0x30).is_none());
        assert!(der_item(&[0x30], 0x30).is_none());
        assert!(der_item(&[0x30, 0x05, 1, 2], 0x30).is_none());
        assert!(der_item(&[0x30, 0x85, 1, 1, 1, 1, 1], 0x30).is_none());
        assert!(der_item(&[0x31, 0x00], 0x30).is_none());
        assert_eq!(der_item(&[0x30, 0x02, 7, 8, 9], 0x30), Some((&[9u8][..], &[7u8, 8][..])));
        assert_eq!(der_item(&[0x30, 0x81, 0x01, 7, 9], 0x30), Some((&[9u8][..], &[7u8][..])));
        assert!(signature_hash(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_none());
    }
}

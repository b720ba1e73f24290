//! TLS for the farm's QUIC connections: pinned self-signed certificates on
//! both sides, no certificate authorities.
//!
//! - The coordinator makes a self-signed certificate on first start; its
//!   **fingerprint** (blake3 of the certificate's DER) is what a worker's
//!   owner pins. A worker refuses any other certificate, whatever it claims.
//! - A worker presents a self-signed certificate for its own ed25519 key
//!   (mutual TLS). The TLS handshake proves it holds the key; the
//!   coordinator names the worker by the key ([`identity_of`]), so a worker
//!   keeps its identity (and its reputation) across restarts and new
//!   certificates. Whether it may join is the join token's business.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tessera_protocol::wire::ALPN;

use super::NetError;

/// A key and a self-signed certificate for it.
#[derive(Clone)]
pub struct Identity {
    /// PKCS#8 DER of the ed25519 private key.
    pub key_der: Vec<u8>,
    pub cert_der: Vec<u8>,
}

impl Identity {
    /// A new ed25519 key with a self-signed certificate for `name`.
    pub fn generate(name: &str) -> Result<Identity, NetError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(tls_err)?;
        Identity::with_key(key, name)
    }

    /// A fresh certificate for a stored key (PKCS#8 DER).
    pub fn from_key(key_der: &[u8], name: &str) -> Result<Identity, NetError> {
        let pkcs8 = PrivatePkcs8KeyDer::from(key_der.to_vec());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).map_err(tls_err)?;
        Identity::with_key(key, name)
    }

    /// The identity kept in `path` (PKCS#8 DER, owner-only), made on first use.
    pub fn load_or_create(path: &Path, name: &str) -> Result<Identity, NetError> {
        match std::fs::read(path) {
            Ok(der) => Identity::from_key(&der, name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity::generate(name)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| NetError::io(dir, e))?;
                }
                write_private(path, &id.key_der)?;
                Ok(id)
            }
            Err(e) => Err(NetError::io(path, e)),
        }
    }

    /// The coordinator's identity: key and certificate both kept in `dir`
    /// (`coordinator.key`, owner-only, and `coordinator.crt`), so the
    /// fingerprint workers pinned stays the same across restarts. Returns
    /// whether it was made now.
    pub fn load_or_create_pinned(dir: &Path, name: &str) -> Result<(Identity, bool), NetError> {
        let (key_path, cert_path) = (dir.join("coordinator.key"), dir.join("coordinator.crt"));
        match (std::fs::read(&key_path), std::fs::read(&cert_path)) {
            (Ok(key_der), Ok(cert_der)) => {
                identity_of(&cert_der)?;
                Ok((Identity { key_der, cert_der }, false))
            }
            (Err(e), _) | (_, Err(e)) if e.kind() != std::io::ErrorKind::NotFound => Err(NetError::io(&key_path, e)),
            (Ok(_), Err(_)) => Err(NetError::Tls(format!(
                "{} exists but {} does not: restore it, or remove both to make a new identity (workers must then pin the new fingerprint)",
                key_path.display(),
                cert_path.display()
            ))),
            _ => {
                std::fs::create_dir_all(dir).map_err(|e| NetError::io(dir, e))?;
                let id = Identity::generate(name)?;
                write_private(&key_path, &id.key_der)?;
                std::fs::write(&cert_path, &id.cert_der).map_err(|e| NetError::io(&cert_path, e))?;
                Ok((id, true))
            }
        }
    }

    fn with_key(key: rcgen::KeyPair, name: &str) -> Result<Identity, NetError> {
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(tls_err)?;
        let cert = params.self_signed(&key).map_err(tls_err)?;
        Ok(Identity { key_der: key.serialize_der(), cert_der: cert.der().to_vec() })
    }

    /// The certificate's fingerprint: what workers pin.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Who this key is to a coordinator (see [`identity_of`]).
    pub fn identity(&self) -> Result<String, NetError> {
        identity_of(&self.cert_der)
    }

    fn rustls_parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![CertificateDer::from(self.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
        )
    }
}

/// Writes a secret readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| NetError::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| NetError::io(path, e))
}

/// blake3 of a certificate's DER, hex: the pin.
pub fn fingerprint(cert_der: &[u8]) -> String {
    blake3::hash(cert_der).to_hex().to_string()
}

/// A worker's identity: blake3 of its certificate's public key (the DER
/// SubjectPublicKeyInfo), hex. Stable across certificates for one key.
pub fn identity_of(cert_der: &[u8]) -> Result<String, NetError> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| NetError::Tls(format!("bad certificate: {e:?}")))?;
    Ok(blake3::hash(cert.subject_public_key_info().as_ref()).to_hex().to_string())
}

/// Accepts a pin as 64 hex digits, optionally prefixed `blake3:`, any case.
pub fn parse_pin(pin: &str) -> Result<String, NetError> {
    tessera_protocol::proof::parse_fingerprint(pin).map_err(|e| NetError::Tls(e.to_string()))
}

/// Pins separated by commas (a farm of several coordinators, each with its
/// certificate): each as [`parse_pin`]; at least one.
pub fn parse_pins(pins: &str) -> Result<Vec<String>, NetError> {
    let pins: Vec<String> =
        pins.split(',').map(str::trim).filter(|p| !p.is_empty()).map(parse_pin).collect::<Result<_, _>>()?;
    if pins.is_empty() {
        return Err(NetError::Tls("no pin given (the coordinator prints its fingerprint at start)".into()));
    }
    Ok(pins)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> NetError {
    NetError::Tls(e.to_string())
}

/// The coordinator's QUIC server config: its certificate, and a client
/// certificate required from every worker.
pub fn server_config(identity: &Identity, transport: quinn::TransportConfig) -> Result<quinn::ServerConfig, NetError> {
    let provider = provider();
    let (certs, key) = identity.rustls_parts();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(AnyClientKey { provider }))
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A worker's QUIC client config: accepts only the pinned certificates
/// (`pin`: one, or several separated by commas), and presents the worker's
/// own.
pub fn client_config(
    identity: &Identity,
    pin: &str,
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, NetError> {
    let provider = provider();
    let (certs, key) = identity.rustls_parts();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pins: parse_pins(pin)?, provider }))
        .with_client_auth_cert(certs, key)
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The peer's identity on an established connection (coordinator side).
pub fn peer_identity(conn: &quinn::Connection) -> Result<String, NetError> {
    Ok(peer_key(conn)?.0)
}

/// The peer's identity and its raw ed25519 public key (which checks the
/// signatures of its tile commitments).
pub fn peer_key(conn: &quinn::Connection) -> Result<(String, [u8; 32]), NetError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| NetError::Tls("the worker presented no certificate".into()))?;
    let first = certs.first().ok_or_else(|| NetError::Tls("the worker presented no certificate".into()))?;
    let cert = webpki::EndEntityCert::try_from(first).map_err(|e| NetError::Tls(format!("bad certificate: {e:?}")))?;
    let spki = cert.subject_public_key_info();
    let key = tessera_protocol::proof::ed25519_key_of_spki(spki.as_ref())
        .ok_or_else(|| NetError::Tls("the worker's key is not ed25519".into()))?;
    Ok((blake3::hash(spki.as_ref()).to_hex().to_string(), key))
}

/// The raw ed25519 public key of a certificate (DER): how a frame
/// manifest's verifier ties the coordinator's signing key to the
/// certificate (and so to the fingerprint) it pins.
pub fn ed25519_key_of_cert(cert_der: &[u8]) -> Result<[u8; 32], NetError> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| NetError::Tls(format!("bad certificate: {e:?}")))?;
    tessera_protocol::proof::ed25519_key_of_spki(cert.subject_public_key_info().as_ref())
        .ok_or_else(|| NetError::Tls("the certificate's key is not ed25519".into()))
}

/// The part both verifiers share: handshake signatures are checked with the
/// provider's algorithms as rustls would (only *which* certificate is
/// acceptable differs). Expands to the three trait methods.
macro_rules! handshake_signatures_as_usual {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    };
}

/// Server side of the pin: the certificate must be one of those pinned. Its
/// name and dates do not matter (it is self-signed and pinned by hash); the
/// handshake signature is checked as usual, which proves the server holds
/// the key.
#[derive(Debug)]
struct Pinned {
    pins: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity);
        if self.pins.contains(&seen) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the coordinator's certificate {seen} does not match the pinned {}",
                self.pins.join(", ")
            )))
        }
    }

    handshake_signatures_as_usual!();
}

/// Client side: any worker key may connect (the join token decides who
/// stays); the handshake proves possession of the key it presents.
#[derive(Debug)]
struct AnyClientKey {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientKey {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Parsable, with a key we can name.
        identity_of(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures_as_usual!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_one_or_several_fingerprints() {
        let (a, b) = ("ab".repeat(32), "CD".repeat(32));
        assert_eq!(parse_pins(&a).unwrap(), vec![a.clone()]);
        assert_eq!(parse_pins(&format!(" {a} , blake3:{b},")).unwrap(), vec![a.clone(), "cd".repeat(32)]);
        assert!(parse_pins("").is_err());
        assert!(parse_pins(",").is_err());
        let err = parse_pins(&format!("{a},nope")).unwrap_err().to_string();
        assert!(err.contains("\"nope\""), "{err}");
    }
}

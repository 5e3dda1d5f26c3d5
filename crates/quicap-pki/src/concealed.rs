//! A node's proof of identity made inside an established TLS connection, in the shape
//! of RFC 9729 (the Concealed HTTP Authentication Scheme): what lets a node in
//! camouflage mode stay an ordinary web server during the TLS handshake (no
//! CertificateRequest, no private CA) and still know, before it carries a packet, which
//! node is on the other end.
//!
//! ```text
//!  prover                                            verifier
//!  context = scheme | key ID | public key |          (same context, from the
//!            "https" | host | port | realm            credentials and its origin)
//!  exported = TLS exporter(EXPORTER_LABEL, context, 48 bytes)   <- same TLS session
//!  p = sign(64 spaces | "HTTP Concealed Authentication" | 0 | exported[..32])
//!  v = exported[32..]
//!  Authorization: Concealed k=.., a=.., p=.., s=.., v=..  ──>  v matches, p verifies
//!                                                             with a, a is k's key
//! ```
//!
//! The exporter value is secret to the two ends of one TLS session, so a proof recorded
//! on one connection proves nothing on another. QUICAP's key ID (`k`) is the node's
//! DER certificate and the public key (`a`) its DER SubjectPublicKeyInfo: a verifier
//! needs no registry of keys, only the network CA, and then checks the certificate as
//! for any other connection (chain, expiry, revocation, authorizations). The signature
//! scheme (`s`) is the TLS SignatureScheme of the certificate's key and must match it.
//!
//! No IO here: the caller exports the keying material from its TLS connection (quinn's
//! `export_keying_material`, rustls' for TLS over TCP) and passes it in.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::cert::NodeCert;
use crate::signature::{self, NodeKey};
use crate::PkiError;

/// The TLS exporter label of RFC 9729.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-HTTP-Concealed-Authentication";
/// Bytes to export: 32 are signed, 16 are sent back as the verification value.
pub const EXPORTER_LEN: usize = 48;
/// The authentication scheme's name in `Authorization` and `Authentication-Info`.
pub const SCHEME: &str = "Concealed";
/// Headers longer than this are refused before any parsing (a certificate and a
/// signature base64-encoded take under 2 KiB).
pub const MAX_HEADER: usize = 8192;

const SIGNATURE_CONTEXT: &[u8] = b"HTTP Concealed Authentication";
const SIGNED_LEN: usize = 32;

/// What the proof is bound to besides the TLS session: the origin the request went to,
/// and a realm that tells the two directions of a mutual proof apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub realm: &'a str,
}

/// The parameters of one `Concealed` credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `k`: the prover's DER node certificate.
    pub key_id: Vec<u8>,
    /// `a`: the DER SubjectPublicKeyInfo of the certificate's key.
    pub public_key: Vec<u8>,
    /// `s`: the TLS SignatureScheme of `proof`.
    pub scheme: u16,
    /// `p`: the signature.
    pub proof: Vec<u8>,
    /// `v`: the last 16 exported bytes.
    pub verification: [u8; EXPORTER_LEN - SIGNED_LEN],
}

/// Why credentials were refused. A server answers every one of these the way it
/// answers a request with no credentials at all; the reason is for its own log.
#[derive(Debug, thiserror::Error)]
pub enum ConcealedError {
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    #[error(
        "the verification value does not match this connection (a proof from another connection?)"
    )]
    Verification,
    #[error("signature scheme {0:#06x} does not fit the certificate's key")]
    SchemeMismatch(u16),
    #[error("the public key is not the certificate's")]
    KeyMismatch,
    #[error("{0}")]
    Pki(#[from] PkiError),
}

/// The TLS SignatureScheme a node key of this SubjectPublicKeyInfo signs with
/// (ecdsa_secp256r1_sha256, ecdsa_secp384r1_sha384, ed25519, rsa_pkcs1_sha256).
pub fn signature_scheme(spki_der: &[u8]) -> Result<u16, PkiError> {
    Ok(match signature::key_kind(spki_der)? {
        signature::KeyKind::EcdsaP256 => 0x0403,
        signature::KeyKind::EcdsaP384 => 0x0503,
        signature::KeyKind::Ed25519 => 0x0807,
        signature::KeyKind::Rsa => 0x0401,
    })
}

/// The exporter context both ends compute (RFC 9729 §3): every field the proof is
/// bound to, each variable-length one behind its length as a QUIC variable-length
/// integer.
pub fn exporter_context(
    scheme: u16,
    key_id: &[u8],
    public_key: &[u8],
    origin: &Origin<'_>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        16 + key_id.len() + public_key.len() + origin.host.len() + origin.realm.len(),
    );
    out.extend_from_slice(&scheme.to_be_bytes());
    for field in [
        key_id,
        public_key,
        origin.scheme.as_bytes(),
        origin.host.as_bytes(),
    ] {
        put_prefixed(&mut out, field);
    }
    out.extend_from_slice(&origin.port.to_be_bytes());
    put_prefixed(&mut out, origin.realm.as_bytes());
    out
}

/// What is signed: the TLS 1.3 CertificateVerify construction over the first 32
/// exported bytes.
fn signed_message(exported: &[u8; EXPORTER_LEN]) -> Vec<u8> {
    let mut message = Vec::with_capacity(64 + SIGNATURE_CONTEXT.len() + 1 + SIGNED_LEN);
    message.extend_from_slice(&[0x20; 64]);
    message.extend_from_slice(SIGNATURE_CONTEXT);
    message.push(0);
    message.extend_from_slice(&exported[..SIGNED_LEN]);
    message
}

fn put_prefixed(out: &mut Vec<u8>, field: &[u8]) {
    // Fields here are certificates, keys and names: far below the varint limit.
    let _ = quicap_wire::masque::put_varint(field.len() as u64, out);
    out.extend_from_slice(field);
}

/// A node ready to prove its identity: its key and the certificate for it.
#[derive(Debug)]
pub struct Prover<'a> {
    key: &'a NodeKey,
    cert_der: &'a [u8],
    public_key: Vec<u8>,
    scheme: u16,
}

impl<'a> Prover<'a> {
    /// Errors if the key is not the certificate's or of a kind that cannot prove.
    pub fn new(key: &'a NodeKey, cert: &'a NodeCert) -> Result<Self, PkiError> {
        let public_key = key.spki_der();
        if public_key != cert.spki_der {
            return Err(PkiError::KeyMismatch);
        }
        Ok(Prover {
            key,
            cert_der: &cert.der,
            scheme: signature_scheme(&public_key)?,
            public_key,
        })
    }

    /// The context to export keying material with, for a proof to `origin`.
    pub fn exporter_context(&self, origin: &Origin<'_>) -> Vec<u8> {
        exporter_context(self.scheme, self.cert_der, &self.public_key, origin)
    }

    /// The credentials for keying material exported with [`Prover::exporter_context`].
    pub fn prove(&self, exported: &[u8; EXPORTER_LEN]) -> Result<Credentials, PkiError> {
        let mut verification = [0; EXPORTER_LEN - SIGNED_LEN];
        verification.copy_from_slice(&exported[SIGNED_LEN..]);
        Ok(Credentials {
            key_id: self.cert_der.to_vec(),
            public_key: self.public_key.clone(),
            scheme: self.scheme,
            proof: self.key.sign(&signed_message(exported))?,
            verification,
        })
    }
}

impl Credentials {
    /// The context the verifier exports keying material with, for credentials sent to
    /// `origin`.
    pub fn exporter_context(&self, origin: &Origin<'_>) -> Vec<u8> {
        exporter_context(self.scheme, &self.key_id, &self.public_key, origin)
    }

    /// Checks the credentials against keying material exported from this end of the
    /// connection with [`Credentials::exporter_context`], and returns the certificate
    /// whose key made them. The certificate itself (chain, expiry, revocation) is the
    /// caller's to verify, as for a certificate from a TLS handshake.
    pub fn verify(&self, exported: &[u8; EXPORTER_LEN]) -> Result<NodeCert, ConcealedError> {
        let expected = &exported[SIGNED_LEN..];
        let differs = expected
            .iter()
            .zip(&self.verification)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return Err(ConcealedError::Verification);
        }
        let cert = NodeCert::from_der(&self.key_id)?;
        if cert.spki_der != self.public_key {
            return Err(ConcealedError::KeyMismatch);
        }
        if signature_scheme(&self.public_key)? != self.scheme {
            return Err(ConcealedError::SchemeMismatch(self.scheme));
        }
        signature::verify(&self.public_key, &signed_message(exported), &self.proof)?;
        Ok(cert)
    }

    /// The header value: `Concealed k=.., a=.., p=.., s=.., v=..`.
    pub fn to_header(&self) -> String {
        format!(
            "{SCHEME} k={}, a={}, p={}, s={}, v={}",
            URL_SAFE_NO_PAD.encode(&self.key_id),
            URL_SAFE_NO_PAD.encode(&self.public_key),
            URL_SAFE_NO_PAD.encode(&self.proof),
            self.scheme,
            URL_SAFE_NO_PAD.encode(self.verification),
        )
    }

    /// Parses a header value. Returns `Ok(None)` for another authentication scheme
    /// (Basic, Bearer, ...), which is no node's business; unknown parameters are
    /// ignored, as RFC 9729 asks; repeated or missing ones are malformed.
    pub fn parse(header: &[u8]) -> Result<Option<Credentials>, ConcealedError> {
        if header.len() > MAX_HEADER {
            return Err(ConcealedError::Malformed("too long"));
        }
        let header =
            std::str::from_utf8(header).map_err(|_| ConcealedError::Malformed("not text"))?;
        let header = header.trim_matches([' ', '\t']);
        let (scheme, params) = header.split_once([' ', '\t']).unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Ok(None);
        }
        let mut fields: [Option<&str>; 5] = [None; 5];
        for param in params.split(',') {
            let param = param.trim_matches([' ', '\t']);
            if param.is_empty() {
                continue;
            }
            let (name, value) = param
                .split_once('=')
                .ok_or(ConcealedError::Malformed("a parameter without a value"))?;
            let name = name.trim_end_matches([' ', '\t']);
            let value = unquote(value.trim_start_matches([' ', '\t']))?;
            let slot = match name.to_ascii_lowercase().as_str() {
                "k" => 0,
                "a" => 1,
                "p" => 2,
                "s" => 3,
                "v" => 4,
                _ => continue,
            };
            if fields[slot].replace(value).is_some() {
                return Err(ConcealedError::Malformed("a repeated parameter"));
            }
        }
        let [Some(k), Some(a), Some(p), Some(s), Some(v)] = fields else {
            return Err(ConcealedError::Malformed("a missing parameter"));
        };
        let bytes = |value: &str, what: &'static str| {
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| ConcealedError::Malformed(what))
        };
        let scheme = if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse::<u16>().ok()
        }
        .ok_or(ConcealedError::Malformed("s is not a signature scheme"))?;
        let verification = bytes(v, "v is not base64url")?
            .try_into()
            .map_err(|_| ConcealedError::Malformed("v is not 16 bytes"))?;
        Ok(Some(Credentials {
            key_id: bytes(k, "k is not base64url")?,
            public_key: bytes(a, "a is not base64url")?,
            scheme,
            proof: bytes(p, "p is not base64url")?,
            verification,
        }))
    }
}

/// A token, or a quoted string without escapes (base64url and digits need none).
fn unquote(value: &str) -> Result<&str, ConcealedError> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .ok_or(ConcealedError::Malformed("an unterminated quoted string"))?,
        None => value,
    };
    if inner
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(inner)
    } else {
        Err(ConcealedError::Malformed(
            "a parameter value out of base64url",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authorization, Ca, NodeRequest, ParsedCsr, SignRequest};
    use rand::SeedableRng;
    use time::{Duration, OffsetDateTime};

    const ORIGIN: Origin<'static> = Origin {
        scheme: "https",
        host: "www.example.org",
        port: 443,
        realm: "",
    };

    fn node(name: &str) -> (NodeKey, NodeCert) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let now = OffsetDateTime::now_utc();
        let files = Ca::create("testnet", now, 30, &mut rng).unwrap();
        let ca = Ca::load(&files.cert_pem, &files.key_pem).unwrap();
        let request = NodeRequest::generate(name).unwrap();
        let csr = ParsedCsr::from_pem(&request.csr_pem).unwrap();
        let authorization = Authorization {
            addresses: vec!["10.0.0.1/32".parse().unwrap()],
            subnets: vec![],
            egress: false,
        };
        let sign =
            SignRequest::from_csr(&csr, None, authorization, now, now + Duration::days(1)).unwrap();
        let pem = ca.sign(&sign, &mut rng).unwrap();
        (
            NodeKey::from_pem(&request.key_pem).unwrap(),
            NodeCert::from_pem(&pem).unwrap(),
        )
    }

    /// A stand-in for the exporter of one TLS session: any function of the session
    /// secret, the label and the context that the two ends share.
    fn export(session: &[u8], context: &[u8]) -> [u8; EXPORTER_LEN] {
        let mut out = [0; EXPORTER_LEN];
        let digest = ring::digest::digest(
            &ring::digest::SHA384,
            &[session, EXPORTER_LABEL, context].concat(),
        );
        out.copy_from_slice(digest.as_ref());
        out
    }

    fn credentials(key: &NodeKey, cert: &NodeCert, session: &[u8]) -> Credentials {
        let prover = Prover::new(key, cert).unwrap();
        prover
            .prove(&export(session, &prover.exporter_context(&ORIGIN)))
            .unwrap()
    }

    #[test]
    fn a_proof_verifies_on_its_own_session_through_the_header() {
        let (key, cert) = node("node-a");
        let sent = credentials(&key, &cert, b"session 1");
        let received = Credentials::parse(sent.to_header().as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(received, sent);
        let exported = export(b"session 1", &received.exporter_context(&ORIGIN));
        assert_eq!(received.verify(&exported).unwrap().name, "node-a");
    }

    #[test]
    fn a_proof_from_another_session_origin_or_realm_fails() {
        let (key, cert) = node("node-a");
        let sent = credentials(&key, &cert, b"session 1");
        let replayed = export(b"session 2", &sent.exporter_context(&ORIGIN));
        assert!(matches!(
            sent.verify(&replayed),
            Err(ConcealedError::Verification)
        ));
        for origin in [
            Origin {
                host: "other.example.org",
                ..ORIGIN
            },
            Origin {
                port: 8443,
                ..ORIGIN
            },
            Origin {
                realm: "server",
                ..ORIGIN
            },
        ] {
            let exported = export(b"session 1", &sent.exporter_context(&origin));
            assert!(sent.verify(&exported).is_err(), "{origin:?}");
        }
    }

    #[test]
    fn a_changed_field_fails_even_from_the_other_end_of_the_session() {
        let (key, cert) = node("node-a");
        let (_, other) = node("node-b");
        let sent = credentials(&key, &cert, b"session 1");
        let check = |c: &Credentials| c.verify(&export(b"session 1", &c.exporter_context(&ORIGIN)));
        // A client is an end of the TLS session: it can export, and so make `v` fit
        // any credentials. Only the signature stands in its way.
        let fit = |mut c: Credentials| {
            let exported = export(b"session 1", &c.exporter_context(&ORIGIN));
            c.verification.copy_from_slice(&exported[32..]);
            c
        };

        let mut forged = sent.clone();
        forged.key_id = other.der.clone();
        assert!(matches!(check(&forged), Err(ConcealedError::Verification)));
        assert!(matches!(
            check(&fit(forged.clone())),
            Err(ConcealedError::KeyMismatch)
        ));
        forged.public_key = other.spki_der.clone();
        assert!(matches!(
            check(&fit(forged)),
            Err(ConcealedError::Pki(PkiError::BadSignature))
        ));

        let mut forged = sent.clone();
        let last = forged.proof.len() - 1;
        forged.proof[last] ^= 1;
        assert!(check(&forged).is_err());

        let mut forged = sent.clone();
        forged.scheme = 0x0807;
        assert!(matches!(
            check(&fit(forged)),
            Err(ConcealedError::SchemeMismatch(0x0807))
        ));

        let mut forged = sent;
        forged.key_id = b"not a certificate".to_vec();
        assert!(matches!(check(&fit(forged)), Err(ConcealedError::Pki(_))));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_cannot_prove() {
        let (key, _) = node("node-a");
        let (_, cert) = node("node-b");
        assert!(matches!(
            Prover::new(&key, &cert),
            Err(PkiError::KeyMismatch)
        ));
    }

    #[test]
    fn headers_parse_as_http_writes_them() {
        let (key, cert) = node("node-a");
        let sent = credentials(&key, &cert, b"session 1");
        let header = sent.to_header();
        // Case, spacing, quoting, order and unknown parameters do not matter.
        let params: Vec<&str> = header["Concealed ".len()..].split(", ").collect();
        let reordered = format!(
            "concealed  {} ,x=\"1\",{},\t{}, {}, {}",
            params[4],
            params[0].replacen('=', "=\"", 1) + "\"",
            params[3],
            params[1],
            params[2]
        );
        assert_eq!(
            Credentials::parse(reordered.as_bytes()).unwrap().unwrap(),
            sent
        );
        assert!(Credentials::parse(b"Basic dXNlcjpwYXNz").unwrap().is_none());
        assert!(Credentials::parse(b"").unwrap().is_none());
        for bad in [
            format!("{header}, k=AAAA"),
            header.replace("v=", "w="),
            header.replace("s=1027", "s=99999"),
            header.replace("s=1027", "s=+1027"),
            header.replacen("k=", "k=\"", 1),
            header.replacen("k=", "k=%", 1),
            header.replace(", a=", ", a"),
            format!("{header}{}", "A".repeat(MAX_HEADER)),
        ] {
            assert!(Credentials::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(Credentials::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn context_lengths_use_every_varint_size() {
        let short = exporter_context(1, &[7; 10], &[], &ORIGIN);
        assert_eq!(&short[..3], &[0, 1, 10]);
        let long = exporter_context(1, &[7; 300], &[], &ORIGIN);
        assert_eq!(&long[2..4], &(0x4000u16 | 300).to_be_bytes());
        let huge = exporter_context(1, &vec![7; 20_000], &[], &ORIGIN);
        assert_eq!(&huge[2..6], &(0x8000_0000u32 | 20_000).to_be_bytes());
    }
}

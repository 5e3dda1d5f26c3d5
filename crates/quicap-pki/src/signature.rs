//! Signatures by a node's certificate key over data of the node's own: what lets the
//! mesh relay a node's claims (its node information) without any relay being able to
//! change them.
//!
//! The signing key is the node key that `quicap cert request` made (or any key a CA
//! signed a CSR for); the verifier picks the algorithm from the certificate's
//! SubjectPublicKeyInfo: ECDSA P-256 with SHA-256 or P-384 with SHA-384 (ASN.1 DER
//! signatures), Ed25519, RSA PKCS #1 v1.5 with SHA-256.

use rcgen::{KeyPair, PublicKeyData, SigningKey};
use ring::signature::{self as ring_sig, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::cert::VerifiedCert;
use crate::PkiError;

/// This node's private key, ready to sign.
#[derive(Debug)]
pub struct NodeKey(KeyPair);

impl NodeKey {
    /// Reads a PEM private key (PKCS #8, as `quicap cert request` writes it).
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        KeyPair::from_pem(pem)
            .map(NodeKey)
            .map_err(|e| PkiError::BadKey(e.to_string()))
    }

    /// DER SubjectPublicKeyInfo of the key's public half.
    pub fn spki_der(&self) -> Vec<u8> {
        self.0.subject_public_key_info()
    }

    /// Signs `message`. The randomness ECDSA needs comes from the system, as for key
    /// generation.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        Ok(self.0.sign(message)?)
    }
}

impl VerifiedCert {
    /// Errors unless `signature` is the certificate key's signature over `message`.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), PkiError> {
        verify(&self.cert().spki_der, message, signature)
    }
}

/// Errors unless `signature` over `message` verifies with the key in `spki_der`.
pub fn verify(spki_der: &[u8], message: &[u8], signature: &[u8]) -> Result<(), PkiError> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| PkiError::Malformed {
        what: "public key",
        detail: e.to_string(),
    })?;
    let algorithm = algorithm(&spki)?;
    UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
        .verify(message, signature)
        .map_err(|_| PkiError::BadSignature)
}

/// The kinds of node key a signature can be checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa,
}

/// The kind of the key in a DER SubjectPublicKeyInfo.
pub fn key_kind(spki_der: &[u8]) -> Result<KeyKind, PkiError> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| PkiError::Malformed {
        what: "public key",
        detail: e.to_string(),
    })?;
    kind(&spki)
}

fn kind(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, PkiError> {
    let oid = &spki.algorithm.algorithm;
    let unsupported = || PkiError::Malformed {
        what: "public key",
        detail: format!("unsupported key algorithm {oid}"),
    };
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(unsupported)?;
        if curve == OID_EC_P256 {
            Ok(KeyKind::EcdsaP256)
        } else if curve == OID_NIST_EC_P384 {
            Ok(KeyKind::EcdsaP384)
        } else {
            Err(unsupported())
        }
    } else if *oid == OID_SIG_ED25519 {
        Ok(KeyKind::Ed25519)
    } else if *oid == OID_PKCS1_RSAENCRYPTION {
        Ok(KeyKind::Rsa)
    } else {
        Err(unsupported())
    }
}

fn algorithm(
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<&'static dyn VerificationAlgorithm, PkiError> {
    Ok(match kind(spki)? {
        KeyKind::EcdsaP256 => &ring_sig::ECDSA_P256_SHA256_ASN1,
        KeyKind::EcdsaP384 => &ring_sig::ECDSA_P384_SHA384_ASN1,
        KeyKind::Ed25519 => &ring_sig::ED25519,
        KeyKind::Rsa => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alg: &'static rcgen::SignatureAlgorithm) -> NodeKey {
        NodeKey(KeyPair::generate_for(alg).unwrap())
    }

    #[test]
    fn signatures_verify_with_the_public_key_only() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = key(alg);
            let sig = key.sign(b"node info").unwrap();
            assert!(verify(&key.spki_der(), b"node info", &sig).is_ok());
        }
    }

    #[test]
    fn changed_message_signature_or_key_fails() {
        let (key, other) = (
            key(&rcgen::PKCS_ECDSA_P256_SHA256),
            key(&rcgen::PKCS_ECDSA_P256_SHA256),
        );
        let sig = key.sign(b"node info").unwrap();
        assert!(matches!(
            verify(&key.spki_der(), b"node infp", &sig),
            Err(PkiError::BadSignature)
        ));
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(verify(&key.spki_der(), b"node info", &bad).is_err());
        assert!(verify(&other.spki_der(), b"node info", &sig).is_err());
        assert!(verify(&key.spki_der(), b"node info", &[]).is_err());
        assert!(verify(b"not a key", b"node info", &sig).is_err());
    }
}

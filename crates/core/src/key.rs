//! WireGuard keys: 32 bytes, written as standard base64 (44 characters), as `wg genkey` does.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A public key (or any non-secret 32-byte WireGuard value).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; 32]);

/// Why a key string was rejected. Never contains the input: it might be a private key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is not valid base64 (a WireGuard key is 44 characters of base64 ending in '=')")]
    Base64,
    #[error("decodes to {0} bytes, a WireGuard key has 32")]
    Length(usize),
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| KeyError::Base64)?);
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

impl Key {
    /// Parses a base64 key.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(Key)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as lowercase hex, the form of the userspace WireGuard API.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl From<[u8; 32]> for Key {
    fn from(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Key::parse(&text).map_err(|e| serde::de::Error::custom(format!("public key {e}")))
    }
}

/// A private or preshared key. Zeroized on drop; neither Debug nor Display reveal it, so it
/// cannot leak into a log or an error message by accident. [`Secret::expose`] is the one way out.
#[derive(Clone)]
pub struct Secret(Zeroizing<[u8; 32]>);

impl Secret {
    /// Parses a base64 key, as found in a key file.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(|b| Secret(Zeroizing::new(b)))
    }

    /// A private key from 32 random bytes, clamped as `wg genkey` does.
    pub fn private_from_random(mut bytes: [u8; 32]) -> Self {
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        Secret(Zeroizing::new(bytes))
    }

    /// A preshared key: 32 random bytes as they are.
    pub fn preshared_from_random(bytes: [u8; 32]) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The X25519 public key of this private key.
    pub fn public_key(&self) -> Key {
        let secret = x25519_dalek::StaticSecret::from(*self.0);
        Key(*x25519_dalek::PublicKey::from(&secret).as_bytes())
    }

    /// The base64 text, for a key file or a config that must contain it.
    pub fn expose(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.0))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_base64() {
        let text = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
        assert_eq!(Key::parse(text).unwrap().to_string(), text);
    }

    #[test]
    fn rejects_bad_keys_without_echoing_them() {
        assert_eq!(Key::parse("not base64!"), Err(KeyError::Base64));
        assert_eq!(Key::parse("AAAA"), Err(KeyError::Length(3)));
        let msg = Secret::parse("c2VjcmV0").unwrap_err().to_string();
        assert!(!msg.contains("c2VjcmV0"));
    }

    #[test]
    fn derives_the_rfc7748_public_key() {
        // RFC 7748 section 6.1, Alice's key pair.
        let hex = |s: &str| -> [u8; 32] {
            let v: Vec<u8> = (0..64)
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect();
            v.try_into().unwrap()
        };
        let private = Secret::preshared_from_random(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            private.public_key().to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::private_from_random([7; 32]);
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let bytes = *Secret::parse(&s.expose()).unwrap().0;
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 64);
    }
}

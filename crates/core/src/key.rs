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
    /// Not base64. The decoder's own error is deliberately not kept as the source: it names
    /// the offending byte and its offset, which for a private key is a piece of the secret.
    #[error("is not valid base64 (a WireGuard key is 44 characters of base64 ending in '=')")]
    Base64,
    /// Base64, but not 32 bytes.
    #[error("decodes to {0} bytes, a WireGuard key has 32")]
    Length(usize),
}

/// p = 2^255 - 19 plus `low`, little-endian (p-1, p and p+1 are low-order encodings).
const fn p_plus(low: u8) -> [u8; 32] {
    let mut b = [0xff; 32];
    b[0] = low;
    b[31] = 0x7f;
    b
}

/// The u-coordinates of small order (libsodium's blocklist, `x25519_ref10.c`).
const LOW_ORDER: [[u8; 32]; 7] = [
    // 0 (order 4)
    [0; 32],
    // 1 (order 1)
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    // Order 8.
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    // Order 8.
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    // p-1 (order 2)
    p_plus(0xec),
    // p, that is 0 again (order 4)
    p_plus(0xed),
    // p+1, that is 1 again (order 1)
    p_plus(0xee),
];

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| KeyError::Base64)?);
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

impl Key {
    /// Parses a base64 key.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(Key)
    }

    /// Whether this is one of the X25519 points of small order (all zeros among them): any
    /// private key computes the same, all-zero, shared secret with it, so it authenticates
    /// nobody. Checked the way libsodium's `has_small_order` does: the 7 such u-coordinates
    /// below 2^255 (0, 1, p-1, p, p+1 and the two of order 8), ignoring the top bit, which
    /// X25519 masks off.
    pub fn is_low_order(&self) -> bool {
        let mut masked = self.0;
        masked[31] &= 0x7f;
        LOW_ORDER.contains(&masked)
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
        crate::de::parsed(d, "the public key", Key::parse)
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
    fn low_order_points_are_recognized_and_give_an_all_zero_secret() {
        let mut points: Vec<[u8; 32]> = LOW_ORDER.to_vec();
        // The same with the top bit set, which X25519 ignores.
        points.extend(LOW_ORDER.iter().map(|p| {
            let mut q = *p;
            q[31] |= 0x80;
            q
        }));
        assert_eq!(points.len(), 14);
        for p in &points {
            assert!(Key::from(*p).is_low_order(), "{}", Key::from(*p));
            // What makes them useless: every private key agrees on the all-zero secret.
            for seed in [1u8, 77, 200] {
                let s =
                    x25519_dalek::StaticSecret::from(*Secret::private_from_random([seed; 32]).0);
                let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(*p));
                assert_eq!(shared.as_bytes(), &[0u8; 32], "{}", Key::from(*p));
            }
        }
        assert!(Key::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap()
            .is_low_order());
    }

    proptest::proptest! {
        /// Real public keys are never refused, and a point is refused exactly when the shared
        /// secret with it would be all zeros.
        #[test]
        fn real_keys_are_not_low_order(seed in proptest::prelude::any::<[u8; 32]>(), u in proptest::prelude::any::<[u8; 32]>()) {
            proptest::prop_assert!(!Secret::private_from_random(seed).public_key().is_low_order());
            let s = x25519_dalek::StaticSecret::from(*Secret::private_from_random(seed).0);
            let zero = s.diffie_hellman(&x25519_dalek::PublicKey::from(u)).as_bytes() == &[0u8; 32];
            proptest::prop_assert_eq!(zero, Key::from(u).is_low_order());
        }
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

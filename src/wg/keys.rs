//! WireGuard keys: generation, derivation, parsing and key files.
//!
//! Keys are Curve25519 (X25519, RFC 7748) 32-byte values, written as standard
//! base64 with padding (44 characters), exactly as `wg genkey`, `wg pubkey`
//! and wg-quick files do. [`genkey`] clamps the random scalar the way
//! `wg genkey` does (RFC 7748 section 5: clear bits 0-2 and 255, set bit 254),
//! so `portcullis genkey | portcullis pubkey` and `wg genkey | wg pubkey` give
//! interchangeable output. X25519 clamps again when it multiplies, so a
//! non-clamped private key still yields the same public key as `wg pubkey`.
//!
//! Key files hold one base64 key (surrounding whitespace ignored). A private
//! key file whose permissions grant any access to group or others
//! (`mode & 0o077 != 0`, the rule OpenSSH applies to private keys) is refused.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use std::path::Path;

/// Length of every WireGuard key (private, public, preshared): 32 bytes.
pub const KEY_LEN: usize = 32;

/// Why a key or key file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a WireGuard key: expected 44 characters of base64 encoding 32 bytes")]
    BadEncoding,
    #[error("cannot read key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "key file {path} has mode {mode:04o}: it is accessible to group or others; \
         run `chmod 600 {path}` (private and preshared keys must be readable by the owner only)"
    )]
    Permissions { path: String, mode: u32 },
    #[error("key file {path}: {source}")]
    InFile { path: String, source: Box<KeyError> },
}

/// Encodes a key as base64 (44 characters).
pub fn encode_key(key: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(key)
}

/// Decodes a base64 key (surrounding whitespace ignored).
pub fn decode_key(s: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let s = s.trim();
    if s.len() != 44 {
        return Err(KeyError::BadEncoding);
    }
    let v = STANDARD.decode(s).map_err(|_| KeyError::BadEncoding)?;
    v.try_into().map_err(|_| KeyError::BadEncoding)
}

/// Clamps a Curve25519 scalar as `wg genkey` does (RFC 7748 section 5).
pub fn clamp(mut k: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    k
}

/// A new private key from the OS random source, clamped.
pub fn generate_private() -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut k);
    clamp(k)
}

/// A new preshared key (32 random bytes, not clamped, like `wg genpsk`).
pub fn generate_preshared() -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
}

/// The public key of a private key.
pub fn public_key(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let secret = x25519_dalek::StaticSecret::from(*private);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

/// `portcullis genkey`: a new private key, base64 (same format as `wg genkey`).
pub fn genkey() -> String {
    encode_key(&generate_private())
}

/// `portcullis genpsk`: a new preshared key, base64 (same format as `wg genpsk`).
pub fn genpsk() -> String {
    encode_key(&generate_preshared())
}

/// `portcullis pubkey`: the base64 public key of a base64 private key
/// (same output as `wg pubkey`; input whitespace such as the newline is ignored).
pub fn pubkey(private_b64: &str) -> Result<String, KeyError> {
    Ok(encode_key(&public_key(&decode_key(private_b64)?)))
}

/// Reads a key (private or preshared) from a file, refusing files that group
/// or others may access.
pub fn read_key_file(path: &Path) -> Result<[u8; KEY_LEN], KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| KeyError::Read {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: p, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    decode_key(&text).map_err(|e| KeyError::InFile {
        path: p,
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    /// RFC 7748 section 6.1 test vector (Alice).
    #[test]
    fn rfc7748_vector() {
        let hex = |s: &str| -> [u8; 32] {
            let v: Vec<u8> = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect();
            v.try_into().unwrap()
        };
        let sk = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let pk = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(public_key(&sk), pk);
        assert_eq!(pubkey(&encode_key(&sk)).unwrap(), encode_key(&pk));
    }

    #[test]
    fn genkey_is_clamped_and_decodes() {
        for _ in 0..32 {
            let k = decode_key(&genkey()).unwrap();
            assert_eq!(k[0] & 7, 0);
            assert_eq!(k[31] & 0x80, 0);
            assert_eq!(k[31] & 0x40, 0x40);
        }
        assert_ne!(genkey(), genkey());
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(decode_key("abc"), Err(KeyError::BadEncoding));
        assert_eq!(decode_key(&"!".repeat(44)), Err(KeyError::BadEncoding));
        // 44 chars of valid base64 but 33 bytes is impossible; 43+"=" decodes to 32
        assert!(decode_key(&format!("{}=", "A".repeat(43))).is_ok());
        assert!(pubkey("").is_err());
    }

    fn wg(args: &[&str], input: &str) -> Option<String> {
        let mut c = Command::new("wg")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        c.stdin.take()?.write_all(input.as_bytes()).ok()?;
        let out = c.wait_with_output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Compatibility with wireguard-tools (skipped with a note when `wg` is absent).
    #[test]
    fn matches_wg_tools() {
        let Some(wg_priv) = wg(&["genkey"], "") else {
            eprintln!("wg not installed: skipping the wireguard-tools comparison");
            return;
        };
        // wg's key -> our pubkey == wg pubkey
        let theirs = wg(&["pubkey"], &format!("{wg_priv}\n")).unwrap();
        assert_eq!(pubkey(&format!("{wg_priv}\n")).unwrap(), theirs);
        // our key -> wg pubkey == our pubkey
        let ours = genkey();
        let theirs = wg(&["pubkey"], &format!("{ours}\n")).unwrap();
        assert_eq!(pubkey(&ours).unwrap(), theirs);
        // a non-clamped key: both clamp inside X25519
        let raw = encode_key(&[0xffu8; 32]);
        assert_eq!(pubkey(&raw).unwrap(), wg(&["pubkey"], &raw).unwrap());
    }

    #[test]
    fn key_file_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = genkey();
        std::fs::write(&path, format!("{key}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key_file(&path).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_key_file(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path).unwrap(), decode_key(&key).unwrap());
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(read_key_file(&path), Err(KeyError::InFile { .. })));
        assert!(matches!(
            read_key_file(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }
}

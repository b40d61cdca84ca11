//! Key files: new keys from the OS's randomness, written as Ansible Vault files when a vault
//! password is configured and as plaintext (mode 0600) otherwise; read back either way.

use std::cell::OnceCell;
use std::fs;
use std::path::{Path, PathBuf};

use wgadm_core::Secret;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use wgadm_vault::{self as vault, VaultPassword};

/// Reads and encodes key files with the configured vault password, if any.
pub struct KeyFiles {
    password_file: Option<PathBuf>,
    password: OnceCell<VaultPassword>,
    /// A key file of the state (server.key) that a new password must open, so that one state
    /// never ends up with keys under two passwords, or plaintext keys beside vault ones.
    reference: PathBuf,
}

/// 32 bytes from the OS's CSPRNG.
pub fn random32() -> Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Invalid(format!("the OS gave no randomness for a key: {e}")))?;
    Ok(bytes)
}

/// A new WireGuard private key.
pub fn generate_private() -> Result<Secret> {
    random32().map(Secret::private_from_random)
}

/// A new preshared key.
pub fn generate_preshared() -> Result<Secret> {
    random32().map(Secret::preshared_from_random)
}

impl KeyFiles {
    /// Key files for a password file (`--vault-password-file` / `ANSIBLE_VAULT_PASSWORD_FILE`);
    /// the password is read only when a key file is encrypted or decrypted.
    /// `reference` is the state's server.key.
    pub fn new(password_file: Option<PathBuf>, reference: PathBuf) -> Self {
        KeyFiles {
            password_file,
            password: OnceCell::new(),
            reference,
        }
    }

    /// Whether the reference key file exists and is a vault file: the state's mode.
    pub fn reference_is_vault(&self) -> bool {
        fs::read(&self.reference).is_ok_and(|d| vault::is_vault(&d))
    }

    /// The reference key file (server.key).
    pub fn reference(&self) -> &Path {
        &self.reference
    }

    /// The configured password file, if any.
    pub fn password_file(&self) -> Option<&Path> {
        self.password_file.as_deref()
    }

    /// The configured vault password (read once); `for_file` is the file it is for, named
    /// in the error when none is configured. A password that does not open a vault
    /// server.key is refused, except when it is server.key itself being read.
    pub fn vault_password(&self, for_file: &Path) -> Result<&VaultPassword> {
        self.password(for_file)
    }

    /// The password new key files are written under (None: plaintext). The state's mode is
    /// server.key's: when it exists, a key is written exactly as it is (vault under the same
    /// password, or plaintext), so that one state never holds keys under two passwords or
    /// plaintext keys beside vault ones. Only a state without server.key (a new one) takes
    /// the mode from whether a password is configured.
    fn write_password(&self, path: &Path) -> Result<Option<&VaultPassword>> {
        let reference = match fs::read(&self.reference) {
            Ok(data) => Zeroizing::new(data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match self.encrypts() {
                    true => self.password(path).map(Some),
                    false => Ok(None),
                };
            }
            Err(e) => return Err(Error::io(&self.reference, e)),
        };
        match (vault::is_vault(&reference), self.encrypts()) {
            (true, false) => Err(Error::Invalid(format!(
                "{} is encrypted with Ansible Vault, so {} must be too; pass \
                 --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE",
                self.reference.display(),
                path.display()
            ))),
            (true, true) => {
                let password = self.password(path)?;
                vault::decrypt(&reference, password).map_err(|_| {
                    Error::Invalid(format!(
                        "the vault password in {} does not open {}, so {} would be under \
                         another password than the rest of the state; use the state's \
                         password, or change it for every key with \
                         `wgadm vault rekey --new-vault-password-file FILE`",
                        self.password_file
                            .as_deref()
                            .unwrap_or(Path::new("?"))
                            .display(),
                        self.reference.display(),
                        path.display()
                    ))
                })?;
                Ok(Some(password))
            }
            (false, true) => Err(Error::Invalid(format!(
                "{} is plaintext, so {} must be too: this state does not use Ansible Vault; \
                 run without --vault-password-file (and unset ANSIBLE_VAULT_PASSWORD_FILE), \
                 or encrypt the whole state first with `wgadm vault encrypt`",
                self.reference.display(),
                path.display()
            ))),
            (false, false) => Ok(None),
        }
    }

    /// Whether new key files are written as vault files.
    pub fn encrypts(&self) -> bool {
        self.password_file.is_some()
    }

    fn password(&self, for_file: &Path) -> Result<&VaultPassword> {
        if let Some(p) = self.password.get() {
            return Ok(p);
        }
        let Some(file) = &self.password_file else {
            return Err(Error::Invalid(format!(
                "{}: encrypted with Ansible Vault and no vault password is configured; \
                 pass --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE",
                for_file.display()
            )));
        };
        let password = VaultPassword::from_file(file).map_err(|source| Error::Vault {
            path: file.clone(),
            source,
        })?;
        if self.reference != for_file && self.reference_is_vault() {
            let data = Zeroizing::new(
                fs::read(&self.reference).map_err(|e| Error::io(&self.reference, e))?,
            );
            vault::decrypt(&data, &password).map_err(|source| Error::Vault {
                path: self.reference.clone(),
                source,
            })?;
        }
        Ok(self.password.get_or_init(|| password))
    }

    /// Reads a key file (vault or plaintext).
    pub fn read(&self, path: &Path) -> Result<Secret> {
        let data = crate::store::read_state_file(path, crate::store::KEY_LIMIT)?;
        let plain = if vault::is_vault(&data) {
            vault::decrypt(&data, self.password(path)?).map_err(|source| Error::Vault {
                path: path.to_owned(),
                source,
            })?
        } else {
            data
        };
        let text = std::str::from_utf8(&plain).map_err(|_| {
            Error::Invalid(format!("{}: is not a key file (not text)", path.display()))
        })?;
        Secret::parse(text).map_err(|e| {
            Error::Invalid(format!(
                "{}: the key in it {e}; restore the file",
                path.display()
            ))
        })
    }

    /// Reads a key file if it exists.
    pub fn read_if_present(&self, path: &Path) -> Result<Option<Secret>> {
        match fs::symlink_metadata(path) {
            Ok(_) => self.read(path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The bytes of a key file for `secret` at `path`, in the state's mode (see
    /// [`KeyFiles::write_password`]): a vault file or the base64 key and a newline.
    pub fn encode(&self, secret: &Secret, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
        encode_as(secret, self.write_password(path)?)
    }
}

/// The bytes of a key file for `secret`: a vault file under `password` or, without one, the
/// base64 key and a newline.
pub fn encode_as(secret: &Secret, password: Option<&VaultPassword>) -> Result<Zeroizing<Vec<u8>>> {
    let mut plain = Zeroizing::new(secret.expose().as_bytes().to_vec());
    plain.push(b'\n');
    match password {
        None => Ok(plain),
        Some(password) => {
            let salt = random32()?;
            Ok(Zeroizing::new(
                vault::encrypt(&plain, password, &salt).into_bytes(),
            ))
        }
    }
}

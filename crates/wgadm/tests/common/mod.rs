//! Helpers for tests that run the real `wgadm` binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The result of one wgadm run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "wgadm failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// Asserts failure with exit code 1 and a message containing every `needle`; returns stderr.
    #[track_caller]
    pub fn fails_with(self, needles: &[&str]) -> String {
        assert_ne!(
            self.code, 0,
            "wgadm should have failed:\nstdout: {}",
            self.stdout
        );
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr lacks {n:?}:\n{}",
                self.stderr
            );
        }
        self.stderr
    }
}

/// A temporary state directory and the environment to run wgadm against it.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub vault_password: Option<PathBuf>,
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        Env {
            tmp,
            state,
            vault_password: None,
        }
    }

    /// An environment whose key files are vault-encrypted with a password file.
    pub fn with_vault() -> Self {
        let mut env = Env::new();
        let pw = env.tmp.path().join("vault-pass");
        std::fs::write(&pw, "correct horse battery staple\n").unwrap();
        env.vault_password = Some(pw);
        env
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wgadm"));
        c.env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
            .env_remove("WGADM_STATE");
        c.arg("--state").arg(&self.state);
        if let Some(pw) = &self.vault_password {
            c.arg("--vault-password-file").arg(pw);
        }
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().unwrap())
    }

    /// `init` with a documentation endpoint.
    pub fn init(&self, extra: &[&str]) {
        let mut args = vec!["init", "--endpoint", "vpn.example.com"];
        args.extend_from_slice(extra);
        self.run(&args).ok();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.state.join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    pub fn mode(&self, rel: &str) -> u32 {
        std::fs::metadata(self.path(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    /// Every file under the state directory with its bytes and mode.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        snapshot(&self.state)
    }
}

pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let meta = std::fs::metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(p.clone(), (Vec::new(), mode));
                stack.push(p);
            } else {
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    out
}

/// Runs an external tool the tests rely on; fails clearly when it is missing.
#[track_caller]
pub fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "{name} is not installed: run scripts/setup.sh");
    Command::new(name)
}

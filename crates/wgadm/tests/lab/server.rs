//! The real wgadm binary driving the lab's server: a state and a wg-quick config directory in
//! the lab's temp dir, wgadm run inside the server namespace, and clients brought up with the
//! configs `wgadm peer config` prints.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::{Lab, SERVER_WAN};

/// The server side of a test.
pub struct Server<'a> {
    /// The lab it runs in.
    pub lab: &'a Lab,
    /// Its state directory (`WGADM_STATE`).
    pub state: PathBuf,
    /// Its wg-quick config directory (`WGADM_CONFIG_DIR`).
    pub config_dir: PathBuf,
    /// Its WireGuard interface, unique on the machine.
    pub iface: String,
}

impl<'a> Server<'a> {
    /// `wgadm init` with the lab's server address as the endpoint.
    pub fn new(lab: &'a Lab) -> Self {
        let server = Server {
            lab,
            state: lab.dir().join("state"),
            config_dir: lab.dir().join("wireguard"),
            iface: lab.wg_name("s"),
        };
        let endpoint = SERVER_WAN.to_string();
        server.ok(&[
            "init",
            "--endpoint",
            &endpoint,
            "--interface",
            &server.iface,
        ]);
        server
    }

    /// wgadm with `args`, to run inside the server namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.lab.server,
            env!("CARGO_BIN_EXE_wgadm"),
        ])
        .args(args)
        .env("WGADM_STATE", &self.state)
        .env("WGADM_CONFIG_DIR", &self.config_dir)
        .env(
            "WG_QUICK_USERSPACE_IMPLEMENTATION",
            self.lab.userspace_wrapper(),
        )
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
        .stdin(Stdio::null());
        c
    }

    /// Runs wgadm in the server namespace.
    pub fn wgadm(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs wgadm and returns its stdout; panics with its output when it fails.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.wgadm(args);
        assert!(
            out.status.success(),
            "wgadm {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs wgadm with `--json` and parses its output.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Writes client `i`'s wg-quick config for `peer`; with `wrong_key`, another private key.
    pub fn client_conf(&self, i: usize, peer: &str, wrong_key: bool) -> PathBuf {
        let mut text = self.ok(&["peer", "config", peer]);
        if wrong_key {
            let wrong = wgadm::secrets::generate_private().unwrap();
            text = text
                .lines()
                .map(|l| match l.starts_with("PrivateKey") {
                    true => format!("PrivateKey = {}\n", *wrong.expose()),
                    false => format!("{l}\n"),
                })
                .collect();
        }
        self.lab
            .write_conf(&self.lab.wg_name(&format!("c{i}")), &text)
    }

    /// Brings client `i` up with the config wgadm made for `peer`; returns its config path.
    pub fn connect(&self, i: usize, peer: &str) -> PathBuf {
        let conf = self.client_conf(i, peer, false);
        self.lab.wg_quick_up(&self.lab.clients[i], &conf);
        conf
    }

    /// A peer's public key, from `peer show`.
    pub fn public_key(&self, peer: &str) -> String {
        self.json(&["peer", "show", peer])["public_key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A peer's entry in `wgadm status --json`.
    pub fn status_of(&self, peer: &str) -> serde_json::Value {
        let st = self.json(&["status"]);
        st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == peer)
            .cloned()
            .unwrap()
    }
}

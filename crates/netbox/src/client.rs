//! The NetBox REST client: a thin shell around [`crate::model`]. It looks up what NetBox
//! has for the objects the core wants ([`observe`]), runs the core's plan ([`execute`]) and
//! takes a peer address from a prefix's `available-ips` ([`allocate`]).
//!
//! The API token goes into the `Authorization` header and nowhere else: not into a URL, an
//! argument of a child process, a log line or an error message.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{
    self as core, choose, Action, Capabilities, Found, InNetbox, Kind, Object, ObjectKey, Step,
    SyncPlan, Value, Version, TAG,
};
use serde_json::{json, Map, Value as Json};
use wgadm_core::{Date, Peer, PeerName, State};
use zeroize::Zeroizing;

/// NetBox's largest page (`MAX_PAGE_SIZE`, 1000 by default); a smaller one is honoured too.
const PAGE: usize = 1000;

/// What can go wrong talking to NetBox. No message contains the token.
#[derive(Debug, thiserror::Error)]
pub enum NetboxError {
    /// The URL or token is missing or malformed.
    #[error("{0}")]
    Config(String),
    /// No HTTP answer at all.
    #[error(
        "cannot reach NetBox at {url}: {reason}; check --netbox-url (WGADM_NETBOX_URL) and \
         that NetBox is running"
    )]
    Unreachable {
        /// The base URL.
        url: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// NetBox did not accept the token.
    #[error(
        "NetBox at {url} refused the API token (HTTP {status}: {detail}); check the token \
         (--netbox-token-file, WGADM_NETBOX_TOKEN or NETBOX_TOKEN; a v2 token looks like \
         nbt_KEY.SECRET) and that it is enabled and not expired"
    )]
    Auth {
        /// The base URL.
        url: String,
        /// 401 or 403.
        status: u16,
        /// NetBox's reason, e.g. `Invalid v2 token`.
        detail: String,
    },
    /// NetBox answered a request with an error.
    #[error("NetBox refused to {what} (HTTP {status}: {detail}){hint}")]
    Api {
        /// What wgadm tried, e.g. `create IP address 192.168.100.2/24 (peer alice)`.
        what: String,
        /// The HTTP status.
        status: u16,
        /// NetBox's reason.
        detail: String,
        /// What to do, if wgadm knows.
        hint: String,
    },
    /// The answer was not what NetBox's API sends.
    #[error("{url} did not answer like NetBox's REST API ({what}): {detail}; check --netbox-url")]
    Protocol {
        /// The base URL.
        url: String,
        /// The request.
        what: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// This NetBox cannot hold what wgadm needs.
    #[error("{0}")]
    Unsupported(String),
    /// A sync stopped partway: what was done before is listed.
    #[error(
        "{source}\nthe NetBox sync stopped there; done before it: {done}. The local state is \
         unchanged; `wgadm netbox sync` again continues once the cause is fixed"
    )]
    Partial {
        /// The error that stopped it.
        source: Box<NetboxError>,
        /// A summary of the steps done.
        done: String,
    },
}

type Result<T, E = NetboxError> = std::result::Result<T, E>;

/// A connection to one NetBox.
pub struct Client {
    agent: ureq::Agent,
    /// `https://netbox.example.com` (what messages show).
    url: String,
    /// `https://netbox.example.com/api/`.
    api: String,
    /// The `Authorization` header's value.
    auth: Zeroizing<String>,
}

/// Where NetBox is and the token, as the command line and environment give them.
pub struct Access {
    /// `--netbox-url` / `WGADM_NETBOX_URL`.
    pub url: Option<String>,
    /// `--netbox-token-file` / `WGADM_NETBOX_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
}

impl Access {
    /// The token: from the file if one is given, else from `WGADM_NETBOX_TOKEN` or
    /// `NETBOX_TOKEN`.
    fn token(&self) -> Result<Zeroizing<String>> {
        let (token, source) = match &self.token_file {
            Some(path) => (read_token_file(path)?, path.display().to_string()),
            None => {
                let found = ["WGADM_NETBOX_TOKEN", "NETBOX_TOKEN"]
                    .iter()
                    .find_map(|name| {
                        std::env::var(name)
                            .ok()
                            .filter(|v| !v.trim().is_empty())
                            .map(|v| (Zeroizing::new(v), name.to_string()))
                    });
                found.ok_or_else(|| {
                    NetboxError::Config(
                        "no NetBox API token: give --netbox-token-file FILE, or set \
                         WGADM_NETBOX_TOKEN (or NETBOX_TOKEN)"
                            .into(),
                    )
                })?
            }
        };
        let token = Zeroizing::new(token.trim().to_owned());
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(NetboxError::Config(format!(
                "the NetBox API token from {source} is empty or has spaces or control \
                 characters in it; put the token alone in it"
            )));
        }
        Ok(token)
    }
}

/// Reads the token file, refusing one that others can read (the token is as good as a
/// password for NetBox) and one that is a symbolic link.
fn read_token_file(path: &Path) -> Result<Zeroizing<String>> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let cannot = |e: std::io::Error| {
        NetboxError::Config(format!(
            "{}: cannot read the NetBox API token: {e}",
            path.display()
        ))
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => NetboxError::Config(format!(
                "{}: the NetBox API token file is a symbolic link; give the file itself",
                path.display()
            )),
            _ => cannot(e),
        })?;
    let mode = file.metadata().map_err(cannot)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NetboxError::Config(format!(
            "{}: the NetBox API token file has mode {mode:o}, so others can read the token; \
             chmod 600 it (and get a new token if others may have read it)",
            path.display()
        )));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes).map_err(cannot)?;
    std::str::from_utf8(&bytes)
        .map(|text| Zeroizing::new(text.to_owned()))
        .map_err(|_| {
            NetboxError::Config(format!(
                "{}: the NetBox API token file is not text",
                path.display()
            ))
        })
}

/// The HTTP methods wgadm uses.
#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Client {
    /// Connects to NetBox: checks the URL and token by reading `/api/status/`, and returns the
    /// client with what this NetBox version can hold.
    pub fn connect(access: &Access) -> Result<(Client, Capabilities)> {
        let url = access.url.as_deref().map(str::trim).unwrap_or_default();
        if url.is_empty() {
            return Err(NetboxError::Config(
                "where is NetBox? give --netbox-url URL or set WGADM_NETBOX_URL".into(),
            ));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('?') {
            return Err(NetboxError::Config(format!(
                "--netbox-url {url:?} is not an http:// or https:// URL of NetBox"
            )));
        }
        let token = access.token()?;
        let url = url.trim_end_matches('/');
        let base = url.strip_suffix("/api").unwrap_or(url).to_owned();
        let auth = Zeroizing::new(if token.starts_with("nbt_") {
            format!("Bearer {}", token.as_str())
        } else {
            format!("Token {}", token.as_str())
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect would turn a POST into a GET and drop the token: report it instead.
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .user_agent(concat!("wgadm/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let client = Client {
            agent,
            api: format!("{base}/api/"),
            url: base,
            auth,
        };
        let status = client.send(Method::Get, "status/", &[], None, "read /api/status/")?;
        let version_text = status
            .get("netbox-version")
            .and_then(Json::as_str)
            .ok_or_else(|| client.protocol("read /api/status/", "no netbox-version in it"))?;
        let version = Version::parse(version_text).ok_or_else(|| {
            client.protocol(
                "read /api/status/",
                &format!("netbox-version {version_text:?} is no version number"),
            )
        })?;
        let caps = Capabilities::of(version).map_err(NetboxError::Unsupported)?;
        Ok((client, caps))
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn protocol(&self, what: &str, detail: &str) -> NetboxError {
        NetboxError::Protocol {
            url: self.url.clone(),
            what: what.to_owned(),
            detail: detail.to_owned(),
        }
    }

    /// One request; `what` says in words what it is for, for errors.
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Json>,
        what: &str,
    ) -> Result<Json> {
        let target = format!("{}{path}", self.api);
        let auth: &str = &self.auth;
        let result = match method {
            Method::Get | Method::Delete => {
                let mut req = match method {
                    Method::Get => self.agent.get(&target),
                    _ => self.agent.delete(&target),
                };
                req = req
                    .header("Authorization", auth)
                    .header("Accept", "application/json");
                for (k, v) in query {
                    req = req.query(*k, v);
                }
                req.call()
            }
            Method::Post | Method::Patch => {
                let req = match method {
                    Method::Post => self.agent.post(&target),
                    _ => self.agent.patch(&target),
                };
                req.header("Authorization", auth)
                    .header("Accept", "application/json")
                    .send_json(body.unwrap_or(&Json::Null))
            }
        };
        let mut response = result.map_err(|e| NetboxError::Unreachable {
            url: self.url.clone(),
            reason: match e {
                ureq::Error::Io(io) => io.to_string(),
                other => other.to_string(),
            },
        })?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.protocol(what, &format!("cannot read the answer: {e}")))?;
        match status {
            200..=299 => {
                if text.trim().is_empty() {
                    return Ok(Json::Null);
                }
                serde_json::from_str(&text)
                    .map_err(|_| self.protocol(what, &format!("not JSON: {}", excerpt(&text))))
            }
            300..=399 => Err(NetboxError::Config(format!(
                "NetBox at {} redirects to {}: give that URL (without /api/...) as --netbox-url",
                self.url,
                location.unwrap_or_else(|| "another address".into())
            ))),
            401 | 403 if path == "status/" => Err(NetboxError::Auth {
                url: self.url.clone(),
                status,
                detail: detail_of(&text),
            }),
            _ => Err(NetboxError::Api {
                what: what.to_owned(),
                status,
                detail: detail_of(&text),
                hint: match status {
                    401 | 403 => {
                        "; the token's user needs permission to view, add, change and \
                                  delete the objects wgadm manages, and the token must allow writes"
                            .into()
                    }
                    404 if path.starts_with("vpn/") => {
                        "; this NetBox has no VPN tunnels (NetBox 4.1.8 or later has them)".into()
                    }
                    _ => String::new(),
                },
            }),
        }
    }

    /// Every object of an endpoint matching the filters, following the pages.
    pub fn list(&self, endpoint: &str, filters: &[(&str, String)]) -> Result<Vec<Json>> {
        let what = format!("list {endpoint}");
        let mut all = Vec::new();
        loop {
            let mut query = filters.to_vec();
            query.push(("limit", PAGE.to_string()));
            query.push(("offset", all.len().to_string()));
            let page = self.send(Method::Get, endpoint, &query, None, &what)?;
            let results = page
                .get("results")
                .and_then(Json::as_array)
                .ok_or_else(|| self.protocol(&what, "no results list in the answer"))?;
            let count = page.get("count").and_then(Json::as_u64).unwrap_or(0) as usize;
            let got = results.len();
            all.extend(results.iter().cloned());
            if got == 0 || all.len() >= count {
                return Ok(all);
            }
        }
    }

    fn create(&self, endpoint: &str, body: &Json, what: &str) -> Result<Json> {
        self.send(Method::Post, endpoint, &[], Some(body), what)
    }

    fn update(&self, endpoint: &str, id: u64, body: &Json, what: &str) -> Result<Json> {
        self.send(
            Method::Patch,
            &format!("{endpoint}{id}/"),
            &[],
            Some(body),
            what,
        )
    }

    fn delete(&self, endpoint: &str, id: u64, what: &str) -> Result<()> {
        self.send(Method::Delete, &format!("{endpoint}{id}/"), &[], None, what)
            .map(drop)
    }
}

/// NetBox's `detail` (or the whole error body, shortened).
fn detail_of(text: &str) -> String {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(map)) => match map.get("detail").and_then(Json::as_str) {
            Some(d) => d.to_owned(),
            None => excerpt(&Json::Object(map).to_string()),
        },
        Ok(other) => excerpt(&other.to_string()),
        Err(_) => excerpt(text),
    }
}

fn excerpt(text: &str) -> String {
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect();
    if flat.is_empty() {
        "an empty answer".into()
    } else {
        flat
    }
}

/// A field of a NetBox object as the core compares it: a choice as its value, a related object
/// as its id, a list of strings as a sorted list.
fn value_at(object: &Json, path: &str) -> Value {
    let mut at = object;
    for part in path.split('.') {
        match at.get(part) {
            Some(next) => at = next,
            None => return Value::Null,
        }
    }
    match at {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n.as_i64().map_or(Value::Null, Value::Int),
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(items) => {
            let mut list: Vec<String> = items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect();
            list.sort();
            Value::Texts(list)
        }
        Json::Object(map) => {
            if let Some(v) = map.get("value").and_then(Json::as_str) {
                Value::Text(v.to_owned())
            } else if let Some(id) = map.get("id").and_then(Json::as_u64) {
                Value::Id(id)
            } else {
                Value::Null
            }
        }
    }
}

fn id_of(object: &Json) -> Option<u64> {
    object.get("id").and_then(Json::as_u64)
}

/// Whether an object carries wgadm's tag.
fn owned(object: &Json) -> bool {
    object
        .get("tags")
        .and_then(Json::as_array)
        .is_some_and(|tags| {
            tags.iter()
                .any(|t| t.get("slug").and_then(Json::as_str) == Some(TAG))
        })
}

/// A NetBox object as the core sees it, with the fields of `want` (or none).
fn to_found(kind: Kind, object: &Json, want: Option<&Object>) -> Option<Found> {
    let fields = want
        .map(|o| {
            o.fields
                .keys()
                .map(|name| (name.clone(), value_at(object, name)))
                .collect()
        })
        .unwrap_or_default();
    Some(Found {
        id: id_of(object)?,
        owned: kind.taggable() && owned(object),
        display: object
            .get("display")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
        fields,
    })
}

/// The host part of `a.b.c.d/len`.
fn host_of(address: &str) -> Option<Ipv4Addr> {
    address.split('/').next()?.parse().ok()
}

/// Reads from NetBox what it has under every key of `desired`, plus every IP address in the
/// VPN prefix (wgadm's own among them may be due for deletion).
pub fn observe(client: &Client, desired: &[Object]) -> Result<InNetbox> {
    let mut observed = InNetbox::new();
    let chosen = |observed: &InNetbox, key: &ObjectKey| {
        observed.get(key).and_then(|f| choose(f)).map(|f| f.id)
    };
    let by_key: BTreeMap<&ObjectKey, &Object> = desired.iter().map(|o| (&o.key, o)).collect();
    for object in desired {
        let key = &object.key;
        let endpoint = key.kind.endpoint();
        let found: Vec<Json> = match key.kind {
            Kind::Tag => client.list(endpoint, &[("slug", key.name.clone())])?,
            Kind::CustomField
            | Kind::Site
            | Kind::ClusterType
            | Kind::Cluster
            | Kind::VirtualMachine
            | Kind::Tunnel => client.list(endpoint, &[("name", key.name.clone())])?,
            Kind::VmInterface => {
                let Some(Value::Ref(vm)) = object.fields.get("virtual_machine") else {
                    continue;
                };
                let Some(vm_id) = chosen(&observed, vm) else {
                    continue;
                };
                let name = match object.create_only.get("name") {
                    Some(Value::Text(name)) => name.clone(),
                    _ => continue,
                };
                client.list(
                    endpoint,
                    &[("virtual_machine_id", vm_id.to_string()), ("name", name)],
                )?
            }
            Kind::Prefix => {
                let all = client.list(
                    endpoint,
                    &[("prefix", key.name.clone()), ("vrf_id", "null".into())],
                )?;
                // Every address in the prefix, once: the server's, the peers' and any other.
                for ip in client.list(
                    Kind::IpAddress.endpoint(),
                    &[("parent", key.name.clone()), ("vrf_id", "null".into())],
                )? {
                    let Some(host) = ip.get("address").and_then(Json::as_str).and_then(host_of)
                    else {
                        continue;
                    };
                    let ip_key = core::address_key(host);
                    let want = by_key.get(&ip_key).copied();
                    if let Some(f) = to_found(Kind::IpAddress, &ip, want) {
                        observed.entry(ip_key).or_default().push(f);
                    }
                }
                all
            }
            // Read with the prefix, above.
            Kind::IpAddress => continue,
            Kind::TunnelTermination => {
                let (Some(Value::Ref(tunnel)), Some(Value::Ref(iface))) = (
                    object.fields.get("tunnel"),
                    object.fields.get("termination_id"),
                ) else {
                    continue;
                };
                let (Some(tunnel_id), Some(iface_id)) =
                    (chosen(&observed, tunnel), chosen(&observed, iface))
                else {
                    continue;
                };
                client
                    .list(endpoint, &[("tunnel_id", tunnel_id.to_string())])?
                    .into_iter()
                    .filter(|t| {
                        value_at(t, "termination_type")
                            == Value::Text(Kind::VmInterface.object_type().into())
                            && t.get("termination_id").and_then(Json::as_u64) == Some(iface_id)
                    })
                    .collect()
            }
        };
        let list: Vec<Found> = found
            .iter()
            .filter_map(|o| to_found(key.kind, o, Some(object)))
            .collect();
        if !list.is_empty() {
            observed.insert(key.clone(), list);
        }
    }
    Ok(observed)
}

/// The JSON body of a create or update: references become ids, `custom_fields.X` nests.
fn body(step: &Step, ids: &BTreeMap<ObjectKey, u64>) -> Result<Json> {
    let mut map = Map::new();
    let mut custom = Map::new();
    for (name, value) in &step.fields {
        let v = match value {
            Value::Null => Json::Null,
            Value::Bool(b) => json!(b),
            Value::Int(n) => json!(n),
            Value::Text(s) => json!(s),
            Value::Texts(list) => json!(list),
            Value::Id(id) => json!(id),
            Value::Ref(key) => match ids.get(key) {
                Some(id) => json!(id),
                None => {
                    return Err(NetboxError::Config(format!(
                        "internal error: {} refers to {} {}, which has no id",
                        step.label,
                        key.kind.noun(),
                        key.name
                    )))
                }
            },
        };
        match name.strip_prefix("custom_fields.") {
            Some(cf) => {
                custom.insert(cf.to_owned(), v);
            }
            None => {
                map.insert(name.clone(), v);
            }
        }
    }
    if !custom.is_empty() {
        map.insert("custom_fields".into(), Json::Object(custom));
    }
    if step.action == Action::Create && step.key.kind.taggable() {
        map.insert("tags".into(), json!([{ "slug": TAG }]));
    }
    Ok(Json::Object(map))
}

/// What a sync did, step by step.
#[derive(Debug, Default)]
pub struct Done {
    /// Created objects with their new ids.
    pub created: Vec<(Step, u64)>,
    /// Updated objects.
    pub updated: Vec<Step>,
    /// Deleted objects.
    pub deleted: Vec<Step>,
}

impl Done {
    fn summary(&self) -> String {
        format!(
            "{} created, {} updated, {} deleted",
            self.created.len(),
            self.updated.len(),
            self.deleted.len()
        )
    }
}

/// Runs the plan's steps in order. An error stops it and says what was done before.
pub fn execute(client: &Client, plan: &SyncPlan) -> Result<Done> {
    let mut ids = plan.existing.clone();
    let mut done = Done::default();
    for step in &plan.steps {
        let endpoint = step.key.kind.endpoint();
        let what = match step.action {
            Action::Create => format!("create {}", step.label),
            Action::Update(id) => format!("update {} (#{id})", step.label),
            Action::Delete(id) => format!("delete {} (#{id})", step.label),
        };
        let result = match step.action {
            Action::Create => body(step, &ids)
                .and_then(|b| client.create(endpoint, &b, &what))
                .and_then(|created| {
                    id_of(&created).ok_or_else(|| client.protocol(&what, "the answer has no id"))
                }),
            Action::Update(id) => body(step, &ids)
                .and_then(|b| client.update(endpoint, id, &b, &what))
                .map(|_| id),
            Action::Delete(id) => client.delete(endpoint, id, &what).map(|()| id),
        };
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                return Err(NetboxError::Partial {
                    source: Box::new(e),
                    done: done.summary(),
                })
            }
        };
        match step.action {
            Action::Create => {
                ids.insert(step.key.clone(), id);
                done.created.push((step.clone(), id));
            }
            Action::Update(_) => done.updated.push(step.clone()),
            Action::Delete(_) => done.deleted.push(step.clone()),
        }
    }
    Ok(done)
}

/// Makes sure the tag and the peer custom fields exist: what a peer address needs.
fn ensure_tag_and_fields(client: &Client) -> Result<()> {
    let mut desired = vec![core::tag()];
    desired.extend(core::custom_fields(false));
    let observed = observe(client, &desired)?;
    let plan = core::plan(&desired, &observed);
    if let Some(blocker) = plan.blockers.first() {
        return Err(NetboxError::Unsupported(blocker.clone()));
    }
    // Not a sync: the error alone says what went wrong.
    execute(client, &plan).map(drop).map_err(|e| match e {
        NetboxError::Partial { source, .. } => *source,
        e => e,
    })
}

/// An address NetBox handed out for a new peer: its IP address object there.
pub struct Allocation {
    /// The address.
    pub address: Ipv4Addr,
    /// The IP address object's id in NetBox.
    pub id: u64,
}

impl Allocation {
    /// Gives the address back (deletes the IP address object): the local add failed.
    pub fn release(&self, client: &Client) -> Result<()> {
        client.delete(
            Kind::IpAddress.endpoint(),
            self.id,
            &format!("delete IP address {} (#{}) again", self.address, self.id),
        )
    }
}

/// Takes the next free address of the VPN prefix from NetBox for a new peer, atomically on
/// NetBox's side (`POST /api/ipam/prefixes/{id}/available-ips/`), and makes the new IP address
/// the peer's record there (tag, custom fields, status).
///
/// NetBox only avoids addresses it knows, so every address the state uses must be in NetBox
/// first: wgadm refuses (and asks for a `netbox sync`) when one is missing.
pub fn allocate(
    client: &Client,
    state: &State,
    name: &PeerName,
    peer: &Peer,
    today: Date,
) -> Result<Allocation> {
    let subnet = state.server.subnet;
    let prefixes = client.list(
        Kind::Prefix.endpoint(),
        &[("prefix", subnet.to_string()), ("vrf_id", "null".into())],
    )?;
    let prefix_id = prefixes.first().and_then(id_of).ok_or_else(|| {
        NetboxError::Unsupported(format!(
            "the prefix {subnet} is not in NetBox {}: run `wgadm netbox sync` first (it \
             creates the prefix and records the addresses in use)",
            client.url()
        ))
    })?;
    let known: std::collections::BTreeSet<Ipv4Addr> = client
        .list(
            Kind::IpAddress.endpoint(),
            &[("parent", subnet.to_string()), ("vrf_id", "null".into())],
        )?
        .iter()
        .filter_map(|ip| ip.get("address").and_then(Json::as_str).and_then(host_of))
        .collect();
    let unknown: Vec<String> = std::iter::once(state.server.address)
        .chain(state.peers.values().map(|p| p.address))
        .filter(|a| !known.contains(a))
        .map(|a| a.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(NetboxError::Unsupported(format!(
            "NetBox does not know {} address{} this state uses ({}), so it could hand {} out \
             again: run `wgadm netbox sync` first",
            unknown.len(),
            if unknown.len() == 1 { "" } else { "es" },
            unknown.join(", "),
            if unknown.len() == 1 { "it" } else { "them" },
        )));
    }
    ensure_tag_and_fields(client)?;
    let record = core::peer_address(state, name, peer, today);
    let mut step = Step {
        action: Action::Create,
        key: record.key.clone(),
        label: record.label.clone(),
        fields: record.fields.clone(),
        before: BTreeMap::new(),
    };
    // NetBox picks the address.
    step.fields.remove("address");
    let what = format!("allocate an address in the prefix {subnet} for peer {name}");
    let created = client.create(
        &format!("{}{prefix_id}/available-ips/", Kind::Prefix.endpoint()),
        &body(&step, &BTreeMap::new())?,
        &what,
    );
    let created = match created {
        Err(NetboxError::Api { status: 409, .. }) => {
            return Err(NetboxError::Unsupported(format!(
                "NetBox has no free address left in the prefix {subnet}; remove a peer or \
                 move to a larger subnet"
            )))
        }
        other => other?,
    };
    let id = id_of(&created).ok_or_else(|| client.protocol(&what, "the answer has no id"))?;
    let address = created
        .get("address")
        .and_then(Json::as_str)
        .and_then(host_of);
    let allocation = match address {
        Some(address) => Allocation { address, id },
        None => {
            let bad = Allocation {
                address: Ipv4Addr::UNSPECIFIED,
                id,
            };
            let _ = bad.release(client);
            return Err(client.protocol(&what, "the answer has no IPv4 address"));
        }
    };
    let taken = allocation.address == state.server.address
        || state
            .peers
            .values()
            .any(|p| p.address == allocation.address)
        || !subnet.contains(&allocation.address);
    if taken {
        let _ = allocation.release(client);
        return Err(NetboxError::Unsupported(format!(
            "NetBox handed out {}, which this state uses or which is outside {subnet}; run \
             `wgadm netbox sync` and try again",
            allocation.address
        )));
    }
    Ok(allocation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_the_core_compares_them() {
        let ip = json!({
            "id": 7, "display": "192.168.100.2/24", "address": "192.168.100.2/24",
            "status": {"value": "active", "label": "Active"},
            "assigned_object_id": 12,
            "vrf": null,
            "custom_fields": {"wgadm_peer": "alice"},
            "tags": [{"id": 1, "slug": "wgadm", "name": "wgadm"}],
            "object_types": ["ipam.prefix", "ipam.ipaddress"],
            "cluster": {"id": 3, "name": "proxmox"}
        });
        assert_eq!(value_at(&ip, "status"), Value::Text("active".into()));
        assert_eq!(value_at(&ip, "assigned_object_id"), Value::Int(12));
        assert_eq!(value_at(&ip, "vrf"), Value::Null);
        assert_eq!(value_at(&ip, "missing"), Value::Null);
        assert_eq!(
            value_at(&ip, "custom_fields.wgadm_peer"),
            Value::Text("alice".into())
        );
        assert_eq!(value_at(&ip, "cluster"), Value::Id(3));
        assert_eq!(
            value_at(&ip, "object_types"),
            Value::Texts(vec!["ipam.ipaddress".into(), "ipam.prefix".into()])
        );
        assert!(owned(&ip));
        assert!(!owned(&json!({"tags": [{"slug": "other"}]})));
        assert_eq!(host_of("192.168.100.2/24"), "192.168.100.2".parse().ok());
    }

    #[test]
    fn bodies_nest_custom_fields_resolve_references_and_tag_creates() {
        let vm = ObjectKey::new(Kind::VirtualMachine, "wireguard");
        let mut fields = BTreeMap::new();
        fields.insert("virtual_machine".into(), Value::Ref(vm.clone()));
        fields.insert("custom_fields.wgadm_vmid".into(), Value::Int(90));
        fields.insert("name".into(), Value::Text("wg0".into()));
        let step = Step {
            action: Action::Create,
            key: ObjectKey::new(Kind::VmInterface, "wireguard/wg0"),
            label: "VM interface wg0".into(),
            fields,
            before: BTreeMap::new(),
        };
        let ids = BTreeMap::from([(vm, 41)]);
        assert_eq!(
            body(&step, &ids).unwrap(),
            json!({"virtual_machine": 41, "name": "wg0",
                   "custom_fields": {"wgadm_vmid": 90}, "tags": [{"slug": "wgadm"}]})
        );
        assert!(body(&step, &BTreeMap::new()).is_err());
    }

    #[test]
    fn errors_never_show_the_token_and_say_what_to_do() {
        let e = NetboxError::Auth {
            url: "http://127.0.0.1:1".into(),
            status: 403,
            detail: "Invalid v2 token".into(),
        };
        let text = e.to_string();
        assert!(text.contains("HTTP 403") && text.contains("--netbox-token-file"));
        assert_eq!(detail_of(r#"{"detail": "nope"}"#), "nope");
        assert_eq!(
            detail_of(r#"{"address": ["Duplicate IP address"]}"#),
            r#"{"address":["Duplicate IP address"]}"#
        );
    }
}

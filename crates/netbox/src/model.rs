//! NetBox (IR-006): the objects a state should have in NetBox, and the plan that brings what
//! NetBox has to them.
//!
//! The shell looks up, for every object wgadm wants, the objects NetBox already has under the
//! same identity (a name, an address) and hands them in as [`Found`]s; [`plan`] compares field
//! by field and returns the exact steps. Ownership is the tag [`TAG`]: wgadm creates objects
//! with it, updates only objects that carry it, and deletes only addresses that carry it. An
//! object without the tag is used where it fits (a cluster the VM goes into) and never changed;
//! where it differs from what wgadm wants it is reported as skipped. Tagging such an object
//! `wgadm` hands it to wgadm.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use wgadm_core::{Date, Peer, PeerName, State};

/// The tag that marks the objects wgadm created (and so may change and delete).
pub const TAG: &str = "wgadm";
/// The custom field on an IP address naming the peer it belongs to.
pub const CF_PEER: &str = "wgadm_peer";
/// The custom field on an IP address holding the peer's public key.
pub const CF_PUBLIC_KEY: &str = "wgadm_public_key";
/// The custom field on the virtual machine holding the Proxmox container id (CT 90).
pub const CF_VMID: &str = "wgadm_vmid";

/// The oldest NetBox wgadm talks to: custom fields use `object_types` since 4.0.
pub const MIN_VERSION: Version = Version(4, 0, 0);
/// Tunnels with encapsulation `wireguard` exist since NetBox 4.1.8.
pub const WIREGUARD_VERSION: Version = Version(4, 1, 8);
/// Clusters and prefixes are placed at a site through `scope` since NetBox 4.2.
pub const SCOPE_VERSION: Version = Version(4, 2, 0);

/// A NetBox release number, as `/api/status/` reports it in `netbox-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Reads `4.7.3`, `v4.1.8`, `4.2.0-beta1` or `4.1.8-Docker-3.0.2`: the leading numbers count.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim().trim_start_matches('v');
        let mut parts = text.splitn(3, '.');
        let mut number = |last: bool| -> Option<u32> {
            let part = parts.next()?;
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() || (!last && digits.len() != part.len()) {
                return None;
            }
            digits.parse().ok()
        };
        let major = number(false)?;
        let minor = number(false)?;
        let patch = number(true).unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What the NetBox at hand can hold, by its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The NetBox version.
    pub version: Version,
    /// Tunnels with encapsulation `wireguard` (4.1.8).
    pub wireguard_tunnels: bool,
    /// `scope_type`/`scope_id` on clusters and prefixes (4.2).
    pub scopes: bool,
}

impl Capabilities {
    /// The capabilities of a NetBox version, or why wgadm cannot work with it.
    pub fn of(version: Version) -> Result<Capabilities, String> {
        if version < MIN_VERSION {
            return Err(format!(
                "NetBox {version} is too old: wgadm needs NetBox {MIN_VERSION} or later \
                 ({WIREGUARD_VERSION} or later for the WireGuard tunnel); upgrade NetBox"
            ));
        }
        Ok(Capabilities {
            version,
            wireguard_tunnels: version >= WIREGUARD_VERSION,
            scopes: version >= SCOPE_VERSION,
        })
    }
}

/// The names wgadm gives the server's objects in NetBox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The virtual machine that is the server (the LXC container).
    pub vm_name: String,
    /// The cluster the virtual machine is in.
    pub cluster: String,
    /// The cluster's type (created with this name when missing).
    pub cluster_type: String,
    /// The site of the cluster and the prefix, if any.
    pub site: Option<String>,
    /// The Proxmox container id (CT 90), kept in the custom field [`CF_VMID`].
    pub vmid: Option<u32>,
    /// The tunnel's name.
    pub tunnel: String,
}

/// A kind of NetBox object wgadm manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `extras.tag`.
    Tag,
    /// `extras.customfield`.
    CustomField,
    /// `dcim.site`.
    Site,
    /// `virtualization.clustertype`.
    ClusterType,
    /// `virtualization.cluster`.
    Cluster,
    /// `virtualization.virtualmachine`.
    VirtualMachine,
    /// `virtualization.vminterface`.
    VmInterface,
    /// `ipam.prefix`.
    Prefix,
    /// `ipam.ipaddress`.
    IpAddress,
    /// `vpn.tunnel`.
    Tunnel,
    /// `vpn.tunneltermination`.
    TunnelTermination,
}

impl Kind {
    /// The REST endpoint under `/api/`, with a trailing slash.
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::Tag => "extras/tags/",
            Kind::CustomField => "extras/custom-fields/",
            Kind::Site => "dcim/sites/",
            Kind::ClusterType => "virtualization/cluster-types/",
            Kind::Cluster => "virtualization/clusters/",
            Kind::VirtualMachine => "virtualization/virtual-machines/",
            Kind::VmInterface => "virtualization/interfaces/",
            Kind::Prefix => "ipam/prefixes/",
            Kind::IpAddress => "ipam/ip-addresses/",
            Kind::Tunnel => "vpn/tunnels/",
            Kind::TunnelTermination => "vpn/tunnel-terminations/",
        }
    }

    /// NetBox's name of the model (`app.model`), as in `assigned_object_type`.
    pub fn object_type(self) -> &'static str {
        match self {
            Kind::Tag => "extras.tag",
            Kind::CustomField => "extras.customfield",
            Kind::Site => "dcim.site",
            Kind::ClusterType => "virtualization.clustertype",
            Kind::Cluster => "virtualization.cluster",
            Kind::VirtualMachine => "virtualization.virtualmachine",
            Kind::VmInterface => "virtualization.vminterface",
            Kind::Prefix => "ipam.prefix",
            Kind::IpAddress => "ipam.ipaddress",
            Kind::Tunnel => "vpn.tunnel",
            Kind::TunnelTermination => "vpn.tunneltermination",
        }
    }

    /// What a person calls it.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Tag => "tag",
            Kind::CustomField => "custom field",
            Kind::Site => "site",
            Kind::ClusterType => "cluster type",
            Kind::Cluster => "cluster",
            Kind::VirtualMachine => "virtual machine",
            Kind::VmInterface => "VM interface",
            Kind::Prefix => "prefix",
            Kind::IpAddress => "IP address",
            Kind::Tunnel => "tunnel",
            Kind::TunnelTermination => "tunnel termination",
        }
    }

    /// Whether objects of this kind carry tags (and so can be wgadm's).
    pub fn taggable(self) -> bool {
        !matches!(self, Kind::Tag | Kind::CustomField)
    }
}

/// An object's identity: its kind and what NetBox finds it by (a name, a host address).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The name, or for an IP address its host address without the mask.
    pub name: String,
}

impl ObjectKey {
    /// A key.
    pub fn new(kind: Kind, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            kind,
            name: name.into(),
        }
    }
}

/// A field value, as far as wgadm compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Empty (JSON null).
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Int(i64),
    /// A string (for a choice field its value, e.g. `active`).
    Text(String),
    /// A list of strings. Desired: these at least (others may be there too).
    Texts(Vec<String>),
    /// Desired: the object wgadm wants under this key (its id once it is known).
    Ref(ObjectKey),
    /// Observed: a related object's id.
    Id(u64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Text(s) => write!(f, "{s}"),
            Value::Texts(list) => write!(f, "[{}]", list.join(", ")),
            Value::Ref(key) => write!(f, "{} {}", key.kind.noun(), key.name),
            Value::Id(id) => write!(f, "#{id}"),
        }
    }
}

/// An object wgadm wants in NetBox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its identity.
    pub key: ObjectKey,
    /// What a person reads in a plan, e.g. `IP address 192.168.100.2/24 (peer alice)`.
    pub label: String,
    /// The fields wgadm keeps in sync: compared, and updated on its own objects. A field name
    /// `custom_fields.NAME` is a custom field.
    pub fields: BTreeMap<String, Value>,
    /// Fields set only when wgadm creates the object (a slug, a description): never compared,
    /// so that a person may change them.
    pub create_only: BTreeMap<String, Value>,
}

impl Object {
    fn new(kind: Kind, name: impl Into<String>, label: impl Into<String>) -> Object {
        Object {
            key: ObjectKey::new(kind, name),
            label: label.into(),
            fields: BTreeMap::new(),
            create_only: BTreeMap::new(),
        }
    }

    fn field(mut self, name: &str, value: Value) -> Object {
        self.fields.insert(name.to_owned(), value);
        self
    }

    fn on_create(mut self, name: &str, value: Value) -> Object {
        self.create_only.insert(name.to_owned(), value);
        self
    }

    /// Every field a create sends: the kept ones and the create-only ones.
    pub fn create_fields(&self) -> BTreeMap<String, Value> {
        let mut all = self.create_only.clone();
        all.extend(self.fields.clone());
        all
    }
}

/// An object NetBox has under a key wgadm looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its id.
    pub id: u64,
    /// Whether it carries the tag [`TAG`].
    pub owned: bool,
    /// What NetBox calls it (its `display`).
    pub display: String,
    /// The fields wgadm compares, in the form of [`Value`] (a related object as [`Value::Id`]).
    pub fields: BTreeMap<String, Value>,
}

/// What NetBox has: the objects found under each key the shell looked up, in NetBox's order.
pub type InNetbox = BTreeMap<ObjectKey, Vec<Found>>;

/// Of the objects under one key, the one wgadm works with: its own first, else the first.
pub fn choose(found: &[Found]) -> Option<&Found> {
    found.iter().find(|f| f.owned).or_else(|| found.first())
}

/// What the state wants in NetBox, and what had to be left out for this NetBox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The objects, in the order they can be created (an object after the ones it refers to).
    pub objects: Vec<Object>,
    /// What was left out and why (an old NetBox), one sentence each.
    pub warnings: Vec<String>,
}

/// A NetBox slug from a name: lower case letters, digits, `-` and `_`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-').to_owned();
    if slug.is_empty() {
        "wgadm".to_owned()
    } else {
        slug
    }
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// The key of an IP address: its host address.
pub fn address_key(address: Ipv4Addr) -> ObjectKey {
    ObjectKey::new(Kind::IpAddress, address.to_string())
}

/// The custom fields wgadm puts on peer addresses (and, with a VMID, on the VM).
pub fn custom_fields(with_vmid: bool) -> Vec<Object> {
    let field = |name: &str, label: &str, kind: &str, on: Kind, about: &str| {
        Object::new(Kind::CustomField, name, format!("custom field {name}"))
            .field("type", text(kind))
            .field(
                "object_types",
                Value::Texts(vec![on.object_type().to_owned()]),
            )
            .on_create("name", text(name))
            .on_create("label", text(label))
            .on_create("description", text(about))
    };
    let mut fields = vec![
        field(
            CF_PEER,
            "WireGuard peer",
            "text",
            Kind::IpAddress,
            "The wgadm peer this address belongs to",
        ),
        field(
            CF_PUBLIC_KEY,
            "WireGuard public key",
            "text",
            Kind::IpAddress,
            "The WireGuard public key of the peer with this address",
        ),
    ];
    if with_vmid {
        fields.push(field(
            CF_VMID,
            "Proxmox VMID",
            "integer",
            Kind::VirtualMachine,
            "The Proxmox id of this container or VM",
        ));
    }
    fields
}

/// The tag wgadm marks its objects with.
pub fn tag() -> Object {
    Object::new(Kind::Tag, TAG, format!("tag {TAG}"))
        .on_create("name", text(TAG))
        .on_create("slug", text(TAG))
        .on_create("color", text("3f51b5"))
        .on_create(
            "description",
            text("Created by wgadm (netbox sync): wgadm changes and deletes only objects with this tag"),
        )
}

/// A peer's IP address as NetBox should hold it: the state's record of the peer. Active while
/// the peer is on the server (enabled, not expired), deprecated otherwise.
pub fn peer_address(state: &State, name: &PeerName, peer: &Peer, today: Date) -> Object {
    let cidr = format!("{}/{}", peer.address, state.server.subnet.prefix_len());
    let status = if State::is_active(peer, today) {
        "active"
    } else {
        "deprecated"
    };
    Object::new(
        Kind::IpAddress,
        peer.address.to_string(),
        format!("IP address {cidr} (peer {name})"),
    )
    .field("address", text(&cidr))
    .field("status", text(status))
    .field("description", text(format!("WireGuard peer {name}")))
    .field(&format!("custom_fields.{CF_PEER}"), text(name.as_str()))
    .field(
        &format!("custom_fields.{CF_PUBLIC_KEY}"),
        text(peer.public_key.to_string()),
    )
}

/// Everything the state wants in NetBox, for a NetBox with these capabilities.
pub fn desired(
    state: &State,
    settings: &Settings,
    caps: Capabilities,
    today: Date,
) -> Result<Desired, String> {
    let server = &state.server;
    let mut warnings = Vec::new();
    if settings.site.is_some() && !caps.scopes {
        return Err(format!(
            "--site needs NetBox {SCOPE_VERSION} or later (clusters and prefixes have a scope \
             since then); this NetBox is {}: leave --site out or upgrade NetBox",
            caps.version
        ));
    }
    let mut objects = vec![tag()];
    objects.extend(custom_fields(settings.vmid.is_some()));

    let site = settings.site.as_ref().map(|name| {
        Object::new(Kind::Site, name.as_str(), format!("site {name}"))
            .on_create("name", text(name.as_str()))
            .on_create("slug", text(slugify(name)))
            .on_create("status", text("active"))
    });
    let scoped = |o: Object| match &site {
        Some(s) => o
            .field("scope_type", text(Kind::Site.object_type()))
            .field("scope_id", Value::Ref(s.key.clone())),
        None => o,
    };
    let cluster_type = Object::new(
        Kind::ClusterType,
        settings.cluster_type.as_str(),
        format!("cluster type {}", settings.cluster_type),
    )
    .on_create("name", text(settings.cluster_type.as_str()))
    .on_create("slug", text(slugify(&settings.cluster_type)));
    let cluster = scoped(
        Object::new(
            Kind::Cluster,
            settings.cluster.as_str(),
            format!("cluster {}", settings.cluster),
        )
        .field("type", Value::Ref(cluster_type.key.clone()))
        .on_create("name", text(settings.cluster.as_str()))
        .on_create("status", text("active")),
    );
    let mut vm = Object::new(
        Kind::VirtualMachine,
        settings.vm_name.as_str(),
        format!("virtual machine {}", settings.vm_name),
    )
    .field("cluster", Value::Ref(cluster.key.clone()))
    .field("status", text("active"))
    .on_create("name", text(settings.vm_name.as_str()))
    .on_create(
        "description",
        text(format!(
            "WireGuard VPN server {} (managed by wgadm)",
            server.endpoint
        )),
    );
    if let Some(s) = &site {
        vm = vm.field("site", Value::Ref(s.key.clone()));
    }
    if let Some(id) = settings.vmid {
        vm = vm.field(&format!("custom_fields.{CF_VMID}"), Value::Int(id.into()));
    }
    let interface = |name: &str, description: String, kept: bool| {
        let o = Object::new(
            Kind::VmInterface,
            format!("{}/{name}", settings.vm_name),
            format!("VM interface {name} of {}", settings.vm_name),
        )
        .field("virtual_machine", Value::Ref(vm.key.clone()))
        .on_create("name", text(name))
        .on_create("enabled", Value::Bool(true));
        if kept {
            o.field("description", text(description))
        } else {
            o.on_create("description", text(description))
        }
    };
    let eth0 = interface("eth0", "Uplink".to_owned(), false);
    let wg = interface(
        server.interface.as_str(),
        format!("WireGuard, UDP port {}", server.listen_port),
        true,
    );
    let prefix = scoped(
        Object::new(
            Kind::Prefix,
            server.subnet.to_string(),
            format!("prefix {}", server.subnet),
        )
        .field("status", text("active"))
        .on_create("prefix", text(server.subnet.to_string()))
        .on_create(
            "description",
            text(format!("WireGuard VPN of {}", settings.vm_name)),
        ),
    );
    let server_cidr = format!("{}/{}", server.address, server.subnet.prefix_len());
    let server_ip = Object::new(
        Kind::IpAddress,
        server.address.to_string(),
        format!("IP address {server_cidr} (server, on {})", server.interface),
    )
    .field("address", text(&server_cidr))
    .field("status", text("active"))
    .field(
        "assigned_object_type",
        text(Kind::VmInterface.object_type()),
    )
    .field("assigned_object_id", Value::Ref(wg.key.clone()))
    .on_create(
        "description",
        text(format!("WireGuard server {}", settings.vm_name)),
    );

    objects.extend(site);
    objects.extend([cluster_type, cluster, vm, eth0]);
    let wg_key = wg.key.clone();
    objects.extend([wg, prefix, server_ip]);
    objects.extend(
        state
            .peers
            .iter()
            .map(|(name, peer)| peer_address(state, name, peer, today)),
    );
    if caps.wireguard_tunnels {
        let tunnel = Object::new(
            Kind::Tunnel,
            settings.tunnel.as_str(),
            format!("tunnel {}", settings.tunnel),
        )
        .field("encapsulation", text("wireguard"))
        .field("status", text("active"))
        .on_create("name", text(settings.tunnel.as_str()))
        .on_create(
            "description",
            text(format!(
                "WireGuard VPN {}, endpoint {}",
                server.subnet, server.endpoint
            )),
        );
        let hub = Object::new(
            Kind::TunnelTermination,
            format!("{}/hub", settings.tunnel),
            format!(
                "tunnel termination {} hub on {}",
                settings.tunnel, wg_key.name
            ),
        )
        .field("tunnel", Value::Ref(tunnel.key.clone()))
        .field("role", text("hub"))
        .field("termination_type", text(Kind::VmInterface.object_type()))
        .field("termination_id", Value::Ref(wg_key));
        objects.extend([tunnel, hub]);
    } else {
        warnings.push(format!(
            "NetBox {} has no WireGuard tunnels (encapsulation wireguard came with NetBox \
             {WIREGUARD_VERSION}): skipped the tunnel {} and its hub termination on {}; \
             upgrade NetBox to {WIREGUARD_VERSION} or later and sync again",
            caps.version, settings.tunnel, wg_key.name
        ));
    }
    Ok(Desired { objects, warnings })
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create the object (with the tag, where the kind carries tags).
    Create,
    /// Change the fields of the object with this id (one of wgadm's).
    Update(u64),
    /// Delete the object with this id (one of wgadm's).
    Delete(u64),
}

/// One change to NetBox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Create, update or delete.
    pub action: Action,
    /// The object.
    pub key: ObjectKey,
    /// What a person calls it.
    pub label: String,
    /// The fields to send: all of them for a create, the changed ones for an update.
    pub fields: BTreeMap<String, Value>,
    /// For an update, the values the changed fields have now.
    pub before: BTreeMap<String, Value>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |fields: &BTreeMap<String, Value>, before: Option<&BTreeMap<String, Value>>| {
            fields
                .iter()
                .map(|(name, value)| match before.and_then(|b| b.get(name)) {
                    Some(old) => format!("{name} {old} -> {value}"),
                    None => format!("{name}={value}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.action {
            Action::Create => write!(f, "create {}: {}", self.label, list(&self.fields, None)),
            Action::Update(id) => write!(
                f,
                "update {} (#{id}): {}",
                self.label,
                list(&self.fields, Some(&self.before))
            ),
            Action::Delete(id) => write!(f, "delete {} (#{id})", self.label),
        }
    }
}

/// An object wgadm leaves alone although it differs from what the state wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The object.
    pub key: ObjectKey,
    /// What a person calls it.
    pub label: String,
    /// Its id.
    pub id: u64,
    /// Why, and what to do.
    pub reason: String,
}

/// The way from what NetBox has to what the state wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// The changes, in an order NetBox accepts (what an object refers to comes first).
    pub steps: Vec<Step>,
    /// Objects that differ but are not wgadm's.
    pub skipped: Vec<Skip>,
    /// Objects that are in the way and must be fixed by hand before anything changes.
    pub blockers: Vec<String>,
    /// The ids of the objects that exist already, by key.
    pub existing: BTreeMap<ObjectKey, u64>,
}

impl SyncPlan {
    /// Whether the plan changes anything.
    pub fn changes(&self) -> bool {
        !self.steps.is_empty()
    }
}

/// Fields NetBox only takes together: when one changes, both are sent.
const PAIRS: [(&str, &str); 3] = [
    ("assigned_object_type", "assigned_object_id"),
    ("termination_type", "termination_id"),
    ("scope_type", "scope_id"),
];

/// Whether an observed value is what is wanted.
fn matches(want: &Value, have: Option<&Value>, existing: &BTreeMap<ObjectKey, u64>) -> bool {
    let have = have.unwrap_or(&Value::Null);
    match (want, have) {
        (Value::Ref(key), Value::Id(id)) => existing.get(key) == Some(id),
        (Value::Ref(key), Value::Int(id)) => {
            u64::try_from(*id).is_ok_and(|id| existing.get(key) == Some(&id))
        }
        (Value::Ref(_), _) => false,
        (Value::Texts(want), Value::Texts(have)) => want.iter().all(|w| have.contains(w)),
        (want, have) => want == have,
    }
}

/// Compares what the state wants with what NetBox has and returns the steps between them.
///
/// Objects are created when nothing is under their key, updated when they are wgadm's and
/// differ, skipped when they differ and are not wgadm's (a custom field in the way blocks the
/// whole plan: the addresses need it). wgadm's own IP addresses under keys the state no longer
/// wants are deleted; nothing else is ever deleted.
pub fn plan(desired: &[Object], observed: &InNetbox) -> SyncPlan {
    let mut plan = SyncPlan::default();
    let wanted: BTreeSet<&ObjectKey> = desired.iter().map(|o| &o.key).collect();
    for object in desired {
        let Some(found) = observed.get(&object.key).and_then(|f| choose(f)) else {
            plan.steps.push(Step {
                action: Action::Create,
                key: object.key.clone(),
                label: object.label.clone(),
                fields: object.create_fields(),
                before: BTreeMap::new(),
            });
            continue;
        };
        plan.existing.insert(object.key.clone(), found.id);
        let mut changed: BTreeSet<&str> = object
            .fields
            .iter()
            .filter(|(name, want)| !matches(want, found.fields.get(*name), &plan.existing))
            .map(|(name, _)| name.as_str())
            .collect();
        if changed.is_empty() {
            continue;
        }
        for (a, b) in PAIRS {
            if changed.contains(a) || changed.contains(b) {
                changed.extend([a, b].iter().filter(|f| object.fields.contains_key(**f)));
            }
        }
        let pick = |from: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
            changed
                .iter()
                .map(|name| {
                    let v = from.get(*name).cloned().unwrap_or(Value::Null);
                    ((*name).to_owned(), v)
                })
                .collect()
        };
        let (fields, before) = (pick(&object.fields), pick(&found.fields));
        if found.owned {
            plan.steps.push(Step {
                action: Action::Update(found.id),
                key: object.key.clone(),
                label: object.label.clone(),
                fields,
                before,
            });
            continue;
        }
        let differences = fields
            .iter()
            .map(|(name, want)| {
                let have = before.get(name).unwrap_or(&Value::Null);
                format!("{name} is {} (wanted {})", describe(have), describe(want))
            })
            .collect::<Vec<_>>()
            .join(", ");
        if object.key.kind.taggable() {
            plan.skipped.push(Skip {
                key: object.key.clone(),
                label: object.label.clone(),
                id: found.id,
                reason: format!(
                    "{} (#{}) was not created by wgadm (no tag {TAG}), so wgadm leaves it as it \
                     is: {differences}; fix it by hand, or tag it {TAG} to let wgadm keep it in sync",
                    found.display, found.id
                ),
            });
        } else {
            plan.blockers.push(format!(
                "{} (#{}) is in NetBox already but does not fit: {differences}; change or delete \
                 it in NetBox, then sync again",
                object.label, found.id
            ));
        }
    }
    for (key, found) in observed {
        if key.kind != Kind::IpAddress || wanted.contains(key) {
            continue;
        }
        for f in found.iter().filter(|f| f.owned) {
            plan.steps.push(Step {
                action: Action::Delete(f.id),
                key: key.clone(),
                label: format!("IP address {}", f.display),
                fields: BTreeMap::new(),
                before: BTreeMap::new(),
            });
        }
    }
    plan
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "empty".to_owned(),
        Value::Ref(key) => key.name.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgadm_core::testing::{peer, state};

    fn settings() -> Settings {
        Settings {
            vm_name: "wireguard".into(),
            cluster: "proxmox".into(),
            cluster_type: "LXC".into(),
            site: None,
            vmid: Some(90),
            tunnel: "wireguard-wg0".into(),
        }
    }

    fn caps(v: &str) -> Capabilities {
        Capabilities::of(Version::parse(v).unwrap()).unwrap()
    }

    fn today() -> Date {
        Date::parse("2026-06-01").unwrap()
    }

    fn lab() -> State {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("alice".parse().unwrap(), peer("192.168.100.2", 1));
        let mut bob = peer("192.168.100.3", 2);
        bob.enabled = false;
        s.peers.insert("bob".parse().unwrap(), bob);
        let mut carol = peer("192.168.100.4", 3);
        carol.expires = Some(Date::parse("2026-01-01").unwrap());
        s.peers.insert("carol".parse().unwrap(), carol);
        s
    }

    /// What NetBox would hold after every step of the plan ran: each object as wgadm created it.
    fn as_created(desired: &Desired) -> InNetbox {
        let mut observed = InNetbox::new();
        let mut ids = BTreeMap::new();
        for (i, o) in desired.objects.iter().enumerate() {
            ids.insert(o.key.clone(), i as u64 + 1);
        }
        for (i, o) in desired.objects.iter().enumerate() {
            let fields = o
                .create_fields()
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Ref(key) => (k, Value::Id(ids[&key])),
                    v => (k, v),
                })
                .collect();
            observed.insert(
                o.key.clone(),
                vec![Found {
                    id: i as u64 + 1,
                    owned: o.key.kind.taggable(),
                    display: o.key.name.clone(),
                    fields,
                }],
            );
        }
        observed
    }

    #[test]
    fn versions_parse_and_gate_the_tunnel() {
        assert_eq!(Version::parse("4.7.3"), Some(Version(4, 7, 3)));
        assert_eq!(Version::parse("v4.1.8"), Some(Version(4, 1, 8)));
        assert_eq!(Version::parse("4.2.0-beta1"), Some(Version(4, 2, 0)));
        assert_eq!(Version::parse("4.1.8-Docker-3.0.2"), Some(Version(4, 1, 8)));
        assert_eq!(Version::parse("4.2"), Some(Version(4, 2, 0)));
        assert_eq!(Version::parse("banana"), None);
        assert!(caps("4.1.8").wireguard_tunnels && !caps("4.1.8").scopes);
        assert!(!caps("4.1.7").wireguard_tunnels);
        let err = Capabilities::of(Version(3, 7, 8)).unwrap_err();
        assert!(err.contains("3.7.8") && err.contains("4.0.0"), "{err}");

        let old = desired(&lab(), &settings(), caps("4.1.7"), today()).unwrap();
        assert!(old
            .objects
            .iter()
            .all(|o| !matches!(o.key.kind, Kind::Tunnel | Kind::TunnelTermination)));
        assert_eq!(old.warnings.len(), 1);
        assert!(
            old.warnings[0].contains("4.1.8") && old.warnings[0].contains("wireguard-wg0"),
            "{}",
            old.warnings[0]
        );
        let mut with_site = settings();
        with_site.site = Some("DC 1".into());
        let err = desired(&lab(), &with_site, caps("4.1.9"), today()).unwrap_err();
        assert!(err.contains("--site") && err.contains("4.2.0"), "{err}");
    }

    #[test]
    fn an_empty_netbox_gets_everything_in_order() {
        let d = desired(&lab(), &settings(), caps("4.7.3"), today()).unwrap();
        assert!(d.warnings.is_empty());
        let p = plan(&d.objects, &InNetbox::new());
        assert!(p.blockers.is_empty() && p.skipped.is_empty());
        assert!(p.steps.iter().all(|s| s.action == Action::Create));
        // Every reference points at an object created earlier.
        let mut made = BTreeSet::new();
        for s in &p.steps {
            for v in s.fields.values() {
                if let Value::Ref(k) = v {
                    assert!(
                        made.contains(k),
                        "{} refers to {k:?} before it exists",
                        s.label
                    );
                }
            }
            made.insert(s.key.clone());
        }
        let text: Vec<String> = p.steps.iter().map(ToString::to_string).collect();
        let find = |needle: &str| {
            text.iter()
                .find(|t| t.contains(needle))
                .unwrap_or_else(|| panic!("no step with {needle}: {text:#?}"))
        };
        assert!(find("peer alice").contains("status=active"));
        assert!(find("peer bob").contains("status=deprecated"));
        assert!(find("peer carol").contains("status=deprecated"), "expired");
        assert!(find("peer alice").contains("custom_fields.wgadm_peer=alice"));
        assert!(find("tunnel wireguard-wg0:").contains("encapsulation=wireguard"));
        assert!(find("termination").contains("role=hub"));
        assert!(find("192.168.100.1/24").contains("assigned_object_id=VM interface wireguard/wg0"));
        assert!(find("virtual machine").contains("custom_fields.wgadm_vmid=90"));
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let d = desired(&lab(), &settings(), caps("4.7.3"), today()).unwrap();
        let p = plan(&d.objects, &as_created(&d));
        assert_eq!(p.steps, vec![]);
        assert!(p.skipped.is_empty() && p.blockers.is_empty());
    }

    #[test]
    fn wgadm_updates_its_own_objects_and_deletes_only_its_own_addresses() {
        let before = lab();
        let d = desired(&before, &settings(), caps("4.7.3"), today()).unwrap();
        let mut observed = as_created(&d);
        // A hand-made address in the prefix (no tag) and one of wgadm's for a peer now gone.
        observed.insert(
            address_key("192.168.100.50".parse().unwrap()),
            vec![Found {
                id: 500,
                owned: false,
                display: "192.168.100.50/24".into(),
                fields: BTreeMap::new(),
            }],
        );
        observed.insert(
            address_key("192.168.100.9".parse().unwrap()),
            vec![Found {
                id: 900,
                owned: true,
                display: "192.168.100.9/24".into(),
                fields: BTreeMap::new(),
            }],
        );
        let mut after = before.clone();
        after
            .peers
            .get_mut(&"alice".parse().unwrap())
            .unwrap()
            .enabled = false;
        after.peers.remove(&"bob".parse().unwrap());
        let d = desired(&after, &settings(), caps("4.7.3"), today()).unwrap();
        let p = plan(&d.objects, &observed);
        let text: Vec<String> = p.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            text.len(),
            3,
            "alice deprecated, bob and the stale address deleted: {text:#?}"
        );
        assert!(text[0].contains("update IP address 192.168.100.2/24 (peer alice)"));
        assert!(
            text[0].contains("status active -> deprecated"),
            "{}",
            text[0]
        );
        let deleted: BTreeSet<u64> = p
            .steps
            .iter()
            .filter_map(|s| match s.action {
                Action::Delete(id) => Some(id),
                _ => None,
            })
            .collect();
        let bob_id = observed[&address_key("192.168.100.3".parse().unwrap())][0].id;
        assert_eq!(deleted, BTreeSet::from([bob_id, 900]));
    }

    #[test]
    fn objects_not_made_by_wgadm_are_skipped_or_block() {
        let s = lab();
        let d = desired(&s, &settings(), caps("4.7.3"), today()).unwrap();
        let mut observed = as_created(&d);
        // alice's address exists, made by hand, with another status.
        let alice = address_key("192.168.100.2".parse().unwrap());
        let entry = &mut observed.get_mut(&alice).unwrap()[0];
        entry.owned = false;
        entry
            .fields
            .insert("status".into(), Value::Text("reserved".into()));
        let p = plan(&d.objects, &observed);
        assert!(p.steps.is_empty(), "{:#?}", p.steps);
        assert_eq!(p.skipped.len(), 1);
        assert!(
            p.skipped[0]
                .reason
                .contains("status is reserved (wanted active)"),
            "{}",
            p.skipped[0].reason
        );
        // A custom field of the wrong type blocks the sync: addresses could not carry it.
        let cf = ObjectKey::new(Kind::CustomField, CF_PEER);
        observed.get_mut(&cf).unwrap()[0]
            .fields
            .insert("type".into(), Value::Text("integer".into()));
        let p = plan(&d.objects, &observed);
        assert_eq!(p.blockers.len(), 1, "{:?}", p.blockers);
        assert!(p.blockers[0].contains("type is integer (wanted text)"));
        // A custom field on more object types than wgadm's is fine.
        let f = &mut observed.get_mut(&cf).unwrap()[0].fields;
        f.insert("type".into(), Value::Text("text".into()));
        f.insert(
            "object_types".into(),
            Value::Texts(vec!["dcim.device".into(), "ipam.ipaddress".into()]),
        );
        assert!(plan(&d.objects, &observed).blockers.is_empty());
    }

    #[test]
    fn a_moved_interface_sends_the_type_with_the_id() {
        let d = desired(&lab(), &settings(), caps("4.7.3"), today()).unwrap();
        let mut observed = as_created(&d);
        let server = address_key("192.168.100.1".parse().unwrap());
        observed.get_mut(&server).unwrap()[0]
            .fields
            .insert("assigned_object_id".into(), Value::Int(4242));
        let p = plan(&d.objects, &observed);
        assert_eq!(p.steps.len(), 1);
        let keys: Vec<&String> = p.steps[0].fields.keys().collect();
        assert_eq!(keys, ["assigned_object_id", "assigned_object_type"]);
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("LXC"), "lxc");
        assert_eq!(slugify(" DC 1 / Rack"), "dc-1-rack");
        assert_eq!(slugify("***"), "wgadm");
    }
}

//! `wgadm netbox sync`: NetBox brought to the state (IR-006). Reads the state, never writes it.

use std::collections::BTreeMap;

use serde::Serialize;
use wgadm_netbox::model::{self as core, Action, Settings, Step, SyncPlan, Value};

use super::render::load_checked;
use super::Ctx;
use crate::cli::{NetboxArgs, NetboxCommand, NetboxSyncArgs};
use crate::error::{Error, Result};
use crate::netbox::{execute, observe, Access, Client, Done};
use crate::output;

/// Runs a netbox subcommand.
pub fn run(ctx: &Ctx, cmd: NetboxCommand) -> Result<()> {
    match cmd {
        NetboxCommand::Sync(args) => sync(ctx, args),
    }
}

impl From<&NetboxArgs> for Access {
    fn from(args: &NetboxArgs) -> Access {
        Access {
            url: args.url.clone(),
            token_file: args.token_file.clone(),
        }
    }
}

/// One object in the outcome.
#[derive(Debug, Serialize)]
struct Entry {
    /// NetBox's model name, e.g. `ipam.ipaddress`.
    object: &'static str,
    /// What wgadm calls it, e.g. `IP address 192.168.100.2/24 (peer alice)`.
    name: String,
    /// Its id in NetBox (none for a create in a dry run).
    id: Option<u64>,
    /// For an update: each changed field with its old and new value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    changes: BTreeMap<String, Change>,
    /// For a skipped object: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A changed field.
#[derive(Debug, Serialize)]
struct Change {
    from: String,
    to: String,
}

/// What `netbox sync` did (or with `--dry-run` would do): the contract for Ansible.
#[derive(Debug, Serialize)]
struct Outcome {
    /// Whether NetBox was (or would be) changed.
    changed: bool,
    /// Nothing was changed: this is what would happen.
    dry_run: bool,
    /// The NetBox URL and version.
    netbox_url: String,
    netbox_version: String,
    created: Vec<Entry>,
    updated: Vec<Entry>,
    deleted: Vec<Entry>,
    /// Objects not created by wgadm that differ from the state: left as they are.
    skipped: Vec<Entry>,
    /// What this NetBox cannot hold and was left out.
    warnings: Vec<String>,
    /// The steps in words, one a line, in order.
    steps: Vec<String>,
}

fn entry(step: &Step, id: Option<u64>) -> Entry {
    let shown = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Ref(key)) => key.name.clone(),
        Some(v) => v.to_string(),
    };
    Entry {
        object: step.key.kind.object_type(),
        name: step.label.clone(),
        id,
        changes: match step.action {
            Action::Update(_) => step
                .fields
                .iter()
                .map(|(name, to)| {
                    let change = Change {
                        from: shown(step.before.get(name)),
                        to: shown(Some(to)),
                    };
                    (name.clone(), change)
                })
                .collect(),
            _ => BTreeMap::new(),
        },
        reason: None,
    }
}

fn settings(args: &NetboxSyncArgs, interface: &str) -> Result<Settings> {
    let tunnel = args
        .tunnel
        .clone()
        .unwrap_or_else(|| format!("{}-{interface}", args.vm_name));
    for (flag, value) in [
        ("--vm-name", &args.vm_name),
        ("--cluster", &args.cluster),
        ("--cluster-type", &args.cluster_type),
        ("--tunnel", &tunnel),
    ]
    .into_iter()
    .chain(args.site.as_ref().map(|s| ("--site", s)))
    {
        if value.trim().is_empty() || value.trim() != value || value.contains('/') {
            return Err(Error::Invalid(format!(
                "{flag} {value:?}: give a name without '/' and without leading or trailing spaces"
            )));
        }
    }
    Ok(Settings {
        vm_name: args.vm_name.clone(),
        cluster: args.cluster.clone(),
        cluster_type: args.cluster_type.clone(),
        site: args.site.clone(),
        vmid: args.vmid,
        tunnel,
    })
}

fn sync(ctx: &Ctx, args: NetboxSyncArgs) -> Result<()> {
    // A shared lock: the state does not change under the sync, and the sync changes nothing in it.
    let _lock = ctx.store.lock_shared()?;
    let state = load_checked(ctx)?;
    let settings = settings(&args, state.server.interface.as_str())?;
    let (client, caps) = Client::connect(&Access::from(&args.netbox))?;
    let desired = core::desired(&state, &settings, caps, ctx.today).map_err(Error::Invalid)?;
    let observed = observe(&client, &desired.objects)?;
    let plan = core::plan(&desired.objects, &observed);
    if !plan.blockers.is_empty() {
        return Err(Error::Invalid(format!(
            "NetBox has objects in the way; nothing was changed:\n  {}",
            plan.blockers.join("\n  ")
        )));
    }
    let done = if args.dry_run {
        None
    } else {
        Some(execute(&client, &plan)?)
    };
    let outcome = outcome(
        &client,
        caps.version.to_string(),
        &plan,
        done,
        desired.warnings,
    );
    report(ctx, &outcome)
}

fn outcome(
    client: &Client,
    version: String,
    plan: &SyncPlan,
    done: Option<Done>,
    warnings: Vec<String>,
) -> Outcome {
    let mut o = Outcome {
        changed: plan.changes(),
        dry_run: done.is_none(),
        netbox_url: client.url().to_owned(),
        netbox_version: version,
        created: Vec::new(),
        updated: Vec::new(),
        deleted: Vec::new(),
        skipped: plan
            .skipped
            .iter()
            .map(|s| Entry {
                object: s.key.kind.object_type(),
                name: s.label.clone(),
                id: Some(s.id),
                changes: BTreeMap::new(),
                reason: Some(s.reason.clone()),
            })
            .collect(),
        warnings,
        steps: plan.steps.iter().map(ToString::to_string).collect(),
    };
    match done {
        Some(done) => {
            o.created = done
                .created
                .iter()
                .map(|(s, id)| entry(s, Some(*id)))
                .collect();
            o.updated = done.updated.iter().map(|s| entry(s, id_of(s))).collect();
            o.deleted = done.deleted.iter().map(|s| entry(s, id_of(s))).collect();
        }
        None => {
            for step in &plan.steps {
                let e = entry(step, id_of(step));
                match step.action {
                    Action::Create => o.created.push(e),
                    Action::Update(_) => o.updated.push(e),
                    Action::Delete(_) => o.deleted.push(e),
                }
            }
        }
    }
    o
}

fn id_of(step: &Step) -> Option<u64> {
    match step.action {
        Action::Create => None,
        Action::Update(id) | Action::Delete(id) => Some(id),
    }
}

fn report(ctx: &Ctx, o: &Outcome) -> Result<()> {
    for w in &o.warnings {
        eprintln!("wgadm: warning: {w}");
    }
    if ctx.json {
        return output::json(o);
    }
    let mut text = String::new();
    let verb = if o.dry_run { "would" } else { "did" };
    if o.steps.is_empty() {
        text.push_str(&format!(
            "NetBox {} ({}) is in sync: nothing to do\n",
            o.netbox_url, o.netbox_version
        ));
    }
    for step in &o.steps {
        text.push_str(&format!("{verb}: {step}\n"));
    }
    for s in &o.skipped {
        text.push_str(&format!(
            "skipped: {}: {}\n",
            s.name,
            s.reason.as_deref().unwrap_or_default()
        ));
    }
    output::print(&text)
}

#!/usr/bin/env python3
"""The Zabbix half of tests/zabbix/test.sh: drives a real Zabbix server (6.0, or 7.0 with
--zabbix-version 7.0) through its frontend API and checks that the wgadm template works end to end. Python 3.11 standard library only.

It imports zabbix/template_wgadm.yaml with configuration.import, links it to a host whose agent
reads the lab's live snapshot, and waits (polling the API against deadlines, never sleeping for a
fixed time) until low-level discovery has found the lab's peers and their items have values and
the triggers say what the lab does. Every check prints one PASS or FAIL line and appends it to
the results file that test.sh counts.
"""

import argparse
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request

TEMPLATE = "wgadm WireGuard by Zabbix agent 2"


class Checks:
    """PASS/FAIL lines, printed and appended to the results file."""

    def __init__(self, results: str) -> None:
        self.results = results
        self.failed = 0

    def record(self, ok: bool, what: str, detail: str = "") -> bool:
        line = f"{'PASS' if ok else 'FAIL'} zabbix: {what}"
        if detail:
            line += " (" + " / ".join(detail.split("\n")) + ")"
        print(line, flush=True)
        with open(self.results, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        self.failed += 0 if ok else 1
        return ok


class Api:
    """Zabbix JSON-RPC. 6.0: the session token travels in the request body ("auth"); from 6.4 on
    in an "Authorization: Bearer" header (7.0 still takes "auth", deprecated; 7.2 refuses it)."""

    def __init__(self, url: str, bearer: bool) -> None:
        self.url = url
        self.auth = None
        self.bearer = bearer
        self.id = 0

    def call(self, method: str, params):
        self.id += 1
        body = {"jsonrpc": "2.0", "method": method, "params": params, "id": self.id}
        headers = {"Content-Type": "application/json-rpc"}
        if self.auth and method not in ("apiinfo.version", "user.login"):
            if self.bearer:
                headers["Authorization"] = f"Bearer {self.auth}"
            else:
                body["auth"] = self.auth
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers)
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.load(resp)
        if "error" in answer:
            e = answer["error"]
            raise RuntimeError(f"{method}: {e.get('message')} {e.get('data')}")
        return answer["result"]


def poll(deadline_s: float, probe, interval: float = 1.0):
    """Calls probe() until it returns something truthy or the deadline passes; returns the last
    result. Exceptions count as "not yet" (the last one is returned as text)."""
    end = time.monotonic() + deadline_s
    last = None
    while True:
        try:
            last = probe()
        except (RuntimeError, OSError, urllib.error.URLError) as e:
            last = None
            err = str(e)
        else:
            err = None
            if last:
                return last
        if time.monotonic() >= end:
            return last if err is None else f"error: {err}"
        time.sleep(interval)


def expected_from_yaml(text: str):
    """What the template file declares, read with regular expressions (no YAML parser in the
    standard library): item keys (all kinds), trigger names, macro names."""
    keys = set(re.findall(r"^\s+key: '?(.*?)'?$", text, re.M))
    keys = {k.replace("''", "'") for k in keys}
    lines = text.splitlines()
    trigger_names = set()
    for i, line in enumerate(lines[1:], 1):
        m = re.match(r"^\s+name: '?(.*?)'?$", line)
        if m and re.match(r"^\s+expression: ", lines[i - 1]):
            trigger_names.add(m.group(1).replace("''", "'"))
    macros = set(re.findall(r"^\s+- macro: '(\{\$[A-Z0-9_.]+\})'", text, re.M))
    return keys, trigger_names, macros


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--zabbix-version", default="6.0", choices=["6.0", "7.0"],
                    help="the Zabbix release the server must be")
    ap.add_argument("--template", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--agent", required=True, help="IP:PORT of the agent, as the server reaches it")
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--daemon-pid", type=int, required=True, help="the wgadm daemon writing the snapshot")
    ap.add_argument("--port", required=True, help="the WireGuard listen port")
    ap.add_argument("--up", required=True, help="peer connected throughout")
    ap.add_argument("--gone", required=True, help="peer that connected, then went away")
    ap.add_argument("--never", required=True, help="enabled peer that never connected")
    ap.add_argument("--disabled", required=True, help="disabled peer")
    ap.add_argument("--up-endpoint", required=True, help="address the --up peer connects from")
    ap.add_argument("--refused-source", required=True, help="address that tries a wrong key")
    ap.add_argument("--expiring", required=True, help="peer that expires within the warning days")
    ap.add_argument("--expiring-days", required=True, type=int, help="its days to expiry")
    ap.add_argument("--expiring-later", required=True, help="peer that expires after the warning days")
    args = ap.parse_args()
    checks = Checks(args.results)
    zbx7 = args.zabbix_version == "7.0"
    api = Api(args.url, bearer=zbx7)
    agent_ip, agent_port = args.agent.rsplit(":", 1)
    peers = [args.up, args.gone, args.never, args.disabled]

    version = poll(60, lambda: api.call("apiinfo.version", {}))
    if not checks.record(isinstance(version, str) and version.startswith(args.zabbix_version + "."),
                         "the frontend API answers", f"Zabbix {version}"):
        return 1
    api.auth = api.call("user.login", {"username": "Admin", "password": "zabbix"})

    # 1. The template imports (and imports again over itself, as an upgrade would).
    with open(args.template, encoding="utf-8") as f:
        source = f.read()
    uuids = re.findall(r"^\s*(?:- )?uuid: (\S+)$", source, re.M)
    bad = [u for u in uuids if not re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", u)]
    dup = sorted({u for u in uuids if uuids.count(u) > 1})
    checks.record(not bad and not dup, f"the template's {len(uuids)} UUIDs are 32-hex UUIDv4 and unique",
                  f"bad {bad}, duplicated {dup}" if bad or dup else "")
    # 6.2 split the "groups" rule into host and template groups (a template's groups are the
    # latter); 7.0 refuses "groups".
    groups_rule = "template_groups" if zbx7 else "groups"
    rules = {
        name: {"createMissing": True, "updateExisting": True}
        for name in (groups_rule, "templates", "items", "triggers", "discoveryRules", "graphs", "valueMaps")
    }
    rules["templateLinkage"] = {"createMissing": True}
    for attempt in ("imports", "imports again over itself (update)"):
        try:
            ok = api.call("configuration.import", {"format": "yaml", "source": source, "rules": rules}) is True
            detail = ""
        except RuntimeError as e:
            ok, detail = False, str(e)
        if not checks.record(ok, f"the template {attempt} through configuration.import", detail):
            return 1

    keys, trigger_names, macros = expected_from_yaml(source)
    tpl = api.call("template.get", {
        "filter": {"host": TEMPLATE}, "output": ["templateid"],
        "selectItems": ["key_"], "selectDiscoveries": ["key_"], "selectTriggers": ["description"],
        "selectMacros": ["macro"], "selectGraphs": ["name"],
    })
    if not checks.record(len(tpl) == 1, f"template '{TEMPLATE}' exists after the import"):
        return 1
    tpl = tpl[0]
    rule = api.call("discoveryrule.get", {
        "templateids": tpl["templateid"], "output": ["itemid"],
        "selectItems": ["key_"], "selectTriggers": ["description"], "selectGraphs": ["name"],
    })[0]
    got_keys = {i["key_"] for i in tpl["items"] + tpl["discoveries"] + rule["items"]}
    checks.record(got_keys == keys, f"every item, prototype and the discovery rule arrived ({len(keys)} keys)",
                  "" if got_keys == keys else f"missing {sorted(keys - got_keys)}, extra {sorted(got_keys - keys)}")
    got_triggers = {t["description"] for t in tpl["triggers"] + rule["triggers"]}
    checks.record(got_triggers == trigger_names, f"every trigger and trigger prototype arrived ({len(trigger_names)})",
                  "" if got_triggers == trigger_names else f"missing {sorted(trigger_names - got_triggers)}")
    got_macros = {m["macro"] for m in tpl["macros"]}
    checks.record(got_macros == macros, f"every macro arrived with the template ({len(macros)})")
    checks.record(len(tpl["graphs"]) >= 2 and len(rule["graphs"]) >= 1, "graphs and the graph prototype arrived")

    # 2. A host linked to the template polls the lab's agent. Short intervals so the test is quick;
    #    per-peer context macro: the peer that went away counts as unseen after 10 s.
    group = api.call("hostgroup.create", {"name": "wgadm test"})["groupids"][0]
    macros_host = [
        {"macro": "{$WGADM.SNAPSHOT.PATH}", "value": args.snapshot},
        {"macro": "{$WGADM.INTERVAL}", "value": "2s"},
        {"macro": "{$WGADM.PORT}", "value": args.port},
        {"macro": "{$WGADM.SNAPSHOT.MAX}", "value": "15s"},
        {"macro": f'{{$WGADM.HANDSHAKE.MAX:"{args.gone}"}}', "value": "10s"},
    ]
    # Any refused handshake is too many, so that trigger must fire; a short nodata period.
    macros_host.append({"macro": "{$WGADM.REFUSED.MAX}", "value": "0"})
    macros_host.append({"macro": "{$WGADM.NODATA.TIMEOUT}", "value": "30s"})
    hostid = api.call("host.create", {
        "host": "wgadm-lab",
        "interfaces": [{"type": 1, "main": 1, "useip": 1, "ip": agent_ip, "dns": "", "port": agent_port}],
        "groups": [{"groupid": group}],
        "templates": [{"templateid": tpl["templateid"]}],
        "macros": macros_host,
    })["hostids"][0]
    checks.record(True, "a host linked to the template was created", f"agent at {args.agent}")

    def items():
        """The host's items by key, as written in the template (user macros not expanded)."""
        return {i["key_"]: i for i in api.call("item.get", {
            "hostids": hostid, "output": ["key_", "lastvalue", "lastclock", "state", "error", "flags"],
        })}

    def triggers():
        return {t["description"]: t for t in api.call("trigger.get", {
            "hostids": hostid, "output": ["description", "value", "state", "error", "lastchange"],
            "expandDescription": True, "selectDependencies": ["description"],
        })}

    available = poll(60, lambda: api.call("hostinterface.get", {
        "hostids": hostid, "output": ["available", "error"]})[0]["available"] == "1")
    checks.record(available is True, "the server reaches the agent (interface available)")

    master = 'wgadm.status["{$WGADM.SNAPSHOT.PATH}"]'
    with open(args.snapshot, encoding="utf-8") as f:
        snap = json.load(f)

    def has_value(key):
        return lambda: (lambda i: i if i and i["lastclock"] != "0" else None)(items().get(key))

    total = poll(60, has_value("wgadm.peers.total"))
    checks.record(bool(total) and total["lastvalue"] == str(snap["peers_total"]),
                  "the master item's snapshot feeds the dependent items",
                  f"peers total {total and total['lastvalue']}, snapshot says {snap['peers_total']}")
    state = items().get(master, {})
    checks.record(state.get("state") == "0", "the master item reading the snapshot is supported", state.get("error", ""))

    # 3. Low-level discovery finds the lab's peers, and their items get values.
    prototypes = {i["key_"] for i in rule["items"]}
    want = {k.replace("{#PEER}", p) for k in prototypes for p in peers}
    found = poll(90, lambda: want <= set(items()) and want)
    checks.record(bool(found), f"LLD discovered the peers {', '.join(peers)} ({len(want)} items)",
                  "" if found else f"missing {sorted(want - set(items()))[:6]}")

    def value_is(key, pred):
        def probe():
            i = items().get(key)
            return i if i and i["lastclock"] != "0" and pred(i["lastvalue"]) else None
        got = poll(60, probe)
        return bool(got), (items().get(key) or {})

    expectations = [
        (f"wgadm.peer.connected[{args.up}]", lambda v: v == "1", f"{args.up} is connected"),
        (f"wgadm.peer.enabled[{args.up}]", lambda v: v == "1", f"{args.up} is enabled"),
        (f"wgadm.peer.state[{args.up}]", lambda v: v == "applied", f"{args.up} is applied"),
        (f"wgadm.peer.handshake_age[{args.up}]", lambda v: 0 <= int(v) < 180, f"{args.up} has a fresh handshake"),
        (f"wgadm.peer.endpoint[{args.up}]", lambda v: v.startswith(args.up_endpoint + ":"),
         f"{args.up}'s endpoint is its lab address"),
        (f"wgadm.peer.rx[{args.up}]", lambda v: float(v) > 0, f"{args.up}'s received bytes/s moves with her traffic"),
        (f"wgadm.peer.tx[{args.up}]", lambda v: float(v) > 0, f"{args.up}'s sent bytes/s moves with her traffic"),
        (f"wgadm.peer.denied.rate[{args.up}]", lambda v: float(v) >= 0, f"{args.up}'s denied packets/s has a value"),
        (f"wgadm.peer.enabled[{args.disabled}]", lambda v: v == "0", f"{args.disabled} is disabled"),
        (f"wgadm.peer.state[{args.disabled}]", lambda v: v == "disabled", f"{args.disabled}'s state is disabled"),
        (f"wgadm.peer.connected[{args.never}]", lambda v: v == "0", f"{args.never} is not connected"),
        ("wgadm.peers.connected", lambda v: v == str(snap["peers_connected"]), "peers connected match the snapshot"),
        ("wgadm.interface.up", lambda v: v == "1", "the interface is up"),
        ("wgadm.interface.listen_port", lambda v: v == args.port, "the listen port is the lab's"),
        ("wgadm.firewall.in_force", lambda v: v == "1", "the daemon finds table inet wgadm in force"),
        ("net.udp.listen[{$WGADM.PORT}]", lambda v: v == "1", f"the agent sees UDP port {args.port} listening"),
        ("wgadm.snapshot.age", lambda v: 0 <= int(v) <= 10, "the snapshot is fresh"),
        ("wgadm.daemon.uptime", lambda v: int(v) >= 0, "the daemon's uptime has a value"),
        ("wgadm.refused.rate", lambda v: float(v) >= 0, "refused handshakes per minute has a value"),
        (f"wgadm.peer.expires_in_days[{args.expiring}]", lambda v: int(v) == args.expiring_days,
         f"{args.expiring}'s days to expiry are {args.expiring_days}"),
        (f"wgadm.peer.expires_in_days[{args.expiring_later}]", lambda v: int(v) > 14,
         f"{args.expiring_later}'s days to expiry are past the warning days"),
    ]
    for key, pred, what in expectations:
        ok, item = value_is(key, pred)
        checks.record(ok, what, f"{key} = {item.get('lastvalue')!r}{' ' + item['error'] if item.get('error') else ''}")

    # A peer that never shook hands has a null handshake age and endpoint: no value, and not an
    # unsupported item either (the JSONPath step discards it).
    never = items().get(f"wgadm.peer.handshake_age[{args.never}]", {})
    checks.record(never.get("lastclock") == "0" and never.get("state") == "0",
                  f"{args.never}, never connected, has no handshake age and the item stays supported",
                  f"lastclock {never.get('lastclock')}, error {never.get('error')!r}")
    # A peer without an expiry has no days to expiry, and the item stays supported.
    no_expiry = items().get(f"wgadm.peer.expires_in_days[{args.up}]", {})
    checks.record(no_expiry.get("lastclock") == "0" and no_expiry.get("state") == "0",
                  f"{args.up}, without an expiry, has no days to expiry and the item stays supported",
                  f"lastclock {no_expiry.get('lastclock')}, error {no_expiry.get('error')!r}")
    unsupported = {k: i["error"] for k, i in items().items() if i["state"] != "0"}
    checks.record(not unsupported, "no item of the host is unsupported", json.dumps(unsupported)[:300])

    graphs = {g["name"] for g in api.call("graph.get", {"hostids": hostid, "output": ["name"]})}
    checks.record(f"wgadm: Peer {args.up}: Traffic" in graphs, "the per-peer traffic graph was discovered")

    # 4. Triggers say what the lab does.
    def trigger_is(name, value, deadline=60):
        got = poll(deadline, lambda: (lambda t: t if t and t["value"] == value else None)(triggers().get(name)))
        return bool(got), triggers().get(name, {})

    unseen = 'wgadm: Peer {} has not been seen for {}'
    ok, t = trigger_is(unseen.format(args.gone, "10s"), "1")
    checks.record(ok, f"'{args.gone} has not been seen' fires (it went away; context macro 10s)", f"value {t.get('value')}")
    ok, t = trigger_is(unseen.format(args.up, "5m"), "0", 5)
    checks.record(ok, f"'{args.up} has not been seen' stays OK", f"value {t.get('value')}")
    quiet = [f"wgadm: WireGuard port {args.port}/udp is not listening", "wgadm: WireGuard interface is down",
             "wgadm: Status snapshot is stale", "wgadm: No status snapshot",
             f"wgadm: Interface listens on another port than {args.port}", f"wgadm: Peer {args.up} differs from the interface"]
    for name in quiet:
        ok, t = trigger_is(name, "0", 5)
        checks.record(ok, f"'{name}' is OK", f"value {t.get('value')}")
    expiring = 'wgadm: Peer {} expires within {} days'
    ok, t = trigger_is(expiring.format(args.expiring, 14), "1")
    checks.record(ok, f"'{args.expiring} expires within 14 days' fires ({args.expiring_days} days left; "
                  "{$WGADM.EXPIRY.WARN.DAYS} = 14)", f"value {t.get('value')}")
    for peer in (args.expiring_later, args.up):
        ok, t = trigger_is(expiring.format(peer, 14), "0", 5)
        checks.record(ok, f"'{peer} expires within 14 days' is OK", f"value {t.get('value')}")
    daemon_trigger = "wgadm: Daemon is not running"
    ok, t = trigger_is(daemon_trigger, "0", 30)
    checks.record(ok, f"'{daemon_trigger}' is OK while wgadm daemon runs", f"value {t.get('value')}")

    # mallory keeps trying a key the server does not know.
    ok, item = value_is("wgadm.refused.total", lambda v: int(v) >= 1)
    checks.record(ok, "refused handshakes are counted", f"total {item.get('lastvalue')}")
    ok, item = value_is("wgadm.refused.rate", lambda v: float(v) > 0)
    checks.record(ok, "refused handshakes per minute is above zero", f"rate {item.get('lastvalue')}")
    ok, item = value_is("wgadm.refused.sources", lambda v: args.refused_source in v)
    checks.record(ok, f"the refused source {args.refused_source} is named", repr(item.get("lastvalue")))
    ok, t = trigger_is("wgadm: Too many refused handshakes", "1")
    checks.record(ok, "'Too many refused handshakes' fires ({$WGADM.REFUSED.MAX} = 0 on the host)",
                  f"value {t.get('value')}")

    # 5. The daemon stops: the snapshot goes stale and Zabbix says so.
    os.kill(args.daemon_pid, signal.SIGTERM)
    ok, item = value_is("wgadm.snapshot.age", lambda v: int(v) > 15)
    checks.record(ok, "after the daemon stops, the snapshot age grows past {$WGADM.SNAPSHOT.MAX}",
                  f"age {item.get('lastvalue')}")
    ok, t = trigger_is(daemon_trigger, "1", 30)
    procs = items().get("proc.num[wgadm,,,daemon]", {})
    checks.record(ok, f"'{daemon_trigger}' fires after the daemon is stopped",
                  f"value {t.get('value')}; daemon processes {procs.get('lastvalue')!r} at {procs.get('lastclock')} "
                  f"(now {int(time.time())}) {procs.get('error', '')}")
    stale = triggers().get("wgadm: Status snapshot is stale", {})
    daemon_t = triggers().get(daemon_trigger, {})
    checks.record(stale.get("value") == "0", "'Status snapshot is stale' stays quiet behind it (trigger dependency)",
                  f"value {stale.get('value')}, changed at {stale.get('lastchange')}, depends on "
                  f"{[d['description'] for d in stale.get('dependencies', [])]}; the daemon's changed at "
                  f"{daemon_t.get('lastchange')}")

    # 6. The agent's user cannot read the snapshot: the master item says why, and "No status
    #    snapshot" fires once nothing arrived for {$WGADM.NODATA.TIMEOUT} (30 s here).
    os.chmod(args.snapshot, 0o600)
    ok = poll(30, lambda: "Permission denied" in items().get(master, {}).get("error", ""))
    checks.record(bool(ok), "an unreadable snapshot makes the master item unsupported, naming the cause",
                  items().get(master, {}).get("error", "")[:120])
    ok, t = trigger_is("wgadm: No status snapshot", "1", 90)
    checks.record(ok, "'No status snapshot' fires", f"value {t.get('value')}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A Proxmox VE API stand-in for tests (README.md): HTTPS, API tokens, JSON under /api2/json,
every request checked against PVE 9's own schema, containers made real by LXC (ct.sh).

Usage: standin.py --listen 127.0.0.1:8006 [--netns NS] --cert C --key K --token-file F --rig NAME
                  --node pve --state DIR [--template-cache FILE]
The token file holds one line `USER@REALM!TOKENID=SECRET` (0600; never on a command line).
"""

import argparse
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pveschema

HERE = os.path.dirname(os.path.abspath(__file__))
CT_SH = os.path.join(HERE, "ct.sh")


class ApiError(Exception):
    def __init__(self, status, message, errors=None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


class State:
    """The node's guests, tasks, storage and HA resources. Guests are persisted as PVE's
    /etc/pve/lxc/VMID.conf would be (DIR/lxc/VMID.conf, `key: value` lines)."""

    def __init__(self, args):
        self.args = args
        self.node = args.node
        self.lock = threading.RLock()
        self.tasks = {}
        self.ha = {}
        self.dir = args.state
        os.makedirs(os.path.join(self.dir, "lxc"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "template", "cache"), exist_ok=True)

    # ---- guests -------------------------------------------------------------------------------

    def conf_path(self, vmid):
        return os.path.join(self.dir, "lxc", "%d.conf" % vmid)

    def vmids(self):
        return sorted(int(f[:-5]) for f in os.listdir(os.path.join(self.dir, "lxc")) if f.endswith(".conf"))

    def read_conf(self, vmid):
        path = self.conf_path(vmid)
        if not os.path.exists(path):
            # What PVE says for a missing guest.
            raise ApiError(500, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist" % (self.node, vmid))
        conf, pending = {}, {}
        section = conf
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line == "[pve:pending]":
                    section = pending
                    continue
                if ": " in line:
                    k, v = line.split(": ", 1)
                    section[k] = v
        return conf, pending

    def write_conf(self, vmid, conf, pending=None):
        tmp = self.conf_path(vmid) + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for k in sorted(conf):
                f.write("%s: %s\n" % (k, conf[k]))
            if pending:
                f.write("\n[pve:pending]\n")
                for k in sorted(pending):
                    f.write("%s: %s\n" % (k, pending[k]))
        os.replace(tmp, self.conf_path(vmid))

    def record(self):
        """Writes DIR/calls.json: every call served and refused (the test reads it)."""
        with self.lock:
            path = os.path.join(self.dir, "calls.json")
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump({"calls": self.calls, "refusals": self.refusals}, f)
            os.replace(path + ".tmp", path)

    def ct_status(self, vmid):
        out = self.ct("state", str(vmid), check=False)
        return "running" if out.strip() == "RUNNING" else "stopped"

    def ct(self, *argv, check=True, stdin=None):
        """Runs ct.sh (tests/lxc's rig library) for the real container."""
        env = dict(os.environ, PVE_STANDIN_RIG=self.args.rig, PVE_STANDIN_STATE=self.dir)
        p = subprocess.run(["bash", CT_SH, *argv], input=stdin, capture_output=True, text=True, env=env)
        if check and p.returncode != 0:
            raise RuntimeError((p.stderr or p.stdout).strip().splitlines()[-1] if (p.stderr or p.stdout).strip() else "ct.sh %s failed" % argv[0])
        return p.stdout

    # ---- tasks ----------------------------------------------------------------------------------

    def task(self, user, typ, ident, fn):
        """Starts fn in a worker and answers its UPID, as PVE's fork_worker does."""
        now = int(time.time())
        pid = os.getpid() + len(self.tasks) + 1
        upid = "UPID:%s:%08X:%08X:%08X:%s:%s:%s:" % (self.node, pid, pid, now, typ, ident, user)
        t = {"upid": upid, "node": self.node, "pid": pid, "pstart": pid, "starttime": now, "type": typ,
             "id": ident, "user": user, "status": "running", "log": []}
        with self.lock:
            self.tasks[upid] = t

        def run():
            try:
                fn(t["log"])
                t["exitstatus"] = "OK"
            except Exception as e:  # a task's error is its exit status, as on PVE
                t["log"].append("TASK ERROR: %s" % e)
                t["exitstatus"] = str(e)
            t["status"] = "stopped"

        threading.Thread(target=run, daemon=True).start()
        return upid


def _api(state, method, path, params, user):
    """Dispatches a schema-checked request. Returns the `data` value."""
    node = state.node
    m = re.fullmatch(r"/nodes/([^/]+)(/.*)?", path)
    if m and m.group(1) != node:
        raise ApiError(595, "no such cluster node '%s'" % m.group(1))
    vmid = params.get("vmid")

    if path == "/version":
        return {"version": "9.0.3", "release": "9.0", "repoid": "standin"}
    if path == "/nodes":
        return [{"node": node, "status": "online", "type": "node", "id": "node/" + node, "level": ""}]
    if path == "/cluster/nextid":
        used = set(state.vmids())
        if vmid is not None:
            if vmid in used:
                raise ApiError(400, "Parameter verification failed.", {"vmid": "VM %d already exists" % vmid})
            return str(vmid)
        return str(next(i for i in range(100, 1000000) if i not in used))
    if path == "/cluster/resources":
        if params.get("type") not in (None, "vm"):
            return []
        out = []
        for v in state.vmids():
            conf, _ = state.read_conf(v)
            out.append({"id": "lxc/%d" % v, "vmid": v, "type": "lxc", "node": node, "name": conf.get("hostname", "CT%d" % v),
                        "status": state.ct_status(v), "template": 0, "tags": conf.get("tags", "")})
        return out
    if path == "/cluster/ha/resources":
        if method == "GET":
            return [dict(r, sid=s) for s, r in sorted(state.ha.items())]
        sid = params["sid"] if ":" in params["sid"] else "vm:" + params["sid"]
        kind, num = sid.split(":")
        if int(num) not in state.vmids():
            raise ApiError(500, "unable to find configuration file for VM %s on node '%s'" % (num, node))
        if kind == "vm" and os.path.exists(state.conf_path(int(num))):
            sid = "ct:" + num  # PVE resolves a bare id to the guest's type
        if sid in state.ha:
            raise ApiError(500, "resource ID '%s' already defined" % sid)
        state.ha[sid] = {"type": sid.split(":")[0], "state": params.get("state", "started"),
                         **{k: params[k] for k in ("comment", "group", "max_restart", "max_relocate") if k in params}}
        return None
    m = re.fullmatch(r"/cluster/ha/resources/(.+)", path)
    if m:
        sid = params["sid"]
        if sid not in state.ha:
            raise ApiError(500, "service '%s' not defined" % sid)
        if method == "DELETE":
            del state.ha[sid]
            return None
        return dict(state.ha[sid], sid=sid)

    if path.endswith("/aplinfo") and method == "POST":
        storage, template = params["storage"], params["template"]
        if storage != "local":
            raise ApiError(500, "storage '%s' does not support vztmpl content (the stand-in has 'local' only)" % storage)

        def download(log):
            dest = os.path.join(state.dir, "template", "cache", template)
            log.append("downloading %s to %s" % (template, dest))
            # Real bytes: the cached Debian 13 rootfs of tests/lxc stands in for the template.
            state.ct("template", dest)
            log.append("download of '%s' finished" % template)

        return state.task(user, "download", template, download)
    m = re.fullmatch(r"/nodes/[^/]+/storage/([^/]+)/content", path)
    if m:
        if m.group(1) != "local":
            raise ApiError(500, "storage '%s' does not exist" % m.group(1))
        out = []
        if params.get("content") in (None, "vztmpl"):
            for f in sorted(os.listdir(os.path.join(state.dir, "template", "cache"))):
                p = os.path.join(state.dir, "template", "cache", f)
                out.append({"volid": "local:vztmpl/" + f, "content": "vztmpl", "format": "tzst", "size": os.path.getsize(p)})
        return out
    m = re.fullmatch(r"/nodes/[^/]+/tasks/([^/]+)/(status|log)", path)
    if m:
        t = state.tasks.get(params["upid"])
        if t is None:
            raise ApiError(500, "no such task")
        if m.group(2) == "log":
            return [{"n": i + 1, "t": line} for i, line in enumerate(t["log"])]
        return {k: v for k, v in t.items() if k != "log"}

    if path == "/nodes/%s/lxc" % node:
        if method == "GET":
            return [{"vmid": v, "status": state.ct_status(v), "name": state.read_conf(v)[0].get("hostname", "")} for v in state.vmids()]
        return _create(state, params, user)
    m = re.fullmatch(r"/nodes/[^/]+/lxc/(\d+)(/.*)?", path)
    if not m:
        raise ApiError(501, "Method '%s %s' not implemented by the stand-in" % (method, path))
    sub = m.group(2) or ""
    conf, pending = state.read_conf(vmid)
    if sub == "/config":
        if method == "GET":
            return dict(conf, **({} if params.get("current") else pending), digest="0" * 40)
        return _set_config(state, vmid, conf, pending, params)
    if sub == "/pending":
        keys = sorted(set(conf) | set(pending))
        return [dict(key=k, **({"value": conf[k]} if k in conf else {}), **({"pending": pending[k]} if k in pending else {})) for k in keys]
    if sub == "/status/current":
        st = state.ct_status(vmid)
        return {"vmid": vmid, "status": st, "name": conf.get("hostname", ""), "type": "lxc",
                "maxmem": int(conf.get("memory", 512)) * 1024 * 1024, "maxswap": int(conf.get("swap", 512)) * 1024 * 1024,
                "cpus": int(conf.get("cores", 1)), "tags": conf.get("tags", ""), "uptime": 0, "ha": {"managed": int("ct:%d" % vmid in state.ha)}}
    if sub in ("/status/start", "/status/stop", "/status/shutdown", "/status/reboot"):
        action = sub.rsplit("/", 1)[1]
        running = state.ct_status(vmid) == "running"
        if action == "start" and running:
            raise ApiError(500, "CT %d already running" % vmid)
        if action in ("stop", "shutdown", "reboot") and not running:
            raise ApiError(500, "CT %d not running" % vmid)

        def act(log):
            with state.lock:
                c, p = state.read_conf(vmid)
                if action in ("start", "reboot") and p:
                    # Pending changes apply at the next start, as pct does.
                    c.update(p)
                    state.write_conf(vmid, c)
            if action == "reboot":
                state.ct("shutdown", str(vmid), str(params.get("timeout", 60)))
                state.ct("start", str(vmid), stdin=lxc_config(state.read_conf(vmid)[0], vmid))
            elif action == "start":
                state.ct("start", str(vmid), stdin=lxc_config(state.read_conf(vmid)[0], vmid))
            elif action == "shutdown":
                state.ct("stop" if params.get("forceStop") else "shutdown", str(vmid), str(params.get("timeout", 60)))
            else:
                state.ct("stop", str(vmid), "0")
            log.append("%s CT %d: OK" % (action, vmid))

        return state.task(user, "vz" + action, str(vmid), act)
    if sub == "" and method == "DELETE":
        if state.ct_status(vmid) == "running":
            raise ApiError(500, "CT %d is running - destroy failed" % vmid)

        def destroy(log):
            state.ct("destroy", str(vmid))
            os.unlink(state.conf_path(vmid))
            state.ha.pop("ct:%d" % vmid, None)

        return state.task(user, "vzdestroy", str(vmid), destroy)
    raise ApiError(501, "Method '%s %s' not implemented by the stand-in" % (method, path))


# Keys create and config take that the stand-in turns into LXC settings (ct.sh); anything else
# is refused rather than silently ignored.
SUPPORTED = {"arch", "cores", "features", "hostname", "memory", "swap", "net0", "net1", "onboot", "startup", "tags",
             "unprivileged", "ostype", "dev0", "description", "rootfs", "ssh-public-keys", "ostemplate", "storage",
             "node", "vmid", "start", "digest", "delete", "force", "pool", "nameserver", "searchdomain", "timezone", "password", "cpuunits"}


def _unsupported(params):
    bad = sorted(k for k in params if k not in SUPPORTED)
    if bad:
        raise ApiError(501, "the stand-in does not implement %s" % ", ".join(bad))


def _create(state, params, user):
    _unsupported(params)
    vmid = params["vmid"]
    if params.get("pool"):
        raise ApiError(501, "the stand-in has no pools")
    if os.path.exists(state.conf_path(vmid)):
        # force=1 would overwrite it on PVE; the stand-in refuses either way.
        raise ApiError(500, "CT %d already exists on node '%s'" % (vmid, state.node))
    tmpl = params["ostemplate"]
    m = re.fullmatch(r"local:vztmpl/(.+)", tmpl)
    path = os.path.join(state.dir, "template", "cache", m.group(1)) if m else None
    if not path or not os.path.exists(path):
        raise ApiError(500, "volume '%s' does not exist" % tmpl)
    if not params.get("unprivileged"):
        raise ApiError(501, "the stand-in makes unprivileged containers only")
    rootfs = params.get("rootfs", "%s:4" % params.get("storage", "local"))
    mm = re.fullmatch(r"([\w\-.]+):(\d+(\.\d+)?)(,.*)?", rootfs)
    if not mm:
        raise ApiError(400, "Parameter verification failed.", {"rootfs": "the stand-in allocates STORAGE:SIZE_GB only"})
    conf = {"arch": params.get("arch", "amd64"), "cores": params.get("cores"), "features": params.get("features"),
            "hostname": params.get("hostname", "CT%d" % vmid), "memory": params.get("memory", 512),
            "swap": params.get("swap", 512), "onboot": params.get("onboot"), "startup": params.get("startup"),
            "tags": _sorted_tags(params.get("tags")), "unprivileged": 1, "ostype": params.get("ostype", "debian"),
            "rootfs": "%s:vm-%d-disk-0,size=%sG" % (mm.group(1), vmid, mm.group(2)), "description": params.get("description"),
            "dev0": params.get("dev0"), "nameserver": params.get("nameserver"), "searchdomain": params.get("searchdomain")}
    for i in (0, 1):
        if params.get("net%d" % i):
            conf["net%d" % i] = _with_hwaddr(params["net%d" % i], vmid, i)
    conf = {k: v for k, v in conf.items() if v is not None}
    keys = params.get("ssh-public-keys", "")

    def create(log):
        with state.lock:
            state.write_conf(vmid, conf)
        try:
            state.ct("create", str(vmid), path, mm.group(2), stdin=keys)
        except Exception:
            os.unlink(state.conf_path(vmid))
            raise
        log.append("extracting archive '%s'" % path)
        if params.get("start"):
            state.ct("start", str(vmid), stdin=lxc_config(state.read_conf(vmid)[0], vmid))

    return state.task(user, "vzcreate", str(vmid), create)


def _sorted_tags(tags):
    # PVE stores tags sorted and ';'-separated.
    return ";".join(sorted(t for t in re.split(r"[;,\s]+", tags) if t)) if tags else None


def _with_hwaddr(net, vmid, i):
    if "hwaddr=" in net:
        return net
    return net + ",hwaddr=BC:24:11:%02X:%02X:%02X,type=veth" % ((vmid >> 8) & 0xFF, vmid & 0xFF, i)


# Applied to a running container at once (pct's hotplug: cgroup limits, metadata); the rest waits
# for the next start as [pve:pending].
HOTPLUG = {"cores", "memory", "swap", "onboot", "startup", "tags", "description", "hostname", "cpuunits"}


def _set_config(state, vmid, conf, pending, params):
    _unsupported(params)
    running = state.ct_status(vmid) == "running"
    changes = {k: v for k, v in params.items() if k not in ("node", "vmid", "digest", "delete")}
    if "tags" in changes:
        changes["tags"] = _sorted_tags(changes["tags"])
    for k in [k for k in changes if re.fullmatch(r"net\d+", k)]:
        changes[k] = _with_hwaddr(changes[k], vmid, int(k[3:]))
    with state.lock:
        for k, v in changes.items():
            if running and k not in HOTPLUG:
                pending[k] = v
            else:
                conf[k] = v
                pending.pop(k, None)
        for k in [k for k in (params.get("delete") or "").split(",") if k]:
            conf.pop(k, None)
        state.write_conf(vmid, conf, pending)
    if running and any(k in HOTPLUG for k in changes) and any(k in changes for k in ("cores", "memory", "swap")):
        state.ct("limits", str(vmid), stdin=lxc_config(state.read_conf(vmid)[0], vmid))
    return None


def lxc_config(conf, vmid):
    """The LXC settings for a PVE container config, as pct writes them at start (ct.sh adds the
    rootfs, the unprivileged id map and systemd's mounts). @CTDIR@ is the container's directory."""
    out = ["# from /etc/pve/lxc/%d.conf by the PVE stand-in" % vmid, "lxc.uts.name = %s" % conf.get("hostname", "CT%d" % vmid)]
    feats = pveschema.parse_property_string({"nesting": {}}, conf.get("features", ""))
    # nesting=1: what lets systemd mount inside (pct: AppArmor allow_nesting + rw cgroup); without
    # it the cgroup tree is read-only and systemd 257 in Debian 13 fails to boot.
    out.append("lxc.mount.auto = proc:mixed sys:mixed %s" % ("cgroup:rw" if feats.get("nesting") == "1" else "cgroup:ro"))
    cores = int(conf.get("cores", 0) or 0)
    mem = int(conf.get("memory", 512)) * 1024 * 1024
    swap = int(conf.get("swap", 512)) * 1024 * 1024
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # pure cgroup v2, as on PVE 8/9
        if cores:
            out.append("lxc.cgroup2.cpu.max = %d 100000" % (cores * 100000))
        out += ["lxc.cgroup2.memory.max = %d" % mem, "lxc.cgroup2.memory.swap.max = %d" % swap]
    else:  # cgroup v1 (this kind of test host; pct on PVE 6 wrote the same)
        if cores:
            # LXC refuses both a CFS quota and a cpuset here (measured): not enforced on v1.
            out.append("# cores %d: no CPU limit on this cgroup v1 host" % cores)
        out.append("lxc.cgroup.memory.limit_in_bytes = %d" % mem)
        if os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"):
            out.append("lxc.cgroup.memory.memsw.limit_in_bytes = %d" % (mem + swap))
        else:
            out.append("# swap %d MB: no swap accounting on this host (memory.memsw), not enforced" % (swap >> 20))
    if conf.get("onboot") in ("1", 1):
        out.append("lxc.start.auto = 1")
    order = re.search(r"order=(\d+)", conf.get("startup", ""))
    if order:
        out.append("lxc.start.order = %s" % order.group(1))
    netfmt = {k: {} for k in ("name", "bridge", "ip", "gw", "hwaddr", "type", "firewall", "mtu", "tag")}
    for key in sorted(k for k in conf if re.fullmatch(r"net\d+", k)):
        n = key[3:]
        net = pveschema.parse_property_string(netfmt, conf[key])
        out += ["lxc.net.%s.type = veth" % n, "lxc.net.%s.veth.pair = veth%di%s" % (n, vmid, n),
                "lxc.net.%s.name = %s" % (n, net.get("name", "eth" + n)), "lxc.net.%s.flags = up" % n]
        if net.get("hwaddr"):
            out.append("lxc.net.%s.hwaddr = %s" % (n, net["hwaddr"].lower()))
        if net.get("ip") not in (None, "dhcp", "manual"):
            out.append("lxc.net.%s.ipv4.address = %s" % (n, net["ip"]))
        if net.get("gw"):
            out.append("lxc.net.%s.ipv4.gateway = %s" % (n, net["gw"]))
        if net.get("mtu"):
            out.append("lxc.net.%s.mtu = %s" % (n, net["mtu"]))
        # The host end joins the bridge (vmbr0, ...) in the lab's network namespace.
        out.append("lxc.net.%s.script.up = @CTDIR@/net-up %s" % (n, net.get("bridge", "")))
    for key in sorted(k for k in conf if re.fullmatch(r"dev\d+", k)):
        dev = pveschema.parse_property_string({"path": {"default_key": 1}, "mode": {}, "uid": {}, "gid": {}}, conf[key])
        out.append("# %s: %s (a node of the container's root, as pct makes it)" % (key, dev["path"]))
        out.append("@DEV@ %s %s" % (key, dev["path"]))
    return "\n".join(out) + "\n"


class Handler(BaseHTTPRequestHandler):
    server_version = "pve-api-daemon/3.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        # Method and path only: no query strings (no secrets there either, but keep logs plain).
        sys.stderr.write("standin: %s %s -> %s\n" % (self.command, self.path.split("?")[0], args[1] if len(args) > 1 else ""))

    def _send(self, status, body, reason=None):
        data = json.dumps(body).encode()
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        if not url.path.startswith("/api2/json/"):
            return self._send(501, {"data": None}, "Unsupported format")
        auth = self.headers.get("Authorization", "")
        m = re.fullmatch(r"PVEAPIToken=([^!=\s]+)!([^=\s]+)=(\S+)", auth)
        if not m or "%s!%s=%s" % m.groups() != self.server.token:
            # PVE answers 401 without saying which part was wrong.
            return self._send(401, {"data": None}, "authentication failure")
        user = "%s!%s" % (m.group(1), m.group(2))
        path = url.path[len("/api2/json"):].rstrip("/") or "/"
        found = pveschema.route(st.schema, path)
        if not found or self.command not in st.schema[found[0]]:
            return self._send(501, {"data": None}, "Method '%s %s' not implemented" % (self.command, path))
        template, pathvals = found
        params = {}
        for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items():
            params[k] = v if len(v) > 1 else v[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length).decode()
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                params.update({k: (v if not isinstance(v, bool) else int(v)) for k, v in json.loads(body).items()})
            else:
                for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items():
                    params[k] = v if len(v) > 1 else v[0]
        for k, v in pathvals.items():
            params[k] = urllib.parse.unquote(v)
        clean, errors = pveschema.verify(st.schema[template][self.command], params)
        if errors:
            st.refusals.append({"method": self.command, "path": template, "errors": errors})
            st.record()
            return self._send(400, {"errors": errors, "data": None}, "Parameter verification failed.")
        try:
            data = _api(st, self.command, path, clean, user)
        except ApiError as e:
            body = {"data": None}
            if e.errors:
                body["errors"] = e.errors
            else:
                body["message"] = e.message + "\n"
            return self._send(e.status, body, e.message.splitlines()[0][:200])
        except RuntimeError as e:
            return self._send(500, {"data": None, "message": str(e) + "\n"}, str(e).splitlines()[0][:200])
        st.calls.append({"method": self.command, "path": template})
        st.record()
        return self._send(200, {"data": data})

    do_GET = do_POST = do_PUT = do_DELETE = _handle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:8006")
    ap.add_argument("--netns", help="listen inside this network namespace (/run/netns/NAME)")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--rig", required=True)
    ap.add_argument("--node", default="pve")
    ap.add_argument("--state", required=True)
    args = ap.parse_args()
    if args.netns:
        # Only the network namespace: `ip netns exec` would also remount /sys, which hides the
        # cgroup tree LXC needs to start a container.
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/run/netns/" + args.netns, os.O_RDONLY)
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            sys.exit("standin: setns %s: %s" % (args.netns, os.strerror(ctypes.get_errno())))
        os.close(fd)
    if os.stat(args.token_file).st_mode & 0o077:
        sys.exit("standin: %s must be 0600 (it holds the API token)" % args.token_file)
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()
    host, port = args.listen.rsplit(":", 1)
    state = State(args)
    state.schema = pveschema.load_schema()
    state.calls, state.refusals = [], []
    srv = ThreadingHTTPServer((host, int(port)), Handler)
    srv.state, srv.token = state, token
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("standin: listening on https://%s/api2/json (node %s)" % (args.listen, args.node), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()

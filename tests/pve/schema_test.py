#!/usr/bin/env python3
"""The stand-in's parameter checks against PVE 9's schema (no root, no network): python3 tests/pve/schema_test.py"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pveschema  # noqa: E402
import standin  # noqa: E402

S = pveschema.load_schema()
CREATE = S["/nodes/{node}/lxc"]["POST"]


def errors(params, method=CREATE):
    return pveschema.verify(method, params)[1]


class Verify(unittest.TestCase):
    base = {"node": "pve", "vmid": "190", "ostemplate": "local:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst"}

    def test_a_good_create_passes(self):
        p = dict(self.base, unprivileged="1", features="nesting=1", cores="1", memory="1024", swap="512",
                 onboot="1", startup="order=2", tags="vpn;wireguard", dev0="/dev/net/tun",
                 net0="name=eth0,bridge=vmbr0,ip=192.168.1.90/24,gw=192.168.1.1,firewall=1", rootfs="local-lvm:8")
        self.assertEqual(errors(p), {})

    def test_vmid_below_100_is_refused(self):
        self.assertEqual(errors(dict(self.base, vmid="90")), {"vmid": "value must have a minimum value of 100"})

    def test_unknown_missing_type_enum(self):
        e = errors({"node": "pve", "vmid": "190", "colour": "red", "memory": "lots", "cmode": "serial"})
        self.assertIn("not defined in schema", e["colour"])
        self.assertIn("is missing", e["ostemplate"])
        self.assertIn("type check ('integer') failed", e["memory"])
        self.assertIn("enumeration", e["cmode"])

    def test_property_strings(self):
        self.assertIn("colour", errors(dict(self.base, net0="name=eth0,colour=red"))["net0"])
        self.assertIn("ip", errors(dict(self.base, net0="name=eth0,ip=10.0.0.300/24"))["net0"])
        self.assertIn("name", errors(dict(self.base, net0="bridge=vmbr0"))["net0"])
        self.assertIn("nesting", errors(dict(self.base, features="nesting=maybe"))["features"])

    def test_repeated_tags_are_refused_one_string_passes(self):
        self.assertIn("tags", errors(dict(self.base, tags=["vpn", "wireguard"])))
        self.assertEqual(errors(dict(self.base, tags="vpn;wireguard")), {})

    def test_ha_state_enum(self):
        post = S["/cluster/ha/resources"]["POST"]
        self.assertEqual(errors({"sid": "ct:190", "state": "started"}, post), {})
        self.assertIn("state", errors({"sid": "ct:190", "state": "running"}, post))

    def test_route(self):
        self.assertEqual(pveschema.route(S, "/nodes/pve/lxc/190/status/start"),
                         ("/nodes/{node}/lxc/{vmid}/status/start", {"node": "pve", "vmid": "190"}))
        self.assertIsNone(pveschema.route(S, "/nodes/pve/qemu"))


class Translate(unittest.TestCase):
    def test_pct_like_lxc_settings(self):
        conf = {"hostname": "wireguard", "features": "nesting=1", "memory": "1024", "swap": "512", "onboot": "1",
                "startup": "order=2", "net0": "name=eth0,bridge=vmbr0,ip=192.168.1.90/24,gw=192.168.1.1,hwaddr=BC:24:11:00:BE:00",
                "dev0": "/dev/net/tun"}
        out = standin.lxc_config(conf, 190)
        for line in ("lxc.uts.name = wireguard", "cgroup:rw", "lxc.start.auto = 1", "lxc.start.order = 2",
                     "lxc.net.0.veth.pair = veth190i0", "lxc.net.0.ipv4.address = 192.168.1.90/24",
                     "lxc.net.0.ipv4.gateway = 192.168.1.1", "net-up vmbr0", "@DEV@ dev0 /dev/net/tun"):
            self.assertIn(line, out)
        self.assertIn("cgroup:ro", standin.lxc_config(dict(conf, features=""), 190))


if __name__ == "__main__":
    unittest.main()

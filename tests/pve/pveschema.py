"""Parameter checks of the Proxmox VE API, from its own schema (schema/pve-api-subset.json).

Refuses what PVE's JSONSchema verification refuses, with PVE's wording where we know it:
unknown parameters, missing required ones, wrong types, out-of-range numbers, values outside an
enum, strings that miss a pattern or a length, and property strings (net0, features, dev0, ...)
with unknown keys or bad values. A handful of named formats are checked (pve-vmid, pve-node,
pve-storage-id, pve-configid, pve-tag-list, pve-startup-order, ipv4, pve-ipv4-config, mac-addr,
dns-name, pve-ha-resource-or-vm-id); others are accepted as strings (README.md lists this).
"""

import ipaddress
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_FILE = os.path.join(HERE, "schema", "pve-api-subset.json")


def load_schema(path=SCHEMA_FILE):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def route(schema, path):
    """Finds the schema path for a request path: ('/nodes/{node}/lxc', {'node': 'pve'}) or None."""
    parts = [p for p in path.strip("/").split("/") if p]
    for template in schema:
        tparts = [p for p in template.strip("/").split("/") if p]
        if len(tparts) != len(parts):
            continue
        vals = {}
        for t, p in zip(tparts, parts):
            if t.startswith("{") and t.endswith("}"):
                vals[t[1:-1]] = p
            elif t != p:
                break
        else:
            return template, vals
    return None


def _perl_re(pattern):
    # PVE's patterns are Perl; "(?^:...)" is Perl's default-flags group.
    return pattern.replace("(?^:", "(?:")


_BOOL = {"0": 0, "1": 1, "true": 1, "false": 0, "yes": 1, "no": 0, "on": 1, "off": 0}
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*$")


def _check_format(fmt, value):
    """Returns an error string or None for a named format."""
    if fmt == "pve-vmid":
        if not re.fullmatch(r"[1-9][0-9]{2,8}", str(value)):
            return "value does not look like a valid VM ID"
    elif fmt == "pve-node":
        if not re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", value):
            return "value does not look like a valid node name"
    elif fmt in ("pve-storage-id", "pve-configid"):
        if not re.fullmatch(r"[a-z][a-z0-9\-_.]*[a-z0-9]", value, re.I):
            return "invalid format - %s" % ("storage ID '%s'" % value if fmt == "pve-storage-id" else "invalid configuration ID '%s'" % value)
    elif fmt == "pve-tag-list":
        tags = [t for t in re.split(r"[;,\s]+", value) if t]
        if not tags or any(not _TAG.match(t) for t in tags):
            return "invalid format - invalid characters in tag"
    elif fmt == "pve-startup-order":
        for item in value.split(","):
            if not re.fullmatch(r"(order=\d+|up=\d+|down=\d+|\d+)", item):
                return "invalid format - unable to parse startup options"
    elif fmt == "ipv4":
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return "invalid format - value does not look like a valid IPv4 address"
    elif fmt == "pve-ipv4-config":
        if value not in ("dhcp", "manual"):
            try:
                ipaddress.IPv4Interface(value)
                if "/" not in value:
                    raise ValueError
            except ValueError:
                return "invalid format - value does not look like a valid IPv4 network configuration"
    elif fmt == "mac-addr":
        if not re.fullmatch(r"[a-fA-F0-9]{2}(:[a-fA-F0-9]{2}){5}", value) or int(value[:2], 16) & 1:
            return "invalid format - value does not look like a valid unicast MAC address"
    elif fmt == "dns-name":
        if not re.fullmatch(r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", value):
            return "invalid format - value does not look like a valid DNS name"
    elif fmt == "pve-ha-resource-or-vm-id":
        if not re.fullmatch(r"((vm|ct):)?[1-9][0-9]{2,8}", value):
            return "invalid format - unable to parse HA resource id '%s'" % value
    return None


def check_value(prop, value):
    """Checks one value (a string from a form or query, or a JSON value) against its property
    schema. Returns (normalised value, error or None)."""
    typ = prop.get("type", "string")
    s = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    if typ == "boolean":
        b = _BOOL.get(s.lower()) if isinstance(value, str) else (1 if value else 0) if isinstance(value, bool) else _BOOL.get(s)
        if b is None:
            return None, "type check ('boolean') failed - got '%s'" % s
        return b, None
    if typ == "integer":
        if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", s):
            return None, "type check ('integer') failed - got '%s'" % s
        v = int(s)
    elif typ == "number":
        try:
            v = float(s)
        except ValueError:
            return None, "type check ('number') failed - got '%s'" % s
    else:
        v = s
    if typ in ("integer", "number"):
        if "minimum" in prop and v < float(prop["minimum"]):
            return None, "value must have a minimum value of %s" % prop["minimum"]
        if "maximum" in prop and v > float(prop["maximum"]):
            return None, "value must have a maximum value of %s" % prop["maximum"]
    if "enum" in prop and str(v) not in [str(e) for e in prop["enum"]]:
        return None, "value '%s' does not have a value in the enumeration '%s'" % (v, ", ".join(prop["enum"]))
    if typ == "string":
        if "maxLength" in prop and len(v) > int(prop["maxLength"]):
            return None, "value may only be %s characters long" % prop["maxLength"]
        if "minLength" in prop and len(v) < int(prop["minLength"]):
            return None, "value must be at least %s characters long" % prop["minLength"]
        if "pattern" in prop and not re.fullmatch(_perl_re(prop["pattern"]), v):
            return None, "value does not match the regex pattern"
        fmt = prop.get("format")
        if isinstance(fmt, dict):
            err = check_property_string(fmt, v)
            if err:
                return None, err
        elif isinstance(fmt, str):
            err = _check_format(fmt, v)
            if err:
                return None, err
    return v, None


def parse_property_string(fmt, value):
    """'name=eth0,bridge=vmbr0' -> dict, with the format's default_key for a bare first item."""
    default_key = next((k for k, p in fmt.items() if p.get("default_key")), None)
    out = {}
    for item in value.split(","):
        if not item:
            continue
        if "=" in item:
            k, v = item.split("=", 1)
        elif default_key and default_key not in out:
            k, v = default_key, item
        else:
            k, v = item, None
        out[k] = v
    return out


def check_property_string(fmt, value):
    parsed = parse_property_string(fmt, value)
    for k, v in parsed.items():
        if k not in fmt:
            return "invalid format - format error\n%s: property is not defined in schema and the schema does not allow additional properties" % k
        if v is None:
            return "invalid format - format error\n%s: missing value" % k
        _, err = check_value(fmt[k], v)
        if err:
            return "invalid format - format error\n%s: %s" % (k, err)
    for k, p in fmt.items():
        if not p.get("optional") and not p.get("default_key") and k not in parsed:
            return "invalid format - format error\n%s: property is missing and it is not optional" % k
    return None


def _prop_for(props, name):
    if name in props:
        return props[name]
    m = re.fullmatch(r"([a-z]+)(\d+)", name)
    if m and (m.group(1) + "[n]") in props:
        return props[m.group(1) + "[n]"]
    return None


def verify(method_schema, params):
    """Checks request parameters (path values included) against a method's schema.

    Returns (normalised params, errors); errors maps each bad parameter to PVE's message."""
    spec = method_schema.get("parameters", {})
    props = spec.get("properties", {})
    errors, out = {}, {}
    for name, value in params.items():
        prop = _prop_for(props, name)
        if prop is None:
            if not spec.get("additionalProperties", 0):
                errors[name] = "property is not defined in schema and the schema does not allow additional properties"
            continue
        if isinstance(value, list):
            # A repeated form field: PVE joins the values with NUL, which no string format takes.
            value = "\0".join(str(v) for v in value)
        v, err = check_value(prop, value)
        if err:
            errors[name] = err
        else:
            out[name] = v
    for name, prop in props.items():
        if "[n]" in name or prop.get("optional"):
            continue
        if name not in params:
            errors[name] = "property is missing and it is not optional"
    return out, errors

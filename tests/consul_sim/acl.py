"""ACL rules in Consul's HCL policy semantics, reduced to what the agent API checks.

Rules are {"service": {"web": "write"}, "service_prefix": {"": "read"}, "intention": {...},
"intention_prefix": {...}, "agent": {...}, "agent_prefix": {...}, "node": {...}, "node_prefix": {...},
"key": {...}, "key_prefix": {...}, "query": {...}, "query_prefix": {...}, "operator": "read"}.
An exact rule wins over any prefix rule, the longest prefix wins among prefixes, "write" implies "read",
"deny" denies; a service rule grants intention:read on the same names (Consul's default for its "intentions"
field); without a matching rule the agent's default policy decides.
"""

LEVELS = {"deny": 0, "read": 1, "list": 1, "write": 2}
RESOURCES = ("service", "intention", "agent", "node", "key", "query", "session", "event")


class ACLNotFound(Exception):
    pass


class Authorizer:
    """What one token may do. all_access is the master token."""

    def __init__(self, rules, default_allow, all_access=False):
        self.rules = dict(rules or {})
        # A service rule also grants intention:read on the same names unless an intention rule says otherwise
        # (Consul's service policy "intentions" field defaults to read for read/write services, deny for deny).
        for kind in ("", "_prefix"):
            derived = {n: ("read" if LEVELS.get(p, 0) >= 1 else "deny")
                       for n, p in (self.rules.get("service" + kind) or {}).items()}
            derived.update(self.rules.get("intention" + kind) or {})
            self.rules["intention" + kind] = derived
        self.default_allow = default_allow
        self.all_access = all_access

    def _level(self, resource, name):
        exact = self.rules.get(resource) or {}
        if name in exact:
            return LEVELS.get(exact[name], 0)
        prefixes = self.rules.get(resource + "_prefix") or {}
        best = None
        for p, lvl in prefixes.items():
            if name.startswith(p) and (best is None or len(p) > len(best)):
                best = p
        if best is not None:
            return LEVELS.get(prefixes[best], 0)
        return None

    def allowed(self, resource, name, need):
        if self.all_access:
            return True
        lvl = self._level(resource, name)
        if lvl is None:
            return self.default_allow
        return lvl >= LEVELS[need]

    def operator(self, need):
        if self.all_access:
            return True
        v = self.rules.get("operator")
        if v is None:
            return self.default_allow
        return LEVELS.get(v, 0) >= LEVELS[need]

    # Shorthands the endpoints use.
    def service_read(self, n):
        return self.allowed("service", n, "read")

    def service_write(self, n):
        return self.allowed("service", n, "write")

    def intention_read(self, n):
        return self.allowed("intention", n, "read")

    def intention_write(self, n):
        return self.allowed("intention", n, "write")

    def node_read(self, n):
        return self.allowed("node", n, "read")

    def agent_read(self, n):
        return self.allowed("agent", n, "read")

    def agent_write(self, n):
        return self.allowed("agent", n, "write")

    def query_write(self, n):
        return self.allowed("query", n, "write")

    def query_read(self, n):
        return self.allowed("query", n, "read")

    def intention_default_allow(self):
        return self.default_allow


def validate_rules(rules):
    """Returns an error string or None."""
    if not isinstance(rules, dict):
        return "Rules must be an object"
    for k, v in rules.items():
        if k == "operator":
            if v not in LEVELS:
                return "Invalid operator policy: %r" % (v,)
            continue
        base = k[:-len("_prefix")] if k.endswith("_prefix") else k
        if base not in RESOURCES:
            return "Unknown rule kind: %s" % k
        if not isinstance(v, dict):
            return "Rule %s must map names to policies" % k
        for name, lvl in v.items():
            if lvl not in LEVELS:
                return "Invalid %s policy for %r: %r" % (k, name, lvl)
    return None

"""The agent's state: CA, leaves, local services and checks, intentions, ACL tokens, prepared queries.

One lock and one condition variable guard everything; every change takes a new index from a single counter
(like Raft's), notifies all blocked queries and, with --state-file, is written to disk atomically.
"""
import copy
import datetime
import hashlib
import json
import os
import random
import tempfile
import threading
import time
import uuid

import ca
from acl import ACLNotFound, Authorizer  # noqa: F401 - re-exported
from errors import APIError, permission_denied
from catalog import Catalog
from queries import Queries
from services import Services



def parse_version(v):
    parts = []
    for p in v.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts[:3])


def content_hash(obj):
    """A stable 16-hex-digit hash of a JSON-able value (Consul uses hashstructure; only equality matters)."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]


class State(Services, Queries, Catalog):
    def __init__(self, opts):
        self.opts = opts
        self.version = parse_version(opts.consul_version)
        self.cond = threading.Condition(threading.RLock())
        self.acl_enabled = bool(opts.acl_master_token)
        self.default_allow = (opts.acl_default_policy or ("deny" if self.acl_enabled else "allow")) == "allow"
        self.leaf_ttl = opts.leaf_cert_ttl_seconds
        self.node_id = str(uuid.uuid4())
        self.index = 1
        self.tokens = {}                 # secret -> {"Rules": {...}}
        self.services = {}               # id -> internal service dict
        self.checks = {}                 # check id -> check dict
        self.managed = {}                # proxy service id -> managed proxy dict
        self.intentions = {}             # id -> intention
        self.queries = {}                # id -> prepared query
        self.leaves = {}                 # service name -> leaf dict
        self.remote = {}                 # external node name -> {"Node", "Services", "Checks"} (catalog/register)
        self.idx = {"roots": 1, "intentions": 1, "catalog": 1, "queries": 1, "node": 1}
        self.ca = None
        self.leaf_serial = 1
        self.stopping = False
        self.listeners = []              # called after every change, outside the lock
        if opts.state_file and os.path.exists(opts.state_file):
            self._load(opts.state_file)
        if self.ca is None:
            td = ca.new_trust_domain()
            idx = self.next_index()
            root = ca.new_root(1, td, idx)
            self.ca = {"TrustDomain": td, "Roots": [root], "ActiveRootID": root["ID"], "NextRoot": 2}
            # Like a fresh cluster: the node, CA and empty tables all exist at the bootstrap index (> 1).
            for t in self.idx:
                self.idx[t] = idx
        self.tokens.setdefault("anonymous", {"Rules": {}})

    content_hash = staticmethod(content_hash)

    # ------------------------------------------------------------------ bookkeeping
    def next_index(self):
        self.index += 1
        return self.index

    def changed(self, *tables):
        """Marks tables as modified at a fresh index; caller holds the lock. Returns the index."""
        idx = self.next_index()
        for t in tables:
            self.idx[t] = idx
        self.persist()
        self.cond.notify_all()
        return idx

    def persist(self):
        path = self.opts.state_file
        if not path:
            return
        data = {k: getattr(self, k) for k in ("node_id", "index", "tokens", "services", "checks", "managed",
                                              "intentions", "queries", "leaves", "idx", "ca", "leaf_serial",
                                              "remote")}
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".sim-state.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _load(self, path):
        with open(path) as f:
            data = json.load(f)
        for k, v in data.items():
            setattr(self, k, v)

    def dump(self):
        with self.cond:
            out = {k: copy.deepcopy(getattr(self, k)) for k in (
                "node_id", "index", "tokens", "services", "checks", "managed", "intentions", "queries", "idx",
                "leaf_serial", "remote")}
            out["ca"] = {"TrustDomain": self.ca["TrustDomain"], "ActiveRootID": self.ca["ActiveRootID"],
                         "Roots": [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.ca["Roots"]]}
            out["leaves"] = {k: {kk: vv for kk, vv in v.items() if kk != "PrivateKeyPEM"}
                             for k, v in self.leaves.items()}
            return out

    # ------------------------------------------------------------------ ACL
    def authorizer(self, token):
        """None when ACLs are disabled (everything allowed), else an Authorizer. Raises ACLNotFound."""
        if not self.acl_enabled:
            return None
        if token == "":
            token = "anonymous"
        if token == self.opts.acl_master_token:
            return Authorizer({}, True, all_access=True)
        t = self.tokens.get(token)
        if t is None:
            raise ACLNotFound()
        return Authorizer(t.get("Rules") or {}, self.default_allow)

    def proxy_for_token(self, token):
        if not token:
            return None
        for p in self.managed.values():
            if p["ProxyToken"] == token:
                return p
        return None

    def resolve_proxy_token(self, token):
        """Consul 1.3+ parseToken: a managed proxy's token stands for the token its target was registered with."""
        if self.version >= (1, 3, 0):
            p = self.proxy_for_token(token)
            if p is not None:
                svc = self.services.get(p["TargetServiceID"])
                return svc.get("Token", "") if svc else ""
        return token

    def add_token(self, secret, rules):
        with self.cond:
            secret = secret or str(uuid.uuid4())
            self.tokens[secret] = {"Rules": rules}
            self.changed()
            return secret

    # ------------------------------------------------------------------ CA
    def active_root(self):
        for r in self.ca["Roots"]:
            if r["ID"] == self.ca["ActiveRootID"]:
                return r
        raise APIError(500, "Connect CA not bootstrapped yet")

    def roots_body(self):
        roots = []
        for r in self.ca["Roots"]:
            roots.append({k: v for k, v in r.items() if not k.startswith("_")})
        return {"ActiveRootID": self.ca["ActiveRootID"], "TrustDomain": self.ca["TrustDomain"], "Roots": roots}

    def rotate_ca(self):
        with self.cond:
            old = self.active_root()
            idx = self.next_index()
            new = ca.new_root(self.ca["NextRoot"], self.ca["TrustDomain"], idx)
            self.ca["NextRoot"] += 1
            new["IntermediateCerts"] = [ca.cross_sign(new, old)]
            for r in self.ca["Roots"]:
                if r["Active"]:
                    r["Active"] = False
                    r["ModifyIndex"] = idx
                    r["_rotated_out_at"] = time.time()     # RotatedOutAt (json:"-" in Consul)
            self.ca["Roots"].append(new)
            self.ca["ActiveRootID"] = new["ID"]
            self.idx["roots"] = idx
            for name in list(self.leaves):
                self._issue_leaf(name)
            self.changed("roots")
            return new["ID"]

    def prune_ca(self, older_than=None):
        """Consul's leader pruneCARoots (every caRootPruneInterval, 1 h): drops the roots that are not active
        and were rotated out more than 2 x LeafCertTTL ago, in one roots change (a new index). older_than
        overrides that age (a test stands for the time passing). Returns the pruned IDs."""
        with self.cond:
            age = 2 * self.leaf_ttl if older_than is None else float(older_than)
            now = time.time()
            keep = [r for r in self.ca["Roots"]
                    if r["Active"] or r.get("_rotated_out_at") is None or now - r["_rotated_out_at"] <= age]
            pruned = [r["ID"] for r in self.ca["Roots"] if r not in keep]
            if pruned:
                self.ca["Roots"] = keep
                self.idx["roots"] = self.next_index()
                self.changed("roots")
            return pruned

    def _issue_leaf(self, service, ttl=None):
        root = self.active_root()
        td = self.ca["TrustDomain"]
        uri = ca.spiffe_service_uri(td, self.opts.datacenter, service)
        serial = self.leaf_serial
        self.leaf_serial += 1
        ttl = ttl if ttl is not None else self.leaf_ttl
        pem, key, nb, na = ca.issue_leaf(root, service, [uri], serial, datetime.timedelta(seconds=ttl))
        chain = pem + "".join(root.get("IntermediateCerts") or [])
        idx = self.next_index()
        lifetime = (na - nb).total_seconds()
        leaf = {"SerialNumber": ca.serial_colon_hex(serial), "CertPEM": chain, "PrivateKeyPEM": key,
                "Service": service, "ServiceURI": uri, "ValidAfter": ca.fmt_time(nb), "ValidBefore": ca.fmt_time(na),
                "CreateIndex": idx, "ModifyIndex": idx,
                # Consul 1.4.1+: renew at a random point in 60-90% of ValidAfter..ValidBefore (ValidAfter is
                # backdated a minute, so a short TTL renews almost at once); at most once a second here.
                "_renew_at": max(time.time() + 1.0, self._renew_point(nb, na, lifetime))}
        self.leaves[service] = leaf
        return leaf

    def _renew_point(self, nb, na, lifetime):
        if self.version < (1, 4, 1):
            return na.timestamp() - 3600.0        # 1.2.0-1.4.0: an hour before ValidBefore (or on root change)
        return nb.timestamp() + lifetime * random.uniform(0.6, 0.9)

    def leaf(self, service):
        """The current leaf for a service, issued on first use (as the agent's cache does)."""
        with self.cond:
            cached = service in self.leaves
            if not cached:
                self._issue_leaf(service)
                self.changed()
            return self.leaves[service], cached

    def rotate_leaf(self, service):
        with self.cond:
            leaf = self._issue_leaf(service)
            self.changed()
            return leaf

    def renew_due_leaves(self):
        with self.cond:
            now = time.time()
            due = [n for n, l in self.leaves.items() if l.get("_renew_at", 0) <= now]
            for n in due:
                self._issue_leaf(n)
            if due:
                self.changed()

    def test_cert(self, req):
        """/_sim/cert: a client certificate as a test wants it (foreign domain, rogue signer, odd SANs...)."""
        with self.cond:
            service = req.get("Service") or "web"
            td = req.get("TrustDomain") or self.ca["TrustDomain"]
            dc = req.get("Datacenter") or self.opts.datacenter
            if req.get("Signer", "active") == "rogue":
                root = ca.rogue_root()
            else:
                root = self.active_root()
            uri = ca.spiffe_service_uri(td, dc, service)
            uris = req["URIs"] if req.get("URIs") is not None else [uri]
            serial = self.leaf_serial
            self.leaf_serial += 1
            self.changed()
        pem, key, _, _ = ca.issue_leaf(root, service, uris, serial, datetime.timedelta(seconds=self.leaf_ttl),
                                       expired=bool(req.get("Expired")))
        chain = pem + "".join(root.get("IntermediateCerts") or [])
        return {"CertPEM": chain, "PrivateKeyPEM": key, "RootPEM": root["RootCert"],
                "URI": uris[0] if uris else "", "SerialNumber": ca.serial_colon_hex(serial)}

    # ------------------------------------------------------------------ intentions
    @staticmethod
    def precedence(ixn):
        if ixn["DestinationName"] != "*":
            p = 9
        elif ixn["DestinationNS"] != "*":
            p = 6
        else:
            p = 3
        if ixn["SourceName"] == "*":
            p -= 1 if ixn["SourceNS"] != "*" else 2
        return p

    @staticmethod
    def ixn_sort_key(x):
        return (-x["Precedence"], x["SourceNS"], x["SourceName"], x["DestinationNS"], x["DestinationName"])

    @staticmethod
    def ixn_string(x):
        """structs.Intention.String() (Consul 1.2-1.5)."""
        return "%s %s/%s => %s/%s (ID: %s)" % (
            x["Action"].upper(), x["SourceNS"], x["SourceName"], x["DestinationNS"], x["DestinationName"], x["ID"])

    def sorted_intentions(self):
        return sorted(self.intentions.values(), key=self.ixn_sort_key)

    @staticmethod
    def _validate_ixn(x):
        errs = []
        for f in ("SourceNS", "SourceName", "DestinationNS", "DestinationName"):
            v = x.get(f)
            if not v:
                errs.append("%s must be set" % f)
            elif "*" in v and v != "*":
                errs.append("%s: wildcard character '*' cannot be used with partial values" % f)
        if x.get("SourceNS") == "*" and x.get("SourceName") != "*":
            errs.append("SourceName: exact value cannot follow wildcard namespace")
        if x.get("DestinationNS") == "*" and x.get("DestinationName") != "*":
            errs.append("DestinationName: exact value cannot follow wildcard namespace")
        if x.get("Action") not in ("allow", "deny"):
            errs.append("Action must be set to 'allow' or 'deny'")
        if x.get("SourceType") != "consul":
            errs.append("SourceType must be set to 'consul'")
        if errs:
            raise APIError(500, "%d error(s) occurred:\n\n%s" % (len(errs), "\n".join("* " + e for e in errs)))

    def put_intention(self, body, ixn_id, authz):
        """Create (ixn_id None) or update an intention; returns its ID."""
        if not isinstance(body, dict):
            raise APIError(400, "Request decode failed: body must be an object")
        fields = ("Description", "SourceNS", "SourceName", "DestinationNS", "DestinationName", "SourceType",
                  "Action", "DefaultAddr", "DefaultPort", "Meta")
        x = {f: body.get(f) for f in fields}
        x["SourceNS"] = x["SourceNS"] or "default"
        x["DestinationNS"] = x["DestinationNS"] or "default"
        x["SourceType"] = x["SourceType"] or "consul"
        x["Description"] = x["Description"] or ""
        x["DefaultAddr"] = x["DefaultAddr"] or ""
        x["DefaultPort"] = x["DefaultPort"] or 0
        x["Meta"] = x["Meta"] or {}
        with self.cond:
            if authz is not None and not authz.intention_write(x.get("DestinationName") or ""):
                raise permission_denied()
            if ixn_id is not None:
                old = self.intentions.get(ixn_id)
                if old is None:
                    raise APIError(500, "Cannot modify non-existent intention: '%s'" % ixn_id)
                if authz is not None and not authz.intention_write(old["DestinationName"]):
                    raise permission_denied()
            self._validate_ixn(x)
            for other in self.intentions.values():
                if other["ID"] != ixn_id and all(other[f] == x[f] for f in (
                        "SourceNS", "SourceName", "DestinationNS", "DestinationName")):
                    raise APIError(500, "duplicate intention found: %s" % self.ixn_string(other))
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            idx = self.next_index()
            if ixn_id is None:
                ixn_id = str(uuid.uuid4())
                x["CreatedAt"] = now
                x["CreateIndex"] = idx
            else:
                x["CreatedAt"] = self.intentions[ixn_id]["CreatedAt"]
                x["CreateIndex"] = self.intentions[ixn_id]["CreateIndex"]
            x["ID"] = ixn_id
            x["UpdatedAt"] = now
            x["ModifyIndex"] = idx
            x["Precedence"] = self.precedence(x)
            self.intentions[ixn_id] = x
            self.idx["intentions"] = idx
            self.changed("intentions")
            return ixn_id

    def delete_intention(self, ixn_id, authz):
        with self.cond:
            old = self.intentions.get(ixn_id)
            if old is None:
                raise APIError(500, "Cannot modify non-existent intention: '%s'" % ixn_id)
            if authz is not None and not authz.intention_write(old["DestinationName"]):
                raise permission_denied()
            del self.intentions[ixn_id]
            self.changed("intentions")

    def match_intentions(self, by, ns, name):
        """Intentions matching ns/name as source or destination, in evaluation order (Consul's match RPC)."""
        out = []
        for x in self.sorted_intentions():
            xns, xname = (x["DestinationNS"], x["DestinationName"]) if by == "destination" else \
                (x["SourceNS"], x["SourceName"])
            if (xns == "*" or xns == ns) and (xname == "*" or xname == name):
                out.append(x)
        return out

    def authorize_match(self, target, src_ns, src_name):
        for x in self.match_intentions("destination", "default", target):
            if (x["SourceNS"] == "*" or x["SourceNS"] == src_ns) and \
                    (x["SourceName"] == "*" or x["SourceName"] == src_name):
                return x
        return None

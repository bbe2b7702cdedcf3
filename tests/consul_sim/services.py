"""Local services and checks of the agent (agent/local/state.go) and the catalog/health views over them.

A mixin of State: every method runs with State.cond held by the caller or takes it itself.
"""
import copy
import random
import time
import uuid

import blocking
import schema
from errors import APIError, permission_denied

SIDECAR_PORTS = (21000, 21255)
MANAGED_PORTS = (20000, 20255)
STATUSES = ("passing", "warning", "critical")


def _worst(statuses):
    worst = "passing"
    for s in statuses:
        if s == "critical":
            return "critical"
        if s == "warning":
            worst = "warning"
    return worst


def _multierror(errs):
    return "%d error(s) occurred:\n\n%s" % (len(errs), "\n".join("* " + e for e in errs))


class Services:
    # ------------------------------------------------------------------ registration
    def _alloc_port(self, rng, exclude_id=None):
        """A random port of rng not used by another local service (Consul walks rand.Perm of the range)."""
        used = {s["Port"] for sid, s in self.services.items() if sid != exclude_id}
        free = [p for p in range(rng[0], rng[1] + 1) if p not in used]
        if not free:
            raise APIError(500, "no port provided for sidecar_service and none left in the configured range "
                                "[%d, %d]" % rng)
        return random.choice(free)

    def _check_defs(self, svc_def):
        defs = []
        if svc_def.get("Check"):
            defs.append(svc_def["Check"])
        defs.extend(svc_def.get("Checks") or [])
        return defs

    def _make_check(self, cdef, svc, check_id, name):
        status = cdef.get("Status") or "critical"
        if status not in STATUSES:
            raise APIError(400, "Status for checks must 'passing', 'warning', 'critical'")
        chk = {"Node": self.opts.node_name, "CheckID": check_id, "Name": name, "Status": status,
               "Notes": cdef.get("Notes") or "", "Output": "",
               "ServiceID": svc["ID"] if svc else "", "ServiceName": svc["Service"] if svc else "",
               "ServiceTags": list(svc["Tags"]) if svc else [], "Definition": {}}
        if cdef.get("TTL"):
            chk["Type"] = "ttl"
            chk["TTL"] = self._dur(cdef["TTL"], "TTL")
            chk["Expires"] = None
        elif cdef.get("AliasService"):
            chk["Type"] = "alias"
            chk["AliasService"] = cdef["AliasService"]
        elif cdef.get("TCP"):
            chk["Type"] = "tcp"
            chk["TCP"] = cdef["TCP"]
        elif cdef.get("HTTP"):
            chk["Type"] = "http"
            chk["HTTP"] = cdef["HTTP"]
        elif cdef.get("Args") or cdef.get("ScriptArgs"):
            raise APIError(500, "Scripts are disabled on this agent; to enable, configure "
                                "'enable_script_checks' to true")
        else:
            raise APIError(400, "Invalid check: TTL must be > 0 for TTL checks")
        if chk["Type"] in ("tcp", "http"):
            if not cdef.get("Interval"):
                raise APIError(400, "Invalid check: Interval must be > 0 for Script, HTTP, or TCP checks")
            chk["Interval"] = self._dur(cdef["Interval"], "Interval")
            chk["Timeout"] = self._dur(cdef["Timeout"], "Timeout") if cdef.get("Timeout") else 10.0
            chk["NextRun"] = 0.0
        return chk

    @staticmethod
    def _dur(v, what):
        if isinstance(v, (int, float)):
            return float(v) / 1e9
        try:
            return blocking.parse_duration(v)
        except ValueError:
            raise APIError(400, "Request decode failed: time: invalid duration %s" % v)

    def _build_service(self, d, token):
        """Internal record for one decoded ServiceDefinition (no children)."""
        kind = d.get("Kind") or ""
        svc = {"ID": d.get("ID") or d.get("Name"), "Service": d.get("Name"), "Kind": kind,
               "Tags": list(d.get("Tags") or []), "Meta": dict(d.get("Meta") or {}),
               "Port": int(d.get("Port") or 0), "Address": d.get("Address") or "",
               "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": bool(d.get("EnableTagOverride")),
               "Proxy": None, "Native": False, "Token": d.get("Token") or token or "", "ParentID": "",
               "ProxyKind": ""}
        if d.get("Weights"):
            w = d["Weights"]
            svc["Weights"] = {"Passing": int(w.get("Passing") or 1), "Warning": int(w.get("Warning") or 1)}
        connect = d.get("Connect") or {}
        svc["Native"] = bool(connect.get("Native"))
        errs = []
        if kind == "connect-proxy":
            p = d.get("Proxy") if self.version >= (1, 3, 0) else None
            p = dict(p or {})
            if not p.get("DestinationServiceName") and d.get("ProxyDestination"):
                p["DestinationServiceName"] = d["ProxyDestination"]
            svc["Proxy"] = {
                "DestinationServiceName": p.get("DestinationServiceName") or "",
                "DestinationServiceID": p.get("DestinationServiceID") or "",
                "LocalServiceAddress": p.get("LocalServiceAddress") or "",
                "LocalServicePort": int(p.get("LocalServicePort") or 0),
                "Config": p.get("Config") or {},
                "Upstreams": [self._upstream(u) for u in (p.get("Upstreams") or [])]}
            if not svc["Proxy"]["DestinationServiceName"]:
                if self.version >= (1, 3, 0):
                    errs.append("Proxy.DestinationServiceName must be non-empty for Connect proxy services")
                else:
                    errs.append("ProxyDestination must be non-empty for Connect proxy services")
            if svc["Port"] == 0:
                errs.append("Port must be set for a Connect proxy")
            if svc["Native"]:
                errs.append("A Proxy cannot also be Connect Native, only typical services")
        elif kind != "":
            errs.append("Invalid service kind: %s" % _goquote(kind))
        if errs:
            raise APIError(400, _multierror(errs))
        return svc

    @staticmethod
    def _upstream(u):
        return {"DestinationType": u.get("DestinationType") or "service",
                "DestinationNamespace": u.get("DestinationNamespace") or "",
                "DestinationName": u.get("DestinationName") or "",
                "Datacenter": u.get("Datacenter") or "",
                "LocalBindAddress": u.get("LocalBindAddress") or "",
                "LocalBindPort": int(u.get("LocalBindPort") or 0),
                "Config": u.get("Config") or {}}

    def _vet_register(self, svc, authz):
        """agent.vetServiceRegister: service:write on the service, on any service it replaces and, for a proxy,
        on its destination (it can be discovered as an instance of it)."""
        if authz is None:
            return
        if not authz.service_write(svc["Service"]):
            raise permission_denied()
        old = self.services.get(svc["ID"])
        if old is not None and not authz.service_write(old["Service"]):
            raise permission_denied()
        if svc["Kind"] == "connect-proxy" and not authz.service_write(svc["Proxy"]["DestinationServiceName"]):
            raise permission_denied()

    def register_service(self, body, token, authz, from_config=False):
        """PUT /v1/agent/service/register (and config-file services). body is the raw decoded JSON."""
        try:
            d = schema.decode(body, schema.SERVICE)
        except schema.DecodeError as e:
            raise APIError(400, "Request decode failed: %s" % e)
        if d is None:
            raise APIError(400, "Request decode failed: empty body")
        if not d.get("Name"):
            raise APIError(400, "Missing service name")
        if d.get("Address") in ("0.0.0.0", "::", "[::]"):
            raise APIError(400, "Invalid service address")
        with self.cond:
            svc = self._build_service(d, token)
            self._vet_register(svc, authz)
            connect = d.get("Connect") or {}
            children = []      # (record, check defs)
            managed = None
            sc = connect.get("SidecarService") if self.version >= (1, 3, 0) else None
            if sc is not None:
                if svc["Kind"] == "connect-proxy":
                    raise APIError(400, "Invalid SidecarService: sidecar_service can't be specified on a "
                                        "connect-proxy")
                children.append(self._sidecar(svc, sc, token, authz))
            mp = connect.get("Proxy")
            if mp is not None and not self.opts.managed_api_registration and not from_config:
                raise APIError(400, "Managed proxy registration via the API is disallowed.")
            if mp is not None:
                if svc["Native"]:
                    raise APIError(400, "Connect Native services cannot have a managed proxy")
                if svc["Kind"] == "connect-proxy":
                    raise APIError(400, "Connect proxies cannot themselves have a managed proxy")
                managed, rec, cdefs = self._managed(svc, mp)
                children.append((rec, cdefs))
            # Build every check before changing anything so that a bad one fails the whole registration.
            new_checks = self._checks_for(svc, self._check_defs(d))
            child_checks = [(rec, self._checks_for(rec, cdefs, default_names=True)) for rec, cdefs in children]
            old = self.services.get(svc["ID"])
            if old is not None:
                self._remove_service(svc["ID"], cascade=True)
            idx = self.next_index()
            self._store(svc, new_checks, idx)
            for rec, chks in child_checks:
                rec["ParentID"] = svc["ID"]
                if rec["ID"] in self.services:
                    self._remove_service(rec["ID"], cascade=False)
                self._store(rec, chks, idx)
            if managed is not None:
                self.managed[managed["ProxyServiceID"]] = managed
            self.changed("catalog")
            return svc["ID"]

    def _checks_for(self, svc, cdefs, default_names=False):
        out = []
        for i, cdef in enumerate(cdefs):
            cid = cdef.get("CheckID") or cdef.get("ID")
            if not cid:
                cid = "service:%s" % svc["ID"]
                if len(cdefs) > 1:
                    cid += ":%d" % (i + 1)
            name = cdef.get("Name") or "Service '%s' check" % svc["Service"]
            out.append(self._make_check(cdef, svc, cid, name))
        return out

    def _store(self, svc, checks, idx):
        old = self.services.get(svc["ID"])
        svc["CreateIndex"] = idx
        svc["ModifyIndex"] = idx
        self.services[svc["ID"]] = svc
        for c in checks:
            c["CreateIndex"] = idx
            c["ModifyIndex"] = idx
            self.checks[c["CheckID"]] = c
        return old

    def _sidecar(self, parent, sc, token, authz):
        # agent/sidecar_service.go (1.3-1.5): the ID is always <id>-sidecar-proxy; Kind, Name, Address and the
        # Proxy destination/local service default from the parent; tags and meta are not inherited.
        sc = dict(sc)
        if not sc.get("Kind"):
            sc["Kind"] = "connect-proxy"
        sc["ID"] = "%s-sidecar-proxy" % parent["ID"]
        sc["Name"] = sc.get("Name") or "%s-sidecar-proxy" % parent["Service"]
        sc["Address"] = sc.get("Address") or parent["Address"]
        if sc.get("Token"):
            token = sc["Token"]
        p = dict(sc.get("Proxy") or {})
        p["DestinationServiceName"] = p.get("DestinationServiceName") or parent["Service"]
        p["DestinationServiceID"] = p.get("DestinationServiceID") or parent["ID"]
        p["LocalServiceAddress"] = p.get("LocalServiceAddress") or "127.0.0.1"
        p["LocalServicePort"] = p.get("LocalServicePort") or parent["Port"]
        sc["Proxy"] = p
        if not sc.get("Port"):
            old = self.services.get(sc["ID"])
            sc["Port"] = old["Port"] if old else self._alloc_port(SIDECAR_PORTS, exclude_id=sc["ID"])
        rec = self._build_service(sc, token)
        rec["ProxyKind"] = "sidecar"
        if authz is not None and sc.get("Token"):
            authz = self.authorizer(sc["Token"])
        self._vet_register(rec, authz)
        cdefs = self._check_defs(sc)
        if not cdefs:
            cdefs = [{"Name": "Connect Sidecar Listening", "TCP": "127.0.0.1:%d" % rec["Port"], "Interval": "10s"},
                     {"Name": "Connect Sidecar Aliasing %s" % parent["ID"], "AliasService": parent["ID"]}]
        return rec, cdefs

    def _managed(self, target, mp):
        old = self.managed.get("%s-proxy" % target["ID"])
        cfg = copy.deepcopy(mp.get("Config") or {})
        exec_mode = mp.get("ExecMode") or "daemon"
        if exec_mode not in ("daemon", "script"):
            raise APIError(400, "Invalid ExecMode: %s" % exec_mode)
        command = mp.get("Command") or []
        if isinstance(command, str):
            command = [command]
        port = cfg.get("bind_port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, (int, float)) or port != int(port)):
            raise APIError(400, "Connect proxy config bind_port must be a number")
        if not port:
            port = old["BindPort"] if old else self._alloc_port(MANAGED_PORTS, exclude_id=target["ID"] + "-proxy")
        proxy_id = "%s-proxy" % target["ID"]
        managed = {"ProxyServiceID": proxy_id, "TargetServiceID": target["ID"],
                   "TargetServiceName": target["Service"], "ExecMode": exec_mode, "Command": list(command),
                   "Config": cfg, "Upstreams": [self._upstream(u) for u in (mp.get("Upstreams") or [])],
                   "ProxyToken": old["ProxyToken"] if old else str(uuid.uuid4()), "BindPort": int(port)}
        bind_addr = cfg.get("bind_address") or ""
        rec = self._build_service({
            "ID": proxy_id, "Name": "%s-proxy" % target["Service"], "Kind": "connect-proxy",
            "Port": int(port), "Address": bind_addr, "ProxyDestination": target["Service"],
            "Proxy": {"DestinationServiceName": target["Service"], "DestinationServiceID": target["ID"],
                      "LocalServiceAddress": "127.0.0.1", "LocalServicePort": target["Port"]}}, target["Token"])
        rec["ProxyKind"] = "managed"
        cdefs = [{"Name": "Connect Proxy Listening", "CheckID": "service:%s" % proxy_id,
                  "TCP": "%s:%d" % (bind_addr or self.opts.bind_addr, int(port)), "Interval": "10s"}]
        return managed, rec, cdefs

    def _remove_service(self, sid, cascade):
        svc = self.services.pop(sid, None)
        if svc is None:
            return
        for cid in [c for c, chk in self.checks.items() if chk["ServiceID"] == sid]:
            del self.checks[cid]
        self.managed.pop(sid, None)
        if cascade:
            for child in [c for c, s in self.services.items() if s.get("ParentID") == sid]:
                self._remove_service(child, cascade=False)

    def deregister_service(self, sid, authz):
        if not sid:
            raise APIError(500, "ServiceID missing")
        with self.cond:
            svc = self.services.get(sid)
            if svc is None:
                # Consul: with ACLs the vetting fails ("Unknown service"); without, a warning and 200.
                if authz is not None:
                    raise APIError(500, "Unknown service %s" % _goquote(sid))
                return
            if authz is not None and not authz.service_write(svc["Service"]):
                raise permission_denied()
            if svc.get("ProxyKind") == "managed":
                raise APIError(400, "Managed proxy service cannot be deregistered directly. Deregister the "
                                    "service that has a managed proxy to automatically deregister the managed "
                                    "proxy itself.")
            self._remove_service(sid, cascade=True)
            self.changed("catalog")

    # ------------------------------------------------------------------ checks
    def check_status(self, chk, depth=0):
        if chk["Type"] == "alias" and not chk.get("Pinned"):
            target = chk["AliasService"]
            if target not in self.services:
                return "critical", "Service not found: %s" % target
            if depth > 3:
                return "passing", ""
            sts = [self.check_status(c, depth + 1)[0] for c in self.checks.values()
                   if c["ServiceID"] == target and c is not chk]
            st = _worst(sts)
            return st, "All checks passing." if st == "passing" else "Aliased service has failing checks"
        return chk["Status"], chk["Output"]

    def set_check(self, cid, status, output, authz, ttl_only=True):
        with self.cond:
            chk = self.checks.get(cid)
            if chk is None:
                if authz is not None:
                    raise APIError(500, "Unknown check %s" % _goquote(cid))
                raise APIError(500, "CheckID %s does not have associated TTL" % _goquote(cid))
            if authz is not None:
                name = chk["ServiceName"]
                if name and not authz.service_write(name):
                    raise permission_denied()
                if not name and not authz.allowed("node", self.opts.node_name, "write"):
                    raise permission_denied()
            if ttl_only and chk["Type"] != "ttl":
                raise APIError(500, "CheckID %s does not have associated TTL" % _goquote(cid))
            self._update_check(chk, status, output)
            if chk["Type"] == "ttl":
                chk["Expires"] = time.time() + chk["TTL"]

    def _update_check(self, chk, status, output):
        if chk["Status"] != status or chk["Output"] != output:
            chk["Status"] = status
            chk["Output"] = output
            chk["ModifyIndex"] = self.changed("catalog")

    def set_service_health(self, sid, status):
        """/_sim/health: pins every check of a service (alias checks too) to status."""
        if status not in STATUSES:
            raise APIError(400, "Status must be passing, warning or critical")
        with self.cond:
            if sid not in self.services:
                raise APIError(404, "unknown service %s" % sid)
            for chk in self.checks.values():
                if chk["ServiceID"] == sid:
                    chk["Status"] = status
                    chk["Output"] = "set by test"
                    chk["Pinned"] = True
            self.changed("catalog")

    # ------------------------------------------------------------------ views
    def agent_service(self, svc):
        """api.AgentService as /v1/agent/services and /v1/agent/service/:id render it."""
        out = {}
        if svc["Kind"]:
            out["Kind"] = svc["Kind"]
        out.update({"ID": svc["ID"], "Service": svc["Service"], "Tags": list(svc["Tags"]),
                    "Meta": dict(svc["Meta"]), "Port": svc["Port"], "Address": svc["Address"]})
        if self.version >= (1, 2, 3):
            out["Weights"] = dict(svc["Weights"])
        out["EnableTagOverride"] = svc["EnableTagOverride"]
        out["CreateIndex"] = svc["CreateIndex"]
        out["ModifyIndex"] = svc["ModifyIndex"]
        if svc["Kind"] == "connect-proxy":
            out["ProxyDestination"] = svc["Proxy"]["DestinationServiceName"]
            if self.version >= (1, 3, 0):
                out["Proxy"] = self.api_proxy(svc["Proxy"])
        m = self.managed.get(svc["ID"] + "-proxy")
        if m is not None and m["TargetServiceID"] == svc["ID"]:
            # api.AgentServiceConnectProxy: every field omitempty.
            mp = {"ExecMode": m["ExecMode"], "Command": list(m["Command"]) or self.default_proxy_command()}
            if m["Config"]:
                mp["Config"] = copy.deepcopy(m["Config"])
            if self.version >= (1, 3, 0) and m["Upstreams"]:
                mp["Upstreams"] = [self.api_upstream(u) for u in m["Upstreams"]]
            out["Connect"] = {"Proxy": mp}
        elif svc["Native"]:
            out["Connect"] = {"Native": True}
        return out

    @staticmethod
    def api_upstream(u):
        """api.Upstream: empty fields omitted except DestinationName."""
        out = {}
        for k in ("DestinationType", "DestinationNamespace", "DestinationName", "Datacenter", "LocalBindAddress",
                  "LocalBindPort", "Config"):
            if u.get(k) or k == "DestinationName":
                out[k] = copy.deepcopy(u.get(k))
        return out

    def api_proxy(self, p):
        """api.AgentServiceConnectProxyConfig: empty optional fields omitted, Upstreams always a list."""
        out = {"DestinationServiceName": p["DestinationServiceName"]}
        for k in ("DestinationServiceID", "LocalServiceAddress", "LocalServicePort", "Config"):
            if p.get(k):
                out[k] = copy.deepcopy(p[k])
        out["Upstreams"] = [self.api_upstream(u) for u in p.get("Upstreams") or []]
        return out

    def node_service(self, svc):
        """structs.NodeService as the health endpoints render it."""
        out = {"Kind": svc["Kind"], "ID": svc["ID"], "Service": svc["Service"], "Tags": list(svc["Tags"]),
               "Address": svc["Address"], "Meta": dict(svc["Meta"]), "Port": svc["Port"]}
        if self.version >= (1, 2, 3):
            out["Weights"] = dict(svc["Weights"])
        out["EnableTagOverride"] = svc["EnableTagOverride"]
        out["ProxyDestination"] = svc["Proxy"]["DestinationServiceName"] if svc["Proxy"] else ""
        if self.version >= (1, 3, 0):
            out["Proxy"] = copy.deepcopy(svc["Proxy"]) if svc["Proxy"] else {
                "DestinationServiceName": "", "DestinationServiceID": "", "LocalServiceAddress": "",
                "LocalServicePort": 0, "Config": None, "Upstreams": None}
        out["Connect"] = {"Native": svc["Native"], "Proxy": None}
        if self.version >= (1, 3, 0):
            out["Connect"]["SidecarService"] = None
        out["CreateIndex"] = svc["CreateIndex"]
        out["ModifyIndex"] = svc["ModifyIndex"]
        return out

    def render_check(self, chk, with_index=True):
        st, output = self.check_status(chk)
        out = {"Node": chk["Node"], "CheckID": chk["CheckID"], "Name": chk["Name"], "Status": st,
               "Notes": chk["Notes"], "Output": output, "ServiceID": chk["ServiceID"],
               "ServiceName": chk["ServiceName"], "ServiceTags": list(chk["ServiceTags"]), "Definition": {}}
        out["CreateIndex"] = chk["CreateIndex"] if with_index else 0
        out["ModifyIndex"] = chk["ModifyIndex"] if with_index else 0
        return out

    def serf_check(self):
        return {"Node": self.opts.node_name, "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": "passing", "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "",
                "ServiceName": "", "ServiceTags": [], "Definition": {}, "CreateIndex": self.idx["node"],
                "ModifyIndex": self.idx["node"]}

    def node(self):
        a = self.opts.node_address
        return {"ID": self.node_id, "Node": self.opts.node_name, "Address": a, "Datacenter": self.opts.datacenter,
                "TaggedAddresses": {"lan": a, "wan": a}, "Meta": {"consul-network-segment": ""},
                "CreateIndex": self.idx["node"], "ModifyIndex": self.idx["node"]}

    def service_entry(self, svc):
        return {"Node": self.node_of(svc), "Service": self.node_service(svc), "Checks": self.checks_of(svc)}

    def connect_instances(self, name):
        out = []
        for s in self.all_service_records():
            if (s["Kind"] == "connect-proxy" and s["Proxy"]["DestinationServiceName"] == name) or \
                    (s["Kind"] == "" and s["Native"] and s["Service"] == name):
                out.append(s)
        return out

    def plain_instances(self, name):
        return [s for s in self.all_service_records() if s["Service"] == name]

    def filter_entries(self, entries, authz):
        if authz is None:
            return entries
        return [e for e in entries if authz.node_read(e["Node"]["Node"]) and
                authz.service_read(e["Service"]["Service"])]

    @staticmethod
    def passing_only(entries):
        """agent/health_endpoint.go filterNonPassing, including its reordering: a failing entry is swapped
        with the last kept one (so callers must not rely on the order)."""
        nodes = list(entries)
        n = len(nodes)
        i = 0
        while i < n:
            if any(c["Status"] != "passing" for c in nodes[i]["Checks"]):
                nodes[i], nodes[n - 1] = nodes[n - 1], None
                n -= 1
                continue
            i += 1
        return nodes[:n]

    @staticmethod
    def not_critical(entries):
        return [e for e in entries if all(c["Status"] != "critical" for c in e["Checks"])]

    def catalog_service_node(self, svc):
        n = self.node_of(svc)
        ns = self.node_service(svc)
        out = {"ID": n["ID"], "Node": n["Node"], "Address": n["Address"], "Datacenter": n["Datacenter"],
               "TaggedAddresses": n["TaggedAddresses"], "NodeMeta": n["Meta"], "ServiceKind": ns["Kind"],
               "ServiceID": ns["ID"], "ServiceName": ns["Service"], "ServiceTags": ns["Tags"],
               "ServiceAddress": ns["Address"]}
        if "Weights" in ns:
            out["ServiceWeights"] = ns["Weights"]
        out.update({"ServiceMeta": ns["Meta"], "ServicePort": ns["Port"],
                    "ServiceEnableTagOverride": ns["EnableTagOverride"],
                    "ServiceProxyDestination": ns["ProxyDestination"]})
        if "Proxy" in ns:
            out["ServiceProxy"] = ns["Proxy"]
        out["ServiceConnect"] = ns["Connect"]
        out["CreateIndex"] = ns["CreateIndex"]
        out["ModifyIndex"] = ns["ModifyIndex"]
        return out

    def agent_service_by_id(self, sid):
        """GET /v1/agent/service/:id (1.3+): api.AgentService without indexes; for a managed proxy, Consul
        translates its proxy config (bind_address/bind_port, local_service_address split) instead.
        Returns (hash input, body without ContentHash) or None."""
        if sid in self.managed:
            cfg = self.managed_config(sid)
            if cfg is None:
                return None
            host, _, port = cfg["Config"]["local_service_address"].rpartition(":")
            svc = self.services.get(sid)
            body = {"Kind": "connect-proxy", "ID": cfg["ProxyServiceID"],
                    "Service": svc["Service"] if svc else sid, "Tags": None, "Meta": None,
                    "Port": int(cfg["Config"]["bind_port"]), "Address": cfg["Config"]["bind_address"],
                    "Weights": {"Passing": 0, "Warning": 0}, "EnableTagOverride": False,
                    "Proxy": {"DestinationServiceName": cfg["TargetServiceName"],
                              "DestinationServiceID": cfg["TargetServiceID"],
                              "LocalServiceAddress": host.strip("[]"), "LocalServicePort": int(port),
                              "Config": cfg["Config"], "Upstreams": cfg.get("Upstreams", [])}}
            return self.managed_hash_input(sid), body
        svc = self.services.get(sid)
        if svc is None:
            return None
        body = self.agent_service(svc)
        for k in ("CreateIndex", "ModifyIndex", "ProxyDestination"):
            body.pop(k, None)
        if body.get("Connect", {}).get("Proxy") is not None:
            # Only Native is reported here, managed proxy settings are not.
            del body["Connect"]
        return body, body

    def managed_hash_input(self, proxy_id):
        """What Consul hashes for a managed proxy: the proxy as registered, not the defaults."""
        m = self.managed.get(proxy_id)
        target = self.services.get(m["TargetServiceID"]) if m else None
        proxy_svc = self.services.get(proxy_id)
        return {k: v for k, v in (m or {}).items() if k != "ProxyToken"}, proxy_svc, \
            target["Port"] if target else None

    def managed_config(self, proxy_id):
        """The body of /v1/agent/connect/proxy/:id without ContentHash, or None."""
        m = self.managed.get(proxy_id)
        if m is None:
            return None
        target = self.services.get(m["TargetServiceID"])
        if target is None:
            return None
        cfg = copy.deepcopy(m["Config"])
        cfg.setdefault("bind_port", m["BindPort"])
        cfg.setdefault("bind_address", self.opts.bind_addr)
        cfg.setdefault("local_service_address", "127.0.0.1:%d" % target["Port"])
        out = {"ProxyServiceID": m["ProxyServiceID"], "TargetServiceID": target["ID"],
               "TargetServiceName": target["Service"], "ContentHash": "", "ExecMode": m["ExecMode"],
               "Command": list(m["Command"]) or self.default_proxy_command(), "Config": cfg}
        if self.version >= (1, 3, 0):
            out["Upstreams"] = [self.api_upstream(u) for u in m["Upstreams"]]
        return out

    @staticmethod
    def proxy_telemetry(target_id):
        """Consul 1.3+ merges the agent's telemetry config (lib.TelemetryConfig, omitempty snake_case) into a
        managed proxy's config when it is read with the proxy's own token."""
        return {"filter_default": True, "metrics_prefix": "consul.proxy.%s" % target_id}

    def default_proxy_command(self):
        return ["consul", "connect", "proxy"]


def _goquote(s):
    """Go's %q for plain strings."""
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')

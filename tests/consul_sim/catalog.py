"""The catalog beyond this agent's node: PUT /v1/catalog/register and /v1/catalog/deregister, as Consul takes them
for external nodes and services (no serfHealth for those nodes, checks stored as given). Their services show in
the health, catalog and prepared-query views next to the agent's own."""
import uuid

import schema
from errors import APIError, permission_denied

CATALOG_SERVICE = dict(schema.SERVICE, Service=schema.STR)
CATALOG_CHECK = {"Node": schema.STR, "CheckID": schema.STR, "Name": schema.STR, "Status": schema.STR,
                 "Notes": schema.STR, "Output": schema.STR, "ServiceID": schema.STR, "ServiceName": schema.STR}
REGISTER = {"ID": schema.STR, "Node": schema.STR, "Address": schema.STR, "Datacenter": schema.STR,
            "TaggedAddresses": schema.STRMAP, "NodeMeta": schema.STRMAP, "Service": CATALOG_SERVICE,
            "Check": CATALOG_CHECK, "Checks": [CATALOG_CHECK], "SkipNodeUpdate": schema.BOOL}
DEREGISTER = {"Node": schema.STR, "Datacenter": schema.STR, "ServiceID": schema.STR, "CheckID": schema.STR}


class Catalog:
    def catalog_register(self, body, authz):
        try:
            d = schema.decode(body, REGISTER)
        except schema.DecodeError as e:
            raise APIError(400, "Request decode failed: %s" % e)
        if not d or not d.get("Node") or not d.get("Address"):
            raise APIError(400, "Must provide node and address")
        dc = d.get("Datacenter") or self.opts.datacenter
        if dc != self.opts.datacenter:
            raise APIError(500, "No path to datacenter")
        node_name = d["Node"]
        with self.cond:
            if authz is not None and not authz.allowed("node", node_name, "write"):
                raise permission_denied()
            idx = self.next_index()
            ent = self.remote.get(node_name)
            if ent is None:
                ent = {"Node": {"ID": d.get("ID") or str(uuid.uuid4()), "Node": node_name, "CreateIndex": idx},
                       "Services": {}, "Checks": {}}
            if not d.get("SkipNodeUpdate") or node_name not in self.remote:
                ent["Node"].update({"Address": d["Address"], "Datacenter": dc,
                                    "TaggedAddresses": d.get("TaggedAddresses") or {},
                                    "Meta": d.get("NodeMeta") or {}, "ModifyIndex": idx})
            svc = None
            if d.get("Service"):
                sd = dict(d["Service"])
                sd["Name"] = sd.get("Service") or sd.get("Name")
                if not sd["Name"]:
                    raise APIError(400, "Must provide service name with ID")
                sd.pop("Check", None)
                sd.pop("Checks", None)
                svc = self._build_service(sd, "")
                if authz is not None and not authz.service_write(svc["Service"]):
                    raise permission_denied()
                svc["NodeName"] = node_name
                svc["CreateIndex"] = ent["Services"].get(svc["ID"], {}).get("CreateIndex", idx)
                svc["ModifyIndex"] = idx
            checks = []
            for c in ([d["Check"]] if d.get("Check") else []) + (d.get("Checks") or []):
                status = c.get("Status") or "critical"
                if status not in ("passing", "warning", "critical"):
                    raise APIError(400, "Invalid check status")
                sid = c.get("ServiceID") or ""
                owner = svc if svc is not None and svc["ID"] == sid else ent["Services"].get(sid)
                if sid and owner is None:
                    raise APIError(500, "Unknown service '%s' for check '%s'" % (sid, c.get("CheckID")))
                checks.append({"Node": node_name, "CheckID": c.get("CheckID") or c.get("Name") or "",
                               "Name": c.get("Name") or "", "Status": status, "Notes": c.get("Notes") or "",
                               "Output": c.get("Output") or "", "ServiceID": sid,
                               "ServiceName": owner["Service"] if owner else "",
                               "ServiceTags": list(owner["Tags"]) if owner else [], "Definition": {},
                               "Type": "static", "CreateIndex": idx, "ModifyIndex": idx})
            self.remote[node_name] = ent
            if svc is not None:
                ent["Services"][svc["ID"]] = svc
            for c in checks:
                if not c["CheckID"]:
                    raise APIError(400, "Missing check ID")
                ent["Checks"][c["CheckID"]] = c
            self.changed("catalog")

    def catalog_deregister(self, body, authz):
        try:
            d = schema.decode(body, DEREGISTER)
        except schema.DecodeError as e:
            raise APIError(400, "Request decode failed: %s" % e)
        if not d or not d.get("Node"):
            raise APIError(400, "Must provide node")
        with self.cond:
            if authz is not None and not authz.allowed("node", d["Node"], "write"):
                raise permission_denied()
            ent = self.remote.get(d["Node"])
            if ent is None:
                return
            if d.get("ServiceID"):
                ent["Services"].pop(d["ServiceID"], None)
                for cid in [c for c, chk in ent["Checks"].items() if chk["ServiceID"] == d["ServiceID"]]:
                    del ent["Checks"][cid]
            elif d.get("CheckID"):
                ent["Checks"].pop(d["CheckID"], None)
            else:
                del self.remote[d["Node"]]
            self.changed("catalog")

    def all_service_records(self):
        """The agent's own services then every external node's, in a stable order."""
        out = [self.services[sid] for sid in sorted(self.services)]
        for n in sorted(self.remote):
            out.extend(self.remote[n]["Services"][sid] for sid in sorted(self.remote[n]["Services"]))
        return out

    def node_of(self, svc):
        n = svc.get("NodeName")
        if not n:
            return self.node()
        return dict(self.remote[n]["Node"])

    def checks_of(self, svc):
        """Rendered checks for a service entry: node-level ones first, then the service's, by CheckID."""
        n = svc.get("NodeName")
        if not n:
            return [self.serf_check()] + [self.render_check(c) for c in sorted(
                self.checks.values(), key=lambda c: c["CheckID"]) if c["ServiceID"] == svc["ID"]]
        chks = self.remote[n]["Checks"].values()
        node_level = sorted((c for c in chks if not c["ServiceID"]), key=lambda c: c["CheckID"])
        own = sorted((c for c in chks if c["ServiceID"] == svc["ID"]), key=lambda c: c["CheckID"])
        return [self.render_check(c) for c in node_level + own]

"""Prepared queries (/v1/query): storage and execution, with ?connect=true returning Connect-capable instances."""
import copy
import random
import uuid

from errors import APIError, permission_denied


class Queries:
    def put_query(self, body, qid, authz, token):
        if not isinstance(body, dict):
            raise APIError(400, "Request decode failed: body must be a JSON object")
        svc = body.get("Service") or {}
        if not svc.get("Service"):
            raise APIError(500, "Must provide a Service name to query")
        name = body.get("Name") or ""
        with self.cond:
            if authz is not None and name and not authz.query_write(name):
                raise permission_denied()
            for other in self.queries.values():
                if name and other["Name"] == name and other["ID"] != qid:
                    raise APIError(500, "Name %s aliases an existing query name" % name)
            if qid is not None and qid not in self.queries:
                raise APIError(500, "Cannot modify non-existent prepared query: '%s'" % qid)
            idx = self.next_index()
            q = {"ID": qid or str(uuid.uuid4()), "Name": name, "Session": body.get("Session") or "",
                 "Token": body.get("Token") or "",
                 "Service": {"Service": svc["Service"],
                             "Failover": svc.get("Failover") or {"NearestN": 0, "Datacenters": None},
                             "OnlyPassing": bool(svc.get("OnlyPassing")),
                             "IgnoreCheckIDs": svc.get("IgnoreCheckIDs"), "Near": svc.get("Near") or "",
                             "Tags": svc.get("Tags"), "NodeMeta": svc.get("NodeMeta"),
                             "ServiceMeta": svc.get("ServiceMeta"),
                             "Connect": {"Enabled": bool((svc.get("Connect") or {}).get("Enabled"))}},
                 "DNS": {"TTL": (body.get("DNS") or {}).get("TTL") or ""},
                 "Template": body.get("Template") or {"Type": "", "Regexp": "", "RemoveEmptyTags": False},
                 "CreateIndex": self.queries[qid]["CreateIndex"] if qid else idx, "ModifyIndex": idx}
            self.queries[q["ID"]] = q
            self.changed("queries")
            return q["ID"]

    @staticmethod
    def render_query(q):
        return copy.deepcopy(q)

    def query_visible(self, q, authz):
        return authz is None or not q["Name"] or authz.query_read(q["Name"])

    def find_query(self, id_or_name):
        q = self.queries.get(id_or_name)
        if q is None:
            for other in self.queries.values():
                if other["Name"] and other["Name"] == id_or_name:
                    return other
            raise APIError(404, "Query not found")
        return q

    def delete_query(self, qid, authz):
        with self.cond:
            q = self.queries.get(qid)
            if q is None:
                raise APIError(500, "Cannot delete non-existent prepared query: '%s'" % qid)
            if authz is not None and q["Name"] and not authz.query_write(q["Name"]):
                raise permission_denied()
            del self.queries[qid]
            self.changed("queries")

    def execute_query(self, id_or_name, connect, authz):
        q = self.find_query(id_or_name)
        s = q["Service"]
        name = s["Service"]
        use_connect = connect or s["Connect"]["Enabled"]
        svcs = self.connect_instances(name) if use_connect else \
            [x for x in self.plain_instances(name) if x["Kind"] == ""]
        entries = [self.service_entry(x) for x in svcs]
        ignore = set(s.get("IgnoreCheckIDs") or [])
        if ignore:
            for e in entries:
                e["Checks"] = [c for c in e["Checks"] if c["CheckID"] not in ignore]
        if s["OnlyPassing"]:
            entries = [e for e in entries if all(c["Status"] == "passing" for c in e["Checks"])]
        else:
            entries = self.not_critical(entries)
        for tag in s.get("Tags") or []:
            if tag.startswith("!"):
                entries = [e for e in entries if tag[1:].lower() not in [t.lower() for t in e["Service"]["Tags"]]]
            else:
                entries = [e for e in entries if tag.lower() in [t.lower() for t in e["Service"]["Tags"]]]
        # The query runs with its own token if it has one, else with the caller's.
        if q["Token"]:
            authz = self.authorizer(q["Token"])
        entries = self.filter_entries(entries, authz)
        random.shuffle(entries)          # Consul shuffles prepared query results (no ?near here)
        return {"Service": name, "Nodes": entries, "DNS": dict(q["DNS"]), "Datacenter": self.opts.datacenter,
                "Failovers": 0}

"""The agent HTTP API (/v1/...): routing, token parsing, blocking, and Consul's status codes and bodies."""
import json
import re
import time

import blocking
import schema
from acl import ACLNotFound
from errors import APIError, permission_denied


class Request:
    """What a handler needs from one HTTP request."""

    def __init__(self, method, path, query, headers, body, server):
        self.method = method
        self.path = path
        self.query = query            # dict name -> [values], blanks kept
        self.headers = headers
        self.body = body
        self.server = server          # the listener it arrived on (for outage aborts)

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    def raw_token(self):
        """Consul's order: ?token=, X-Consul-Token, Authorization: Bearer <token>."""
        t = self.q("token")
        if t:
            return t
        t = self.headers.get("X-Consul-Token")
        if t:
            return t
        auth = self.headers.get("Authorization")
        if auth:
            parts = auth.split(" ")
            if len(parts) > 1 and parts[0] == "Bearer":
                value = " ".join(parts[1:]).strip()
                return value.split(" ")[0].strip()
        return ""

    def json(self, spec=None):
        """The body as JSON (None when empty), type-checked against a schema spec when given."""
        if not self.body:
            return None
        try:
            obj = json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, "Request decode failed: %s" % e)
        if spec is not None:
            try:
                obj = schema.decode(obj, spec)
            except schema.DecodeError as e:
                raise APIError(400, "Request decode failed: %s" % e)
        return obj


class Response:
    def __init__(self, status=200, body=None, headers=None, text=None):
        self.status = status
        self.headers = dict(headers or {})
        if text is not None:
            self.data = text.encode()
            self.headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        elif body is not None or status == 200:
            self.data = json.dumps(body, indent=None).encode()
            self.headers.setdefault("Content-Type", "application/json")
        else:
            self.data = b""


def _meta(idx):
    return {"X-Consul-Index": str(max(1, idx)), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}


class AgentAPI:
    def __init__(self, state):
        self.st = state
        self.cache_seen = set()
        v = state.version
        r = [
            ("/v1/agent/self", ["GET"], self.agent_self, False),
            ("/v1/agent/services", ["GET"], self.agent_services, False),
            ("/v1/agent/checks", ["GET"], self.agent_checks, False),
            ("/v1/agent/service/register", ["PUT"], self.service_register, False),
            ("/v1/agent/service/deregister/", ["PUT"], self.service_deregister, True),
            ("/v1/agent/check/pass/", ["PUT"], self.check_update("passing"), True),
            ("/v1/agent/check/warn/", ["PUT"], self.check_update("warning"), True),
            ("/v1/agent/check/fail/", ["PUT"], self.check_update("critical"), True),
            ("/v1/agent/check/update/", ["PUT"], self.check_update(None), True),
            ("/v1/agent/connect/authorize", ["POST"], self.authorize, False),
            ("/v1/agent/connect/ca/roots", ["GET"], self.agent_roots, False),
            ("/v1/agent/connect/ca/leaf/", ["GET"], self.leaf, True),
            ("/v1/agent/connect/proxy/", ["GET"], self.proxy_config, True),
            ("/v1/connect/ca/roots", ["GET"], self.ca_roots, False),
            ("/v1/connect/intentions", ["GET", "POST"], self.intentions, False),
            ("/v1/connect/intentions/match", ["GET"], self.intentions_match, False),
            ("/v1/connect/intentions/check", ["GET"], self.intentions_check, False),
            ("/v1/connect/intentions/", ["GET", "PUT", "DELETE"], self.intention_id, True),
            ("/v1/health/connect/", ["GET"], self.health_connect, True),
            ("/v1/health/service/", ["GET"], self.health_service, True),
            ("/v1/catalog/connect/", ["GET"], self.catalog_connect, True),
            ("/v1/catalog/service/", ["GET"], self.catalog_service, True),
            ("/v1/catalog/register", ["PUT"], self.catalog_register, False),
            ("/v1/catalog/deregister", ["PUT"], self.catalog_deregister, False),
            ("/v1/query", ["GET", "POST"], self.queries, False),
            ("/v1/query/", ["GET", "PUT", "DELETE"], self.query_id, True),
            ("/v1/status/leader", ["GET"], self.status_leader, False),
            ("/v1/status/peers", ["GET"], self.status_peers, False),
        ]
        if v >= (1, 3, 0):
            r.append(("/v1/agent/service/", ["GET"], self.agent_service, True))
        self.routes = r

    # ------------------------------------------------------------------ dispatch
    def route(self, path):
        """Go ServeMux: exact match, else the longest subtree ("/"-terminated) pattern."""
        best = None
        for pat, methods, fn, subtree in self.routes:
            if (not subtree and path == pat) or (subtree and path.startswith(pat)):
                if best is None or len(pat) > len(best[0]):
                    best = (pat, methods, fn, subtree)
        return best

    def handle(self, req):
        r = self.route(req.path)
        if r is None:
            return Response(404, text="")
        pat, methods, fn, _ = r
        if req.method == "OPTIONS":
            return Response(200, text="", headers={"Allow": ",".join(["OPTIONS"] + methods)})
        if req.method not in methods:
            return Response(405, text="method %s not allowed" % req.method,
                            headers={"Allow": ",".join(["OPTIONS"] + methods)})
        try:
            if "stale" in req.query and "consistent" in req.query:
                raise APIError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
            dc = req.q("dc")
            if dc and dc != self.st.opts.datacenter and not req.path.startswith("/v1/agent/"):
                # Server-side reads would be forwarded to that datacenter; we know only ours.
                # (Agent-local endpoints ignore ?dc.)
                raise APIError(500, "No path to datacenter")
            return fn(req, req.path[len(pat):])
        except APIError as e:
            return Response(e.status, text=e.text, headers=e.headers)
        except blocking.BadRequest as e:
            return Response(400, text=str(e))
        except ACLNotFound:
            return Response(403, text="ACL not found")

    # ------------------------------------------------------------------ helpers
    def token(self, req, resolve_proxy=True):
        tok = req.raw_token()
        if resolve_proxy:
            with self.st.cond:
                tok = self.st.resolve_proxy_token(tok)
        return tok

    def authz(self, req, resolve_proxy=True):
        with self.st.cond:
            return self.st.authorizer(self.token(req, resolve_proxy))

    def block_index(self, req, current, timeout_override=None):
        """Blocks (state lock held) while current() <= ?index, up to the wait. Call with st.cond held."""
        index, wait = blocking.parse_wait(req.query)
        if index is not None and index > 0:
            timeout = timeout_override if timeout_override is not None else blocking.timeout_for(wait)
            blocking.block(self.st.cond, lambda: current() > index, timeout, lambda: req.server.cut)

    def block_hash(self, req, compute):
        """Hash blocking as agentLocalBlockingQuery: returns the (hash, body) when it differs from ?hash=."""
        _, wait = blocking.parse_wait(req.query)
        want = req.q("hash", "")
        result = {}

        def changed():
            result["v"] = compute()
            return want == "" or result["v"] is None or result["v"][0] != want

        blocking.block(self.st.cond, changed, blocking.timeout_for(wait), lambda: req.server.cut)
        if "v" not in result or (want and result["v"] is not None and result["v"][0] == want):
            result["v"] = compute()
        return result["v"]

    def cache_header(self, key):
        hit = key in self.cache_seen
        self.cache_seen.add(key)
        return {"X-Cache": "HIT" if hit else "MISS"}

    # ------------------------------------------------------------------ agent
    def agent_self(self, req, _):
        authz = self.authz(req)
        st = self.st
        if authz is not None and not authz.agent_read(st.opts.node_name):
            raise permission_denied()
        version = st.opts.consul_version
        return Response(200, {
            "Config": {"Datacenter": st.opts.datacenter, "NodeName": st.opts.node_name, "NodeID": st.node_id,
                       "Revision": "simulator", "Server": True, "Version": version},
            "DebugConfig": {"ConnectEnabled": True, "ACLDefaultPolicy": "deny" if not st.default_allow else "allow",
                            "ACLsEnabled": st.acl_enabled, "Datacenter": st.opts.datacenter},
            "Coord": {"Vec": [0, 0, 0, 0, 0, 0, 0, 0], "Error": 1.5, "Adjustment": 0, "Height": 1e-05},
            "Member": {"Name": st.opts.node_name, "Addr": st.opts.node_address, "Port": 8301,
                       "Tags": {"dc": st.opts.datacenter, "role": "consul", "build": version + ":simulator"},
                       "Status": 1},
            "Meta": {"consul-network-segment": ""}})

    def agent_services(self, req, _):
        authz = self.authz(req)
        with self.st.cond:
            out = {}
            for sid in sorted(self.st.services):
                s = self.st.services[sid]
                if authz is None or authz.service_read(s["Service"]):
                    out[sid] = self.st.agent_service(s)
        return Response(200, out)

    def agent_service(self, req, sid):
        st = self.st
        if sid in st.managed:
            # Consul answers for a managed proxy through the proxy config endpoint's rules.
            raw = req.raw_token()
            with st.cond:
                m = st.managed[sid]
                self._verify_proxy_token(raw, m["TargetServiceName"], sid)
        authz_token = self.token(req)

        def compute():
            v = st.agent_service_by_id(sid)
            if v is None:
                return None
            hash_input, body = v
            body = dict(body)
            h = st.content_hash(hash_input)
            body["ContentHash"] = h
            return h, body

        with st.cond:
            authz = st.authorizer(authz_token)
            svc = st.services.get(sid)
            if svc is None:
                raise APIError(404, "unknown proxy service ID: %s" % sid)
            if authz is not None and sid not in st.managed and not authz.service_read(svc["Service"]):
                raise permission_denied()
            v = self.block_hash(req, compute)
        if v is None:
            raise APIError(404, "unknown proxy service ID: %s" % sid)
        return Response(200, v[1], headers={"X-Consul-ContentHash": v[0]})

    def agent_checks(self, req, _):
        authz = self.authz(req)
        with self.st.cond:
            out = {}
            for cid in sorted(self.st.checks):
                c = self.st.checks[cid]
                if authz is not None:
                    if c["ServiceName"] and not authz.service_read(c["ServiceName"]):
                        continue
                    if not c["ServiceName"] and not authz.node_read(self.st.opts.node_name):
                        continue
                out[cid] = self.st.render_check(c, with_index=False)
        return Response(200, out)

    def service_register(self, req, _):
        body = req.json()
        tok = self.token(req)
        with self.st.cond:
            authz = self.st.authorizer(tok)
            self.st.register_service(body, tok, authz)
        return Response(200, text="")

    def service_deregister(self, req, sid):
        authz = self.authz(req)
        self.st.deregister_service(sid, authz)
        return Response(200, text="")

    def check_update(self, status):
        def fn(req, cid):
            authz = self.authz(req)
            st = status
            output = req.q("note", "")
            if st is None:
                body = req.json(schema.CHECK_UPDATE) or {}
                st = body.get("Status")
                output = body.get("Output", "")
                if st not in ("passing", "warning", "critical"):
                    raise APIError(400, "Invalid check status: '%s'" % st)
            self.st.set_check(cid, st, output, authz)
            return Response(200, text="")
        return fn

    # ------------------------------------------------------------------ connect CA
    def agent_roots(self, req, _):
        return self._roots(req, self.cache_header(("roots",)))

    def ca_roots(self, req, _):
        return self._roots(req, {})

    def _roots(self, req, extra):
        st = self.st
        with st.cond:
            self.block_index(req, lambda: st.idx["roots"])
            body = st.roots_body()
            h = _meta(st.idx["roots"])
        h.update(extra)
        return Response(200, body, headers=h)

    def leaf(self, req, service):
        st = self.st
        raw = req.raw_token()
        if not service:
            raise APIError(500, "service name must be specified")
        with st.cond:
            self._verify_proxy_token(raw, service, "")
            leaf, cached = st.leaf(service)
            override = None
            if st.version < (1, 4, 1):
                override = blocking.MAX_WAIT     # the wait parameter was ignored here before 1.4.1
            self.block_index(req, lambda: st.leaves[service]["ModifyIndex"], override)
            leaf = st.leaves[service]
            body = {k: v for k, v in leaf.items() if not k.startswith("_")}
        h = {"X-Consul-Index": str(leaf["ModifyIndex"])}
        h.update({"X-Cache": "HIT" if cached else "MISS"})
        return Response(200, body, headers=h)

    def _verify_proxy_token(self, raw, target_service, proxy_id):
        """Consul 1.3+ verifyProxyToken: a managed proxy's own token, or a token with service:write."""
        st = self.st
        p = st.proxy_for_token(raw)
        if p is not None:
            if proxy_id and p["ProxyServiceID"] != proxy_id:
                raise permission_denied()
            if p["TargetServiceName"] != target_service:
                raise permission_denied()
            return
        authz = st.authorizer(raw)
        if authz is not None and not authz.service_write(target_service):
            raise permission_denied()

    def proxy_config(self, req, proxy_id):
        st = self.st
        raw = req.raw_token()

        is_proxy_token = False

        def compute():
            body = st.managed_config(proxy_id)
            if body is None:
                return None
            h = st.content_hash(st.managed_hash_input(proxy_id))
            body["ContentHash"] = h
            if is_proxy_token and st.version >= (1, 3, 0) and "telemetry" not in body["Config"]:
                body["Config"]["telemetry"] = st.proxy_telemetry(body["TargetServiceID"])
            return h, body

        with st.cond:
            m = st.managed.get(proxy_id)
            if m is None:
                raise APIError(404, "unknown proxy service ID: %s" % proxy_id)
            if st.services.get(m["TargetServiceID"]) is None:
                raise APIError(404, "unknown target service ID: %s" % m["TargetServiceID"])
            self._verify_proxy_token(raw, m["TargetServiceName"], proxy_id)
            is_proxy_token = st.proxy_for_token(raw) is not None
            v = self.block_hash(req, compute)
        if v is None:
            raise APIError(404, "unknown proxy service ID: %s" % proxy_id)
        return Response(200, v[1], headers={"X-Consul-ContentHash": v[0]})

    # ------------------------------------------------------------------ authorize
    _SVC_PATH = re.compile(r"^/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)$")

    def _parse_spiffe(self, uri):
        """Returns ("service", host, ns, dc, svc) / ("signing", host) or raises ValueError(reason)."""
        m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", uri or "")
        if not m:
            raise ValueError("SPIFFE ID must have 'spiffe' scheme")
        if m.group(1).lower() != "spiffe":
            raise ValueError("SPIFFE ID must have 'spiffe' scheme")
        rest = m.group(2)
        if not rest.startswith("//"):
            raise ValueError("SPIFFE ID is not in the expected format")
        rest = rest[2:]
        host, _, path = rest.partition("/")
        path = "/" + path if _ else ""
        path = path.split("?")[0].split("#")[0]
        sm = self._SVC_PATH.match(path)
        if sm:
            return ("service", host, sm.group(1), sm.group(2), sm.group(3))
        if path == "" and host:
            return ("signing", host)
        raise ValueError("SPIFFE ID is not in the expected format")

    def authorize(self, req, _):
        body = req.json(schema.AUTHORIZE)
        if not isinstance(body, dict):
            raise APIError(400, "Request decode failed: body must be a JSON object")
        target = body.get("Target") or ""
        if not target:
            raise APIError(400, "Target service must be specified")
        st = self.st
        old = st.version < (1, 4, 0)
        try:
            parsed = self._parse_spiffe(body.get("ClientCertURI") or "")
        except ValueError as e:
            if old:
                return Response(200, {"Authorized": False, "Reason": "Invalid client ID: %s" % e})
            raise APIError(400, "ClientCertURI not a valid Connect identifier")
        if parsed[0] != "service":
            if old:
                return Response(200, {"Authorized": False, "Reason": "Client ID must be a valid SPIFFE service URI"})
            raise APIError(400, "ClientCertURI not a valid Service identifier")
        _, host, src_ns, _dc, src_name = parsed
        tok = self.token(req)
        with st.cond:
            authz = st.authorizer(tok)
            if authz is not None and not authz.service_write(target):
                raise permission_denied()
            if st.ca["TrustDomain"] != host.lower():
                return Response(200, {"Authorized": False,
                                      "Reason": "Identity from an external trust domain: %s" % host})
            if authz is not None and not authz.intention_read(target):
                raise permission_denied()
            cache = self.cache_header(("match", tok, target))
            x = st.authorize_match(target, src_ns, src_name)
            if x is not None:
                return Response(200, {"Authorized": x["Action"] == "allow",
                                      "Reason": "Matched intention: %s" % st.ixn_string(x)}, headers=cache)
            anon = st.authorizer("")
            if anon is None:
                return Response(200, {"Authorized": True, "Reason": "ACLs disabled, access is allowed by default"},
                                headers=cache)
            return Response(200, {"Authorized": anon.intention_default_allow(),
                                  "Reason": "Default behavior configured by ACLs"}, headers=cache)

    # ------------------------------------------------------------------ intentions
    def intentions(self, req, _):
        st = self.st
        if req.method == "POST":
            body = req.json(schema.INTENTION)
            authz = self.authz(req)
            ixn_id = st.put_intention(body, None, authz)
            return Response(200, {"ID": ixn_id})
        authz = self.authz(req)
        with st.cond:
            self.block_index(req, lambda: st.idx["intentions"])
            out = [dict(x) for x in st.sorted_intentions()
                   if authz is None or authz.intention_read(x["DestinationName"])]
            return Response(200, out, headers=_meta(st.idx["intentions"]))

    def intention_id(self, req, ixn_id):
        st = self.st
        authz = self.authz(req)
        if req.method == "GET":
            with st.cond:
                self.block_index(req, lambda: st.idx["intentions"])
                x = st.intentions.get(ixn_id)
                if x is None:
                    raise APIError(404, "Intention not found")
                if authz is not None and not authz.intention_read(x["DestinationName"]):
                    raise permission_denied()
                return Response(200, dict(x), headers=_meta(st.idx["intentions"]))
        if req.method == "PUT":
            body = req.json(schema.INTENTION)
            st.put_intention(body, ixn_id, authz)
            return Response(200, {"ID": ixn_id}) if st.version < (1, 2, 0) else Response(200, text="")
        st.delete_intention(ixn_id, authz)
        return Response(200, text="")

    def _match_entries(self, names):
        out = []
        for n in names:
            parts = n.split("/", 1)
            if len(parts) == 1:
                out.append(("default", n, n))
            else:
                out.append((parts[0], parts[1], n))
        return out

    def intentions_match(self, req, _):
        st = self.st
        by = req.q("by")
        if not by:
            raise APIError(500, "required query parameter 'by' not set")
        if by not in ("source", "destination"):
            raise APIError(500, "'by' parameter must be one of 'source' or 'destination'")
        names = req.query.get("name") or []
        if not names:
            raise APIError(500, "required query parameter 'name' not set")
        entries = self._match_entries(names)
        authz = self.authz(req)
        with st.cond:
            for ns, name, _ in entries:
                if authz is not None and not authz.intention_read(name):
                    raise permission_denied()
            self.block_index(req, lambda: st.idx["intentions"])
            out = {}
            for ns, name, key in entries:
                out[key] = [dict(x) for x in st.match_intentions(by, ns, name)]
            return Response(200, out, headers=_meta(st.idx["intentions"]))

    def intentions_check(self, req, _):
        st = self.st
        src = req.q("source")
        dst = req.q("destination")
        if not src:
            raise APIError(500, "required query parameter 'source' not set")
        if not dst:
            raise APIError(500, "required query parameter 'destination' not set")
        src_ns, _, src_name = src.rpartition("/")
        dst_ns, _, dst_name = dst.rpartition("/")
        src_ns = src_ns or "default"
        dst_ns = dst_ns or "default"
        authz = self.authz(req)
        with st.cond:
            if authz is not None and not authz.intention_read(dst_name):
                raise permission_denied()
            for x in st.match_intentions("destination", dst_ns, dst_name):
                if (x["SourceNS"] in ("*", src_ns)) and (x["SourceName"] in ("*", src_name)):
                    return Response(200, {"Allowed": x["Action"] == "allow"}, headers=_meta(st.idx["intentions"]))
            anon = st.authorizer("")
            allowed = True if anon is None else anon.intention_default_allow()
            return Response(200, {"Allowed": allowed}, headers=_meta(st.idx["intentions"]))

    # ------------------------------------------------------------------ discovery
    @staticmethod
    def _passing(req):
        if "passing" not in req.query:
            return False
        v = req.q("passing", "")
        if v == "":
            return True
        if v in ("1", "t", "T", "TRUE", "true", "True"):
            return True
        if v in ("0", "f", "F", "FALSE", "false", "False"):
            return False
        raise APIError(400, "Invalid value for ?passing")

    def _health(self, req, name, connect):
        st = self.st
        if not name:
            raise APIError(400, "Missing service name")
        authz = self.authz(req)
        passing = self._passing(req)
        with st.cond:
            self.block_index(req, lambda: st.idx["catalog"])
            svcs = st.connect_instances(name) if connect else st.plain_instances(name)
            entries = st.filter_entries([st.service_entry(s) for s in svcs], authz)
            tag = req.q("tag")
            if tag is not None:
                entries = [e for e in entries if tag in e["Service"]["Tags"]]
            if passing:
                entries = st.passing_only(entries)
            return Response(200, entries, headers=_meta(st.idx["catalog"]))

    def health_connect(self, req, name):
        return self._health(req, name, True)

    def health_service(self, req, name):
        return self._health(req, name, False)

    def _catalog(self, req, name, connect):
        st = self.st
        if not name:
            raise APIError(400, "Missing service name")
        authz = self.authz(req)
        with st.cond:
            self.block_index(req, lambda: st.idx["catalog"])
            svcs = st.connect_instances(name) if connect else st.plain_instances(name)
            if authz is not None:
                svcs = [s for s in svcs if authz.service_read(s["Service"]) and
                        authz.node_read(s.get("NodeName") or st.opts.node_name)]
            return Response(200, [st.catalog_service_node(s) for s in svcs], headers=_meta(st.idx["catalog"]))

    def catalog_register(self, req, _):
        authz = self.authz(req)
        self.st.catalog_register(req.json(), authz)
        return Response(200, True)

    def catalog_deregister(self, req, _):
        authz = self.authz(req)
        self.st.catalog_deregister(req.json(), authz)
        return Response(200, True)

    def catalog_connect(self, req, name):
        return self._catalog(req, name, True)

    def catalog_service(self, req, name):
        return self._catalog(req, name, False)

    # ------------------------------------------------------------------ prepared queries
    def queries(self, req, _):
        st = self.st
        authz = self.authz(req)
        if req.method == "POST":
            qid = st.put_query(req.json(schema.QUERY), None, authz, self.token(req))
            return Response(200, {"ID": qid})
        with st.cond:
            self.block_index(req, lambda: st.idx["queries"])
            out = [st.render_query(q) for q in sorted(st.queries.values(), key=lambda q: q["ID"])
                   if st.query_visible(q, authz)]
            return Response(200, out, headers=_meta(st.idx["queries"]))

    def query_id(self, req, rest):
        st = self.st
        authz = self.authz(req)
        qid, _, sub = rest.partition("/")
        if sub == "execute":
            if req.method != "GET":
                return Response(405, text="method %s not allowed" % req.method, headers={"Allow": "OPTIONS,GET"})
            with st.cond:
                self.block_index(req, lambda: st.idx["catalog"])
                body = st.execute_query(qid, req.q("connect") in ("", "1", "true", "t", "True", "TRUE")
                                        if "connect" in req.query else False, authz)
                return Response(200, body, headers=_meta(st.idx["catalog"]))
        if sub == "explain":
            with st.cond:
                q = st.find_query(qid)
                return Response(200, {"Query": st.render_query(q)}, headers=_meta(st.idx["queries"]))
        if sub:
            raise APIError(404, "")
        if req.method == "GET":
            with st.cond:
                self.block_index(req, lambda: st.idx["queries"])
                q = st.queries.get(qid)
                if q is None:
                    raise APIError(404, "Query not found")
                return Response(200, [st.render_query(q)], headers=_meta(st.idx["queries"]))
        if req.method == "PUT":
            st.put_query(req.json(schema.QUERY), qid, authz, self.token(req))
            return Response(200, text="")
        st.delete_query(qid, authz)
        return Response(200, text="")

    # ------------------------------------------------------------------ status
    def status_leader(self, req, _):
        return Response(200, "%s:8300" % self.st.opts.node_address)

    def status_peers(self, req, _):
        return Response(200, ["%s:8300" % self.st.opts.node_address])


def now():
    return time.time()

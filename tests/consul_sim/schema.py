"""Decoding of Consul's JSON inputs as its Go structs would: keys are matched case-insensitively and with or
without underscores (Consul decodes the API's PascalCase and the config files' snake_case into the same
structs), values must have the field's type (else 400 "Request decode failed: ..."), opaque maps such as Config
are kept as given, unknown keys are dropped."""

STR, INT, BOOL, STRLIST, STRMAP, OPAQUE, ANY = "str", "int", "bool", "strlist", "strmap", "opaque", "any"

UPSTREAM = {"DestinationType": STR, "DestinationNamespace": STR, "DestinationName": STR, "Datacenter": STR,
            "LocalBindAddress": STR, "LocalBindPort": INT, "Config": OPAQUE}
PROXY = {"DestinationServiceName": STR, "DestinationServiceID": STR, "LocalServiceAddress": STR,
         "LocalServicePort": INT, "Config": OPAQUE, "Upstreams": [UPSTREAM]}
MANAGED = {"ExecMode": STR, "Command": STRLIST, "Config": OPAQUE, "Upstreams": [UPSTREAM]}
CHECK = {"CheckID": STR, "ID": STR, "Name": STR, "Notes": STR, "Status": STR, "TTL": ANY, "Interval": ANY,
         "Timeout": ANY, "TCP": STR, "HTTP": STR, "Method": STR, "Header": OPAQUE, "TLSSkipVerify": BOOL,
         "AliasService": STR, "AliasNode": STR, "ServiceID": STR, "Args": STRLIST, "ScriptArgs": STRLIST,
         "GRPC": STR, "GRPCUseTLS": BOOL, "DockerContainerID": STR, "Shell": STR,
         "DeregisterCriticalServiceAfter": ANY}
SERVICE = {"ID": STR, "Name": STR, "Tags": STRLIST, "Address": STR, "Meta": STRMAP, "Port": INT, "Kind": STR,
           "ProxyDestination": STR, "EnableTagOverride": BOOL, "Weights": {"Passing": INT, "Warning": INT},
           "Check": CHECK, "Checks": [CHECK], "Token": STR}
CONNECT = {"Native": BOOL, "Proxy": MANAGED}
SERVICE["Proxy"] = PROXY
SERVICE["Connect"] = CONNECT
CONNECT["SidecarService"] = SERVICE

INTENTION = {"ID": STR, "Description": STR, "SourceNS": STR, "SourceName": STR, "DestinationNS": STR,
             "DestinationName": STR, "SourceType": STR, "Action": STR, "DefaultAddr": STR, "DefaultPort": INT,
             "Meta": STRMAP}
AUTHORIZE = {"Target": STR, "ClientCertURI": STR, "ClientCertSerial": STR}
CHECK_UPDATE = {"Status": STR, "Output": STR}
QUERY = {"ID": STR, "Name": STR, "Session": STR, "Token": STR, "Near": STR,
         "Service": {"Service": STR, "Failover": {"NearestN": INT, "Datacenters": STRLIST}, "OnlyPassing": BOOL,
                     "IgnoreCheckIDs": STRLIST, "Near": STR, "Tags": STRLIST, "NodeMeta": STRMAP,
                     "ServiceMeta": STRMAP, "Connect": {"Enabled": BOOL}},
         "DNS": {"TTL": STR}, "Template": {"Type": STR, "Regexp": STR, "RemoveEmptyTags": BOOL}}


class DecodeError(Exception):
    pass


def _canon(k):
    return k.replace("_", "").replace("-", "").lower()


_GO = {str: "string", int: "number", float: "number", bool: "bool", list: "array", dict: "object"}


def _gotype(v):
    return _GO.get(type(v), "null")


def _bad(v, want, where):
    return DecodeError("json: cannot unmarshal %s into Go value of type %s (field %s)" % (_gotype(v), want, where))


def decode(obj, schema, where="body"):
    """Returns obj with keys renamed to schema's names and values type-checked. Raises DecodeError."""
    if obj is None:
        return None
    if schema in (OPAQUE, ANY, None):
        if schema == OPAQUE and not isinstance(obj, dict):
            raise _bad(obj, "map[string]interface {}", where)
        return obj
    if schema == STR:
        if not isinstance(obj, str):
            raise _bad(obj, "string", where)
        return obj
    if schema == INT:
        if isinstance(obj, bool) or not isinstance(obj, (int, float)) or obj != int(obj):
            raise _bad(obj, "int", where)
        return int(obj)
    if schema == BOOL:
        if not isinstance(obj, bool):
            raise _bad(obj, "bool", where)
        return obj
    if schema == STRLIST:
        if not isinstance(obj, list) or not all(isinstance(x, str) for x in obj):
            raise _bad(obj, "[]string", where)
        return list(obj)
    if schema == STRMAP:
        if not isinstance(obj, dict) or not all(isinstance(x, str) for x in obj.values()):
            raise _bad(obj, "map[string]string", where)
        return dict(obj)
    if isinstance(schema, list):
        if not isinstance(obj, list):
            raise _bad(obj, "[]struct", where)
        return [decode(x, schema[0], where) for x in obj]
    if not isinstance(obj, dict):
        raise _bad(obj, "struct", where)
    names = {_canon(k): k for k in schema}
    out = {}
    for k, v in obj.items():
        name = names.get(_canon(k))
        if name is None:
            continue
        out[name] = decode(v, schema[name], "%s.%s" % (where, name))
    return out

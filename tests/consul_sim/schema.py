"""Decoding of Consul's JSON inputs: keys are matched case-insensitively and with or without underscores
(Consul decodes the API's PascalCase and the config files' snake_case into the same structs), opaque maps such
as Config and Meta are kept as given."""

UPSTREAM = {"DestinationType": None, "DestinationNamespace": None, "DestinationName": None, "Datacenter": None,
            "LocalBindAddress": None, "LocalBindPort": None, "Config": "opaque"}
PROXY = {"DestinationServiceName": None, "DestinationServiceID": None, "LocalServiceAddress": None,
         "LocalServicePort": None, "Config": "opaque", "Upstreams": [UPSTREAM]}
MANAGED = {"ExecMode": None, "Command": None, "Config": "opaque", "Upstreams": [UPSTREAM]}
CHECK = {"CheckID": None, "ID": None, "Name": None, "Notes": None, "Status": None, "TTL": None, "Interval": None,
         "Timeout": None, "TCP": None, "HTTP": None, "Method": None, "Header": "opaque", "TLSSkipVerify": None,
         "AliasService": None, "AliasNode": None, "ServiceID": None, "Args": None, "ScriptArgs": None,
         "GRPC": None, "GRPCUseTLS": None, "DockerContainerID": None, "Shell": None,
         "DeregisterCriticalServiceAfter": None}
SERVICE = {"ID": None, "Name": None, "Tags": None, "Address": None, "Meta": "opaque", "Port": None, "Kind": None,
           "ProxyDestination": None, "EnableTagOverride": None, "Weights": {"Passing": None, "Warning": None},
           "Check": CHECK, "Checks": [CHECK], "Token": None}
CONNECT = {"Native": None, "Proxy": MANAGED}
SERVICE["Proxy"] = PROXY
SERVICE["Connect"] = CONNECT
CONNECT["SidecarService"] = SERVICE


class DecodeError(Exception):
    pass


def _canon(k):
    return k.replace("_", "").replace("-", "").lower()


def decode(obj, schema, where="body"):
    """Returns obj with its keys renamed to schema's PascalCase names; unknown keys are dropped as Consul does."""
    if schema is None or schema == "opaque":
        return obj
    if isinstance(schema, list):
        if obj is None:
            return None
        if not isinstance(obj, list):
            raise DecodeError("%s: expected a list" % where)
        return [decode(x, schema[0], where) for x in obj]
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise DecodeError("%s: expected an object" % where)
    names = {_canon(k): k for k in schema}
    out = {}
    for k, v in obj.items():
        name = names.get(_canon(k))
        if name is None:
            continue
        out[name] = decode(v, schema[name], "%s.%s" % (where, name))
    return out

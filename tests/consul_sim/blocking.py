"""Blocking-query parameters as Consul parses them (agent/http.go parseWait) and the wait loop."""
import random
import re
import time

DEFAULT_WAIT = 300.0     # 5m
MAX_WAIT = 600.0         # 10m
JITTER_FRACTION = 16

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


class BadRequest(Exception):
    pass


def parse_duration(s):
    """Go's time.ParseDuration. Raises ValueError."""
    if s is None or s == "":
        raise ValueError("empty duration")
    orig = s
    sign = 1.0
    if s[0] in "+-":
        if s[0] == "-":
            sign = -1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if s == "":
        raise ValueError("invalid duration %r" % orig)
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise ValueError("invalid duration %r" % orig)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds):
    """Go's Duration.String() for whole/fractional seconds, as Consul echoes TTLs and intervals."""
    if seconds == 0:
        return "0s"
    out = ""
    if seconds >= 3600:
        h = int(seconds // 3600)
        out += "%dh" % h
        seconds -= h * 3600
    if seconds >= 60 or out:
        m = int(seconds // 60)
        out += "%dm" % m
        seconds -= m * 60
    if seconds == int(seconds):
        out += "%ds" % int(seconds)
    elif not out and seconds < 1:
        out += "%gms" % round(seconds * 1000, 6)
    else:
        out += "%gs" % round(seconds, 9)
    return out


def parse_wait(query):
    """(index or None, timeout seconds) from ?index=&wait=. Raises BadRequest with Consul's texts."""
    wait = None
    if "wait" in query:
        try:
            wait = parse_duration(query["wait"][0])
        except ValueError:
            raise BadRequest("Invalid wait time")
    index = None
    if "index" in query:
        v = query["index"][0]
        if not re.fullmatch(r"\d+", v) or int(v) > 2 ** 64 - 1:
            raise BadRequest("Invalid index")
        index = int(v)
    return index, wait


def timeout_for(wait):
    """Consul's blocking timeout: default 5m, capped at 10m, plus a random jitter of up to wait/16."""
    if wait is None or wait <= 0:
        wait = DEFAULT_WAIT
    if wait > MAX_WAIT:
        wait = MAX_WAIT
    return wait + random.random() * (wait / JITTER_FRACTION)


def block(cond, changed, timeout, aborted=lambda: False):
    """Waits on cond (held by the caller) until changed() or aborted() or timeout. Returns True if changed."""
    deadline = time.monotonic() + timeout
    while True:
        if changed():
            return True
        if aborted():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        cond.wait(min(left, 1.0))

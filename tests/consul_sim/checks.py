"""Runs the agent's checks in the background: TCP and HTTP checks at their interval (the first run comes quickly
instead of Consul's random stagger within the interval), TTL expiry, and leaf certificate renewal."""
import socket
import threading
import time
import urllib.error
import urllib.request

from blocking import format_duration


class Checker:
    def __init__(self, state, log):
        self.st = state
        self.log = log
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_ev.set()

    def loop(self):
        while not self.stop_ev.wait(0.2):
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - the checker must keep running
                self.log("err", "checker: %r" % e)

    def tick(self):
        st = self.st
        now = time.time()
        due = []
        with st.cond:
            for c in st.checks.values():
                if c.get("Pinned"):
                    continue
                if c["Type"] == "ttl" and c.get("Expires") and c["Expires"] <= now and c["Status"] != "critical":
                    c["Expires"] = None
                    st._update_check(c, "critical", "TTL expired")
                elif c["Type"] in ("tcp", "http"):
                    if c.get("NextRun", 0) == 0:
                        c["NextRun"] = now + 0.1
                    elif c["NextRun"] <= now:
                        c["NextRun"] = now + c["Interval"]
                        due.append(dict(c))
        for c in due:
            status, output = self.run_check(c)
            with st.cond:
                cur = st.checks.get(c["CheckID"])
                if cur is not None and not cur.get("Pinned") and cur["Type"] == c["Type"]:
                    st._update_check(cur, status, output)
        st.renew_due_leaves()

    @staticmethod
    def run_check(c):
        if c["Type"] == "tcp":
            host, _, port = c["TCP"].rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=c["Timeout"]):
                    return "passing", "TCP connect %s: Success" % c["TCP"]
            except OSError as e:
                return "critical", "dial tcp %s: %s" % (c["TCP"], e)
        try:
            with urllib.request.urlopen(c["HTTP"], timeout=c["Timeout"]) as r:
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
        except OSError as e:
            return "critical", "Get %s: %s (timeout %s)" % (c["HTTP"], e, format_duration(c["Timeout"]))
        if 200 <= code < 300:
            return "passing", "HTTP GET %s: %d OK" % (c["HTTP"], code)
        if code == 429:
            return "warning", "HTTP GET %s: %d Too Many Requests" % (c["HTTP"], code)
        return "critical", "HTTP GET %s: %d" % (c["HTTP"], code)

"""A small HTTP app for the new-connections bench: answers every request with "200 ok" and closes.

    /usr/bin/python3 bench/http_app.py PORT [WORKERS]

WORKERS processes (default 2) share the port with SO_REUSEPORT; each runs one asyncio loop. It answers
as soon as it has seen the end of the request head, whatever the request, and closes the connection
(wrk sends `Connection: close`). It is the app behind the proxies, so its own cost is the same in every
row of the bench; only the "direct" row can be bound by it (Python, a few thousand connections/s).
"""
import asyncio
import os
import signal
import socket
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
MAX_HEAD = 16384


class Answer(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.head = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.head += data
        if b"\r\n\r\n" in self.head or len(self.head) > MAX_HEAD:
            self.transport.write(RESPONSE)
            self.transport.close()

    def eof_received(self):
        self.transport.close()
        return False


def die_with_parent():
    """SIGTERM when the parent dies (PR_SET_PDEATHSIG), so no worker outlives the app."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def listener(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    s.setblocking(False)
    return s


def serve(sock):
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    loop.run_until_complete(loop.create_server(Answer, sock=sock, backlog=1024))
    loop.run_forever()


def main(argv):
    if len(argv) not in (2, 3) or not argv[1].isdigit():
        sys.stderr.write("usage: http_app.py PORT [WORKERS]\n")
        return 2
    port = int(argv[1])
    workers = int(argv[2]) if len(argv) == 3 and argv[2].isdigit() else 2
    # Every worker binds before any serves, so the port is complete once the parent's own bind is done.
    socks = [listener(port) for _ in range(max(1, workers))]
    children = []
    for s in socks[1:]:
        pid = os.fork()
        if pid == 0:
            for other in socks:
                if other is not s:
                    other.close()
            die_with_parent()
            serve(s)
            os._exit(0)
        children.append(pid)
        s.close()
    try:
        serve(socks[0])
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

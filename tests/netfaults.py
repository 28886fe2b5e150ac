"""Small loopback servers that misbehave on purpose, for the object-storage tests."""

import re
import socket
import threading


class CuttingProxy:
    """A TCP proxy to `target` that drops a connection once its response passes
    `cut_after` bytes (a dropped link mid-read), once; then everything passes.
    Records each request's `Range` header."""

    def __init__(self, target: tuple[str, int], cut_after: int):
        self.target, self.cut_after = target, cut_after
        self.ranges: list[str] = []
        self.cuts = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client), daemon=True).start()

    def _requests(self, client, upstream) -> None:
        try:
            while data := client.recv(65536):
                self.ranges += re.findall(rb"(?i)\r\nrange: (bytes=[0-9-]+)", data)
                upstream.sendall(data)
        except OSError:
            pass
        _close(upstream)

    def _responses(self, upstream, client) -> None:
        sent, cut = 0, self.cut_after
        try:
            while data := upstream.recv(65536):
                if not self.cuts and sent + len(data) >= cut:
                    client.sendall(data[: cut - sent])
                    self.cuts += 1
                    break  # the link drops: both sides closed, mid-body
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        _close(client)
        _close(upstream)

    def close(self) -> None:
        _close(self.sock)


class Refuser:
    """An HTTP server that answers every request 403 AccessDenied, as S3 does."""

    BODY = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
        b"<Message>Access Denied</Message></Error>"
    )

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = self.BODY

        class Handler(BaseHTTPRequestHandler):
            def _deny(self, with_body: bool):
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_HEAD(self):  # noqa: N802  (http.server's naming)
                self._deny(False)

            def do_GET(self):  # noqa: N802
                self._deny(True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _close(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

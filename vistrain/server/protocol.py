"""The HTTP protocol ``vistrain serve`` runs: uvicorn's h11 protocol, with its own error replies
in JSON like every other error of the API.

uvicorn answers a request it cannot parse (headers over h11's 16 KiB limit, a malformed request
line) itself, before the application sees it, with a plain-text ``400 Invalid HTTP request
received.``.  :class:`JsonErrorH11Protocol` sends ``{"error": ...}`` instead.  It is named as
``uvicorn.Config(http=...)`` outright: with ``"auto"`` an installed httptools would take over.
Imported by :func:`vistrain.workflows.serve.serve` only (uvicorn is the optional extra).

Example:
    >>> from vistrain.server.protocol import error_body
    >>> error_body("bad")
    b'{"error": "bad"}'
"""
from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEADER_BYTES = 16 * 1024  # h11's limit on a request's head, named in the error


def error_body(message: str) -> bytes:
    """The JSON body of an error reply (the shape :mod:`vistrain.server.app` uses)."""
    return json.dumps({"error": message}).encode("utf-8")


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol whose "cannot parse the request" reply is JSON (status 400)."""

    def send_400_response(self, msg: str) -> None:
        body = error_body(f"invalid HTTP request: not HTTP/1.1, or its request line and "
                               f"headers exceed {MAX_HEADER_BYTES // 1024} KiB; send a smaller one")
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode())]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

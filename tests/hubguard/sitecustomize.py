"""The socket guard of the Hub tests' subprocesses: no connection leaves 127.0.0.1.

Put on ``PYTHONPATH`` (tests/conftest.py's ``hub_env`` does), Python imports it at start-up. It
patches ``socket.socket.connect`` / ``connect_ex`` (which ``socket.create_connection``, httpx,
urllib and asyncio all end in) to refuse any address but 127.0.0.0/8 and Unix sockets, with an
``OSError`` naming the address. Native code that opens its own sockets (Rust, C) is not
covered; the Hub tests' server sends nothing that makes hf_xet open connections.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

GUARD_MESSAGE = "koembed socket guard: connection refused, only 127.0.0.1 may be reached"
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _allowed(sock: socket.socket, address: Any) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False  # a host name: refuse rather than resolve it


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _allowed(self, address):
        raise OSError(f"{GUARD_MESSAGE}: {address!r}")
    _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _allowed(self, address):
        raise OSError(f"{GUARD_MESSAGE}: {address!r}")
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.koembed_guard = True  # type: ignore[attr-defined]

"""The no-network guard: a `sitecustomize` module that, put on PYTHONPATH, Python imports at the start of every
process. It refuses connections and name lookups that leave the machine (loopback and unix sockets stay allowed)
and logs every refused attempt to $VOXFLOW_NET_LOG, so that an attempt which the caller swallowed still fails a
test. It covers Python's socket module, not C libraries that open sockets themselves."""

from __future__ import annotations

from pathlib import Path

GUARD = r'''
"""Test guard (tests/support/network.py): refuse non-local network access in this process."""
import ipaddress
import os
import socket
import sys

_LOG = os.environ.get("VOXFLOW_NET_LOG")
_LOCAL_NAMES = {"localhost", "", socket.gethostname()}


def _note(line):
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {line} [{' '.join(sys.argv)[:160]}]\n")


def _local(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _deny(what):
    _note(f"BLOCKED {what}")
    raise PermissionError(f"network access blocked by the no-network test: {what}")


def _guard_addr(sock, address, what):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _deny(f"{what} {address!r}")


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
_getaddrinfo, _gethostbyname = socket.getaddrinfo, socket.gethostbyname


def connect(self, address):
    _guard_addr(self, address, "connect")
    return _connect(self, address)


def connect_ex(self, address):
    _guard_addr(self, address, "connect")
    return _connect_ex(self, address)


def sendto(self, data, *args):
    _guard_addr(self, args[-1], "sendto")
    return _sendto(self, data, *args)


def getaddrinfo(host, *args, **kwargs):
    if not _local(host):
        _deny(f"getaddrinfo {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


def gethostbyname(host):
    if not _local(host):
        _deny(f"gethostbyname {host!r}")
    return _gethostbyname(host)


socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
socket.getaddrinfo, socket.gethostbyname = getaddrinfo, gethostbyname
_note("guard loaded")
'''


def blocked(log: Path) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if " BLOCKED " in ln] if log.exists() else []

"""Listening TCP sockets of a set of processes, as `ss -ltnp` reports them."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass

from ml_platform.serving.processes import Proc, descendants, processes

_USER = re.compile(r'\("(?P<name>[^"]*)",pid=(?P<pid>\d+),fd=\d+\)')


@dataclass(frozen=True)
class Listener:
    pid: int
    name: str
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        host = self.host.strip("[]")
        if host in ("*", ""):
            return False  # every interface
        address = ipaddress.ip_address(host.split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return address.is_loopback

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid}) on {self.host}:{self.port}"


def listeners(pids: set[int]) -> list[Listener]:
    """Every listening TCP socket (IPv4 and IPv6) held by one of ``pids``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue  # a socket whose owner we may not see
        host, _, port = fields[3].rpartition(":")
        for user in _USER.finditer(line):
            if int(user["pid"]) in pids:
                found.append(Listener(int(user["pid"]), user["name"], host, int(port)))
    return found


def process_tree(*roots: int) -> set[int]:
    """``roots``, their descendants and every process in a session one of those leads (Ray's
    agents and HAProxy leave their parent's tree but stay in the Ray head's session)."""
    table: dict[int, Proc] = processes()
    tree = set(roots)
    for root in roots:
        tree |= set(descendants(root, table))
    return tree | {pid for pid, p in table.items() if p.sid in tree and not p.zombie}

"""A real DNS server for tests: Debian's dnsmasq on a free loopback port, records from a generated conf file.

Records are written as dnsmasq options (``naptr-record``, ``cname``, ``host-record``); ``local=/zone/`` makes
dnsmasq answer NXDOMAIN for any other name in the zone instead of forwarding it, as an SML would.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from accesspoint.servicekit.ports import free_port

TTL = 60


def dnsmasq_binary() -> str | None:
    """Where dnsmasq is (Debian puts it in /usr/sbin, which a non-root PATH may lack)."""
    return shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")


@dataclass
class DnsServer:
    """dnsmasq serving ``zones`` from records added before ``start`` (or before a ``restart``)."""

    folder: Path
    zones: tuple[str, ...]
    port: int = 0
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to query."""
        return ("127.0.0.1", self.port)

    def add_naptr(
        self, name: str, url: str, *, service: str = "Meta:SMP", order: int = 100, preference: int = 10
    ) -> None:
        """A U-NAPTR record whose regexp rewrites any name to ``url``."""
        self.lines.append(f"naptr-record={name.rstrip('.')},{order},{preference},U,{service},!^.*$!{url}!")

    def add_cname(self, alias: str, target: str, address: str = "127.0.0.1") -> None:
        """A CNAME to ``target``, which dnsmasq must know: it gets an A record with ``address``."""
        self.lines.append(f"host-record={target},{address}")
        self.lines.append(f"cname={alias.rstrip('.')},{target}")

    def _write(self) -> Path:
        conf = self.folder / "dnsmasq.conf"
        options = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            f"local-ttl={TTL}",
            f"neg-ttl={TTL}",
            *(f"local=/{zone.strip('.')}/" for zone in self.zones),
            *dict.fromkeys(self.lines),
        ]
        conf.write_text("\n".join(options) + "\n", encoding="utf-8")
        return conf

    def start(self) -> None:
        """Start dnsmasq and wait until it answers."""
        binary = dnsmasq_binary()
        if binary is None:
            raise RuntimeError("dnsmasq is not installed (scripts/ensure-system-packages.sh installs it)")
        if not self.port:
            self.port = free_port(udp=True)
        conf = self._write()
        command = [binary, "--keep-in-foreground", f"--conf-file={conf}", "--pid-file=", "--log-facility=-"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        query = dns.message.make_query(f"probe.{self.zones[0].strip('.')}", dns.rdatatype.A)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dnsmasq exited with {self.process.returncode}: {error}")
            try:
                dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
                return
            except (OSError, dns.exception.Timeout):
                time.sleep(0.02)
        raise RuntimeError("dnsmasq did not answer within 10 s")

    def stop(self) -> None:
        """Stop dnsmasq."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        """Reload the records (dnsmasq rereads naptr/cname options only on start) on the same port."""
        self.stop()
        self.start()


def dns_server(folder: Path, *zones: str) -> Iterator[DnsServer]:
    """For fixtures: ``yield from dns_server(tmp_path, zone)``; records are added, then ``start()`` is called."""
    server = DnsServer(folder, zones)
    try:
        yield server
    finally:
        server.stop()

"""``accesspoint smp serve`` as a real process and ``accesspoint discover`` against it through dnsmasq."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accesspoint.testing.dnsserver import DnsServer
from accesspoint.testing.pki import make_ca
from accesspoint.testing.processes import listens, wait_until
from accesspoint.testing.services import free_port
from accesspoint.testing.smp import DOCUMENT, PARTICIPANT, ZONE, metadata, pem, pki, publish, write_config
from smp.identifiers import Identifier, peppol_naptr_name
from smp.model import TransportProfile
from tests.cli import as_process, in_process

AP_URL = "https://ap.example.se/as4"
UNPUBLISHED = "iso6523-actorid-upis::0007:5555555555"


def _cli(*args: str, process: bool = False) -> tuple[int, dict[str, Any]]:
    """``accesspoint ARGS`` through ``main`` here, or as a process (``tests/cli.py``)."""
    done = (as_process if process else in_process)(*args)
    return done.code, done.document


def _serve(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "accesspoint", "smp", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    wait_until(listens(port), process, "smp serve")


@dataclass
class Deployment:
    """An SMP server process, its base URL, dnsmasq, and the truststore PEM of the SMP signer's CA."""

    process: subprocess.Popen[bytes]
    base: str
    dns: DnsServer
    trust: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``accesspoint smp serve`` with one published participant, and a DNS zone pointing at it."""
    folder = tmp_path_factory.mktemp("smp-cli")
    port = free_port()
    config = write_config(folder, port)
    process = _serve(config)
    dns = DnsServer(folder, (ZONE,))
    try:
        _wait_for_port(port, process)
        base = f"http://127.0.0.1:{port}"
        model = metadata(AP_URL, profiles=(TransportProfile.SDK_AS4, TransportProfile.PEPPOL_AS4))
        asyncio.run(publish(base, model))
        dns.add_naptr(peppol_naptr_name(Identifier.parse(PARTICIPANT), ZONE), base + "/")
        dns.add_naptr(peppol_naptr_name(Identifier.parse(UNPUBLISHED), ZONE), base + "/")
        dns.start()
        trust = folder / "smp-trust.pem"
        trust.write_bytes(pem(pki().ca))
        yield Deployment(process, base, dns, trust)
    finally:
        dns.stop()
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _discover(
    deployment: Deployment,
    participant: str,
    *extra: str,
    allow: tuple[str, ...] = ("--allow-network", "127.0.0.0/8"),
    process: bool = False,
) -> tuple[int, dict[str, Any]]:
    host, port = deployment.dns.address
    arguments = ("discover", participant, DOCUMENT, "--dns", f"{host}:{port}", "--zone", ZONE, *allow, *extra)
    return _cli(*arguments, process=process)


def test_discover_found_prints_endpoint_and_certificate(deployment: Deployment) -> None:
    """Exit 0 with the SMP URL, endpoint URL, transport profile, certificate and a verified signature."""
    code, out = _discover(deployment, PARTICIPANT, "--smp-trust", str(deployment.trust), process=True)
    assert code == 0, out
    assert out["ok"] is True
    assert out["smp_url"].startswith(deployment.base + "/iso6523-actorid-upis%3A%3A0007%3A2120000787/services/")
    assert out["endpoint_url"] == AP_URL
    assert out["transport_profile"] == TransportProfile.SDK_AS4
    assert out["certificate_pem"].encode() == pem(pki().ap)
    assert out["certificate_sha256"] == pki().ap.fingerprint
    assert out["signature_verified"] is True


def test_discover_transport_profile_and_untrusted_mode(deployment: Deployment) -> None:
    """--transport-profile picks the endpoint; without --smp-trust the signature is checked but not vouched for."""
    code, out = _discover(deployment, PARTICIPANT, "--transport-profile", TransportProfile.PEPPOL_AS4)
    assert code == 0, out
    assert out["transport_profile"] == TransportProfile.PEPPOL_AS4
    assert out["signature_verified"] is False


def test_discover_not_registered_exits_1(deployment: Deployment) -> None:
    """No DNS record, or a participant the SMP does not know: exit 1, error not-registered."""
    for participant in ("iso6523-actorid-upis::0007:9999999999", UNPUBLISHED):
        code, out = _discover(deployment, participant, "--smp-trust", str(deployment.trust))
        assert code == 1, out
        assert out["ok"] is False
        assert out["error"]["code"] == "not-registered"


def test_discover_untrusted_signer_exits_2(deployment: Deployment, tmp_path: Path) -> None:
    """A truststore without the SMP signer's CA: exit 2, error smp-signature."""
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pem(make_ca("Unrelated CA")))
    code, out = _discover(deployment, PARTICIPANT, "--smp-trust", str(other))
    assert code == 2, out
    assert out["error"]["code"] == "smp-signature"


def test_discover_usage_errors_exit_64(deployment: Deployment) -> None:
    """A malformed --dns, an unreadable --smp-trust and a malformed --allow-network are usage errors."""
    code, out = _cli("discover", PARTICIPANT, DOCUMENT, "--dns", "nope", "--zone", ZONE)
    assert code == 64, out
    code, out = _discover(deployment, PARTICIPANT, "--smp-trust", "/nonexistent.pem")
    assert code == 64, out
    code, out = _discover(deployment, PARTICIPANT, allow=("--allow-network", "localhost"))
    assert code == 64 and "--allow-network" in out["error"]["reason"], out


def test_discover_refuses_an_smp_at_a_loopback_address_unless_allowed(deployment: Deployment) -> None:
    """Without --allow-network the SMP on 127.0.0.1 is not connected to: exit 2 naming the loopback address."""
    code, out = _discover(deployment, PARTICIPANT, "--smp-trust", str(deployment.trust), allow=())
    assert code == 2, out
    assert out["error"]["code"] == "discovery-failed"
    assert "127.0.0.1 is a loopback address" in out["error"]["reason"]


def test_serve_bad_config_and_clean_stop(tmp_path: Path) -> None:
    """A config with mistakes exits 64 naming every field at fault; SIGTERM stops a running server with exit 0."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[smp]\nsigning_key = 'missing.pem'\nmax_age = -1\n[[smp.listen]]\nport = 1\n", encoding="utf-8")
    code, out = _cli("smp", "serve", "--config", str(bad))
    assert code == 64
    assert out["error"]["code"] == "config"
    fields = [problem.split(": ")[1] for problem in out["problems"]]
    assert fields == ["smp.signing_key", "smp.signing_certificate", "smp.listen[0].flavour", "smp.max_age"]
    port = free_port()
    config = write_config(tmp_path, port)
    process = _serve(config)
    try:
        _wait_for_port(port, process)
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert json.loads(stdout)["stopped"] is True

"""End-to-end encryption to the holder and keys in an HSM: what they cost.

- per letter (CPU µs, single-threaded): a 4 KB SBD letter encrypted to the holder (``encrypt_sbd``: parse, CMS
  with X25519 or RSA-OAEP, wrap) and opened again (``decrypt_content``), beside ``cms.encrypt`` of the same bytes.
- stream: ``cms.encrypt_stream`` of SIZE bytes (1 GiB by default) in 1 MiB chunks piped into ``cms.decrypt_stream``
  (nothing stored), against the same chunks through a raw AES-256-GCM encryptor and decryptor; one process each,
  with its own peak RSS (bounded memory: it must not grow with SIZE).
- signatures per second: RSA-2048 PKCS#1 v1.5 SHA-256 (1.15) and Ed25519 (2.0) over 1 KB, through PKCS#11
  (SoftHSM2, keys made in the token) against the same key types in process (cryptography).

``python -m bench.holder_crypto --stream SIZE [--baseline]`` prints one stream measurement as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from accesspoint.demo_federation import Letter, letter_document
from accesspoint.envelopes.holder_content import decrypt_content, encrypt_sbd
from accesspoint.security import cms
from accesspoint.security.keys import KeyPair
from accesspoint.security.pkcs11 import Pkcs11KeyProvider, Pkcs11Settings
from accesspoint.testing.holders import holder_key
from accesspoint.testing.hsm import generate_key, shared_softhsm, store_certificate
from accesspoint.testing.pki import KeyType, make_ca, new_key

MIB = 1024 * 1024
CHUNK = MIB


def _cpu_per_call(call: Callable[[], object], seconds: float) -> float:
    """Median-free and simple: CPU µs per call over a round of ``seconds`` of CPU time."""
    calls, start = 0, time.process_time()
    while (spent := time.process_time() - start) < seconds:
        call()
        calls += 1
    return spent / calls * 1e6


def letters(seconds: float) -> dict[str, float]:
    """CPU µs per 4 KB letter, encrypted and opened, per holder key type."""
    ca = make_ca("bench holder CA")
    sbd = letter_document(Letter("bench@nordic", "197802022389", "2021005448", "", ""))
    sbd = sbd.replace(b"Ditt beslut finns i brevladan.", b"x" * (4096 - len(sbd) + 30))
    found: dict[str, float] = {"letter_bytes": float(len(sbd))}
    kinds: tuple[KeyType, ...] = ("x25519", "rsa")
    for kind in kinds:
        pair = holder_key(ca, "197802022389", kind)
        recipient, key = cms.Recipient.from_certificate(pair.certificate), cms.DecryptionKey.from_key_pair(pair)
        encrypted = encrypt_sbd(sbd, recipient)
        found[f"{kind} encrypt_sbd"] = _cpu_per_call(partial(encrypt_sbd, sbd, recipient), seconds)
        found[f"{kind} decrypt_content"] = _cpu_per_call(partial(decrypt_content, encrypted, [key]), seconds)
        found[f"{kind} cms.encrypt (4 KB)"] = _cpu_per_call(partial(cms.encrypt, sbd, [recipient]), seconds)
    return found


def _chunks(size: int) -> Iterator[bytes]:
    block = bytes(range(256)) * (CHUNK // 256)
    for start in range(0, size, CHUNK):
        yield block[: min(CHUNK, size - start)]


def stream_once(size: int, *, baseline: bool) -> dict[str, Any]:
    """One measurement (in this process): bytes through encryption and decryption, wall and CPU time, peak RSS."""
    ca = make_ca("bench holder CA")
    pair = holder_key(ca, "197802022389", "x25519")
    wall, cpu = time.perf_counter(), time.process_time()
    total = 0
    if baseline:
        key, nonce = b"k" * 32, b"n" * 12
        encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).decryptor()
        # update_into with buffers allocated once: the raw ceiling, without a fresh 1 MiB buffer per call
        sealed, opened = bytearray(CHUNK + 15), bytearray(CHUNK + 15)
        for chunk in _chunks(size):
            written = encryptor.update_into(chunk, sealed)
            total += decryptor.update_into(memoryview(sealed)[:written], opened)
        encryptor.finalize()
        decryptor.finalize_with_tag(encryptor.tag)
    else:
        encrypted = cms.encrypt_stream(_chunks(size), size, [cms.Recipient.from_certificate(pair.certificate)])
        for piece in cms.decrypt_stream(encrypted, [cms.DecryptionKey.from_key_pair(pair)]):
            total += len(piece)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert total == size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "size": size,
        "wall_s": wall,
        "cpu_s": cpu,
        "mib_per_s": size / MIB / wall,
        "mib_per_cpu_s": size / MIB / cpu,
        "peak_rss": peak,
    }


def _stream(size: int, baseline: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.holder_crypto", "--stream", str(size)] + ["--baseline"] * baseline
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent
    )
    return dict(json.loads(done.stdout))


def _certificate(ca: KeyPair, public: Any, name: str) -> x509.Certificate:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )


def _rate(sign: Callable[[], object], seconds: float) -> float:
    calls, start = 0, time.perf_counter()
    while (spent := time.perf_counter() - start) < seconds:
        sign()
        calls += 1
    return calls / spent


def signatures(seconds: float) -> dict[str, float]:
    """Signatures per second over 1 KB: through PKCS#11 (SoftHSM2) and in process, RSA-2048 and Ed25519."""
    hsm = shared_softhsm()
    ca = make_ca("bench HSM CA")
    session = hsm.session("bench")
    labels = {}
    try:
        for kind in ("rsa", "ed25519"):
            label, key_id = f"bench-{kind}-{uuid.uuid4().hex[:6]}", uuid.uuid4().bytes
            store_certificate(
                session, _certificate(ca, generate_key(session, kind, label, key_id), label), label, key_id
            )
            labels[kind] = label
    finally:
        session.close()
    provider = Pkcs11KeyProvider.open(Pkcs11Settings(hsm.module, "bench", hsm.pin, signing=tuple(labels.values())))
    data = b"m" * 1024
    found: dict[str, float] = {}
    for pair in provider.signing_keys():
        in_token = pair.private_key
        if isinstance(in_token, rsa.RSAPrivateKey):
            local = new_key("rsa")
            assert isinstance(local, rsa.RSAPrivateKey)
            pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
            found["rsa-2048 pkcs11"] = _rate(partial(in_token.sign, data, pkcs1, sha256), seconds)
            found["rsa-2048 in-process"] = _rate(partial(local.sign, data, pkcs1, sha256), seconds)
        elif isinstance(in_token, ed25519.Ed25519PrivateKey):
            local_ed = ed25519.Ed25519PrivateKey.generate()
            found["ed25519 pkcs11"] = _rate(partial(in_token.sign, data), seconds)
            found["ed25519 in-process"] = _rate(partial(local_ed.sign, data), seconds)
    provider.close()
    return found


def run(*, size: int, seconds: float = 1.0) -> dict[str, Any]:
    """Every measurement of this module."""
    return {
        "letters_cpu_us": letters(seconds),
        "stream": {"cms": _stream(size, False), "raw_aes_gcm": _stream(size, True)},
        "signatures_per_s": signatures(seconds),
    }


def print_result(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """The table ``make bench`` prints."""
    letters_ = result["letters_cpu_us"]
    say(f"End-to-end encryption to the holder ({int(letters_['letter_bytes'])} B SBD letter), CPU µs per letter:")
    for name, micros in letters_.items():
        if name != "letter_bytes":
            say(f"  {name:40} {micros:>10.1f}")
    ours, raw = result["stream"]["cms"], result["stream"]["raw_aes_gcm"]
    size = ours["size"] // MIB
    say(f"  stream of {size} MiB, encrypt + decrypt piped (1 MiB chunks):")
    for name, found in (("CMS AuthEnvelopedData", ours), ("raw AES-256-GCM", raw)):
        say(f"    {name:30} {found['mib_per_s']:>7.0f} MiB/s wall, {found['mib_per_cpu_s']:>6.0f} MiB per CPU s, "
            f"peak RSS {found['peak_rss'] / MIB:.0f} MiB")  # fmt: skip
    ratio = ours["mib_per_cpu_s"] / raw["mib_per_cpu_s"]
    say(f"    CMS / raw AES-GCM, per CPU second: {ratio:.2f}")
    say("Signatures per second over 1 KB, through PKCS#11 (SoftHSM2) and in process:")
    for name, rate in result["signatures_per_s"].items():
        say(f"  {name:40} {rate:>10.0f}")


def main() -> None:
    """``--stream SIZE [--baseline]``: one stream measurement as a JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--stream", type=int, required=True)
    parser.add_argument("--baseline", action="store_true")
    args = parser.parse_args()
    sys.stdout.write(json.dumps(stream_once(args.stream, baseline=args.baseline)) + "\n")


if __name__ == "__main__":
    main()

"""Moving a mailbox between operators: how long 10,000 letters take from Brevlådan Ett to Brevlådan Två.

The demo's federation (FaR, the registers, the router, both operators each an access point + ``operator serve``);
Alice's mailbox at operator 1 is filled before it starts (SBD letters of ~1 KB, every tenth with a 64 KB PDF
beside it). The clock starts when she opens a mailbox at operator 2 (her e-ID signature, FaR's pending switch,
the SwitchRequest over AS4) and stops when operator 1 holds none of her letters and operator 2 all of them: the
switch, every export batch (signed manifest, streamed tar, AS4 to the other access point), the re-verification
and import at operator 2, its signed receipt, the deletion at operator 1. Reported: letters/s, MB/s of the
letters' files, and the operators' resident memory sampled through the move (flat: the first and the last
sample, and the peak) and at each batch operator 1 saw confirmed (``per_batch``: both operators' RSS then).

``python -m bench.holders [--letters 10000] [--batch 500]``, or ``python -m bench --only holders``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from accesspoint import demo_federation as fed
from accesspoint.keys_cli import generate_keys
from accesspoint.testing.mailboxes import sbd_letter, seed_letters
from operators.service import Operator
from operators.settings import load_settings

TEXT = "Jag vill flytta min digitala brevlåda."
ATTACHMENT = 64 * 1024


def _seed(federation: fed.Federation, letters: int) -> int:
    """Fill Alice's mailbox at operator 1; the bytes of its letters' files."""

    async def run() -> int:
        operator = Operator(load_settings(federation.operators["op1"].argv[-1]))
        await operator.store.create(operator.settings.mailboxes, now=operator.clock())
        pdf = os.urandom(ATTACHMENT)
        total = 0
        try:
            for start in range(0, letters, 1000):
                items: list[tuple[str, list[tuple[str, str, bytes | Path]]]] = []
                for index in range(start, min(start + 1000, letters)):
                    payloads: list[tuple[str, str, bytes | Path]] = [
                        ("letter@nordic", "application/xml", sbd_letter(fed.ALICE, f"Brev {index}"))
                    ]
                    if index % 10 == 0:
                        payloads.append(("bilaga@nordic", "application/pdf", pdf))
                    items.append((f"bench-{index}@nordic", payloads))
                made = await seed_letters(operator, items, answer=False)
                total += sum(letter.size for letter in made)
        finally:
            await operator.store.engine.dispose()
        return total

    return asyncio.run(run())


def _resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run(*, letters: int = 10_000, batch: int = 500, timeout: float = 3600) -> dict[str, Any]:
    """Build and start the federation, fill the mailbox, move it, stop; the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-holders-") as folder:
        root = Path(folder)
        pki = generate_keys(root / "keys", fed.PARTY_IDS, days=1)
        federation = fed.build(root, pki, portability=f'batch_letters = {batch}\nbatch_size = "64MiB"')
        seeding = time.monotonic()
        size = _seed(federation, letters)
        seeded_in = time.monotonic() - seeding
        samples: dict[str, list[int]] = {"op1": [], "op2": []}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                for name in samples:
                    try:
                        samples[name].append(_resident(federation.operators[name].pid))
                    except (OSError, AssertionError):
                        continue

        try:
            fed.start(federation, pki)
            watcher = threading.Thread(target=sample, daemon=True)
            watcher.start()
            started = time.monotonic()
            per_batch: list[dict[str, int]] = []
            body = {"holder": fed.ALICE, "agreement_text": TEXT, "signatures": federation.signed(TEXT, fed.ALICE)}
            code, answer = fed._call(
                federation.operators["op2"].url + "/api/v1/holders", fed.OPERATOR_ADMIN_TOKEN, "POST", body
            )
            if code != 202:
                raise RuntimeError(f"operator 2 did not start the move: HTTP {code} {answer}")
            deadline = started + timeout
            while time.monotonic() < deadline:
                move = _get(federation, "op1", f"/api/v1/holders/{fed.ALICE}").get("move") or {}
                confirmed = [b for b in move.get("batches", []) if b["side"] == "export" and b["state"] == "confirmed"]
                if len(confirmed) > len(per_batch):  # polled: batches confirmed meanwhile share this reading
                    reading = {name: _resident(federation.operators[name].pid) for name in samples}
                    per_batch += [reading] * (len(confirmed) - len(per_batch))
                if move.get("state") == "done" and not _get(federation, "op1", _letters_path())["letters"]:
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"the move did not finish within {timeout:.0f} s")
            seconds = time.monotonic() - started
            stop.set()
            watcher.join()
            arrived = len(_get(federation, "op2", _letters_path())["letters"])
            batches = len([b for b in move.get("batches", []) if b["side"] == "export"])
        finally:
            stop.set()
            codes = fed.stop(federation)
    return {
        "letters": letters,
        "arrived": arrived,
        "bytes": size,
        "batches": batches,
        "batch_letters": batch,
        "seconds": seconds,
        "letters_per_s": letters / seconds,
        "mb_per_s": size / 1e6 / seconds,
        "seeded_in_s": seeded_in,
        "memory": {
            name: {"first": values[0], "last": values[-1], "peak": max(values)}
            for name, values in samples.items()
            if values
        },
        "per_batch": [{name: value / 2**20 for name, value in batch.items()} for batch in per_batch],
        "load_average": os.getloadavg()[0],
        "finished": datetime.now(UTC).isoformat(),
        "exit_codes": codes,
    }


def _letters_path() -> str:
    return f"/api/v1/mailboxes/{quote(fed.ALICE, safe='')}/letters"


def _get(federation: fed.Federation, key: str, path: str) -> dict[str, Any]:
    code, body = fed._call(federation.operators[key].url + path, fed.OPERATOR_ADMIN_TOKEN)
    if code != 200:
        raise RuntimeError(f"{key} {path}: HTTP {code} {body}")
    return dict(body)


def print_result(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """The table."""
    say(
        "holders: a mailbox moved from Brevlådan Ett to Brevlådan Två (the demo's federation, SQLite, AS4 1.15 "
        "between the operators' access points; ~1 KB SBD letters, every tenth with a 64 KB PDF)"
    )
    say(
        f"  {result['letters']} letters ({result['bytes'] / 1e6:.1f} MB) in {result['seconds']:.1f} s: "
        f"{result['letters_per_s']:.0f} letters/s, {result['mb_per_s']:.2f} MB/s, {result['batches']} batches of at "
        f"most {result['batch_letters']}; {result['arrived']} at operator 2 (load average {result['load_average']:.1f})"
    )
    for name, memory in result["memory"].items():
        say(
            f"  {name} resident memory during the move: first {memory['first'] / 2**20:.0f} MiB, "
            f"last {memory['last'] / 2**20:.0f} MiB, peak {memory['peak'] / 2**20:.0f} MiB"
        )
        per_batch = " ".join(f"{batch[name]:.0f}" for batch in result["per_batch"])
        say(f"  {name} resident memory (MiB) as each batch was confirmed: {per_batch}")


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.holders``."""
    parser = argparse.ArgumentParser(prog="python -m bench.holders", description=__doc__)
    parser.add_argument("--letters", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500, help="letters per transfer message")
    args = parser.parse_args(argv)
    result = run(letters=args.letters, batch=args.batch)

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")

    print_result(result, say)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

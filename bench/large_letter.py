"""A large letter through the federation: how long a 2 GiB letter takes from the agency to the holder, and how much
memory each process on the way needs for it.

The two-way federation of the tests (``accesspoint.demo_twoway``: FaR, the agency's access point, the Swedish
router, two operators each an access point + ``operator serve``). The letter is a sealed Mina meddelanden
delivery whose content, a PDF/A of ``--size`` bytes, travels beside it as an AS4 attachment bound by its SHA-256
and size (``accesspoint.testing.large_letters``): submitted multipart at the agency's access point, compressed,
signed and encrypted there, received, checked and forwarded by the router, received by operator 1's access
point, fetched, checked (digest, presentation policy) and kept by the operator, then downloaded by the holder
through the mailbox API and its SHA-256 compared. Reported: the time of each stage and MB/s, the peak resident
memory (VmHWM) of each process while the letter passed, and whether the download was intact.

``python -m bench.large_letter [--size 2GiB]``, or ``python -m bench --only large-letter``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from accesspoint import demo_federation as fed
from accesspoint import demo_twoway as tw
from accesspoint.testing import large_letters

GIB = 2**30
# The submission of a 2 GiB letter is a little more than 2 GiB (the envelope, the multipart framing): every access
# point takes messages up to 3 GiB here (max_message_size defaults to 2 GiB), as the letter legs do.
MAX_MESSAGE = "3GiB"
PEAK_BOUND = 150 * 10**6  # the bound on each process's peak resident memory while the letter passes


def _raise_limits(world: tw.TwoWayFederation) -> None:
    for point in (world.federation.nordic, world.federation.sweden, *world.federation.operator_aps.values()):
        settings = point.folder / "server.yaml"
        document = json.loads(settings.read_text())
        settings.write_text(json.dumps({**document, "max_message_size": MAX_MESSAGE}, indent=2))


def run(*, size: int = 2 * GIB, timeout: float = 7200) -> dict[str, Any]:
    """Build and start the federation, send the letter, download it, stop; the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-large-letter-") as folder:
        root = Path(folder)
        world = tw.build(root / "federation")
        _raise_limits(world)
        free = shutil.disk_usage(root).free
        if free < 6 * size:  # the file, and the letter kept at the sender, the router (twice) and the operator
            needed = f"a {size / GIB:.1f} GiB letter needs ~{6 * size / GIB:.0f} GiB"
            raise RuntimeError(f"{free / GIB:.1f} GiB free in {root}: {needed}")
        writing = time.monotonic()
        content = large_letters.write_pdf(root / "ritningar.pdf", size)
        written_in = time.monotonic() - writing
        try:
            tw.start(world)
            processes = large_letters.servers(world)
            large_letters.reset_peaks(processes)
            at_start = large_letters.peaks(processes)
            started = time.monotonic()
            message_id = large_letters.send(world, fed.ALICE, content)
            submitted = time.monotonic()
            mail_id = tw.mail_id(world, fed.ALICE, message_id, timeout=timeout)
            in_mailbox = time.monotonic()
            got_size, got_sha256 = large_letters.download(world, fed.ALICE, mail_id, large_letters.CONTENT_ID)
            downloaded = time.monotonic()
            answer = world.nordic.wait(message_id, lambda d: "end_to_end" in d, what="the operator's answer")
            peaks = large_letters.peaks(processes)
            load = os.getloadavg()[0]
        finally:
            codes = tw.stop(world)
    return {
        "size": size,
        "sha256": content.sha256,
        "intact": got_size == size and got_sha256 == content.sha256,
        "answer": answer["end_to_end"]["status"],
        "written_in_s": written_in,
        "submit_s": submitted - started,
        "to_mailbox_s": in_mailbox - started,
        "download_s": downloaded - in_mailbox,
        "mb_per_s_to_mailbox": size / 1e6 / (in_mailbox - started),
        "mb_per_s_download": size / 1e6 / max(downloaded - in_mailbox, 1e-9),
        "peak_rss": peaks,
        "rss_at_start": at_start,
        "peak_bound": PEAK_BOUND,
        "load_average": load,
        "finished": datetime.now(UTC).isoformat(),
        "exit_codes": codes,
    }


def print_result(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """The table."""
    size = result["size"]
    say(
        f"large letter: {size / GIB:.2f} GiB PDF/A beside a sealed Mina meddelanden delivery, agency's access point "
        "-> router (FaR) -> operator 1's access point -> mailbox -> holder's download (SQLite, AS4 1.15, gzip)"
    )
    say(
        f"  submitted (multipart) in {result['submit_s']:.1f} s; in the mailbox after {result['to_mailbox_s']:.1f} s "
        f"({result['mb_per_s_to_mailbox']:.1f} MB/s end to end); downloaded in {result['download_s']:.1f} s "
        f"({result['mb_per_s_download']:.0f} MB/s); intact: {'yes' if result['intact'] else 'NO'} (SHA-256 "
        f"{result['sha256'][:16]}…); operator's answer: {result['answer']} (load average {result['load_average']:.1f})"
    )
    bound = result["peak_bound"]
    for name, peak in result["peak_rss"].items():
        start = result["rss_at_start"].get(name, 0)
        met = "met" if peak < bound else "NOT met"
        say(
            f"  {name:12} peak RSS {peak / 2**20:5.0f} MiB (at start {start / 2**20:.0f} MiB; "
            f"< {bound / 1e6:.0f} MB: {met})"
        )


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.large_letter``."""
    parser = argparse.ArgumentParser(prog="python -m bench.large_letter", description=__doc__)
    parser.add_argument("--size", type=int, default=2 * GIB, help="bytes of the letter's content (default 2 GiB)")
    args = parser.parse_args(argv)
    result = run(size=args.size)

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")

    print_result(result, say)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The receive and send pipelines: large messages are secured and opened in worker threads, each encrypted part
decrypted once, payloads written once; small ones stay in place unless they inflate."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from accesspoint.msh import receive_pipeline, security
from accesspoint.security import encryption, outbound
from accesspoint.store import Direction, MessageState, MessageStore, StoredMessage, StoredPayload
from tests.inmemory import Pair, eventually
from tests.test_msh_support import submission

MIB = 1024 * 1024


class Calls:
    """Wraps functions to record, per call, whether it ran on the event loop's thread."""

    def __init__(self) -> None:
        self.threads: dict[str, list[bool]] = {}

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.threads.setdefault(name, []).append(threading.current_thread() is threading.main_thread())
            return function(*args, **kwargs)

        return recorded


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Record where securing, verifying, decrypting and decompressing run."""
    made = Calls()
    monkeypatch.setattr(security, "secure_message", made.wrap("secure", security.secure_message))
    monkeypatch.setattr(receive_pipeline, "verify_parts", made.wrap("verify", receive_pipeline.verify_parts))
    monkeypatch.setattr(receive_pipeline, "open_payloads", made.wrap("payloads", receive_pipeline.open_payloads))
    decrypt = encryption.decrypt_stream

    def decrypting(key: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
        made.threads.setdefault("decrypt", []).append(threading.current_thread() is threading.main_thread())
        return decrypt(key, chunks)

    monkeypatch.setattr(encryption, "decrypt_stream", decrypting)
    compress = outbound.compress_stream

    def compressing(chunks: Iterable[bytes], **options: Any) -> Iterator[bytes]:
        made.threads.setdefault("compress", []).append(threading.current_thread() is threading.main_thread())
        return compress(chunks, **options)

    monkeypatch.setattr(outbound, "compress_stream", compressing)
    return made


def _scratch(pair: Pair) -> list[str]:
    return [p.name for p in (pair.be.folder / "data" / "files" / "tmp").iterdir()]


async def test_a_large_message_is_secured_and_opened_off_the_loop_each_part_decrypted_once(
    pair_factory: Callable[..., Pair], calls: Calls
) -> None:
    """1 MiB (past offload_threshold): secured in a thread (compressed once), opened in one (decrypted once)."""
    pair = pair_factory()
    await pair.be.start()
    await pair.se.start()
    payload = os.urandom(MIB)
    assert (await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", payload, "big@se")))[0] == 202
    assert (await pair.se.until("big@se", {"delivered", "failed"}))["state"] == "delivered"
    (part,) = (await pair.be.message("big@se", "in"))["payloads"]
    assert (part["size"], part["sha256"]) == (MIB, hashlib.sha256(payload).hexdigest())
    assert calls.threads["secure"] == calls.threads["compress"] == [False]  # the packing reads the gzip spool
    assert calls.threads["verify"] == calls.threads["payloads"] == [False]
    assert calls.threads["decrypt"] == [False]  # the signature check's reading; the payload is read from the spool
    assert _scratch(pair) == []  # the payload file was moved into the store, the plaintext spool dropped
    status, body = await pair.be.api("GET", "/api/v1/messages/big@se/payloads/letter@se?direction=in")
    assert status == 200 and body == payload


async def test_a_small_message_is_handled_in_place(pair_factory: Callable[..., Pair], calls: Calls) -> None:
    """4 KB: securing, verifying and decompressing on the loop cost less than a hop to a thread."""
    pair = pair_factory()
    await pair.be.start()
    await pair.se.start()
    body = submission("se-to-be", os.urandom(2048).hex().encode(), "small@se")
    assert (await pair.se.api("POST", "/api/v1/messages", body))[0] == 202
    assert (await pair.se.until("small@se", {"delivered", "failed"}))["state"] == "delivered"
    assert calls.threads["secure"] == calls.threads["verify"] == calls.threads["payloads"] == [True]
    assert calls.threads["compress"] == [True, True]  # signing's reading and packing's: cheaper than a file


async def test_a_small_part_that_inflates_past_the_threshold_is_decompressed_in_a_thread(
    pair_factory: Callable[..., Pair], calls: Calls
) -> None:
    """8 MiB of zeros gzip to a few KB: verified in place, decompression stops at the threshold and restarts in a
    thread; the payload arrives whole."""
    pair = pair_factory()
    pair.configure(pair.se, limits={"json_submission": "16MiB"})  # base64 in JSON: ~11 MB for the 8 MiB
    await pair.be.start()
    await pair.se.start()
    zeros = bytes(8 * MIB)
    assert len(gzip.compress(zeros)) < 64 * 1024
    request = submission("se-to-be", b"", "zeros@se")
    request["payloads"][0]["data"] = base64.b64encode(zeros).decode()
    assert (await pair.se.api("POST", "/api/v1/messages", request))[0] == 202
    assert (await pair.se.until("zeros@se", {"delivered", "failed"}, timeout=60))["state"] == "delivered"
    (part,) = (await pair.be.message("zeros@se", "in"))["payloads"]
    assert (part["size"], part["sha256"]) == (len(zeros), hashlib.sha256(zeros).hexdigest())
    assert calls.threads["verify"] == [True] and calls.threads["payloads"] == [True, False]
    assert _scratch(pair) == []


async def test_a_small_message_is_first_secured_from_the_submitted_bytes_and_retried_from_the_store(
    pair_factory: Callable[..., Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small submission's first attempt reads no payload back from the store; its retry reads the stored one."""
    read: list[tuple[MessageStore, str]] = []
    payloads = MessageStore.payloads

    async def recorded(store: MessageStore, message: StoredMessage) -> list[StoredPayload]:
        read.append((store, message.message_id))
        return await payloads(store, message)

    monkeypatch.setattr(MessageStore, "payloads", recorded)
    pair = pair_factory(retries=1, backoff="5s")
    await pair.se.start()  # Belgium is down: the first attempt fails

    async def sent() -> StoredMessage | None:
        return await pair.se.store.get(Direction.OUT, "twice@se")

    letter = os.urandom(2048).hex().encode()
    assert (await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", letter, "twice@se")))[0] == 202
    await eventually(sent, lambda m: m is not None and m.attempts == 1 and m.lease_owner is None, "a failed attempt")
    await pair.be.start()

    async def retried() -> StoredMessage | None:
        # The clock moves only while no attempt holds the lease: moving it under an attempt in flight (a slow one,
        # on a loaded machine) would expire its lease and count a third attempt.
        message = await sent()
        if message is not None and message.state is not MessageState.DELIVERED and message.lease_owner is None:
            await pair.advance(timedelta(seconds=5))
        return message

    delivered = await eventually(retried, lambda m: m is not None and m.state is MessageState.DELIVERED, "delivered")
    assert delivered.attempts == 2
    assert [message_id for store, message_id in read if store is pair.se.store] == ["twice@se"]  # the retry's
    (part,) = (await pair.be.message("twice@se", "in"))["payloads"]
    assert part["sha256"] == hashlib.sha256(letter).hexdigest()

"""Persistence and work sharing: the message store, its file store, migrations and the send queues.

``RedisSendQueue`` lives in ``accesspoint.store.redis_queue`` so that Redis stays an optional dependency.
"""

from accesspoint.store.clock import Clock, ManualClock, SystemClock
from accesspoint.store.db import (
    Database,
    Durability,
    StoreUnavailable,
    create_engine,
    sqlite_url,
    upgrade_to_head,
)
from accesspoint.store.files import FileStore, FileTooLarge, PreparedFile, StoredFile
from accesspoint.store.messages import DuplicateMessage, MessageStore
from accesspoint.store.queue import MemorySendQueue, QueueItem, SendQueue, claim_next
from accesspoint.store.records import (
    EndToEnd,
    Evidence,
    EvidenceKind,
    MessageInfo,
    NewEvidence,
    NewPayload,
    PurgeReport,
    Reception,
    Retention,
    StoredMessage,
    StoredPayload,
    Transition,
)
from accesspoint.store.states import TRANSITIONS, Direction, IllegalTransition, MessageState, check_transition

__all__ = [
    "TRANSITIONS",
    "Clock",
    "Database",
    "Direction",
    "DuplicateMessage",
    "Durability",
    "EndToEnd",
    "Evidence",
    "EvidenceKind",
    "FileStore",
    "FileTooLarge",
    "IllegalTransition",
    "ManualClock",
    "MemorySendQueue",
    "MessageInfo",
    "MessageState",
    "MessageStore",
    "NewEvidence",
    "NewPayload",
    "PreparedFile",
    "PurgeReport",
    "QueueItem",
    "Reception",
    "Retention",
    "SendQueue",
    "StoreUnavailable",
    "StoredFile",
    "StoredMessage",
    "StoredPayload",
    "SystemClock",
    "Transition",
    "check_transition",
    "claim_next",
    "create_engine",
    "sqlite_url",
    "upgrade_to_head",
]

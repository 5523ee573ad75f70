"""The SMP's store: service groups and service metadata in SQL through SQLAlchemy async (SQLite by default).

One row per service group and one per (participant, document type); a metadata row holds the model as JSON, so
all three flavours are rendered from the same record. Participant keys are lowercased (Peppol Policy for use of
Identifiers: participant ids are case-insensitive); document type ids are kept as given (they are not).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ForeignKey, String, Text, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from accesspoint.servicekit.database import Migrations, create_engine
from smp.identifiers import Identifier
from smp.model import (
    CertPubUsage,
    EndpointInfo,
    ProcessInfo,
    PublishedCertificate,
    Redirect,
    ServiceGroup,
    ServiceMetadata,
)


class _Base(DeclarativeBase):
    pass


MIGRATIONS = Migrations(
    Path(__file__).resolve().parent / "migrations",
    version_table="smp_alembic_version",
    adopt_tables={"smp_service_group", "smp_service_metadata"},
)


class _GroupRow(_Base):
    __tablename__ = "smp_service_group"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    scheme: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(String(200))


class _MetadataRow(_Base):
    __tablename__ = "smp_service_metadata"
    # delete_group removes the rows first (foreign keys are on: the toolkit's engine asks SQLite for them).
    group_key: Mapped[str] = mapped_column(ForeignKey("smp_service_group.key"), primary_key=True)
    document: Mapped[str] = mapped_column(String(600), primary_key=True)
    body: Mapped[str] = mapped_column(Text)


metadata = _Base.metadata


def _dt(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _undt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def metadata_to_json(metadata: ServiceMetadata) -> str:
    """The model as JSON (the stored form)."""
    document: dict[str, Any] = {
        "participant": str(metadata.participant),
        "document": str(metadata.document),
        "processes": [
            {
                "process": None if p.process is None else str(p.process),
                "endpoints": [
                    {
                        "transport_profile": e.transport_profile,
                        "url": e.url,
                        "certificate": _b64(e.certificate),
                        "require_business_level_signature": e.require_business_level_signature,
                        "activation": _dt(e.activation),
                        "expiration": _dt(e.expiration),
                        "description": e.description,
                        "technical_contact": e.technical_contact,
                    }
                    for e in p.endpoints
                ],
            }
            for p in metadata.processes
        ],
        "certpub": [{"usage": c.usage.value, "der": _b64(c.der)} for c in metadata.certpub],
    }
    if metadata.redirect is not None:
        r = metadata.redirect
        document["redirect"] = {
            "href": r.href,
            "certificate_uid": r.certificate_uid,
            "certificates": [_b64(c) for c in r.certificates],
        }
    return json.dumps(document, sort_keys=True)


def metadata_from_json(text: str) -> ServiceMetadata:
    """The model back from its stored JSON."""
    data = json.loads(text)
    redirect = data.get("redirect")
    return ServiceMetadata(
        participant=Identifier.parse(data["participant"], allow_ebcore=True),
        document=Identifier.parse(data["document"]),
        processes=tuple(
            ProcessInfo(
                None if p["process"] is None else Identifier.parse(p["process"]),
                tuple(
                    EndpointInfo(
                        transport_profile=e["transport_profile"],
                        url=e["url"],
                        certificate=base64.b64decode(e["certificate"]),
                        require_business_level_signature=e["require_business_level_signature"],
                        activation=_undt(e["activation"]),
                        expiration=_undt(e["expiration"]),
                        description=e["description"],
                        technical_contact=e["technical_contact"],
                    )
                    for e in p["endpoints"]
                ),
            )
            for p in data["processes"]
        ),
        redirect=None
        if redirect is None
        else Redirect(
            redirect["href"], redirect["certificate_uid"], tuple(base64.b64decode(c) for c in redirect["certificates"])
        ),
        certpub=tuple(
            PublishedCertificate(CertPubUsage(c["usage"]), base64.b64decode(c["der"])) for c in data["certpub"]
        ),
    )


class SmpStore:
    """Async CRUD over service groups and metadata; ``generation`` grows with every write (for response caches)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.generation = 0

    @classmethod
    async def open(cls, url: str) -> SmpStore:
        """Connect and bring the tables to the newest migration (``sqlite+aiosqlite:///path``, PostgreSQL …)."""
        engine = create_engine(url)
        try:
            await MIGRATIONS.upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        """Dispose of the engine's connections."""
        await self.engine.dispose()

    @staticmethod
    async def counts(connection: AsyncConnection) -> dict[str, int]:
        """How many participants (service groups) are published, and how many ServiceMetadata documents."""
        groups = await connection.scalar(select(func.count()).select_from(_GroupRow))
        documents = await connection.scalar(select(func.count()).select_from(_MetadataRow))
        return {"participants": int(groups or 0), "service_metadata": int(documents or 0)}

    async def put_group(self, participant: Identifier) -> bool:
        """Create or keep a service group; True when it was created."""
        async with self._sessions.begin() as session:
            row = await session.get(_GroupRow, participant.key())
            if row is not None:
                return False
            session.add(_GroupRow(key=participant.key(), scheme=participant.scheme, value=participant.value))
        self.generation += 1
        return True

    async def delete_group(self, participant: Identifier) -> bool:
        """Remove a service group and all its metadata; False when there was none."""
        async with self._sessions.begin() as session:
            await session.execute(delete(_MetadataRow).where(_MetadataRow.group_key == participant.key()))
            result = await session.execute(delete(_GroupRow).where(_GroupRow.key == participant.key()))
        self.generation += 1
        return bool(getattr(result, "rowcount", 0))

    async def get_group(self, participant: Identifier) -> ServiceGroup | None:
        """The group with its document types, or None."""
        async with self._sessions() as session:
            row = await session.get(_GroupRow, participant.key())
            if row is None:
                return None
            documents = (
                await session.scalars(
                    select(_MetadataRow.document)
                    .where(_MetadataRow.group_key == participant.key())
                    .order_by(_MetadataRow.document)
                )
            ).all()
        return ServiceGroup(Identifier(row.scheme, row.value), tuple(Identifier.parse(d) for d in documents))

    async def put_metadata(self, metadata: ServiceMetadata) -> bool | None:
        """Create or replace metadata; True when created, False when replaced, None when the group is missing."""
        key = metadata.participant.key()
        async with self._sessions.begin() as session:
            if await session.get(_GroupRow, key) is None:
                return None
            row = await session.get(_MetadataRow, (key, str(metadata.document)))
            body = metadata_to_json(metadata)
            if row is None:
                session.add(_MetadataRow(group_key=key, document=str(metadata.document), body=body))
            else:
                row.body = body
        self.generation += 1
        return row is None

    async def delete_metadata(self, participant: Identifier, document: Identifier) -> bool:
        """Remove one document type's metadata; False when there was none."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(_MetadataRow).where(
                    _MetadataRow.group_key == participant.key(), _MetadataRow.document == str(document)
                )
            )
        self.generation += 1
        return bool(getattr(result, "rowcount", 0))

    async def get_metadata(self, participant: Identifier, document: Identifier) -> ServiceMetadata | None:
        """The metadata, or None."""
        async with self._sessions() as session:
            row = await session.get(_MetadataRow, (participant.key(), str(document)))
        return None if row is None else metadata_from_json(row.body)

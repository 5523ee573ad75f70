"""Console users, their sessions, and how failed logins are answered.

**Passwords** are kept as scrypt hashes (RFC 7914; n=2^14, r=8, p=1, a 16-byte salt), checked in a worker thread.
**Sessions**: the cookie carries 32 random bytes; the database keeps only their SHA-256, with the user, a CSRF
token, when it began and when it was last used. A session ends after ``session_idle`` unused or ``session_max``
in all, or at logout.

**Failed logins** slow the next attempt instead of locking the account (a lockout would let anyone who knows an
admin's name lock the admin out): an attempt for a user name, or from an address, that has ``n`` failures in the
window is answered only after ``LoginPolicy.delay_after(n)`` (250 ms doubling to 10 s by default), before the
password is even looked at, and attempts on one name or address wait their turn, so parallel guessing gains
nothing. At ``alert_after`` failures an alert is raised (the caller raises it). Unknown names cost the same as known
ones (a dummy hash is checked), so the answer does not tell which names exist.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Connection, delete, insert, select, update

from accesspoint.console import model
from accesspoint.console.db import ConsoleDb
from accesspoint.console.settings import ConsoleSettings
from accesspoint.store.clock import Clock

SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 12
SEEN_EVERY = timedelta(minutes=1)  # a session's last use is written at most this often


class Role(StrEnum):
    """What a console user may do: viewers read, admins also act."""

    VIEWER = "viewer"
    ADMIN = "admin"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of a password."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=64 * 1024**2, dklen=32, **SCRYPT)
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${encoded[0]}${encoded[1]}"


def password_matches(stored: str, password: str) -> bool:
    """Whether a password fits a stored hash (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 1024**2, dklen=32
        )
    except ValueError:
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


# Checked against when the user name is unknown, so that an unknown name costs what a known one does.
_DUMMY = hash_password("not a password of anyone", salt=b"\0" * 16)


@dataclass(frozen=True, slots=True)
class User:
    """A console user."""

    name: str
    role: Role

    @property
    def admin(self) -> bool:
        """Whether the user may act, not only read."""
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: its user and the CSRF token its forms carry."""

    key: str  # SHA-256 of the cookie's secret
    user: User
    csrf: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """How a login went: the user (None: refused), the failures before it and the wait it was answered after."""

    user: User | None
    failures: int  # failures in the window after this attempt (0 on success)
    waited: timedelta
    alert: bool  # this failure reached the alert threshold


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Accounts:
    """Users, sessions and the login throttle over the console's database."""

    def __init__(self, db: ConsoleDb, settings: ConsoleSettings, clock: Clock) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self._turns: dict[str, asyncio.Lock] = {}

    # --- users ---------------------------------------------------------------------------------------------

    async def add_user(self, name: str, password: str, role: Role) -> User:
        """Create a user, or give an existing one a new password and role; ValueError for a weak password."""
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"a password of at least {MIN_PASSWORD} characters")
        if not name or len(name) > 64 or not name.isprintable():
            raise ValueError("a user name of 1 to 64 printable characters")
        hashed = await asyncio.to_thread(hash_password, password)
        now = self.clock.now()

        def write(connection: Connection) -> None:
            table = model.users
            values = {"password_hash": hashed, "role": role.value, "disabled": False}
            if not connection.execute(update(table).where(table.c.name == name).values(**values)).rowcount:
                connection.execute(insert(table).values(name=name, created_at=now, **values))
            # A new password ends the user's sessions.
            connection.execute(delete(model.sessions).where(model.sessions.c.user_name == name))

        await self.db.run(write)
        return User(name, role)

    async def users(self) -> list[tuple[User, bool]]:
        """Every user and whether it is disabled."""
        rows = await self.db.run(lambda c: c.execute(select(model.users).order_by(model.users.c.name)).all())
        return [(User(row.name, Role(row.role)), bool(row.disabled)) for row in rows]

    # --- logging in ----------------------------------------------------------------------------------------

    async def login(self, name: str, password: str, address: str) -> Attempt:
        """Check a login, answering after the wait that earlier failures call for (see the module)."""
        keys = (f"user:{name.casefold()}"[:200], f"address:{address}"[:200])
        async with self._turn(keys[0]), self._turn(keys[1]):
            failures = await self._failures(keys)
            waited = self.settings.login.delay_after(failures)
            await asyncio.sleep(waited.total_seconds())
            row = await self.db.run(
                lambda c: c.execute(select(model.users).where(model.users.c.name == name)).one_or_none()
            )
            stored = _DUMMY if row is None or row.disabled else row.password_hash
            matches = await asyncio.to_thread(password_matches, stored, password)
            if matches and row is not None and not row.disabled:
                await self._forget(keys[0])
                return Attempt(User(row.name, Role(row.role)), 0, waited, alert=False)
            after = await self._failed(keys)
            return Attempt(None, after, waited, alert=after == self.settings.login.alert_after)

    @contextlib.asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        lock = self._turns.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._turns.get(key) is lock:
                del self._turns[key]

    async def _failures(self, keys: tuple[str, ...]) -> int:
        since = self.clock.now() - self.settings.login.window
        table = model.login_failures
        query = select(table.c.failures).where(table.c.key.in_(keys), table.c.last_at >= since)
        counts = await self.db.run(lambda c: list(c.execute(query).scalars()))
        return max(counts, default=0)

    async def _failed(self, keys: tuple[str, ...]) -> int:
        now = self.clock.now()
        since = now - self.settings.login.window
        table = model.login_failures

        def write(connection: Connection) -> int:
            most = 0
            for key in keys:
                row = connection.execute(select(table).where(table.c.key == key)).one_or_none()
                count = 1 if row is None or row.last_at < since else row.failures + 1
                if row is None:
                    connection.execute(insert(table).values(key=key, failures=count, last_at=now))
                else:
                    connection.execute(update(table).where(table.c.key == key).values(failures=count, last_at=now))
                most = max(most, count)
            return most

        return await self.db.run(write)

    async def _forget(self, key: str) -> None:
        table = model.login_failures
        await self.db.run(lambda c: c.execute(delete(table).where(table.c.key == key)))

    # --- sessions ------------------------------------------------------------------------------------------

    async def open_session(self, user: User, address: str) -> tuple[str, Session]:
        """A new session for a user who just logged in: (the cookie's secret, the session)."""
        secret, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock.now()
        key = _digest(secret)
        values = {"id": key, "user_name": user.name, "csrf": csrf, "created_at": now, "seen_at": now}
        await self.db.run(lambda c: c.execute(insert(model.sessions).values(address=address[:64], **values)))
        return secret, Session(key, user, csrf, now)

    async def session(self, secret: str) -> Session | None:
        """The live session a cookie's secret opens (None: unknown, idle too long, or too old)."""
        key, now = _digest(secret), self.clock.now()
        sessions, users = model.sessions, model.users
        query = (
            select(sessions, users.c.role, users.c.disabled)
            .join(users, users.c.name == sessions.c.user_name)
            .where(sessions.c.id == key)
        )

        def read(connection: Connection) -> Session | None:
            row = connection.execute(query).one_or_none()
            if row is None:
                return None
            stale = row.seen_at + self.settings.session_idle < now or row.created_at + self.settings.session_max < now
            if stale or row.disabled:
                connection.execute(delete(sessions).where(sessions.c.id == key))
                return None
            if now - row.seen_at >= SEEN_EVERY:
                connection.execute(update(sessions).where(sessions.c.id == key).values(seen_at=now))
            return Session(key, User(row.user_name, Role(row.role)), row.csrf, row.created_at)

        return await self.db.run(read)

    async def close_session(self, session: Session) -> None:
        """Log out."""
        await self.db.run(lambda c: c.execute(delete(model.sessions).where(model.sessions.c.id == session.key)))

"""The console's pages and actions (routes at the end). Reads are open to every user; actions to admins, audited."""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web
from sqlalchemy import select

from accesspoint.console import model
from accesspoint.console.app import (
    CONSOLE,
    LOGIN_COOKIE,
    SESSION,
    SESSION_COOKIE,
    Console,
    address,
    admin_only,
    audited,
    login_failed_alert,
    login_form,
    render,
    session_of,
    set_session_cookie,
)
from accesspoint.console.incidents import Classification, Notified, Severity, timeline_csv, timeline_json
from accesspoint.console.settings import Remote
from accesspoint.msh.operations import PARKABLE, RESENDABLE, Done, ping_pmodes
from accesspoint.servicekit.problems import Problem
from accesspoint.store import Direction, MessageState
from accesspoint.store.search import COUNT_CAP, Cursor, MessageQuery

DEFAULT_WINDOW = timedelta(hours=24)  # as Domibus: the landing search covers the last day
PAGE_SIZES = (25, 50, 100, 200)
RESEND_CAP = 1000  # messages one "resend all that match" may move
WHEN_FORMAT = "%Y-%m-%dT%H:%M"


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE]


def _back(path: str, note: str, **extra: Any) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{path}?{urlencode({'note': note, **extra})}")


# --- login ---------------------------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.StreamResponse:
    """The login form."""
    return login_form(request, target=request.query.get("next", "/messages"), error="")


async def login(request: web.Request) -> web.StreamResponse:
    """Check a login; a failure is answered after the wait earlier failures call for (accounts.py)."""
    console = _console(request)
    form = await request.post()
    name, password = str(form.get("name", ""))[:64], str(form.get("password", ""))
    target = str(form.get("next", "/messages"))
    if not target.startswith("/") or target.startswith("//"):
        target = "/messages"  # no open redirect
    attempt = await console.accounts.login(name, password, address(request))
    if attempt.user is None:
        await console.audit.record(
            name or "(empty)", "login", outcome="refused", address=address(request),
            failures=attempt.failures, waited_ms=int(attempt.waited.total_seconds() * 1000),
        )  # fmt: skip
        if attempt.alert:
            await login_failed_alert(console, name, address(request), attempt.failures)
        waited = attempt.waited.total_seconds()
        error = "Wrong user name or password." + (
            f" This answer was delayed {waited:g} s after earlier failures." if waited else ""
        )
        return login_form(request, status=401, target=target, error=error)
    secret, _ = await console.accounts.open_session(attempt.user, address(request))
    await console.audit.record(attempt.user.name, "login", address=address(request), role=attempt.user.role.value)
    response = web.HTTPSeeOther(target)
    set_session_cookie(response, console, secret)
    response.del_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session."""
    console = _console(request)
    await audited(request, "logout")
    await console.accounts.close_session(session_of(request))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def home(_request: web.Request) -> web.StreamResponse:
    """The landing page is the message search, as in Domibus."""
    raise web.HTTPSeeOther("/messages")


# --- messages ------------------------------------------------------------------------------------------------


def _parse_when(text: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{field}: not a date and time (YYYY-MM-DDTHH:MM)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def message_query(query: Any, now: datetime) -> tuple[MessageQuery, dict[str, Any]]:
    """The search from a request's query (or a form): the query and the form's values to show again."""

    def value(name: str) -> str | None:
        text = str(query.get(name, "")).strip()
        return text or None

    direction = value("direction")
    if direction not in (None, "in", "out"):
        raise web.HTTPBadRequest(text="direction: in or out")
    states = []
    for text in query.getall("state", []) if hasattr(query, "getall") else []:
        try:
            states.append(MessageState(str(text)))
        except ValueError:
            raise web.HTTPBadRequest(text=f"state: {text!r} is no message state") from None
    until = _parse_when(value("until") or "", "until") if value("until") else None
    since = _parse_when(value("since") or "", "since") if value("since") else None
    if since is None and value("message_id") is None:
        since = (until or now) - DEFAULT_WINDOW  # a window always bounds a search that names no message
    search = MessageQuery(
        direction=None if direction is None else Direction(direction),
        states=tuple(states),
        partner=value("partner"),
        service=value("service"),
        action=value("action"),
        pmode_id=value("pmode"),
        message_id=value("message_id"),
        conversation_id=value("conversation_id"),
        ref_to_message_id=value("ref_to_message_id"),
        error_code=value("error"),
        since=since,
        until=until,
    )
    shown = {
        "direction": direction or "",
        "states": [state.value for state in states],
        "partner": search.partner or "",
        "service": search.service or "",
        "action": search.action or "",
        "pmode": search.pmode_id or "",
        "message_id": search.message_id or "",
        "conversation_id": search.conversation_id or "",
        "ref_to_message_id": search.ref_to_message_id or "",
        "error": search.error_code or "",
        "since": "" if since is None else since.strftime(WHEN_FORMAT),
        "until": "" if until is None else until.strftime(WHEN_FORMAT),
    }
    return search, shown


async def messages(request: web.Request) -> web.StreamResponse:
    """Search messages: filters, a time window (24 h by default), pages newest first, a count capped at 50,000."""
    console = _console(request)
    search, shown = message_query(request.query, console.now())
    try:
        limit = int(request.query.get("limit", "50"))
        after = Cursor.parse(request.query["after"]) if request.query.get("after") else None
    except ValueError:
        raise web.HTTPBadRequest(text="limit: a number; after: a cursor from a previous page") from None
    page = await console.search.page(search, limit=limit if limit in PAGE_SIZES else 50, after=after)
    filters = {k: v for k, v in request.query.items() if k not in ("after", "note")}
    following = None if page.next is None else "/messages?" + urlencode([*filters.items(), ("after", str(page.next))])
    return render(
        request,
        "messages.html",
        page=page,
        form=shown,
        states=[state.value for state in MessageState],
        cap=COUNT_CAP,
        following=following,
        resendable=[state.value for state in RESENDABLE],
        filters=[(k, v) for k, v in request.query.items() if k not in ("after", "note", "limit")],
        limit=limit,
        sizes=PAGE_SIZES,
    )


def _direction(request: web.Request) -> Direction:
    try:
        return Direction(request.match_info["direction"])
    except ValueError:
        raise web.HTTPNotFound(text="no such direction") from None


async def message(request: web.Request) -> web.StreamResponse:
    """One message: its facts, the timeline of its states, attempts, last error, payloads, evidence, actions."""
    console = _console(request)
    direction, message_id = _direction(request), request.match_info["message_id"]
    store = console.ctx.store
    found = await store.get(direction, message_id)
    if found is None:
        raise web.HTTPNotFound(text=f"no {direction.value} message {message_id}")
    history = await store.history(found)
    evidence = await store.evidence(direction, message_id)
    payloads = await store.payloads(found)
    end_to_end = await store.end_to_end(message_id) if direction is Direction.OUT else None
    return render(
        request,
        "message.html",
        message=found,
        history=history,
        evidence=evidence,
        payloads=payloads,
        end_to_end=end_to_end,
        resendable=direction is Direction.OUT and found.state in RESENDABLE,
        parkable=direction is Direction.OUT and found.state in PARKABLE,
        quoted=quote(message_id, safe=""),
    )


async def evidence_download(request: web.Request) -> web.StreamResponse:
    """Download one piece of a message's evidence (the raw message, our receipt, the partner's receipt …)."""
    console = _console(request)
    direction, message_id = _direction(request), request.match_info["message_id"]
    try:
        pk = int(request.match_info["pk"])
    except ValueError:
        raise web.HTTPNotFound() from None
    item = next((e for e in await console.ctx.store.evidence(direction, message_id) if e.pk == pk), None)
    if item is None:
        raise web.HTTPNotFound(text="no such evidence")
    await audited(request, "evidence-download", target=f"{direction.value}:{message_id}", kind=item.kind.value, pk=pk)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{item.kind.value}-{pk}.bin"',
            "Content-Length": str(item.size),
            "X-Evidence-SHA256": item.sha256,
        }
    )
    await response.prepare(request)
    async for chunk in console.ctx.store.read(item):
        await response.write(chunk)
    await response.write_eof()
    return response


@admin_only
async def resend_one(request: web.Request) -> web.StreamResponse:
    """Resend one failed or parked message under its MessageId."""
    return await _moves(request, [request.match_info["message_id"]], "resend")


@admin_only
async def dead_letter_one(request: web.Request) -> web.StreamResponse:
    """Park one message in the dead-letter state."""
    return await _moves(request, [request.match_info["message_id"]], "dead-letter")


@admin_only
async def resend_selected(request: web.Request) -> web.StreamResponse:
    """Resend the messages ticked on the search page."""
    form = await request.post()
    ids = [str(value) for value in form.getall("message_id", [])][:RESEND_CAP]
    action = "dead-letter" if form.get("action") == "dead-letter" else "resend"
    return await _moves(request, ids, action, back="/messages")


@admin_only
async def resend_matching(request: web.Request) -> web.StreamResponse:
    """Resend every failed or parked outgoing message that matches the search (at most RESEND_CAP)."""
    console = _console(request)
    form = await request.post()
    search, _ = message_query(form, console.now())
    # Only what a resend can move: failed or parked outgoing messages among those that match.
    wanted = [state for state in (search.states or tuple(RESENDABLE)) if state in RESENDABLE]
    if not wanted:
        raise _back("/messages", "nothing-to-resend")
    narrowed = MessageQuery(**{**_fields(search), "direction": Direction.OUT, "states": tuple(wanted)})
    ids = [message_id for _, message_id in await console.search.message_ids(narrowed, limit=RESEND_CAP)]
    return await _moves(request, ids, "resend", back="/messages", matching=True)


def _fields(search: MessageQuery) -> dict[str, Any]:
    return {name: getattr(search, name) for name in MessageQuery.__slots__}


async def _moves(
    request: web.Request, ids: list[str], action: str, *, back: str | None = None, matching: bool = False
) -> web.StreamResponse:
    console = _console(request)
    actor = session_of(request).user.name
    results = []
    for message_id in ids:
        if action == "resend":
            results.append(await console.operations.resend(message_id, actor=actor))
        else:
            results.append(await console.operations.dead_letter(message_id, actor=actor))
    moved = [r.message_id for r in results if r.done is Done.MOVED]
    skipped = {r.message_id: r.done.value for r in results if r.done is not Done.MOVED}
    await audited(
        request, action, target=ids[0] if len(ids) == 1 else f"{len(ids)} messages",
        outcome="done" if moved else "nothing-moved", moved=moved[:100], skipped=dict(list(skipped.items())[:100]),
        matching=matching,
    )  # fmt: skip
    note = f"{action}-done"
    if back is None and len(ids) == 1:
        back = f"/messages/out/{quote(ids[0], safe='')}"
    raise _back(back or "/messages", note, moved=len(moved), skipped=len(skipped))


# --- errors, P-Modes, certificates ----------------------------------------------------------------------------


async def errors(request: web.Request) -> web.StreamResponse:
    """The error log: messages that carry an error and moved in the window, latest first."""
    console = _console(request)
    try:
        hours = max(1, min(int(request.query.get("hours", "24")), 24 * 90))
    except ValueError:
        raise web.HTTPBadRequest(text="hours: a number") from None
    code = request.query.get("code") or None
    found = await console.search.errors(since=console.now() - timedelta(hours=hours), code=code, limit=200)
    return render(request, "errors.html", messages=found, hours=hours, code=code or "")


async def pmodes(request: web.Request) -> web.StreamResponse:
    """The P-Modes in force, the file's text and its history."""
    console = _console(request)
    agreements = console.ctx.agreements
    versions = await console.db.run(
        lambda c: c.execute(
            select(model.pmode_versions.c.id, model.pmode_versions.c.seen_at, model.pmode_versions.c.actor,
                   model.pmode_versions.c.sha256).order_by(model.pmode_versions.c.id.desc()).limit(100)
        ).all()
    )  # fmt: skip
    return render(request, "pmodes.html", pmodes=list(agreements.current), file=str(agreements.path), versions=versions)


async def pmode_version(request: web.Request) -> web.StreamResponse:
    """One version of the P-Mode file and its diff against the one before."""
    console = _console(request)
    try:
        version_id = int(request.match_info["version"])
    except ValueError:
        raise web.HTTPNotFound() from None
    table = model.pmode_versions

    def read(connection: Any) -> tuple[Any, Any]:
        row = connection.execute(select(table).where(table.c.id == version_id)).one_or_none()
        before = connection.execute(
            select(table).where(table.c.id < version_id).order_by(table.c.id.desc()).limit(1)
        ).one_or_none()
        return row, before

    row, before = await console.db.run(read)
    if row is None:
        raise web.HTTPNotFound(text="no such version")
    diff = list(
        difflib.unified_diff(
            [] if before is None else before.text.splitlines(),
            row.text.splitlines(),
            "previous" if before is not None else "(none)",
            f"version {row.id}",
            lineterm="",
        )
    )
    return render(request, "pmode_version.html", version=row, before=before, diff=diff)


@admin_only
async def pmodes_reload(request: web.Request) -> web.StreamResponse:
    """Re-read the P-Mode file now."""
    console = _console(request)
    error = await console.ctx.agreements.reload()
    new = await console.checks.record_pmodes(actor=session_of(request).user.name) if error is None else False
    await audited(request, "pmodes-reload", target=str(console.ctx.agreements.path),
                  outcome="refused" if error else "done", error=error, new_version=new)  # fmt: skip
    raise _back("/pmodes", "reload-failed" if error else "reloaded", error=error or "")


async def certificates(request: web.Request) -> web.StreamResponse:
    """Every certificate with its not-after date; warnings from ``warn_before`` ahead."""
    console = _console(request)
    now = console.now()
    items = await console.certificates()
    rows = [(item, item.status(now, console.settings.warn_before), item.days_left(now)) for item in items]
    return render(request, "certificates.html", rows=rows)


# --- connection monitoring -------------------------------------------------------------------------------------


async def monitoring(request: web.Request) -> web.StreamResponse:
    """The partners that can be pinged (a P-Mode on the ebMS test service), monitored or not, with their checks."""
    console = _console(request)
    monitored = set(await console.checks.monitored())
    rows = []
    for pmode in ping_pmodes(list(console.ctx.agreements.current)):
        history = await console.checks.history(pmode.id, limit=10)
        last_ok = next((check for check in history if check.outcome == "ok"), None)
        rows.append((pmode, pmode.id in monitored, history, last_ok))
    return render(request, "monitoring.html", rows=rows, interval=console.settings.monitoring.interval)


@admin_only
async def monitoring_ping(request: web.Request) -> web.StreamResponse:
    """Send a test message to a partner now."""
    console = _console(request)
    pmode_id = request.match_info["pmode"]
    check = await console.checks.ping(pmode_id)
    await audited(request, "ping", target=pmode_id, outcome=check.outcome, message_id=check.message_id)
    raise _back("/monitoring", "pinged")


@admin_only
async def monitoring_toggle(request: web.Request) -> web.StreamResponse:
    """Start or stop monitoring a partner."""
    console = _console(request)
    pmode_id = request.match_info["pmode"]
    form = await request.post()
    enabled = form.get("enabled") == "1"
    if enabled and pmode_id not in {p.id for p in ping_pmodes(list(console.ctx.agreements.current))}:
        raise web.HTTPBadRequest(text=f"{pmode_id} is no P-Mode on the ebMS test service")
    await console.checks.monitor(pmode_id, session_of(request).user.name, enabled)
    await audited(request, "monitor" if enabled else "unmonitor", target=pmode_id)
    raise _back("/monitoring", "monitoring-changed")


# --- alerts and incidents --------------------------------------------------------------------------------------


async def alerts(request: web.Request) -> web.StreamResponse:
    """Alerts, newest first, with how their deliveries went."""
    console = _console(request)
    found = await console.alerts.latest(status=request.query.get("status") or None)
    deliveries = {alert.id: await console.alerts.deliveries(alert.id) for alert in found[:50]}
    return render(request, "alerts.html", alerts=found, deliveries=deliveries)


def _alert_id(request: web.Request) -> int:
    try:
        return int(request.match_info["alert"])
    except ValueError:
        raise web.HTTPNotFound() from None


@admin_only
async def alert_acknowledge(request: web.Request) -> web.StreamResponse:
    """Mark an alert as seen."""
    alert_id = _alert_id(request)
    done = await _console(request).alerts.acknowledge(alert_id)
    await audited(request, "alert-acknowledge", target=f"alert-{alert_id}", outcome="done" if done else "unchanged")
    raise _back("/alerts", "acknowledged")


@admin_only
async def alert_incident(request: web.Request) -> web.StreamResponse:
    """Open an incident from an alert (its subject, body and the partner it names)."""
    console = _console(request)
    alert = await console.alerts.get(_alert_id(request))
    if alert is None:
        raise web.HTTPNotFound(text="no such alert")
    affected = [alert.key] if alert.kind in ("send-failed", "connection-failed") else []
    incident_id = await console.incidents.open(
        title=alert.subject,
        description=alert.body,
        actor=session_of(request).user.name,
        affected=affected,
        detected_at=alert.first_at,
        classification=Classification.AVAILABILITY
        if alert.kind != "login-failures"
        else Classification.SECURITY_BREACH,
        source=f"alert-{alert.id} ({alert.kind})",
    )
    await console.alerts.link(alert.id, incident_id)
    await audited(request, "incident-open", target=f"incident-{incident_id}", alert=alert.id)
    raise web.HTTPSeeOther(f"/incidents/{incident_id}")


async def incidents(request: web.Request) -> web.StreamResponse:
    """The incident register."""
    console = _console(request)
    found = await console.incidents.latest()
    return render(
        request, "incidents.html", incidents=found, now=console.now(),
        classifications=[c.value for c in Classification], severities=[s.value for s in Severity],
    )  # fmt: skip


@admin_only
async def incident_new(request: web.Request) -> web.StreamResponse:
    """Register an incident by hand."""
    console = _console(request)
    form = await request.post()
    try:
        classification = Classification(str(form.get("classification", "unclassified")))
        severity = Severity(str(form.get("severity", "medium")))
        aware = _parse_when(str(form["aware_at"]), "aware_at") if form.get("aware_at") else None
    except (ValueError, KeyError):
        raise web.HTTPBadRequest(text="classification, severity or aware_at is not valid") from None
    title = str(form.get("title", "")).strip()
    if not title:
        raise web.HTTPBadRequest(text="title: required")
    incident_id = await console.incidents.open(
        title=title, description=str(form.get("description", "")), actor=session_of(request).user.name,
        classification=classification, severity=severity, affected=_lines(form.get("affected")), aware_at=aware,
    )  # fmt: skip
    await audited(request, "incident-open", target=f"incident-{incident_id}")
    raise web.HTTPSeeOther(f"/incidents/{incident_id}")


def _lines(value: object) -> list[str]:
    return [line.strip() for line in str(value or "").replace(",", "\n").splitlines() if line.strip()]


def _incident_id(request: web.Request) -> int:
    try:
        return int(request.match_info["incident"])
    except ValueError:
        raise web.HTTPNotFound() from None


async def incident(request: web.Request) -> web.StreamResponse:
    """An incident, its deadlines and its timeline."""
    console = _console(request)
    found = await console.incidents.get(_incident_id(request))
    if found is None:
        raise web.HTTPNotFound(text="no such incident")
    record, events = found
    now = console.now()
    return render(
        request, "incident.html", incident=record, events=events, now=now, overdue=record.overdue(now),
        classifications=[c.value for c in Classification], severities=[s.value for s in Severity],
    )  # fmt: skip


@admin_only
async def incident_change(request: web.Request) -> web.StreamResponse:
    """Add an action or note, classify, record a notification, or close an incident."""
    console = _console(request)
    incident_id = _incident_id(request)
    form = await request.post()
    change, text = str(form.get("change", "")), str(form.get("text", "")).strip()
    actor = session_of(request).user.name
    try:
        if change in ("action", "note"):
            done = await console.incidents.note(incident_id, actor, change, text or change)
        elif change == "classify":
            done = await console.incidents.classify(
                incident_id, actor, Classification(str(form.get("classification"))),
                Severity(str(form.get("severity"))), _lines(form.get("affected")),
            )  # fmt: skip
        elif change == "notify":
            done = await console.incidents.notified(incident_id, actor, Notified(str(form.get("who"))), text)
        elif change == "close":
            done = await console.incidents.close(incident_id, actor, text)
        else:
            raise ValueError(change)
    except ValueError:
        raise web.HTTPBadRequest(text="not a change an incident knows") from None
    await audited(request, f"incident-{change}", target=f"incident-{incident_id}",
                  outcome="done" if done else "refused")  # fmt: skip
    raise _back(f"/incidents/{incident_id}", "changed" if done else "closed-already")


async def incident_export(request: web.Request) -> web.StreamResponse:
    """The incident and its timeline as JSON or CSV."""
    console = _console(request)
    incident_id, kind = _incident_id(request), request.match_info["format"]
    found = await console.incidents.get(incident_id)
    if found is None or kind not in ("json", "csv"):
        raise web.HTTPNotFound()
    await audited(request, "incident-export", target=f"incident-{incident_id}", format=kind)
    disposition = f'attachment; filename="incident-{incident_id}-timeline.{kind}"'
    if kind == "json":
        body = json.dumps(timeline_json(*found), indent=2)
        return web.Response(text=body, content_type="application/json", headers={"Content-Disposition": disposition})
    return web.Response(
        text=timeline_csv(*found), content_type="text/csv", headers={"Content-Disposition": disposition}
    )


@admin_only
async def audit(request: web.Request) -> web.StreamResponse:
    """The audit log (admins only)."""
    console = _console(request)
    entries = await console.audit.latest(
        actor=request.query.get("actor") or None, action=request.query.get("action") or None
    )
    return render(request, "audit.html", entries=entries)


# --- FaR and the mailbox operator ------------------------------------------------------------------------------


async def _remote(
    console: Console,
    remote: Remote | None,
    path: str,
    *,
    method: str = "GET",
    token: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    """Call a path of FaR's or the operator's API (GET with the read token unless told otherwise): (status, JSON or
    error text); 0 when it cannot be reached."""
    if remote is None:
        raise web.HTTPNotFound(text="not configured")
    headers = {"Authorization": f"Bearer {token or remote.token}", "Accept": "application/json"}
    try:
        async with console.http.request(
            method, remote.url + path, headers=headers, json=body, allow_redirects=False
        ) as answer:
            text = await answer.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return 0, f"cannot reach {remote.url}: {type(exc).__name__}"
    try:
        return answer.status, json.loads(text)
    except ValueError:
        return answer.status, text[:500]


def _operators(answer: tuple[int, Any]) -> list[dict[str, Any]] | None:
    """The operators of FaR's ``GET /api/v1/operators``, or None when it gave no list."""
    status, body = answer
    listed = body.get("operators") if status == 200 and isinstance(body, dict) else None
    return [item for item in listed if isinstance(item, dict)] if isinstance(listed, list) else None


async def far(request: web.Request) -> web.StreamResponse:
    """FaR: the operators with their approval, a recipient looked up, the senders, an entity's audit trail."""
    console = _console(request)
    remote = console.settings.far
    recipient, entity = request.query.get("recipient", "").strip(), request.query.get("entity", "").strip()
    listed = await _remote(console, remote, "/api/v1/operators")
    operators = _operators(listed)
    sections: dict[str, tuple[int, Any]] = {} if operators is not None else {"operators": listed}
    sections["senders"] = await _remote(console, remote, "/api/v1/senders")
    if recipient:
        sections["recipient"] = await _remote(console, remote, f"/api/v1/recipients/{quote(recipient, safe='')}")
        sections["refusals"] = await _remote(
            console, remote, f"/api/v1/recipients/{quote(recipient, safe='')}/refusals"
        )
    if entity:
        sections["audit"] = await _remote(console, remote, f"/api/v1/audit/{quote(entity, safe='')}")
    return render(
        request, "far.html", operators=operators or [], sections=sections, recipient=recipient, entity=entity,
        dumps=_pretty,
    )  # fmt: skip


APPROVAL_STATES = ("approved", "suspended", "revoked")
REASON_LIMIT = 512  # FaR's own limit for an approval's reason


async def far_operator(request: web.Request) -> web.StreamResponse:
    """One operator in FaR: its approval (status, since, decided by, reason, audit row) and its audit trail; an
    admin may approve, suspend or revoke it when the console holds a token with FaR's approve scope."""
    console = _console(request)
    remote = console.settings.far
    orgnr = request.match_info["orgnr"]
    path = f"/api/v1/operators/{quote(orgnr, safe='')}"
    record = await _remote(console, remote, path)
    approval = await _remote(console, remote, path + "/approval")
    trail = await _remote(console, remote, f"/api/v1/audit/{quote(orgnr, safe='')}")
    changes = trail[1].get("changes") if trail[0] == 200 and isinstance(trail[1], dict) else None
    return render(
        request, "far_operator.html", orgnr=orgnr, record=record, approval=approval,
        changes=changes if isinstance(changes, list) else [], trail=trail, dumps=_pretty, states=APPROVAL_STATES,
        can_decide=remote is not None and remote.approval_token is not None, why=request.query.get("why", ""),
    )  # fmt: skip


@admin_only
async def far_operator_decide(request: web.Request) -> web.StreamResponse:
    """Approve, suspend or revoke an operator in FaR with a reason: sent with the console's approval token and the
    admin's name, audited here (done, or refused with FaR's answer) as FaR audits it."""
    console = _console(request)
    remote = console.settings.far
    orgnr = request.match_info["orgnr"]
    back = f"/far/operators/{quote(orgnr, safe='')}"
    form = await request.post()
    status, reason = str(form.get("status", "")), str(form.get("reason", "")).strip()
    target = f"operator {orgnr[:16]}"
    if remote is None or remote.approval_token is None:
        await audited(request, "operator-approval", target=target, outcome="refused", status=status[:16],
                      why="the console holds no token with FaR's approve scope")  # fmt: skip
        raise web.HTTPForbidden(text="this console may not decide approvals: far.approval_token is not set")
    if status not in APPROVAL_STATES or len(reason) > REASON_LIMIT:
        raise web.HTTPBadRequest(text=f"status is one of {', '.join(APPROVAL_STATES)}; a reason of at most 512")
    body = {"status": status, "reason": reason or None, "requested_by": session_of(request).user.name}
    answered, document = await _remote(
        console, remote, f"/api/v1/operators/{quote(orgnr, safe='')}/approval",
        method="PUT", token=remote.approval_token, body=body,
    )  # fmt: skip
    if answered == 200 and isinstance(document, dict):
        await audited(request, "operator-approval", target=target, status=status, reason=reason or None,
                      far_audit_id=document.get("audit_id"))  # fmt: skip
        raise _back(back, f"operator {status}")
    why = document.get("detail") if isinstance(document, dict) else document
    why = f"FaR answered {answered}: {why}" if answered else str(why)
    await audited(request, "operator-approval", target=target, outcome="refused", status=status,
                  reason=reason or None, why=why[:500])  # fmt: skip
    raise _back(back, "refused", why=why[:300])


async def operator(request: web.Request) -> web.StreamResponse:
    """The mailbox operator: a mailbox's letters, a delivery's outcome."""
    console = _console(request)
    remote = console.settings.operator
    mailbox, delivery = request.query.get("mailbox", "").strip(), request.query.get("delivery", "").strip()
    sections: dict[str, tuple[int, Any]] = {}
    if mailbox:
        sections["mailbox"] = await _remote(console, remote, f"/api/v1/mailboxes/{quote(mailbox, safe='')}/messages")
    if delivery:
        sections["delivery"] = await _remote(console, remote, f"/api/v1/deliveries/{quote(delivery, safe='')}")
    if remote is None:
        raise web.HTTPNotFound(text="not configured")
    return render(request, "operator.html", sections=sections, mailbox=mailbox, delivery=delivery, dumps=_pretty)


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


# --- status ----------------------------------------------------------------------------------------------------


async def status(request: web.Request) -> web.StreamResponse:
    """``GET /status``: the access point's status (``accesspoint.msh.status``, as its admin listener's ``/status``)
    with the console's open alerts and incidents.

    A session or a bearer token of ``status_tokens`` (monitoring systems); never on the AS4 listener.
    """
    console = _console(request)
    if SESSION not in request:
        try:
            console.status_auth.authorize(request, "status")
        except Problem as refused:  # 401/403 with WWW-Authenticate and an RFC 9457 body, as every service answers
            return refused.response()
    document = await console.status.document(console.settings.warn_before)
    document["alerts_open"] = len(await console.alerts.latest(status="open", limit=1000))
    document["incidents_open"] = sum(1 for item in await console.incidents.latest() if item.status == "open")
    return web.json_response(document, headers={"Cache-Control": "no-store"})


def routes(app: web.Application) -> None:
    """Every route of the console."""
    add = app.router
    add.add_get("/", home)
    add.add_get("/login", login_page)
    add.add_post("/login", login)
    add.add_post("/logout", logout)
    add.add_get("/status", status)
    add.add_get("/messages", messages)
    add.add_post("/messages/resend", resend_selected)
    add.add_post("/messages/resend-matching", resend_matching)
    add.add_get("/messages/{direction}/{message_id}", message)
    add.add_get("/messages/{direction}/{message_id}/evidence/{pk}", evidence_download)
    add.add_post("/messages/out/{message_id}/resend", resend_one)
    add.add_post("/messages/out/{message_id}/dead-letter", dead_letter_one)
    add.add_get("/errors", errors)
    add.add_get("/pmodes", pmodes)
    add.add_get("/pmodes/versions/{version}", pmode_version)
    add.add_post("/pmodes/reload", pmodes_reload)
    add.add_get("/certificates", certificates)
    add.add_get("/monitoring", monitoring)
    add.add_post("/monitoring/{pmode}/ping", monitoring_ping)
    add.add_post("/monitoring/{pmode}/monitor", monitoring_toggle)
    add.add_get("/alerts", alerts)
    add.add_post("/alerts/{alert}/acknowledge", alert_acknowledge)
    add.add_post("/alerts/{alert}/incident", alert_incident)
    add.add_get("/incidents", incidents)
    add.add_post("/incidents", incident_new)
    add.add_get("/incidents/{incident}", incident)
    add.add_post("/incidents/{incident}/change", incident_change)
    add.add_get("/incidents/{incident}/timeline.{format}", incident_export)
    add.add_get("/audit", audit)
    add.add_get("/far", far)
    add.add_get("/far/operators/{orgnr}", far_operator)
    add.add_post("/far/operators/{orgnr}/approval", far_operator_decide)
    add.add_get("/operator", operator)

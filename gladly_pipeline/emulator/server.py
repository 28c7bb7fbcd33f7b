"""Local HTTP server that answers like Gladly's public REST API, over a generated Dataset.

Each request goes through the same steps as on Gladly: Basic auth, the per-org rate limit,
then (emulator only) any injected fault (faults.py), then routing. Lists are bare JSON arrays
with the documented caps and `Gladly-Limited-Data`; export files stream as NDJSON and the Events
API as JSON lines, both in chunks. Tests move the clock with `Emulator.set_now` and merge or
delete profiles with `Emulator.merge_customer` and `Emulator.delete_customer`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import ipaddress
import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from gladly_pipeline.emulator.changes import ProfileChange, apply_changes, check
from gladly_pipeline.emulator.data import (
    CONVERSATIONS_CAP,
    EVENT_ENTITIES,
    EVENTS_LOOKBACK,
    ITEMS_CAP,
    RETENTION_DAYS,
    SEARCH_CAP,
    UTC,
    Dataset,
    EmulatorConfig,
    from_ms,
    generate,
    parse_timestamp,
    resolve_now,
    to_ms,
)
from gladly_pipeline.emulator.faults import STATUS, ConnectionCut, Fault, damaged
from gladly_pipeline.emulator.requestlog import RequestLog

logger = logging.getLogger(__name__)

JOB_STATUSES = ("PENDING", "IN_PROGRESS", "COMPLETED", "FAILED")
E164 = re.compile(r"\+[1-9]\d{6,14}")
# Clients compute "now" on their own clock; allow this much disagreement with ours.
CLOCK_SKEW = timedelta(minutes=5)
STREAM_CHUNK_BYTES = 64 * 1024
ERROR_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_exist",
    409: "taken",
    429: "too_many_requests",
}
# What an injected status says; the 401 and 403 match the real auth checks word for word.
FAULT_DETAILS = {
    401: "missing or invalid API credentials",
    403: "the user lacks the API User permission",
    429: "rate limit exceeded",
}
OUTAGE_PAGE = (
    "<!DOCTYPE html><html><head><title>{status} Service Unavailable</title></head>"
    "<body><h1>{status}</h1><p>The server is temporarily unable to handle the request.</p>"
    "</body></html>"
)


@dataclass
class Reply:
    """What a route answers: a JSON body, or JSON lines streamed in chunks."""

    status: int
    body: object = None
    headers: tuple[tuple[str, str], ...] = ()
    lines: Iterator[dict] | None = None
    html: str | None = None
    # Of `lines`: export files are NDJSON, the Events API says application/x-jsonlines.
    content_type: str = "application/x-ndjson"


def errors(
    status: int,
    detail: str,
    code: str | None = None,
    attr: str | None = None,
    meta: dict | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    """An Errors body (reference §12.9): {"errors": [{attr?, code, detail, meta?}]}."""
    error: dict = {}
    if attr:
        error["attr"] = attr
    error["code"] = code or ERROR_CODES.get(status, "temporary_failure")
    error["detail"] = detail
    if meta:
        error["meta"] = meta
    return Reply(status, {"errors": [error]}, headers)


@dataclass
class _Armed:
    """A fault and how many more requests it will act on."""

    fault: Fault
    remaining: int


class _RateLimiter:
    """Counts requests per wall-clock second for the whole org, as Gladly does."""

    def __init__(self, limit: int | None):
        self.limit = limit or 0
        self._second = 0
        self._count = 0
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, int]:
        """Count one request; returns (allowed, remaining in this second)."""
        if not self.limit:
            return True, 0
        with self._lock:
            self._roll()
            self._count += 1
            return self._count <= self.limit, max(0, self.limit - self._count)

    def remaining(self) -> int:
        with self._lock:
            self._roll()
            return max(0, self.limit - self._count)

    def _roll(self) -> None:
        second = int(time.time())
        if second != self._second:
            self._second, self._count = second, 0


class Emulator:
    """A running emulator: the generated data, the HTTP server and its request log."""

    def __init__(self, cfg: EmulatorConfig, host: str = "127.0.0.1", port: int = 0):
        require_loopback(host)
        self.config = dataclasses.replace(cfg, now=resolve_now(cfg))
        self.data: Dataset = generate(self.config)
        # (method, path, status) of every request answered, oldest first; compact.
        self.request_log = RequestLog()
        self._lock = threading.Lock()
        self._faults = [_Armed(fault, fault.times) for fault in cfg.faults]
        self._changes: list[ProfileChange] = []
        self._stopping = threading.Event()  # ends the waits of slow faults on stop()
        self._limiter = _RateLimiter(cfg.rate_limit_per_second)
        self._started = time.monotonic()
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.emulator = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # stop() waits for the serving loop to notice; the default 0.5 s poll made every
            # test that starts an emulator half a second slower.
            kwargs={"poll_interval": 0.05},
            name="gladly-emulator",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Emulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket, freeing the port."""
        self._stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def clock(self) -> datetime:
        """The emulator's current time: the data's `now` plus the time since start or set_now.

        Only `set_now` reveals data; the seconds a test runs move this clock (which checks
        request windows) but show nothing new, so what a test sees stays deterministic.
        """
        with self._lock:
            now, started = self.data.now, self._started
        return now + timedelta(seconds=time.monotonic() - started)

    def set_now(self, moment: datetime) -> None:
        """Move the clock forward to `moment` (tz-aware) and show what had happened by then.

        Items, conversations, profiles, export jobs and events up to `moment` appear as if time
        had passed; they were generated up front (`EmulatorConfig.future_days`). Raises
        ValueError for a naive or earlier moment, or one past the generated horizon.
        """
        if moment.utcoffset() is None:
            raise ValueError("moment must be timezone-aware")
        target = from_ms(to_ms(moment.astimezone(UTC)))
        with self._lock:
            if target < self.data.now:
                raise ValueError(f"the clock only moves forward; it reads {self.data.now}")
            view = self.data.at(target)  # raises past the horizon
            apply_changes(view, self._changes)
            self.data, self._started = view, time.monotonic()

    def expire_files(self, job_id: str) -> None:
        """Make one export job's files answer 404 from now on; the job stays listed."""
        self.data.expire_files(job_id)

    def merge_customer(self, old_id: str, into_id: str) -> None:
        """Merge profile `old_id` into `into_id` now; from then on `old_id` answers 301.

        KeyError unless both are live profiles, ValueError if they are the same one; see
        changes.py for what else follows.
        """
        self._change(old_id, into_id)

    def delete_customer(self, customer_id: str) -> None:
        """Delete a live profile now: it answers 404 from then on. KeyError if not live."""
        self._change(customer_id, None)

    def _change(self, customer_id: str, merged_into: str | None) -> None:
        with self._lock:
            change = ProfileChange(to_ms(self.data.now), customer_id, merged_into)
            check(self.data, change)
            self._changes.append(change)
            # A fresh view swapped in whole: handlers mid-request keep reading the old one.
            view = self.data.at(self.data.now)
            apply_changes(view, self._changes)
            self.data = view

    def inject(
        self,
        fault: Fault | int | None = None,
        times: int = 1,
        path_prefix: str = "/api/v1",
        html: bool = False,
        *,
        status: int = 503,
    ) -> Fault:
        """Arm `fault`; or, the older form, answer the next `times` requests under
        `path_prefix` with `status` (429 without Retry-After; others with an Errors body, or an
        HTML outage page when `html`). Returns the armed fault.

        Faults act in the order armed, at most one before routing (status, slow) and one on the
        body (reset, truncate, garbage, a stall) per request; see faults.py.
        """
        if isinstance(fault, int):  # inject(503, ...) as the first positional argument
            fault, status = None, fault
        if fault is None:
            fault = Fault(STATUS, path_prefix, times, status=status, html=html)
        with self._lock:
            self._faults.append(_Armed(fault, fault.times))
        return fault

    def clear_faults(self) -> None:
        """Disarm every fault, used up or not."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> list[tuple[Fault, int]]:
        """Faults not used up yet, with the requests each will still act on."""
        with self._lock:
            return [(armed.fault, armed.remaining) for armed in self._faults if armed.remaining]

    def _take_fault(self, path: str, acts: Callable[[Fault], bool]) -> Fault | None:
        """Use one request of the first armed fault for `path` for which `acts` is true."""
        with self._lock:
            for armed in self._faults:
                fault = armed.fault
                if armed.remaining and path.startswith(fault.path_prefix) and acts(fault):
                    armed.remaining -= 1
                    return fault
        return None

    def pause(self, seconds: float) -> None:
        """Wait for a slow fault; returns early when the emulator stops."""
        self._stopping.wait(seconds)

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.request_log.append((method, path, status))


def start_emulator(
    cfg: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Emulator:
    """Generate the data and serve it on `host:port` (0 = a free port) from a daemon thread."""
    return Emulator(cfg or EmulatorConfig(), host=host, port=port).start()


def require_loopback(host: str) -> None:
    """Refuse to listen anywhere but IPv4 loopback: the emulator has fake credentials."""
    try:
        loopback = ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the emulator only listens on 127.0.0.0/8, not {host!r}")


class _Handler(BaseHTTPRequestHandler):
    """One request: auth, rate limit, injected fault, route, respond, log."""

    protocol_version = "HTTP/1.1"
    server_version = "GladlyEmulator/1.0"
    timeout = 30  # idle keep-alive connections release their thread
    # Headers and body go out in separate writes; with Nagle's algorithm on, each answer
    # waited ~40 ms for the peer's delayed ACK, capping a connection near 20 requests/s.
    disable_nagle_algorithm = True

    # http.server dispatches on do_<METHOD>; every method takes the same path (writes get 405).
    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Silence http.server's per-request stderr lines; `_handle` logs instead."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header tells the emulator's clock, as Gladly's tells its own.

        Clients read Gladly's time from it (the Events API's 24-hour reach is judged by
        the server), so a frozen or moved emulator clock must show here too.
        """
        if timestamp is None:
            emulator: Emulator = self.server.emulator  # type: ignore[attr-defined]
            timestamp = emulator.clock().timestamp()
        return formatdate(timestamp, usegmt=True)

    def _handle(self) -> None:
        emulator: Emulator = self.server.emulator  # type: ignore[attr-defined]
        self._drain_body()
        self.rate_headers: tuple[tuple[str, str], ...] = ()
        self.faults: list[Fault] = []  # the faults this request met, for the log line
        reply, damage = self._process(emulator)
        # Logged before the body goes out, so a client that has read the whole answer
        # always finds its request in the log.
        emulator._record(self.command, self.path, reply.status)
        try:
            self._send(reply, damage, emulator)
        except (BrokenPipeError, ConnectionResetError):
            # The client went away, e.g. its read timeout fired while a slow fault waited.
            self.close_connection = True
        noted = "".join(f" [{fault.describe()}]" for fault in self.faults)
        logger.info("%s %s %s%s", self.command, urlsplit(self.path).path, reply.status, noted)

    def _drain_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _process(self, emulator: Emulator) -> tuple[Reply, Fault | None]:
        """The reply, and the fault (if any) that is to damage its body on the way out."""
        denied = self._authenticate(emulator.config)
        limiter = emulator._limiter
        if denied:
            self._set_rate_headers(limiter.limit, limiter.remaining())
            return denied, None
        allowed, remaining = limiter.take()
        self._set_rate_headers(limiter.limit, remaining)
        if not allowed:
            return errors(429, "rate limit exceeded"), None
        path = urlsplit(self.path).path
        early = emulator._take_fault(path, lambda fault: fault.before_routing)
        if early:
            self.faults.append(early)
            if early.kind == STATUS:
                return _fault_reply(early), None
            emulator.pause(early.seconds)
        reply = self._route(emulator)
        if reply.status != 200:
            return reply, None
        streamed = reply.lines is not None
        damage = emulator._take_fault(path, lambda fault: fault.damages(streamed))
        if damage:
            self.faults.append(damage)
        return reply, damage

    def _route(self, emulator: Emulator) -> Reply:
        try:
            return route(emulator, self.command, self.path)
        except Exception:  # an emulator bug: answer like an outage, keep serving
            logger.exception("emulator failed on %s", urlsplit(self.path).path)
            return errors(500, "internal error")

    def _authenticate(self, cfg: EmulatorConfig) -> Reply | None:
        """HTTP Basic with the API user's email and token; never echoes either back."""
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, _, token = decoded.partition(":")
        token_ok = hmac.compare_digest(token.encode(), cfg.api_token.encode())
        if scheme.lower() != "basic" or not token_ok:
            return errors(401, "missing or invalid API credentials")
        if username in cfg.forbidden_usernames:
            return errors(403, "the user lacks the API User permission")
        if username != cfg.username:
            return errors(401, "missing or invalid API credentials")
        return None

    def _set_rate_headers(self, limit: int, remaining: int) -> None:
        if limit:
            self.rate_headers = (
                ("Ratelimit-Limit-Second", str(limit)),
                ("Ratelimit-Remaining-Second", str(remaining)),
            )

    def _send(self, reply: Reply, damage: Fault | None, emulator: Emulator) -> None:
        if reply.lines is not None:
            self._send_stream(reply, damage, emulator)
            return
        if reply.html is not None:
            payload, content_type = reply.html.encode(), "text/html; charset=utf-8"
        else:
            payload = json.dumps(reply.body, ensure_ascii=False, separators=(",", ":")).encode()
            content_type = "application/json"
        self._start(reply, content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if damage is None:
            self.wfile.write(payload)
            return
        # Only a reset damages a JSON body: half of it arrives, then the connection drops.
        self.wfile.write(payload[: len(payload) // 2])
        self._cut(damage.rst)

    def _start(self, reply: Reply, content_type: str) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        for name, value in (*reply.headers, *self.rate_headers):
            self.send_header(name, value)

    def _send_stream(self, reply: Reply, damage: Fault | None, emulator: Emulator) -> None:
        """Write JSON lines with chunked transfer encoding, never holding the whole body."""
        self._start(reply, reply.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        pieces = _encoded_lines(reply.lines or iter(()))
        if damage:
            pieces = damaged(pieces, damage, emulator.pause)
        try:
            self._write_pieces(pieces)
        except ConnectionCut:
            self._cut(damage.rst)
            return
        self.wfile.write(b"0\r\n\r\n")

    def _write_pieces(self, pieces: Iterator[bytes | None]) -> None:
        """Send lines in chunks of about STREAM_CHUNK_BYTES; None sends what is held now."""
        buffer: list[bytes] = []
        size = 0
        for piece in pieces:
            if piece is not None:
                buffer.append(piece)
                size += len(piece)
            if buffer and (piece is None or size >= STREAM_CHUNK_BYTES):
                self._write_chunk(b"".join(buffer))
                buffer, size = [], 0
        if buffer:
            self._write_chunk(b"".join(buffer))

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    def _cut(self, rst: bool) -> None:
        """Close the connection mid-response, as a failing proxy or load balancer does."""
        if rst:
            # SO_LINGER on with a zero timeout makes close() send RST instead of a FIN.
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        # The socket really closes only once no file object holds it.
        self.rfile.close()
        self.connection.close()
        self.close_connection = True


def _encoded_lines(lines: Iterator[dict]) -> Iterator[bytes]:
    for line in lines:
        yield json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _fault_reply(fault: Fault) -> Reply:
    if fault.html:
        return Reply(fault.status, html=OUTAGE_PAGE.format(status=fault.status))
    return errors(fault.status, FAULT_DETAILS.get(fault.status, "injected fault"))


# ---------------------------------------------------------------- routing

RouteHandler = Callable[..., Reply]
_ROUTES: list[tuple[re.Pattern[str], RouteHandler]] = []


def _route(pattern: str) -> Callable[[RouteHandler], RouteHandler]:
    """Register a GET handler for a path; `{}` segments are passed on as arguments."""
    regex = re.compile("/api/v1/" + pattern.replace("{}", "([^/]+)"))

    def register(handler: RouteHandler) -> RouteHandler:
        _ROUTES.append((regex, handler))
        return handler

    return register


def route(emulator: Emulator, method: str, raw_path: str) -> Reply:
    """Dispatch a request that passed auth and the rate limit."""
    parts = urlsplit(raw_path)
    query = parse_qs(parts.query, keep_blank_values=True)
    for regex, handler in _ROUTES:
        match = regex.fullmatch(parts.path)
        if match:
            if method not in ("GET", "HEAD"):
                return errors(
                    405,
                    f"{method} is not supported here",
                    code="invalid",
                    headers=(("Allow", "GET"),),
                )
            ids = [unquote(group) for group in match.groups()]
            return handler(emulator, query, *ids)
    return errors(404, "no such resource")


def _ok(body: object, *headers: tuple[str, str]) -> Reply:
    return Reply(200, body, headers)


def _limited(records: list, cap: int) -> Reply:
    """A capped list with Gladly-Limited-Data saying whether anything was cut."""
    truncated = "true" if len(records) > cap else "false"
    return _ok(records[:cap], ("Gladly-Limited-Data", truncated))


def _find(records: list[dict], record_id: str, kind: str) -> Reply:
    for record in records:
        if record["id"] == record_id:
            return _ok(record)
    return errors(404, f"{kind} {record_id} does not exist")


@_route("organization")
def _organization(emulator: Emulator, query: dict) -> Reply:
    return _ok(emulator.data.organization)


def _reference_routes(name: str, singular: str) -> None:
    """The list and by-id endpoints of one kind of reference data (agents, inboxes, ...)."""

    @_route(name)
    def _list(emulator: Emulator, query: dict) -> Reply:
        return _ok(getattr(emulator.data, name))

    @_route(name + "/{}")
    def _one(emulator: Emulator, query: dict, record_id: str) -> Reply:
        return _find(getattr(emulator.data, name), record_id, singular)


for _name, _singular in (
    ("agents", "agent"), ("inboxes", "inbox"), ("teams", "team"), ("topics", "topic")
):
    _reference_routes(_name, _singular)


@_route("customer-profiles")
def _find_customers(emulator: Emulator, query: dict) -> Reply:
    """Search by exactly one of email, phoneNumber, externalCustomerId; newest first."""
    keys = [key for key in ("email", "phoneNumber", "externalCustomerId") if key in query]
    if len(keys) != 1:
        return errors(
            400, "give exactly one of email, phoneNumber, externalCustomerId", attr="query"
        )
    key = keys[0]
    value = query[key][0]
    if not value:
        return errors(400, f"{key} must not be blank", code="blank", attr=key)
    if key == "phoneNumber" and not E164.fullmatch(value):
        # An unescaped "+" arrives as a space, so this also catches that client bug.
        return errors(400, "phoneNumber must be E.164, with + escaped as %2B", attr=key)
    data = emulator.data
    index = {
        "email": data.customers_by_email,
        "phoneNumber": data.customers_by_phone,
        "externalCustomerId": data.customers_by_external_id,
    }[key]
    wanted = value.lower() if key == "email" else value
    found = [data.customers[customer_id] for customer_id in index.get(wanted, [])]
    found.sort(key=_updated_ms, reverse=True)
    return _ok(found[:SEARCH_CAP])


def _updated_ms(profile: dict) -> int:
    """Sort key for search results; profiles without updatedAt fall back to createdAt."""
    return to_ms(parse_timestamp(profile.get("updatedAt") or profile["createdAt"]))


def _moved(old: str, new: str, location: str) -> Reply:
    return errors(
        301,
        "customer id has changed",
        code="moved",
        attr="customerId",
        meta={"old": old, "new": new},
        headers=(("Location", location),),
    )


@_route("customer-profiles/{}")
def _customer(emulator: Emulator, query: dict, customer_id: str) -> Reply:
    data = emulator.data
    if customer_id in data.merged:
        new = data.merged[customer_id]
        return _moved(customer_id, new, f"/api/v1/customer-profiles/{new}")
    if customer_id not in data.customers:
        return errors(404, f"customer {customer_id} does not exist")
    return _ok(data.customers[customer_id])


@_route("customers/{}/conversations")
def _customer_conversations(emulator: Emulator, query: dict, customer_id: str) -> Reply:
    data = emulator.data
    if customer_id in data.merged:
        new = data.merged[customer_id]
        return _moved(customer_id, new, f"/api/v1/customers/{new}/conversations")
    if customer_id not in data.customers:
        return errors(404, f"customer {customer_id} does not exist")
    return _limited(data.conversations_by_customer.get(customer_id, []), CONVERSATIONS_CAP)


@_route("conversations/{}")
def _conversation(emulator: Emulator, query: dict, conversation_id: str) -> Reply:
    conversation = emulator.data.conversations.get(conversation_id)
    if conversation is None:
        return errors(404, f"conversation {conversation_id} does not exist")
    return _ok(conversation)


@_route("conversations/{}/items")
def _conversation_items(emulator: Emulator, query: dict, conversation_id: str) -> Reply:
    data = emulator.data
    if conversation_id not in data.conversations:
        return errors(404, f"conversation {conversation_id} does not exist")
    items = data.items_by_conversation.get(conversation_id, [])
    session = query.get("sessionId", [""])[0]
    if session:
        items = [item for item in items if item.get("sessionId") == session]
    return _limited(items, ITEMS_CAP)


@_route("conversation-items/{}")
def _conversation_item(emulator: Emulator, query: dict, item_id: str) -> Reply:
    item = emulator.data.items_by_id.get(item_id)
    if item is None:
        return errors(404, f"conversation item {item_id} does not exist")
    return _ok(item)


@_route("export/schedules")
def _schedules(emulator: Emulator, query: dict) -> Reply:
    return _ok([emulator.data.schedule])


@_route("export/jobs")
def _jobs(emulator: Emulator, query: dict) -> Reply:
    """Jobs of the last 14 days, filtered on updatedAt in [startAt, endAt]; newest first."""
    clock = emulator.clock()
    status = query.get("status", [""])[0]
    if status and status not in JOB_STATUSES:
        return errors(400, f"status must be one of {', '.join(JOB_STATUSES)}", attr="status")
    try:
        start = _query_time(query, "startAt", clock - timedelta(days=RETENTION_DAYS))
        end = _query_time(query, "endAt", clock)
    except _BadParameter as bad:
        return errors(400, bad.detail, attr=bad.attr)
    if start < clock - timedelta(days=RETENTION_DAYS) - CLOCK_SKEW:
        return errors(400, "startAt may not be more than 14 days ago", attr="startAt")
    if end > clock + CLOCK_SKEW:
        return errors(400, "endAt may not be in the future", attr="endAt")
    if end < start:
        return errors(400, "endAt may not be before startAt", attr="endAt")
    jobs = [
        job
        for job in emulator.data.visible_jobs()
        if start <= parse_timestamp(job["updatedAt"]) <= end
        and (not status or job["status"] == status)
    ]
    return _ok(jobs[::-1])


class _BadParameter(ValueError):
    def __init__(self, attr: str, detail: str, code: str = "invalid"):
        super().__init__(detail)
        self.attr = attr
        self.detail = detail
        self.code = code


def _query_time(query: dict, name: str, default: datetime) -> datetime:
    text = query.get(name, [""])[0]
    if not text:
        return default
    try:
        return parse_timestamp(text)
    except ValueError:
        detail = f"{name} must be an ISO 8601 timestamp, with + escaped as %2B"
        raise _BadParameter(name, detail) from None


def _visible_job(emulator: Emulator, job_id: str) -> dict | None:
    for job in emulator.data.visible_jobs():
        if job["id"] == job_id:
            return job
    return None


@_route("export/jobs/{}")
def _job(emulator: Emulator, query: dict, job_id: str) -> Reply:
    job = _visible_job(emulator, job_id)
    if job is None:
        return errors(404, f"export job {job_id} does not exist")
    return _ok(job)


@_route("export/jobs/{}/files/{}")
def _job_file(emulator: Emulator, query: dict, job_id: str, name: str) -> Reply:
    job = _visible_job(emulator, job_id)
    if job is None or name not in job["files"]:
        return errors(404, f"file {name} of export job {job_id} does not exist")
    data = emulator.data
    if job_id in data.files_gone:  # still COMPLETED and listed, as when storage lost the file
        return errors(404, f"file {name} of export job {job_id} no longer exists")
    lines = {
        "agents.jsonl": lambda: iter(data.agents),
        "topics.jsonl": lambda: iter(data.topics),
        "conversation_items.jsonl": lambda: data.export_items(job),
        "customers.jsonl": lambda: data.export_customers(job),
    }[name]()
    return Reply(200, lines=lines)


# ---------------------------------------------------------------- events


@_route("events")
def _events(emulator: Emulator, query: dict) -> Reply:
    """Events with startAt <= timestamp < endAt of the named entities, as JSON lines.

    The window is half-open so that back-to-back windows (endAt = the next startAt) never
    return an event twice; startAt inclusive matches a cursor of "last timestamp + 1 ms".
    Gladly's events lag up to ~15 s; here none do, since only `set_now` reveals anything.
    """
    data = emulator.data
    try:
        start, end = _event_window(query, emulator.clock())
        entities = _event_entities(query)
    except _BadParameter as bad:
        return errors(400, bad.detail, code=bad.code, attr=bad.attr)
    lines = data.events_between(_ceil_ms(start), _ceil_ms(end), entities)
    return Reply(200, lines=lines, content_type="application/x-jsonlines")


def _event_window(query: dict, clock: datetime) -> tuple[datetime, datetime]:
    """startAt required, within the last 24 hours; endAt optional, not before startAt nor
    in the future. Both allow the clock skew the export-job list allows: whether Gladly
    rejects or clamps a startAt just over 24 hours old is open (reference §19 q7)."""
    if not query.get("startAt", [""])[0]:
        raise _BadParameter("startAt", "startAt is required", code="blank")
    start = _query_time(query, "startAt", clock)
    end = _query_time(query, "endAt", clock)
    lookback = timedelta(milliseconds=EVENTS_LOOKBACK)
    if start < clock - lookback - CLOCK_SKEW:
        raise _BadParameter("startAt", "startAt may not be more than 24 hours ago")
    if start > clock + CLOCK_SKEW:
        raise _BadParameter("startAt", "startAt may not be in the future")
    if end > clock + CLOCK_SKEW:
        raise _BadParameter("endAt", "endAt may not be in the future")
    if end < start:
        raise _BadParameter("endAt", "endAt may not be before startAt")
    return start, end


def _event_entities(query: dict) -> set[str]:
    """The repeated `entities` parameter, each value one of EVENT_ENTITIES.

    Whether Gladly also accepts "CONTACT,CONVERSATION" is open (reference §19 q7); the spec
    describes a repeated parameter, so a comma-separated value is refused rather than guessed.
    """
    values = [value for value in query.get("entities", []) if value]
    if not values:
        raise _BadParameter("entities", "give at least one entities value", code="blank")
    for value in values:
        if "," in value:
            detail = "repeat the entities parameter for each type instead of separating by commas"
            raise _BadParameter("entities", detail)
        if value not in EVENT_ENTITIES:
            raise _BadParameter("entities", f"entities must be among {', '.join(EVENT_ENTITIES)}")
    return set(values)


def _ceil_ms(moment: datetime) -> int:
    """Epoch ms rounded up, so `ms >= start` and `ms < end` match the instant exactly."""
    ms = to_ms(moment)
    return ms + (from_ms(ms) < moment)

"""Faults the emulator can inject: what goes wrong, under which path, for how many requests.

One `Fault` names a kind and its parameters:

* `status`   — answer `status` instead of the real reply (429 without Retry-After, as Gladly;
  401/403 even for good credentials; 5xx with an Errors body, or an HTML page if `html`).
* `slow`     — wait `seconds` before answering, or, on a streamed body with `after_lines`,
  stall after that many lines: long enough and a client's read timeout fires.
* `reset`    — drop the connection mid-body: after `after_lines` lines and half of the next
  one of a streamed body, or halfway through a JSON body, the socket closes without the
  response being finished. With `rst` it sends a TCP reset instead of closing in order; the
  client's system may then discard what it had not yet read, so fewer lines may arrive.
* `truncate` — cut a streamed body's last line in half; the response still ends cleanly.
* `garbage`  — replace a `share` of a streamed body's lines with garbage.

Streamed bodies are export files and the Events API. Faults only touch requests they can
act on: a `truncate` armed for `/api/v1/export` waits for a file download, not a job list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

STATUS, SLOW, RESET, TRUNCATE, GARBAGE = "status", "slow", "reset", "truncate", "garbage"
FAULT_KINDS = (STATUS, SLOW, RESET, TRUNCATE, GARBAGE)

# What `garbage` puts in place of a line, in turn: each is something a real feed has carried.
GARBAGE_LINES = (
    b'{"id": "garbled-',  # a record cut off mid-way
    b"<html><body><h1>502 Bad Gateway</h1></body></html>",  # a proxy's page spliced in
    b"\x80\x81 not utf-8 \xfe",  # bytes that are not UTF-8
    b'["valid json", "but not an object"]',
)

CLI_SYNTAX = "KIND[:TIMES[:PATH_PREFIX[:PARAM]]]"
CLI_HELP = (
    "inject a fault; repeatable. KIND is an HTTP status (429, 401, 403, 500, "
    "503, ...; '503html' for an HTML page) or slow, reset, truncate, garbage. TIMES: how many "
    "requests (default 1; use a large number to keep it on). PATH_PREFIX: default /api/v1. "
    "PARAM: seconds for slow, lines before the cut for reset, share of lines for garbage, or "
    "name=value pairs (seconds, after_lines, share, rst=1) separated by commas. Examples: "
    "429:3:/api/v1/conversations  slow:2:/api/v1/agents:1.5  "
    "reset:1:/api/v1/export:after_lines=50  garbage:5:/api/v1/export:0.1"
)
# The parameter a bare number in PARAM sets, per kind.
_MAIN_PARAMETER = {SLOW: "seconds", RESET: "after_lines", GARBAGE: "share"}
_PARAMETER_TYPES = {
    "seconds": float,
    "after_lines": int,
    "share": float,
    "rst": lambda text: bool(int(text)),
}


class ConnectionCut(Exception):
    """Raised inside a damaged stream: the server must reset the connection now."""


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for the next `times` requests whose path starts with `path_prefix`."""

    kind: str
    path_prefix: str = "/api/v1"
    times: int = 1
    status: int = 503  # status: the HTTP status to answer
    html: bool = False  # status: an HTML outage page instead of an Errors body
    seconds: float = 1.0  # slow: how long to wait
    after_lines: int = 0  # reset: lines sent before the cut; slow: lines before the stall
    share: float = 0.2  # garbage: the share of lines replaced
    rst: bool = False  # reset: a TCP reset rather than an orderly close of the cut connection

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            known = ", ".join(FAULT_KINDS)
            raise ValueError(f"fault kind must be one of {known}, not {self.kind!r}")
        if not self.path_prefix.startswith("/"):
            raise ValueError(f"fault path prefix must start with '/', not {self.path_prefix!r}")
        if self.times < 1 or self.after_lines < 0 or self.seconds < 0:
            raise ValueError("fault times must be >= 1, after_lines and seconds >= 0")
        if not 400 <= self.status <= 599:
            raise ValueError(f"fault status must be a 4xx or 5xx, not {self.status}")
        if not 0 < self.share <= 1:
            raise ValueError(f"garbage share must be in (0, 1], not {self.share}")

    @property
    def before_routing(self) -> bool:
        """Decided before the request is routed: it replaces or delays the whole answer."""
        return self.kind == STATUS or (self.kind == SLOW and not self.after_lines)

    def damages(self, streamed: bool) -> bool:
        """Whether this fault can act on a successful answer of this shape."""
        if self.before_routing:
            return False
        return streamed or self.kind == RESET

    def describe(self) -> str:
        stall = f" after {self.after_lines} lines" if self.after_lines else ""
        detail = {
            STATUS: f"{self.status}{' html' if self.html else ''}",
            SLOW: f"{self.seconds:g}s{stall}",
            RESET: f"after {self.after_lines} lines",
            TRUNCATE: "last line",
            GARBAGE: f"{self.share:g} of lines",
        }[self.kind]
        return f"{self.kind} ({detail})"


def parse_fault(spec: str) -> Fault:
    """A Fault from the command line's KIND[:TIMES[:PATH_PREFIX[:PARAM]]]."""
    kind, times, prefix, param = (spec.split(":", 3) + ["", "", ""])[:4]
    if times and not times.isdigit():
        raise ValueError(f"TIMES must be a whole number, not {times!r}")
    settings: dict = {"times": int(times or 1), "path_prefix": prefix or "/api/v1"}
    if kind.lower().endswith("html"):
        kind, settings["html"] = kind[:-4], True
    if kind.isdigit():
        kind, settings["status"] = STATUS, int(kind)
    settings.update(_parameters(kind.lower(), param))
    return Fault(kind.lower(), **settings)


def _parameters(kind: str, param: str) -> dict:
    if not param:
        return {}
    if "=" not in param:
        if kind not in _MAIN_PARAMETER:
            raise ValueError(f"a {kind} fault takes no parameter, got {param!r}")
        param = f"{_MAIN_PARAMETER[kind]}={param}"
    settings: dict = {}
    for pair in param.split(","):
        name, _, value = pair.partition("=")
        name = name.strip()
        if name not in _PARAMETER_TYPES:
            raise ValueError(f"unknown fault parameter {name!r}")
        try:
            settings[name] = _PARAMETER_TYPES[name](value.strip())
        except ValueError:
            raise ValueError(f"fault parameter {name} takes a number, not {value!r}") from None
    return settings


def damaged(
    lines: Iterable[bytes], fault: Fault, wait: Callable[[float], object]
) -> Iterator[bytes | None]:
    """The encoded lines (each ending in a newline) of a streamed body, with `fault` applied.

    Yields None where the server must send what it holds so far (before a stall or a cut),
    and raises ConnectionCut where the connection must be reset.
    """
    if fault.kind == GARBAGE:
        return _garbled(lines, fault.share)
    if fault.kind == TRUNCATE:
        return _truncated(lines)
    if fault.kind == RESET:
        return _cut(lines, fault.after_lines)
    return _stalled(lines, fault.after_lines, fault.seconds, wait)


def _garbled(lines: Iterable[bytes], share: float) -> Iterator[bytes]:
    """Spreads the garbage evenly: line n is replaced when n * share crosses a whole number.

    So the first 1/share lines hold one, and a file of N lines exactly floor(N * share).
    """
    replaced = 0
    for number, line in enumerate(lines, start=1):
        # The epsilon keeps 0.1 * 30 from landing just under 3 in floating point.
        if math.floor(number * share + 1e-9) > replaced:
            yield GARBAGE_LINES[replaced % len(GARBAGE_LINES)] + b"\n"
            replaced += 1
        else:
            yield line


def _truncated(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Every line but the last as is; the last cut in half, without its newline.

    A prefix of a JSON object is never valid JSON, so the cut line is always malformed.
    """
    previous = None
    for line in lines:
        if previous is not None:
            yield previous
        previous = line
    if previous is not None:
        yield previous[: max(1, (len(previous) - 1) // 2)]


def _cut(lines: Iterable[bytes], after: int) -> Iterator[bytes | None]:
    """`after` lines and half the next, then the cut; a shorter body loses its closing chunk.

    The half line tests that a client never hands out a line the cut left unfinished.
    """
    for number, line in enumerate(lines):
        if number == after:
            yield line[: len(line) // 2]
            break
        yield line
    yield None
    raise ConnectionCut


def _stalled(
    lines: Iterable[bytes], after: int, seconds: float, wait: Callable[[float], object]
) -> Iterator[bytes | None]:
    for number, line in enumerate(lines):
        if number == after:
            yield None
            wait(seconds)
        yield line

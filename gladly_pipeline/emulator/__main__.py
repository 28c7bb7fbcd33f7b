"""Command line: serve a generated Gladly account on 127.0.0.1 until Ctrl-C.

python -m gladly_pipeline.emulator --port 8765 --seed 1
python -m gladly_pipeline.emulator --fault 429:3:/api/v1/agents --fault reset:2:/api/v1/export
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence

from gladly_pipeline.emulator.data import SCHEDULES, EmulatorConfig, parse_timestamp
from gladly_pipeline.emulator.faults import CLI_HELP, CLI_SYNTAX, Fault, parse_fault
from gladly_pipeline.emulator.server import require_loopback, start_emulator


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gladly-emulator", description="Serve a synthetic Gladly account locally."
    )
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 loopback address only")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=14, help="days of history before now")
    parser.add_argument("--conversations-per-day", type=int, default=30)
    parser.add_argument("--schedule", choices=SCHEDULES, default="daily")
    parser.add_argument("--org-timezone", default="America/New_York")
    parser.add_argument(
        "--rate-limit", type=int, default=10, help="requests per second for the org; 0 disables"
    )
    parser.add_argument("--big-conversation-items", type=int, default=0)
    parser.add_argument(
        "--missing-file-jobs",
        type=int,
        default=0,
        help="the newest N COMPLETED export jobs stay listed but their files answer 404",
    )
    parser.add_argument(
        "--future-days",
        type=int,
        default=0,
        help="days generated after --now, revealed only when a test moves the clock",
    )
    parser.add_argument("--username", default="agent@example.com")
    parser.add_argument(
        "--token",
        default=None,
        help="API token (default: $GLADLY_API_TOKEN, else 'emulator-token')",
    )
    parser.add_argument(
        "--now",
        type=parse_timestamp,
        default=None,
        help="ISO 8601 instant to generate up to (default: the current time)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    _add_fault_arguments(parser)
    return parser.parse_args(argv)


def _add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faults and quirks (for testing clients)")
    group.add_argument(
        "--fault", action="append", default=[], type=_fault, metavar=CLI_SYNTAX, help=CLI_HELP
    )
    group.add_argument(
        "--unknown-shapes",
        action="store_true",
        help="some items get content type CUSTOM_CHANNEL_MESSAGE, some an unknown field",
    )
    group.add_argument(
        "--duplicate-items",
        type=int,
        default=0,
        metavar="N",
        help="each export job's items file also lists the last N items before its window",
    )


def _fault(spec: str) -> Fault:
    try:
        return parse_fault(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{spec!r}: {error}") from None


def config_from(args: argparse.Namespace) -> EmulatorConfig:
    token = args.token or os.environ.get("GLADLY_API_TOKEN") or "emulator-token"
    return EmulatorConfig(
        seed=args.seed,
        now=args.now,
        days=args.days,
        conversations_per_day=args.conversations_per_day,
        schedule=args.schedule,
        org_timezone=args.org_timezone,
        rate_limit_per_second=args.rate_limit,
        username=args.username,
        api_token=token,
        big_conversation_items=args.big_conversation_items,
        missing_file_jobs=args.missing_file_jobs,
        future_days=args.future_days,
        faults=tuple(args.fault),
        unknown_shapes=args.unknown_shapes,
        duplicate_items=args.duplicate_items,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        require_loopback(args.host)
    except ValueError as error:
        raise SystemExit(f"gladly-emulator: {error}") from None
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s"
    )
    stopped = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a supervisor's stop
        signal.signal(signal_number, lambda *_: stopped.set())
    emulator = start_emulator(config_from(args), host=args.host, port=args.port)
    # The one line a user (or a test) reads: where to connect and as whom. Never the token.
    print(f"Gladly emulator serving {emulator.base_url} as {emulator.config.username}", flush=True)
    try:
        # Wake now and then: a signal caught by a server thread only runs its handler once
        # the main thread executes Python again.
        while not stopped.wait(timeout=0.5):
            pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()

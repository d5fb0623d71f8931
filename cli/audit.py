"""`meshtrust audit [--follow]`: the event stream, which is the audit log, as a readable list.

Every event every service published, in order, from the stream `MESHTRUST`: sequence, time,
cluster, type, issuance and what it says (a state, a serial, a denial's reason, a bounce's
pods). `--cluster` and `--issuance` filter; `--json` prints each event as published (CSRs and
certificates included: no key ever travels, so none can be printed). A message that is not a
valid event is listed with the reason it was refused.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO, assert_never

from cli.connect import reader_settings
from cli.running import run_async
from shared.bus import Bus, BusError
from shared.bus.reading import StoredMessage, read_stream
from shared.events import (
    STREAM_SUBJECTS,
    BounceCompleted,
    BounceRequested,
    CertificateDenied,
    CertificateIssued,
    CsrRequested,
    Event,
    InvalidEvent,
    StatusChanged,
    cluster_events,
    decode,
)

HELP = "list the event stream (the audit log); --follow for new events as they come"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    parser.add_argument("--cluster", help="only events about this cluster")
    parser.add_argument("--issuance", help="only events of this issuance id")
    parser.add_argument("--from", dest="start", type=int, default=1, help="first sequence")
    parser.add_argument("--json", action="store_true", help="print events as published")
    parser.add_argument("--nats-url", action="append", help="NATS server (repeatable)")


def describe(event: Event) -> str:
    """One line of what the event says."""
    match event:
        case CsrRequested(data=d):
            return f"{d.name} generation {d.declaration_generation} attempt {d.attempt}"
        case CertificateIssued(data=d):
            return f"{d.name} serial {d.serial_number} until {d.not_after:%Y-%m-%dT%H:%M:%SZ}"
        case CertificateDenied(data=d):
            return f"{d.name} {d.reason}: {d.message}"
        case BounceRequested(data=d):
            return f"{d.directive.namespace}/{d.directive.name}"
        case BounceCompleted(data=d):
            pods = sum(len(s.pods) for s in d.selectors)
            return f"{d.directive.namespace}/{d.directive.name} {pods} pods" + (
                f", error: {d.error}" if d.error else ""
            )
        case StatusChanged(data=d):
            return f"{d.namespace}/{d.name} {d.state.value}" + (f": {d.error}" if d.error else "")
    assert_never(event)


def line(stored: StoredMessage) -> tuple[str | None, str]:
    """(issuance, the printed line) of one stored message."""
    when = f"{stored.time:%Y-%m-%d %H:%M:%S}" if stored.time else "-"
    try:
        event = decode(stored.data, subject=stored.subject)
    except InvalidEvent as exc:
        return None, f"{stored.sequence:>6}  {when}  {stored.subject}  (refused: {exc.reason})"
    return event.issuance, (
        f"{stored.sequence:>6}  {when}  {event.cluster:<10} {event.type.value:<19} "
        f"{event.issuance[:12]}  {describe(event)}"
    )


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    subject = cluster_events(args.cluster) if args.cluster else STREAM_SUBJECTS
    async with Bus.connect(reader_settings(args.nats_url)) as bus:
        async for stored in read_stream(
            bus.connection,
            bus.settings.stream,
            subject=subject,
            start=args.start,
            follow=args.follow,
        ):
            issuance, text = line(stored)
            if args.issuance and issuance != args.issuance:
                continue
            out.write((stored.data.decode(errors="replace") if args.json else text) + "\n")
            out.flush()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return run_async("audit", _run(args, sys.stdout), errors=(BusError,))
    except KeyboardInterrupt:  # how --follow ends
        return 0

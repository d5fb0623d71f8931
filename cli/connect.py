"""NATS settings for the read-only commands (`audit`, `ledger`).

From the environment (`MESHTRUST_NATS_*`) when it names servers; otherwise, when a local stack
is recorded in `.devstack/stack.json`, its NATS URL with the read-only `auditor` identity (its
nkey seed file); `--nats-url` overrides the servers either way. These commands never provision
anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cli.stack import DEFAULT_ROOT
from devstack.natsconfig import AUDITOR_INBOX, AUDITOR_USER
from shared.bus import NatsSettings


def reader_settings(urls: list[str] | None, *, root: Path = DEFAULT_ROOT) -> NatsSettings:
    settings = NatsSettings(provision=False)
    stack = root / "stack.json"
    if "MESHTRUST_NATS_URLS" not in os.environ and stack.exists():
        settings = settings.model_copy(
            update={
                "urls": (json.loads(stack.read_text())["nats_url"],),
                "nkeys_seed_file": root / "nats" / "credentials" / f"{AUDITOR_USER}.nk",
                "inbox_prefix": AUDITOR_INBOX,
            }
        )
    if urls:
        settings = settings.model_copy(update={"urls": tuple(urls)})
    return settings

"""Go-style durations (`720h`, `90s`, `1h30m`, `1.5h`, `300ms`), as `time.ParseDuration` reads them.

Only non-negative durations: a certificate lifetime or a timeout is never negative, so a sign is
rejected rather than silently accepted. Go's bare `0` is accepted. Units are Go's ASCII ones: ns,
us, ms, s, m, h (not `µs`, which RE2 patterns in a CRD cannot spell portably); no days, as in
Go (write `24h`). Numbers are `12` or `1.5`, not Go's rarer `1.` or `.5`.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["DURATION_PATTERN", "format_duration", "parse_duration"]

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

# The same grammar as the CRD's OpenAPI `pattern` for `certOptions.ttl`, so the server and the
# model reject the same strings.
_NUMBER = r"[0-9]+(\.[0-9]+)?"
_UNIT = r"(ns|us|ms|s|m|h)"
DURATION_PATTERN = rf"^({_NUMBER}{_UNIT})+$"
_TERM = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string; raise ValueError naming the string when it is not one."""
    if text == "0":
        return timedelta(0)
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as '720h', '90s' or '1h30m'")
    seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _TERM.findall(text))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest Go-style spelling of a whole number of seconds, e.g. `1h30m`; `0s` for zero."""
    total = round(value.total_seconds())
    if total < 0:
        raise ValueError("durations are non-negative")
    if total == 0:
        return "0s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{seconds}s" if seconds else "",
    ]
    return "".join(parts)

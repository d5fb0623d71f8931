"""JSON Schema of every event, desired-state value and cluster report:
`python -m shared.events.schemas DIR`.

The committed files under docs/events/ are the published contract; a test regenerates them in
memory and fails when they differ from what is committed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.events.desired import DesiredObject
from shared.events.models import EVENT_MODELS
from shared.events.reports import ClusterReport


def render() -> dict[str, str]:
    """File name -> JSON text, for every event type and the desired-state value."""
    files = {
        f"{kind.value}.json": _dump(model.model_json_schema())
        for kind, model in sorted(EVENT_MODELS.items())
    }
    files["desired-object.json"] = _dump(DesiredObject.model_json_schema())
    files["cluster-report.json"] = _dump(ClusterReport.model_json_schema())
    return files


def _dump(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m shared.events.schemas DIR", file=sys.stderr)
        return 2
    for path in write(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

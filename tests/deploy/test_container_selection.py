"""`make test` runs no container test and `make test-containers` runs them all.

The container tests (tests/containers) need Docker and the images the harness builds: plain
pytest deselects them (pyproject.toml's `-m 'not containers'`), the harness selects them with
`-m containers`. Collected in a subprocess, as each run would: a container test without the
marker would run (and fail) in `make test`; a `make test-containers` that collects nothing would
pass on no test at all.
"""

from __future__ import annotations

import re
import subprocess
import sys

from deploykit import REPO


def _collect(*args: str) -> tuple[int, list[str], str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    return result.returncode, ids, result.stdout


def test_make_test_deselects_every_container_test() -> None:
    rc, ids, out = _collect("tests/containers")
    assert ids == [], out
    deselected = re.search(r"(\d+) deselected", out)
    assert deselected, out
    assert int(deselected.group(1)) >= 10
    assert rc == 5  # nothing left to run here; `make test` runs the rest of tests/


def test_make_test_containers_selects_the_image_compose_and_testcontainers_tests() -> None:
    rc, ids, out = _collect("-m", "containers", "tests/containers")
    assert rc == 0, out
    assert all(i.startswith("tests/containers/") for i in ids)
    files = {i.split("::")[0].rsplit("/", 1)[-1] for i in ids}
    assert files == {"test_image.py", "test_compose.py", "test_testcontainers.py"}

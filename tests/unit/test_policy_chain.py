"""The shared policy chain: the first finding wins, in the order the checks were given."""

from __future__ import annotations

from shared.controller.policy import Chain, Check, Finding


def _finds(reason: str) -> Check[list[str]]:
    def check(value: list[str]) -> Finding | None:
        value.append(reason)
        return Finding(reason, f"{reason} found")

    return check


def _nothing(value: list[str]) -> Finding | None:
    value.append("nothing")
    return None


def test_an_empty_chain_finds_nothing() -> None:
    assert Chain[list[str]]().evaluate([]) is None


def test_a_chain_of_silent_checks_runs_them_all_and_finds_nothing() -> None:
    seen: list[str] = []
    assert Chain(_nothing, _nothing).evaluate(seen) is None
    assert seen == ["nothing", "nothing"]


def test_the_first_finding_wins_and_later_checks_are_not_run() -> None:
    seen: list[str] = []
    chain = Chain(_nothing, _finds("First"), _finds("Second"))
    assert chain.evaluate(seen) == Finding("First", "First found")
    assert seen == ["nothing", "First"]
    assert len(chain) == 3
    assert chain[0] is _nothing

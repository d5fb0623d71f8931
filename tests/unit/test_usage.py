"""The services' command line: `--help` answers, any other argument is refused."""

from __future__ import annotations

import pytest

from services.bouncer.settings import BouncerSettings
from services.issuer.settings import IssuerSettings
from shared.runtime.usage import answer_arguments


def test_no_arguments_lets_the_service_start() -> None:
    answer_arguments([], program="meshtrust-issuer", summary="s", settings=IssuerSettings)


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_every_variable_and_exits_0(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        answer_arguments(
            [flag], program="meshtrust-bouncer", summary="Bounces.", settings=BouncerSettings
        )
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: meshtrust-bouncer\n\nBounces.\n")
    for variable in ("MESHTRUST_BOUNCER_CLUSTER", "MESHTRUST_BOUNCER_GRACE", "MESHTRUST_NATS_*"):
        assert f"\n  {variable} " in out


def test_any_other_argument_is_refused_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        answer_arguments(
            ["--cluster", "east"], program="meshtrust-issuer", summary="s", settings=IssuerSettings
        )
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith("meshtrust-issuer: takes no arguments, got --cluster east\n")

"""Pure parts of the bus's trust boundaries: Msg-Id tags, record parsing, the account layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from devstack.natsconfig import HUB_ACCOUNT, ISSUER_DENIED, render, user_names
from shared.bus import NatsSettings
from shared.bus.completions import parse_record
from shared.bus.fleet import agent_consumer, bouncer_consumer, cluster_consumers
from shared.bus.publishing import msg_id, msg_id_key

SUBJECT = "meshtrust.v1.east.certificate.issued"
KEY = "0123456789abcdef:certificate.issued:1"


def test_an_untagged_msg_id_is_the_dedupe_key_where_there_is_no_credential() -> None:
    assert msg_id(None, SUBJECT, KEY) == KEY
    assert msg_id_key(NatsSettings()) is None


def test_a_tagged_msg_id_depends_on_the_key_the_subject_and_the_dedupe_key() -> None:
    one, two = b"1" * 32, b"2" * 32
    tagged = msg_id(one, SUBJECT, KEY)
    assert tagged.startswith(KEY + ":")
    assert tagged == msg_id(one, SUBJECT, KEY), "retries and replicas must agree"
    assert tagged != msg_id(two, SUBJECT, KEY), "another identity cannot make it"
    assert tagged != msg_id(one, "meshtrust.v1.west.certificate.issued", KEY)
    assert tagged != msg_id(one, SUBJECT, KEY.replace(":1", ":2"))


def test_the_msg_id_key_comes_from_the_credential_and_never_is_it(tmp_path: Path) -> None:
    seed = tmp_path / "user.nk"
    seed.write_bytes(b"SUAEXAMPLESEEDEXAMPLESEEDEXAMPLESEEDEXAMPLESEEDEXAMPLE\n")
    from_seed = msg_id_key(NatsSettings(nkeys_seed_file=seed))
    from_password = msg_id_key(NatsSettings(user="agent-east", password=SecretStr("pw")))
    assert from_seed is not None
    assert len(from_seed) == 32
    assert from_password is not None
    assert from_password != from_seed
    assert b"SUAEXAMPLE" not in from_seed
    assert b"pw" not in from_password
    assert msg_id_key(NatsSettings(nkeys_seed_file=seed)) == from_seed, "stable per identity"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"[1,2,3]", [1, 2, 3]),
        (b'{"stream":"MESHTRUST_CONSUMED","seq":9}', []),  # a PubAck aimed here
        (b"[1,true,3]", []),
        (b"[0]", []),
        (b"[-4]", []),
        (b'["1"]', []),
        (b"not json", []),
        (b"\xff\xfe", []),
        (b"[" * 100_000 + b"]" * 100_000, []),
        (b"", []),
    ],
    ids=[
        "a record is a list of positive sequences",
        "an acknowledgement is no record",
        "booleans are not sequences",
        "zero is not a sequence",
        "negative numbers are not sequences",
        "strings are not sequences",
        "text is no record",
        "invalid utf-8 is no record",
        "deep nesting is no record and raises nothing",
        "nothing is no record",
    ],
)
def test_a_completion_record_is_read_or_ignored_never_raised(
    data: bytes, expected: list[int]
) -> None:
    assert parse_record(data) == expected


def _config() -> dict[str, dict[str, object]]:
    clusters = ["east", "west"]
    keys = {user: f"U{user.upper()}" for user in user_names(clusters)}
    accounts: dict[str, dict[str, object]] = json.loads(render(clusters=clusters, nkeys=keys))[
        "accounts"
    ]
    return accounts


def test_only_the_hub_account_has_jetstream() -> None:
    accounts = _config()
    assert [name for name, a in accounts.items() if "jetstream" in a] == [HUB_ACCOUNT]


def test_every_export_names_the_accounts_that_may_import_it_and_each_imports_its_own() -> None:
    accounts = _config()
    exports = accounts[HUB_ACCOUNT]["exports"]
    assert isinstance(exports, list)
    granted: dict[str, set[str]] = {}
    for export in exports:
        assert export["accounts"], f"{export['service']} is exported to everyone"
        for account in export["accounts"]:
            granted.setdefault(account, set()).add(export["service"])
    for name, account in accounts.items():
        if name == HUB_ACCOUNT:
            continue
        imports = {i["service"]["subject"] for i in account["imports"]}  # type: ignore[attr-defined]
        assert imports == granted[name]
        foreign = [s for s in imports if s.startswith("meshtrust.v1.") and name[-4:] not in s]
        assert foreign == [], f"{name} imports another cluster's subjects"
        assert not any("CONSUMER.CREATE" in s or "CONSUMER.DELETE" in s for s in imports)
        assert not any(".certificate." in s for s in imports), "only the issuer answers CSRs"


def test_the_issuer_may_not_delete_purge_or_reconfigure_streams() -> None:
    (issuer, _provisioner) = _config()[HUB_ACCOUNT]["users"]  # type: ignore[misc]
    assert issuer["permissions"]["publish"]["deny"] == list(ISSUER_DENIED)
    assert {"$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>"} <= set(ISSUER_DENIED)


def test_the_hub_keeps_four_consumers_per_cluster_each_reading_only_that_cluster() -> None:
    consumers = cluster_consumers("east")
    assert [config.durable_name for _, config in consumers] == [
        "agent-east",
        "bouncer-east",
        "csr-east",
        "desired-east",
    ]
    for _, config in consumers:
        filters = config.filter_subjects or [config.filter_subject]
        assert all(".east." in f for f in filters), filters
        assert config.deliver_subject is None, "pull consumers only"
    assert agent_consumer("east").config(start_sequence=42).opt_start_seq == 42
    assert bouncer_consumer("east", ack_wait=5).config().ack_wait == 5

"""CRDs: serving, structural-schema validation (422 with field paths), defaults, pruning,
fieldValidation, several versions, cluster scope, printer columns, and cleanup on delete."""

from __future__ import annotations

import copy
import json

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from .conftest import WIDGET_CRD, eventually, widget

W = ("example.com", "v1", "default", "widgets")
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


async def test_created_crd_is_established_and_served(
    k8s: ApiClient, http: aiohttp.ClientSession
) -> None:
    ext = client.ApiextensionsV1Api(k8s)
    crd = await ext.create_custom_resource_definition(WIDGET_CRD)
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd.status.stored_versions == ["v1"]
    async with http.get("/apis/example.com/v1") as resp:
        doc = await resp.json()
    widgets = next(r for r in doc["resources"] if r["name"] == "widgets")
    assert widgets["shortNames"] == ["wd"]
    assert widgets["namespaced"]
    assert widgets["kind"] == "Widget"
    assert any(r["name"] == "widgets/status" for r in doc["resources"])
    async with http.get("/apis") as resp:
        groups = {g["name"]: g for g in (await resp.json())["groups"]}
    assert [v["version"] for v in groups["example.com"]["versions"]] == ["v1", "v1beta1"]


async def test_schema_violations_are_422_with_every_field_path(
    widgets: client.CustomObjectsApi,
) -> None:
    bad = widget("w", 0, color="green", name="ABC", tags=["a", "b", "c"])
    with pytest.raises(client.ApiException) as err:
        await widgets.create_namespaced_custom_object(*W, bad)
    st = json.loads(err.value.body)
    assert err.value.status == 422
    assert st["reason"] == "Invalid"
    causes = {c["field"]: (c["reason"], c["message"]) for c in st["details"]["causes"]}
    assert causes == {
        "spec.size": (
            "FieldValueInvalid",
            "Invalid value: 0: spec.size in body should be greater than or equal to 1",
        ),
        "spec.color": (
            "FieldValueNotSupported",
            'Unsupported value: "green": supported values: "blue", "red"',
        ),
        "spec.name": (
            "FieldValueInvalid",
            "Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'",
        ),
        "spec.tags": ("FieldValueTooMany", "Too many: 3: must have at most 2 items"),
    }
    assert st["details"] | {"causes": None} == {
        "name": "w",
        "group": "example.com",
        "kind": "Widget",
        "causes": None,
    }
    assert st["message"].startswith('Widget.example.com "w" is invalid: [')


async def test_required_and_type_errors(widgets: client.CustomObjectsApi) -> None:
    with pytest.raises(client.ApiException) as err:
        await widgets.create_namespaced_custom_object(
            *W,
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "w"},
                "spec": {"color": "red"},
            },
        )
    st = json.loads(err.value.body)
    assert st["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.size"}
    ]
    assert st["message"] == 'Widget.example.com "w" is invalid: spec.size: Required value'
    with pytest.raises(client.ApiException) as err:
        await widgets.create_namespaced_custom_object(*W, widget("w", "three"))  # type: ignore[arg-type]
    cause = json.loads(err.value.body)["details"]["causes"][0]
    assert cause["reason"] == "FieldValueTypeInvalid"
    assert cause["field"] == "spec.size"
    assert (
        cause["message"]
        == 'Invalid value: "three": spec.size in body must be of type integer: "string"'
    )


async def test_defaults_are_applied_and_int_or_string_accepts_both(
    widgets: client.CustomObjectsApi,
) -> None:
    a = await widgets.create_namespaced_custom_object(*W, widget("a", port=8080))
    b = await widgets.create_namespaced_custom_object(*W, widget("b", port="http"))
    assert a["spec"]["color"] == "blue"
    assert a["spec"]["port"] == 8080
    assert b["spec"]["port"] == "http"


async def test_unknown_fields_are_pruned_warned_or_rejected_per_field_validation(
    widgets: client.CustomObjectsApi, http: aiohttp.ClientSession
) -> None:
    body = widget("a", bogus=1, extra={"anything": {"goes": True}})
    out = await widgets.create_namespaced_custom_object(*W, body)
    assert "bogus" not in out["spec"]
    assert out["spec"]["extra"] == {"anything": {"goes": True}}
    async with http.post(
        "/apis/example.com/v1/namespaces/default/widgets", json=widget("b", bogus=1)
    ) as resp:
        assert resp.status == 201
        assert resp.headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'
    with pytest.raises(client.ApiException) as err:
        await widgets.create_namespaced_custom_object(
            *W, widget("c", bogus=1), field_validation="Strict"
        )
    st = json.loads(err.value.body)
    assert err.value.status == 400
    assert (
        st["message"] == 'Widget in version "v1" cannot be handled as a Widget: '
        'strict decoding error: unknown field "spec.bogus"'
    )


async def test_every_served_version_reads_the_same_object(widgets: client.CustomObjectsApi) -> None:
    await widgets.create_namespaced_custom_object(*W, widget("w"))
    beta = await widgets.get_namespaced_custom_object(
        "example.com", "v1beta1", "default", "widgets", "w"
    )
    assert beta["apiVersion"] == "example.com/v1beta1"
    assert beta["spec"]["size"] == 3


async def test_cluster_scoped_crd(k8s: ApiClient) -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = "gadgets.example.com"
    crd["spec"]["scope"] = "Cluster"
    crd["spec"]["names"] = {"plural": "gadgets", "kind": "Gadget"}
    await client.ApiextensionsV1Api(k8s).create_custom_resource_definition(crd)
    co = client.CustomObjectsApi(k8s)
    out = await co.create_cluster_custom_object(
        "example.com",
        "v1",
        "gadgets",
        {
            "apiVersion": "example.com/v1",
            "kind": "Gadget",
            "metadata": {"name": "g"},
            "spec": {"size": 1},
        },
    )
    assert "namespace" not in out["metadata"]
    listed = await co.list_cluster_custom_object("example.com", "v1", "gadgets")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["g"]


async def test_invalid_crd_is_422(k8s: ApiClient) -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = "wrong.example.com"
    with pytest.raises(client.ApiException) as err:
        await client.ApiextensionsV1Api(k8s).create_custom_resource_definition(crd)
    st = json.loads(err.value.body)
    assert err.value.status == 422
    assert st["details"]["causes"][0]["field"] == "metadata.name"


async def test_deleting_a_crd_deletes_its_custom_resources_and_stops_serving(
    k8s: ApiClient, widgets: client.CustomObjectsApi
) -> None:
    await widgets.create_namespaced_custom_object(*W, widget("w"))
    ext = client.ApiextensionsV1Api(k8s)
    await ext.delete_custom_resource_definition("widgets.example.com")

    async def gone() -> bool:
        try:
            await ext.read_custom_resource_definition("widgets.example.com")
        except client.ApiException as exc:
            return exc.status == 404
        return False

    await eventually(gone)
    with pytest.raises(client.ApiException) as err:
        await widgets.list_namespaced_custom_object(*W)
    assert err.value.status == 404


async def test_table_uses_additional_printer_columns(
    widgets: client.CustomObjectsApi, http: aiohttp.ClientSession
) -> None:
    await widgets.create_namespaced_custom_object(*W, widget("w", 7))
    await widgets.patch_namespaced_custom_object_status(
        *W,
        "w",
        {
            "status": {
                "phase": "Ready",
                "conditions": [
                    {"type": "Other", "status": "False"},
                    {"type": "Ready", "status": "True"},
                ],
            }
        },
        _content_type="application/merge-patch+json",
    )
    async with http.get(
        "/apis/example.com/v1/namespaces/default/widgets", headers={"Accept": TABLE}
    ) as resp:
        table = await resp.json()
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Size",
        "Phase",
        "Ready",
        "Age",
    ]
    cells = table["rows"][0]["cells"]
    assert cells[:4] == ["w", 7, "Ready", "True"]
    assert cells[4].endswith("s")
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


async def test_table_for_builtin_kinds(k8s: ApiClient, http: aiohttp.ClientSession) -> None:
    await client.CoreV1Api(k8s).create_namespaced_secret(
        "default", {"metadata": {"name": "s"}, "stringData": {"a": "1", "b": "2"}}
    )
    async with http.get("/api/v1/namespaces/default/secrets/s", headers={"Accept": TABLE}) as resp:
        table = await resp.json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Type", "Data", "Age"]
    assert table["rows"][0]["cells"][:3] == ["s", "Opaque", 2]


async def test_field_selectors_on_selectable_fields_only(widgets: client.CustomObjectsApi) -> None:
    await widgets.create_namespaced_custom_object(*W, widget("a", color="red"))
    await widgets.create_namespaced_custom_object(*W, widget("b"))
    red = await widgets.list_namespaced_custom_object(*W, field_selector="spec.color=red")
    assert [i["metadata"]["name"] for i in red["items"]] == ["a"]
    named = await widgets.list_namespaced_custom_object(*W, field_selector="metadata.name=b")
    assert [i["metadata"]["name"] for i in named["items"]] == ["b"]
    with pytest.raises(client.ApiException) as err:
        await widgets.list_namespaced_custom_object(*W, field_selector="spec.size=3")
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == "field label not supported: spec.size"


async def test_a_terminating_crd_waits_for_custom_resource_finalizers(
    k8s: ApiClient, widgets: client.CustomObjectsApi
) -> None:
    held = widget("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    await widgets.create_namespaced_custom_object(*W, held)
    ext = client.ApiextensionsV1Api(k8s)
    await ext.delete_custom_resource_definition("widgets.example.com")

    async def cr_terminating() -> bool:
        obj = await widgets.get_namespaced_custom_object(*W, "held")
        return bool(obj["metadata"].get("deletionTimestamp"))

    await eventually(cr_terminating)
    crd = await ext.read_custom_resource_definition("widgets.example.com")
    assert "Terminating" in {c.type for c in crd.status.conditions}
    with pytest.raises(client.ApiException) as err:
        await widgets.create_namespaced_custom_object(*W, widget("late"))
    assert err.value.status == 405
    await widgets.patch_namespaced_custom_object(
        *W, "held", {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )

    async def crd_gone() -> bool:
        try:
            await ext.read_custom_resource_definition("widgets.example.com")
        except client.ApiException as exc:
            return exc.status == 404
        return False

    await eventually(crd_gone)


async def test_validation_ratchets_unchanged_top_level_fields(k8s: ApiClient) -> None:
    """An object the schema no longer admits (the CRD tightened after it was stored) can still
    have its status and metadata written, as kube-apiserver's validation ratcheting allows; a
    changed spec is validated again, and so is a changed status."""
    ext = client.ApiextensionsV1Api(k8s)
    await ext.create_custom_resource_definition(WIDGET_CRD)
    widgets = client.CustomObjectsApi(k8s)
    await widgets.create_namespaced_custom_object(*W, widget("w", 8))
    crd = await ext.read_custom_resource_definition("widgets.example.com")
    tighter = k8s.sanitize_for_serialization(crd)
    version = next(v for v in tighter["spec"]["versions"] if v["name"] == "v1")
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"]["maximum"] = 5
    await ext.replace_custom_resource_definition("widgets.example.com", tighter)

    stored = await widgets.get_namespaced_custom_object(*W, "w")
    stored["status"] = {"phase": "Ready"}
    written = await widgets.replace_namespaced_custom_object_status(*W, "w", stored)
    assert written["status"] == {"phase": "Ready"}
    written["metadata"]["labels"] = {"team": "a"}
    written = await widgets.replace_namespaced_custom_object(*W, "w", written)
    assert written["metadata"]["labels"] == {"team": "a"}

    written["spec"]["color"] = "red"  # a spec change: spec.size is validated again
    with pytest.raises(client.ApiException) as err:
        await widgets.replace_namespaced_custom_object(*W, "w", written)
    assert err.value.status == 422
    causes = json.loads(err.value.body)["details"]["causes"]
    assert [c["field"] for c in causes] == ["spec.size"]

    written["spec"]["color"] = "blue"
    written["status"] = {"phase": 7}  # a changed status is validated
    with pytest.raises(client.ApiException) as err:
        await widgets.replace_namespaced_custom_object_status(*W, "w", written)
    assert err.value.status == 422
    assert [c["field"] for c in json.loads(err.value.body)["details"]["causes"]] == ["status.phase"]

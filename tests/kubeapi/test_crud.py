"""Create, read, update, delete through kubernetes-asyncio: server-filled metadata, errors as
Status objects, optimistic concurrency, generation and the status subresource, finalizers."""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from .conftest import deployment, eventually, widget


def status_of(exc: client.ApiException) -> dict:
    return json.loads(exc.body)


async def test_create_returns_201_with_server_filled_metadata(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    body, code, _ = await v1.create_namespaced_config_map_with_http_info(
        "default", {"metadata": {"name": "a"}, "data": {"k": "v"}}
    )
    assert code == 201
    md = body.metadata
    assert md.uid
    assert md.creation_timestamp
    assert md.resource_version
    assert md.generation is None  # ConfigMaps have no generation in kube-apiserver
    assert body.data == {"k": "v"}


async def test_resource_versions_come_from_one_global_counter(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    a = await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    s = await v1.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    b = await v1.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    rvs = [int(x.metadata.resource_version) for x in (a, s, b)]
    assert rvs == sorted(rvs)
    assert len(set(rvs)) == 3
    listed = await v1.list_namespaced_config_map("default")
    assert int(listed.metadata.resource_version) >= rvs[-1]


async def test_generate_name_makes_a_unique_name_with_the_prefix(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    names = {
        (
            await v1.create_namespaced_config_map("default", {"metadata": {"generateName": "job-"}})
        ).metadata.name
        for _ in range(5)
    }
    assert len(names) == 5
    assert all(n.startswith("job-") and len(n) == len("job-") + 5 for n in names)


async def test_duplicate_create_is_409_already_exists_status(k8s: ApiClient) -> None:
    apps = client.AppsV1Api(k8s)
    await apps.create_namespaced_deployment("default", deployment("web"))
    with pytest.raises(client.ApiException) as err:
        await apps.create_namespaced_deployment("default", deployment("web"))
    assert err.value.status == 409
    assert status_of(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "web" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "web", "group": "apps", "kind": "deployments"},
        "code": 409,
    }


async def test_missing_object_is_404_not_found_status(k8s: ApiClient) -> None:
    with pytest.raises(client.ApiException) as err:
        await client.CoreV1Api(k8s).read_namespaced_secret("nope", "default")
    st = status_of(err.value)
    assert (err.value.status, st["reason"], st["message"]) == (
        404,
        "NotFound",
        'secrets "nope" not found',
    )


async def test_create_in_a_missing_namespace_is_404(k8s: ApiClient) -> None:
    with pytest.raises(client.ApiException) as err:
        await client.CoreV1Api(k8s).create_namespaced_config_map(
            "ghost", {"metadata": {"name": "a"}}
        )
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "ghost" not found'


async def test_invalid_name_is_422_with_field_cause(k8s: ApiClient) -> None:
    with pytest.raises(client.ApiException) as err:
        await client.CoreV1Api(k8s).create_namespaced_config_map(
            "default", {"metadata": {"name": "Bad_Name"}}
        )
    st = status_of(err.value)
    assert err.value.status == 422
    assert st["reason"] == "Invalid"
    assert st["details"]["causes"][0]["field"] == "metadata.name"
    assert st["message"].startswith(
        'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"'
    )


async def test_stale_resource_version_is_409_conflict(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    cm = await v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "a"}, "data": {"n": "1"}}
    )
    fresh = await v1.replace_namespaced_config_map(
        "a",
        "default",
        {
            "metadata": {"name": "a", "resourceVersion": cm.metadata.resource_version},
            "data": {"n": "2"},
        },
    )
    assert int(fresh.metadata.resource_version) > int(cm.metadata.resource_version)
    with pytest.raises(client.ApiException) as err:
        await v1.replace_namespaced_config_map(
            "a",
            "default",
            {
                "metadata": {"name": "a", "resourceVersion": cm.metadata.resource_version},
                "data": {"n": "3"},
            },
        )
    st = status_of(err.value)
    assert err.value.status == 409
    assert st["reason"] == "Conflict"
    assert st["message"] == (
        'Operation cannot be fulfilled on configmaps "a": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    # a stale RV in a merge patch is a precondition too
    with pytest.raises(client.ApiException) as err:
        await v1.patch_namespaced_config_map(
            "a",
            "default",
            {"metadata": {"resourceVersion": cm.metadata.resource_version}, "data": {"n": "4"}},
        )
    assert err.value.status == 409


async def test_unconditional_put_is_allowed_for_builtins_but_422_for_custom_resources(
    k8s: ApiClient, widgets: client.CustomObjectsApi
) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    out = await v1.replace_namespaced_config_map(
        "a", "default", {"metadata": {"name": "a"}, "data": {"x": "y"}}
    )
    assert out.data == {"x": "y"}
    await widgets.create_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", widget("w")
    )
    with pytest.raises(client.ApiException) as err:
        await widgets.replace_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", "w", widget("w", 4)
        )
    st = status_of(err.value)
    assert err.value.status == 422
    assert (
        st["message"] == 'Widget.example.com "w" is invalid: '
        "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    )


async def test_generation_bumps_on_spec_changes_only(
    k8s: ApiClient, widgets: client.CustomObjectsApi
) -> None:
    args = ("example.com", "v1", "default", "widgets")
    w = await widgets.create_namespaced_custom_object(*args, widget("w"))
    assert w["metadata"]["generation"] == 1
    w = await widgets.patch_namespaced_custom_object(
        *args,
        "w",
        {"metadata": {"labels": {"a": "b"}}},
        _content_type="application/merge-patch+json",
    )
    assert w["metadata"]["generation"] == 1
    w = await widgets.patch_namespaced_custom_object(
        *args, "w", {"spec": {"size": 5}}, _content_type="application/merge-patch+json"
    )
    assert w["metadata"]["generation"] == 2
    w = await widgets.patch_namespaced_custom_object_status(
        *args, "w", {"status": {"phase": "Ready"}}, _content_type="application/merge-patch+json"
    )
    assert (w["metadata"]["generation"], w["status"]) == (2, {"phase": "Ready"})


async def test_status_subresource_splits_status_from_the_main_endpoint(
    k8s: ApiClient, widgets: client.CustomObjectsApi
) -> None:
    args = ("example.com", "v1", "default", "widgets")
    created = await widgets.create_namespaced_custom_object(
        *args, {**widget("w"), "status": {"phase": "Bogus"}}
    )
    assert "status" not in created  # dropped on create
    with_status = await widgets.patch_namespaced_custom_object_status(
        *args,
        "w",
        {"status": {"phase": "Ready"}, "spec": {"size": 9}},
        _content_type="application/merge-patch+json",
    )
    assert with_status["spec"]["size"] == 3  # /status changes only .status
    main = await widgets.patch_namespaced_custom_object(
        *args,
        "w",
        {"status": {"phase": "Ignored"}, "spec": {"size": 4}},
        _content_type="application/merge-patch+json",
    )
    assert main["status"] == {"phase": "Ready"}
    assert main["spec"]["size"] == 4
    got = await widgets.get_namespaced_custom_object_status(*args, "w")
    assert got["status"] == {"phase": "Ready"}


async def test_noop_update_keeps_the_resource_version(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    cm = await v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "a"}, "data": {"k": "v"}}
    )
    again = await v1.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
    assert again.metadata.resource_version == cm.metadata.resource_version


async def test_finalizers_hold_deletion_until_removed(
    k8s: ApiClient, widgets: client.CustomObjectsApi
) -> None:
    args = ("example.com", "v1", "default", "widgets")
    body = widget("w")
    body["metadata"]["finalizers"] = ["example.com/cleanup"]
    await widgets.create_namespaced_custom_object(*args, body)
    pending = await widgets.delete_namespaced_custom_object(*args, "w")
    assert pending["metadata"]["deletionTimestamp"]
    assert pending["metadata"]["generation"] == 2  # setting deletionTimestamp bumps generation
    still = await widgets.get_namespaced_custom_object(*args, "w")
    assert still["metadata"]["finalizers"] == ["example.com/cleanup"]
    with pytest.raises(client.ApiException) as err:
        await widgets.patch_namespaced_custom_object(
            *args,
            "w",
            {"metadata": {"finalizers": ["example.com/cleanup", "other/new"]}},
            _content_type="application/merge-patch+json",
        )
    assert err.value.status == 422
    await widgets.patch_namespaced_custom_object(
        *args, "w", {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    with pytest.raises(client.ApiException) as err:
        await widgets.get_namespaced_custom_object(*args, "w")
    assert err.value.status == 404


async def test_delete_answers_status_or_object_as_kube_apiserver_does(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    cm = await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    st = await v1.delete_namespaced_config_map("a", "default")
    assert st.status == "Success"
    assert st.details.name == "a"
    assert st.details.uid == cm.metadata.uid
    with pytest.raises(client.ApiException) as err:
        await v1.delete_namespaced_config_map("a", "default")
    assert err.value.status == 404


async def test_delete_preconditions_are_checked(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    with pytest.raises(client.ApiException) as err:
        await v1.delete_namespaced_config_map(
            "a", "default", body={"preconditions": {"uid": "not-the-uid"}}
        )
    assert err.value.status == 409
    assert (
        "Precondition failed: UID in precondition: not-the-uid" in status_of(err.value)["message"]
    )


async def test_dry_run_in_the_delete_options_body_deletes_nothing(k8s: ApiClient) -> None:
    """client-go, controller-runtime and `kubectl delete --dry-run=server` send dryRun in the
    DeleteOptions body, not in the query."""
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    await v1.create_namespace({"metadata": {"name": "kept"}})
    await v1.delete_namespaced_config_map("a", "default", body={"dryRun": ["All"]})
    await v1.delete_namespace("kept", body={"dryRun": ["All"]})
    assert (await v1.read_namespaced_config_map("a", "default")).metadata.name == "a"
    ns = await v1.read_namespace("kept")
    assert ns.metadata.deletion_timestamp is None
    assert ns.status.phase == "Active"
    with pytest.raises(client.ApiException) as err:
        await v1.delete_namespaced_config_map("a", "default", body={"dryRun": ["Some"]})
    assert err.value.status == 422
    assert status_of(err.value)["details"]["causes"] == [
        {
            "reason": "FieldValueNotSupported",
            "message": 'Unsupported value: []string{"Some"}: supported values: "All"',
            "field": "dryRun",
        }
    ]


async def test_a_put_that_changes_the_uid_is_422_immutable(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    cm = await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    body = {"metadata": {"name": "a", "uid": "0000-not-the-uid"}, "data": {"k": "v"}}
    with pytest.raises(client.ApiException) as err:
        await v1.replace_namespaced_config_map("a", "default", body)
    assert err.value.status == 422
    st = status_of(err.value)
    assert st["message"] == (
        'ConfigMap "a" is invalid: metadata.uid: Invalid value: "0000-not-the-uid": '
        "field is immutable"
    )
    assert st["details"]["causes"][0]["field"] == "metadata.uid"
    with pytest.raises(client.ApiException) as err:
        await v1.patch_namespaced_config_map("a", "default", {"metadata": {"uid": "other"}})
    assert err.value.status == 422
    kept = await v1.read_namespaced_config_map("a", "default")
    assert kept.metadata.uid == cm.metadata.uid
    assert kept.data is None
    body["metadata"]["uid"] = cm.metadata.uid  # the same uid (or none) is an ordinary update
    assert (await v1.replace_namespaced_config_map("a", "default", body)).data == {"k": "v"}


async def test_namespace_deletion_removes_its_objects_then_itself(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    ns = await v1.create_namespace({"metadata": {"name": "doomed"}})
    assert ns.status.phase == "Active"
    assert ns.spec.finalizers == ["kubernetes"]
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": "doomed"}
    await v1.create_namespaced_config_map("doomed", {"metadata": {"name": "a"}})
    await v1.create_namespaced_secret("doomed", {"metadata": {"name": "s"}})
    await v1.delete_namespace("doomed")

    async def gone() -> bool:
        try:
            got = await v1.read_namespace("doomed")
        except client.ApiException as exc:
            return exc.status == 404
        assert got.status.phase == "Terminating"
        with pytest.raises(client.ApiException) as err:
            await v1.create_namespaced_config_map("doomed", {"metadata": {"name": "late"}})
        assert err.value.status in (403, 404)
        return False

    await eventually(gone)
    assert (
        await v1.list_config_map_for_all_namespaces(field_selector="metadata.namespace=doomed")
    ).items == []


async def test_secret_string_data_is_stored_as_base64_data(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    s = await v1.create_namespaced_secret(
        "default", {"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}}
    )
    assert s.type == "Opaque"
    assert base64.b64decode(s.data["password"]) == b"hunter2"
    raw = await v1.read_namespaced_secret("s", "default", _preload_content=False)
    assert "stringData" not in json.loads(await raw.read())
    with pytest.raises(client.ApiException) as err:
        await v1.create_namespaced_secret(
            "default", {"metadata": {"name": "bad"}, "data": {"k": "not base64!"}}
        )
    assert err.value.status == 422


async def test_dry_run_validates_without_storing(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    out = await v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "a"}}, dry_run="All"
    )
    assert out.metadata.uid
    with pytest.raises(client.ApiException) as err:
        await v1.read_namespaced_config_map("a", "default")
    assert err.value.status == 404


async def test_leases_and_events_are_served(k8s: ApiClient) -> None:
    coord = client.CoordinationV1Api(k8s)
    lease = await coord.create_namespaced_lease(
        "default",
        {
            "metadata": {"name": "leader"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        },
    )
    lease.spec.holder_identity = "b"
    updated = await coord.replace_namespaced_lease("leader", "default", lease)
    assert updated.spec.holder_identity == "b"
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Lease", "name": "leader", "namespace": "default"},
            "reason": "Elected",
            "message": "b leads",
            "type": "Normal",
        },
    )
    evs = await v1.list_namespaced_event(
        "default", field_selector="involvedObject.name=leader,reason=Elected"
    )
    assert [e.metadata.name for e in evs.items] == ["e1"]


async def test_deployment_validation_requires_matching_selector(k8s: ApiClient) -> None:
    bad = deployment("web")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(client.ApiException) as err:
        await client.AppsV1Api(k8s).create_namespaced_deployment("default", bad)
    st = status_of(err.value)
    assert err.value.status == 422
    assert st["details"]["causes"][0]["field"] == "spec.template.metadata.labels"


async def test_immutable_configmaps_refuse_data_changes(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    body = {"metadata": {"name": "frozen"}, "data": {"k": "v"}, "immutable": True}
    await v1.create_namespaced_config_map("default", body)
    with pytest.raises(client.ApiException) as err:
        await v1.patch_namespaced_config_map("frozen", "default", {"data": {"k": "changed"}})
    assert err.value.status == 422
    assert status_of(err.value)["details"]["causes"][0]["field"] == "data"


async def test_pod_spec_is_immutable_except_images(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    created = await v1.create_namespaced_pod("default", pod)
    assert created.spec.restart_policy == "Always"
    assert created.spec.dns_policy == "ClusterFirst"
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert created.status.phase == "Pending"
    assert created.metadata.generation == 1
    patch = {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}
    updated = await v1.patch_namespaced_pod("p", "default", patch)
    assert updated.spec.containers[0].image == "busybox:2"
    assert updated.metadata.generation == 2
    with pytest.raises(client.ApiException) as err:
        await v1.patch_namespaced_pod("p", "default", {"spec": {"restartPolicy": "Never"}})
    assert err.value.status == 422
    assert status_of(err.value)["details"]["causes"][0]["field"] == "spec"


async def test_a_body_of_another_kind_is_400(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    with pytest.raises(client.ApiException) as err:
        await v1.create_namespaced_config_map(
            "default", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}
        )
    assert err.value.status == 400


async def test_unknown_fields_of_builtin_kinds_are_dropped_with_a_warning_or_rejected(
    http: aiohttp.ClientSession,
) -> None:
    body = {"metadata": {"name": "typo", "lables": {"a": "b"}}, "dta": {"k": "v"}}
    async with http.post("/api/v1/namespaces/default/configmaps", json=body) as resp:
        assert resp.status == 201
        assert resp.headers["Warning"] == (
            '299 - "unknown field \\"metadata.lables\\"", 299 - "unknown field \\"dta\\""'
        )
        created = await resp.json()
    assert "lables" not in created["metadata"]
    assert "dta" not in created
    body["metadata"]["name"] = "strict"
    url = "/api/v1/namespaces/default/configmaps?fieldValidation=Strict"
    async with http.post(url, json=body) as resp:
        assert resp.status == 400
        st = await resp.json()
    assert st["message"] == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
        'unknown field "metadata.lables", unknown field "dta"'
    )

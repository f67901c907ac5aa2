"""The emulated Semaphore answers as the spec says, so tests against it say something about the real one."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from services.semaphore.client import SemaphoreClient
from tests.peers.semaphore_api import (
    SemaphoreEmulator,
    definition_schema,
    load_spec,
    request_body_schema,
    response_schema,
    validate_against,
)

TASKS = "/project/{project_id}/tasks"
TASK = "/project/{project_id}/tasks/{task_id}"


def test_spec_is_the_expected_swagger() -> None:
    spec = load_spec()
    assert spec["swagger"] == "2.0"
    assert spec["basePath"] == "/api"
    assert {"post", "get"} <= set(spec["paths"][TASKS])
    assert "bearer" in spec["securityDefinitions"]


async def test_responses_follow_the_spec(semaphore: SemaphoreEmulator, client: SemaphoreClient) -> None:
    started = await client.start_task({"instance_id": "i1"})
    semaphore.advance(started.id, "running", output="TASK [wait for ssh]")
    await client.get_task(started.id)
    await client.get_output(started.id)
    await client.last_tasks()
    semaphore.fail_next(1, route="get")  # errors are not checked against a schema, only recorded
    await client.get_task(started.id)

    async with httpx.AsyncClient(base_url=f"{semaphore.url}/api") as http:
        headers = {"Authorization": f"Bearer {semaphore.token}"}
        checks = [
            (
                "post",
                TASKS,
                201,
                await http.post("/project/1/tasks", json={"template_id": 7}, headers=headers),
            ),
            ("get", TASKS, 200, await http.get("/project/1/tasks", headers=headers)),
            ("get", f"{TASKS}/last", 200, await http.get("/project/1/tasks/last", headers=headers)),
            ("get", TASK, 200, await http.get(f"/project/1/tasks/{started.id}", headers=headers)),
            (
                "get",
                f"{TASK}/output",
                200,
                await http.get(f"/project/1/tasks/{started.id}/output", headers=headers),
            ),
            # What `opencsp-gateway doctor` reads.
            ("get", "/project/{project_id}/", 200, await http.get("/project/1/", headers=headers)),
            (
                "get",
                "/project/{project_id}/templates/{template_id}",
                200,
                await http.get("/project/1/templates/7", headers=headers),
            ),
        ]
    for method, path, status, response in checks:
        assert response.status_code == status, (method, path)
        assert response.headers["content-type"] == "application/json"
        schema = response_schema(path, method, status)
        assert schema is not None
        validate_against(schema, response.json())


async def test_task_carries_every_spec_property(
    semaphore: SemaphoreEmulator, client: SemaphoreClient
) -> None:
    started = await client.start_task({"instance_id": "i1"})
    semaphore.advance(started.id, "success")
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{semaphore.url}/api/project/1/tasks/{started.id}",
            headers={"Authorization": f"Bearer {semaphore.token}"},
        )
    task = response.json()
    validate_against(definition_schema("Task"), task)
    # secret and git_branch are omitempty in Semaphore's db.Task and unset here.
    expected = set(load_spec()["definitions"]["Task"]["properties"]) - {"secret", "git_branch"}
    assert expected <= set(task)
    assert {"created", "start", "end", "project_id"} <= set(task)


async def test_client_request_bodies_follow_the_spec(
    semaphore: SemaphoreEmulator, client: SemaphoreClient
) -> None:
    await client.start_task({"instance_id": "i1", "hostname": "vm"})
    (post,) = semaphore.requests_to("start")
    assert post.headers["content-type"] == "application/json"
    validate_against(request_body_schema(TASKS, "post"), post.json())


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "body is not JSON"),
        (json.dumps({"template_id": "7"}).encode(), "is not of type 'integer'"),
        (json.dumps({"template_id": 7, "environment": {"a": "b"}}).encode(), "is not of type 'string'"),
        (json.dumps({"template_id": 7, "debug": "yes"}).encode(), "is not of type 'boolean'"),
        (json.dumps({"environment": "{}"}).encode(), "template_id is required"),
        (json.dumps({"template_id": 99}).encode(), "template not found"),
        (json.dumps({"template_id": 7, "environment": "{oops"}).encode(), "environment is not JSON"),
        (json.dumps({"template_id": 7, "environment": "[1]"}).encode(), "not a JSON object"),
    ],
)
async def test_bad_start_bodies_answer_400(semaphore: SemaphoreEmulator, body: bytes, why: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{semaphore.url}/api/project/1/tasks",
            content=body,
            headers={"Authorization": f"Bearer {semaphore.token}", "Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert why in response.json()["error"]
    assert semaphore.tasks == {}


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "test-token", "Basic dGVzdA=="])
async def test_missing_or_bad_token_answers_401(
    semaphore: SemaphoreEmulator, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{semaphore.url}/api/project/1/tasks", json={"template_id": 7}, headers=headers
        )
    assert response.status_code == 401
    assert semaphore.tasks == {}


async def test_unknown_project_and_task_answer_404(semaphore: SemaphoreEmulator) -> None:
    headers = {"Authorization": f"Bearer {semaphore.token}"}
    async with httpx.AsyncClient(base_url=f"{semaphore.url}/api", headers=headers) as http:
        assert (await http.get("/project/5/tasks/1")).status_code == 404
        assert (await http.post("/project/5/tasks", json={"template_id": 7})).status_code == 404
        assert (await http.get("/project/1/tasks/77")).status_code == 404
        assert (await http.get("/project/1/tasks/77/output")).status_code == 404
        # a task of project 1 is not visible through project 2
        created = await http.post("/project/1/tasks", json={"template_id": 7})
        assert (await http.get(f"/project/2/tasks/{created.json()['id']}")).status_code == 404


def test_spec_rejects_what_the_emulator_rejects() -> None:
    # Guard against a schema helper that validates nothing.
    with pytest.raises(jsonschema.ValidationError):
        validate_against(definition_schema("Task"), {"id": "x"})
    with pytest.raises(jsonschema.ValidationError):
        validate_against(response_schema(f"{TASK}/output", "get", 200) or {}, [{"task_id": "x"}])

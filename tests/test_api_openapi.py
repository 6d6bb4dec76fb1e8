"""The OpenAPI document: every route, its schemas, the seed's example and each error response."""

from __future__ import annotations

import httpx

ROUTES = {
    "/ocpi/cpos": {"post"},
    "/ocpi/cpos/{cpo_id}/locations": {"get", "post"},
    "/ocpi/cpos/{cpo_id}/locations/{location_id}": {"get", "patch", "delete"},
    "/ocpi/cpos/{cpo_id}/locations/jobs/{job_id}": {"get", "delete"},
    "/ocpi/cpos/{cpo_id}/locations/jobs": {"get"},
    "/ocpi/cpos/{cpo_id}/locations/jobs/{job_id}/retry": {"post"},
    "/ocpi/cpos/{cpo_id}/webhook": {"put", "get", "delete"},
    "/ocpp/templates/locations": {"get"},
}


async def test_openapi_documents_every_route_and_error(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/openapi.json")).json()
    for path, methods in ROUTES.items():
        assert methods <= set(spec["paths"][path]), path
        for method in methods:
            responses = spec["paths"][path][method]["responses"]
            assert "401" in responses, (path, method)
            assert "application/problem+json" in responses["401"]["content"], (path, method)
    bulk = spec["paths"]["/ocpi/cpos/{cpo_id}/locations"]["post"]
    assert {"200", "202", "413", "422", "503"} <= set(bulk["responses"])  # 200: the dry run
    assert bulk["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/BulkCreateRequest")
    assert "dry_run" in {p["name"] for p in bulk["parameters"]}
    retry = spec["paths"]["/ocpi/cpos/{cpo_id}/locations/jobs/{job_id}/retry"]["post"]
    assert {"202", "404", "409", "422"} <= set(retry["responses"])
    example = spec["components"]["schemas"]["BulkCreateRequest"]["example"]["locations"][0]
    assert (example["name"], example["country"]) == ("Brussels Midi Hub", "BE")
    assert {"Problem", "LocationIn", "JobStatusOut", "LocationOut"} <= set(spec["components"]["schemas"])
    docs = await app_client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]

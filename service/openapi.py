"""The OpenAPI document at /docs.json: BentoML's, generated from the `@bentoml.api` methods,
made the project's own: its title and version, the real error answers of every route, the API
key as a bearer scheme (so Swagger's "Try it out" works with a key), and the Open Inference
Protocol routes, which are not BentoML methods.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "What was wrong."}},
    "required": ["error"],
}
API_ERRORS = {
    "400": "Malformed request: bad multipart, JSON or image file",
    "401": "Missing or wrong API key (when the server has one)",
    "404": "No such route, model or version",
    "405": "Method not allowed on this route",
    "413": "Body, image or batch over its limit",
    "415": "Wrong Content-Type",
    "422": "Well-formed but unusable: no digit, values out of range, wrong shape",
    "503": "Model not loaded yet; retry",
}
OPEN_INFERENCE_ROUTES: dict[str, dict[str, str]] = {
    "/v2": {"get": "Server metadata: name, version, extensions (binary_tensor_data)."},
    "/v2/health/live": {"get": 'Liveness: {"live": true}.'},
    "/v2/health/ready": {"get": 'Readiness: {"ready": true} once the model is loaded.'},
    "/v2/models/{model}": {"get": "Model metadata: versions, platform, inputs and outputs."},
    "/v2/models/{model}/ready": {"get": "Model readiness."},
    "/v2/models/{model}/infer": {"post": "Inference: JSON or binary tensors (model `mnist`)."},
    "/v2/models/{model}/versions/{version}": {"get": "Metadata of one version."},
    "/v2/models/{model}/versions/{version}/ready": {"get": "Readiness of one version."},
    "/v2/models/{model}/versions/{version}/infer": {"post": "Inference with one version."},
}


def package_version() -> str:
    try:
        return version("mnist-service")
    except PackageNotFoundError:
        return "unknown"


def error_responses(codes: list[str]) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {
        code: {"description": API_ERRORS[code], "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


def open_inference_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, operations in OPEN_INFERENCE_ROUTES.items():
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("model", "version")
            if "{" + name + "}" in path
        ]
        for method, summary in operations.items():
            codes = ["400", "401", "404", "413", "415", "422"] if method == "post" else ["404"]
            operation: dict[str, Any] = {
                "tags": ["Open Inference Protocol"],
                "summary": summary,
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}, **error_responses(codes)},
            }
            if method == "post":
                operation["requestBody"] = {
                    "description": "An inference request (JSON), or with the binary tensor "
                    "extension a JSON header of Inference-Header-Content-Length bytes "
                    "followed by the raw tensors.",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "application/octet-stream": {"schema": {"type": "string"}},
                    },
                }
            paths.setdefault(path, {})[method] = operation
    return paths


def openapi_document(bentoml_spec: dict[str, Any], api_paths: frozenset[str]) -> dict[str, Any]:
    """BentoML's generated document with this project's title, errors, security and routes."""
    document = dict(bentoml_spec)
    document["info"] = {
        "title": "MNIST digit classifier",
        "version": package_version(),
        "description": "A 784-256-10 MLP trained on MNIST, served with BentoML. Every error "
        'is a JSON object `{"error": "..."}`. With `API_KEY` set, every route but health, '
        "metrics, docs and the /ui page needs `Authorization: Bearer <key>`.",
    }
    paths = dict(document.get("paths", {}))
    for path, operations in paths.items():
        if path not in api_paths:
            continue
        for operation in operations.values():
            codes = ["400", "401", "405", "413", "415", "422", "503"]
            if path == "/model_info":
                codes = ["401", "405"]
                operation.pop("requestBody", None)
            kept = operation.get("responses", {}).items()
            responses = {str(k): v for k, v in kept if int(k) < 400}
            operation["responses"] = {**responses, **error_responses(codes)}
    if "/model_info" in paths:
        paths["/model_info"]["get"] = dict(paths["/model_info"].get("post", {}))
    paths.update(open_inference_paths())
    document["paths"] = paths
    components = dict(document.get("components", {}))
    components["schemas"] = {**components.get("schemas", {}), "Error": ERROR_SCHEMA}
    components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    document["components"] = components
    document["security"] = [{}, {"apiKey": []}]  # optional: only a server with API_KEY asks
    return document

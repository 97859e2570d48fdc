"""The Open Inference Protocol against the real `bentoml serve`, with the clients people use."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

N = 1000


@pytest.fixture(scope="module")
def triton_client(server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def test_pixels(mnist_test) -> np.ndarray:
    images, _ = mnist_test
    return (images[:N].reshape(N, 784) * 255).round().to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def offline_probabilities(offline_model, test_pixels) -> np.ndarray:
    with torch.inference_mode():
        inputs = torch.from_numpy(test_pixels.astype(np.float32) / 255)
        return offline_model(inputs).softmax(dim=1).numpy()


def test_health_and_metadata(triton_client, server):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("mnist")
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]
    metadata = triton_client.get_model_metadata("mnist")
    assert metadata["inputs"][0]["shape"] == [-1, 784]
    assert {o["name"] for o in metadata["outputs"]} == {"probabilities", "digit", "confidence"}
    version = metadata["versions"][0]
    assert triton_client.is_model_ready("mnist", model_version=version)
    info = httpx.get(f"{server.url}/model_info").json()
    assert info["sha256"].startswith(version)  # a file-served model: its sha256's first digits


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
def test_infer_matches_the_offline_model(
    triton_client, test_pixels, offline_probabilities, binary, datatype
):
    data = test_pixels if datatype == "UINT8" else test_pixels.astype(np.float32) / 255
    tensor = triton.InferInput("images", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "digit")
    ]
    result = triton_client.infer("mnist", [tensor], outputs=outputs, request_id="r1")
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), offline_probabilities, rtol=1e-6, atol=1e-7
    )
    assert (result.as_numpy("digit") == offline_probabilities.argmax(axis=1)).all()
    assert result.get_response()["id"] == "r1"


def test_infer_with_png_files(triton_client, mnist_test_pngs):
    files = [png for png, _ in mnist_test_pngs[:50]]
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_), binary_data=True)
    result = triton_client.infer("mnist", [tensor])
    assert result.as_numpy("digit").tolist() == [digit for _, digit in mnist_test_pngs[:50]]


def test_bad_requests_raise_with_the_servers_message(triton_client):
    tensor = triton.InferInput("images", [1, 784], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 784), dtype=np.uint8))
    with pytest.raises(InferenceServerException, match="serves model 'mnist'"):
        triton_client.infer("resnet", [tensor])
    broken = triton.InferInput("images", [1], "BYTES")
    broken.set_data_from_numpy(np.array([b"not a png"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="element 0"):
        triton_client.infer("mnist", [broken])


def test_kserve_rest_client(server, test_pixels, offline_probabilities):
    import asyncio

    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            ready = await client.is_model_ready(server.url, "mnist")
            tensor = InferInput("images", [10, 784], "UINT8")
            tensor.set_data_from_numpy(test_pixels[:10], binary_data=False)
            request = InferRequest(model_name="mnist", infer_inputs=[tensor])
            response = await client.infer(server.url, request, model_name="mnist")
        finally:
            await client.close()
        return ready, response

    ready, response = asyncio.run(run())
    assert ready
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    assert outputs["digit"].tolist() == offline_probabilities[:10].argmax(axis=1).tolist()


def test_routes_are_in_the_openapi_document(server):
    paths = httpx.get(f"{server.url}/docs.json").json()["paths"]
    for route in ("/v2", "/v2/health/ready", "/v2/models/{model}/infer"):
        assert route in paths


def test_live_answers_match_the_protocols_own_models(server, test_pixels):
    from open_inference.openapi.types import (
        InferenceErrorResponse,
        InferenceResponse,
        MetadataModelResponse,
        MetadataServerResponse,
    )

    MetadataServerResponse.parse_obj(httpx.get(f"{server.url}/v2").json())
    MetadataModelResponse.parse_obj(httpx.get(f"{server.url}/v2/models/mnist").json())
    request = {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": [2, 784],
                "data": test_pixels[:2].ravel().tolist(),
            }
        ]
    }
    answer = httpx.post(f"{server.url}/v2/models/mnist/infer", json=request)
    assert answer.status_code == 200
    InferenceResponse.parse_obj(answer.json())
    error = httpx.post(f"{server.url}/v2/models/nope/infer", json=request)
    assert error.status_code == 404
    InferenceErrorResponse.parse_obj(error.json())

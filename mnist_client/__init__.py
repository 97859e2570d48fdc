"""A small Python client and CLI (`mnist-predict`) for the MNIST digit service.

    from mnist_client import MnistClient

    with MnistClient("http://127.0.0.1:3000", api_key="s3cret") as client:
        print(client.predict_image("samples/digit.png").digit)

Depends on httpx only (never torch), so it installs and imports quickly.
"""

from mnist_client.client import MnistClient
from mnist_client.errors import MnistClientError
from mnist_client.results import BulkPrediction, Prediction

__all__ = ["BulkPrediction", "MnistClient", "MnistClientError", "Prediction"]

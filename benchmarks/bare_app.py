"""The ceiling for Python on this box: the same decode + forward as /predict_image, no framework.

    MODEL_PATH=model.pt uvicorn benchmarks.bare_app:app --workers 2 --loop uvloop --http httptools

One multipart PNG in field `image` -> {"digit", "confidence", "probabilities", "uncertain"} (the
service's own `Classifier.outputs` and `prediction`); no batching, no limits, no auth, no
metrics: only what the service must do anyway, to measure against.
"""

import json
import os

import torch
from python_multipart.multipart import parse_options_header

from service.inference import Classifier, ModelSource, prediction
from service.preprocess import preprocess_image_bytes

torch.set_num_threads(1)
classifier = Classifier(ModelSource(os.environ["MODEL_PATH"], None))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    boundary = parse_options_header(dict(scope["headers"])[b"content-type"])[1][b"boundary"]
    part = body.split(b"--" + boundary)[1]
    image = part[part.index(b"\r\n\r\n") + 4 : -2]
    answer = prediction(classifier.outputs(preprocess_image_bytes(image).reshape(1, 784))[0])
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

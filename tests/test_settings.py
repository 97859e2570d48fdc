"""Service settings, in process: a bad value is refused at start with one line naming the
variable (tests/test_faults.py checks that `bentoml serve` itself stops on one)."""

from __future__ import annotations

import os

import pytest

from service.settings import load_settings

BAD_SETTINGS = {
    "MNIST_WORKERS": "abc",
    "MNIST_MAX_BATCH_SIZE": "0",
    "MNIST_BATCHING": "maybe",
    "MNIST_MAX_LATENCY_MS": "-1",
    "MNIST_MAX_UPLOAD_BYTES": "10MB",
    "API_KEY": "",
    "MNIST_API_KEY": " ",
    "MODEL_PATH": "",
    "MNIST_MODEL_TAG": "mnist-mlp",
}


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch) -> None:
    for name in os.environ:
        if name.startswith("MNIST_") or name in ("MODEL_PATH", "API_KEY"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("variable", "value"), BAD_SETTINGS.items())
def test_a_bad_setting_is_one_line_naming_it(variable, value, monkeypatch):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_info:
        load_settings()
    message = str(exit_info.value.code)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"error: invalid service settings: {variable}: "), message


def test_no_settings_means_the_defaults():
    settings = load_settings()
    assert settings.model_path is None and settings.api_key is None


def test_the_api_key_can_come_from_a_secret_file(tmp_path, monkeypatch):
    from service.settings import load_settings

    secret = tmp_path / "api_key"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("API_KEY_FILE", str(secret))
    assert load_settings().api_key.get_secret_value() == "s3cret"
    monkeypatch.setenv("API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="API_KEY_FILE: cannot read"):
        load_settings()


def test_an_empty_model_tag_is_none_as_the_docker_image_sets_it(monkeypatch):
    monkeypatch.setenv("MNIST_MODEL_TAG", "")
    assert load_settings().model_tag is None
    monkeypatch.setenv("MNIST_MODEL_TAG", "mnist-mlp:k2bpv6qz4wm5ccdq")
    assert load_settings().model_tag == "mnist-mlp:k2bpv6qz4wm5ccdq"


def test_the_pixel_limit_default_is_the_decoders_own():
    """settings writes the decoder's limit out (to keep PIL out of the supervisor): they agree."""
    from service.decode_policy import MAX_IMAGE_PIXELS
    from service.settings import ServiceSettings

    assert ServiceSettings().max_image_pixels == MAX_IMAGE_PIXELS

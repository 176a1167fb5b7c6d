"""Tests for rsseg.devices on the machine's real torch (CPU-only here)."""

from __future__ import annotations

import pytest
import torch

from rsseg.devices import available_devices, resolve_device
from rsseg.errors import DeviceError, RssegError

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = torch.backends.mps.is_available()


def test_cpu_always_resolves():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    assert available_devices()[0] == "cpu"


def test_available_devices_resolve_to_themselves():
    for device in available_devices():
        assert resolve_device(device) == device


@pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="a GPU is present: auto picks it instead of cpu")
def test_auto_resolves_to_cpu_without_gpu():
    assert resolve_device() == "cpu"
    assert resolve_device("auto") == "cpu"
    assert available_devices() == ["cpu"]


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")
def test_auto_prefers_cuda():
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present, so 'cuda' is valid")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_gpu_raises(name):
    with pytest.raises(DeviceError) as err:
        resolve_device(name)
    message = str(err.value)
    assert "\n" not in message
    assert repr(name) in message and torch.__version__ in message
    assert "no CUDA GPU" in message and message.endswith("available: cpu" + (", mps" if HAS_MPS else ""))


def test_cuda_index_out_of_range_raises():
    with pytest.raises(DeviceError, match="cuda:99"):
        resolve_device("cuda:99")


@pytest.mark.skipif(HAS_MPS, reason="MPS is available on this machine")
def test_mps_without_apple_gpu_raises():
    with pytest.raises(DeviceError, match="'mps' requested"):
        resolve_device("mps")


@pytest.mark.parametrize("name", ["gpu", "", "tpu", "cuda:", "cuda:x", "cuda:-1", "cuda0", "cpu:0", "meta"])
def test_junk_names_raise_with_choices(name):
    with pytest.raises(DeviceError) as err:
        resolve_device(name)
    assert isinstance(err.value, RssegError)
    assert "valid choices: auto, cpu, cuda, cuda:N, mps" in str(err.value)

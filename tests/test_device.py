"""Device set-up: TF32 off on CUDA unless allowed, recorded; checked without a GPU."""

import pytest
import torch

from marginlab import device
from marginlab.errors import MarginlabError


@pytest.fixture
def flags():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             device._allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    device._allow_tf32 = saved[2]


def test_cuda_setup_turns_tf32_off_and_on_when_allowed(monkeypatch, flags):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    torch.backends.cuda.matmul.allow_tf32 = True  # what a user or a library may have set
    torch.backends.cudnn.allow_tf32 = True  # torch's default for convolutions
    device._allow_tf32 = None
    assert device.configure("cuda") == {"device": "cuda", "tf32": False}
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is False
    assert device.tf32_enabled("cuda:0") is False
    assert device.configure("cuda:0", allow_tf32=True)["tf32"] is True
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    # A later set-up without a choice keeps the explicit one (one process, one choice).
    assert device.configure("cuda")["tf32"] is True
    assert device.configure("cuda", allow_tf32=False)["tf32"] is False
    assert not torch.backends.cudnn.allow_tf32


def test_cpu_never_reports_tf32_and_bad_devices_are_one_line_errors(monkeypatch, flags):
    assert device.configure("cpu", allow_tf32=True) == {"device": "cpu", "tf32": False}
    assert device.tf32_enabled("cpu") is False
    with pytest.raises(MarginlabError, match="unknown torch device"):
        device.configure("banana")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MarginlabError, match="CUDA is not available"):
        device.configure("cuda")

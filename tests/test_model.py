"""The U-Net and its export wrapper: shapes, probabilities, state-dict keys, TorchScript, ONNX."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig
from trainer.errors import InputError
from trainer.model import UNet, architecture_of, build_model, size_multiple

ARCH = {"name": "unet", "in_channels": 3, "base_channels": 4, "depth": 2}


def test_unet_returns_one_logit_channel_at_input_size():
    net = UNet(3, 4, 3).eval()
    logits = net(torch.randn(2, 3, 48, 64))
    assert logits.shape == (2, 1, 48, 64)


def test_width_and_depth_change_the_network():
    small, wide, deep = UNet(3, 4, 2), UNet(3, 8, 2), UNet(3, 4, 3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(wide) and count(small) < count(deep)
    assert len(deep.down) == 4 and len(deep.up) == 3
    assert deep.down[3].block[0].out_channels == 32  # 4 * 2**3 at the bottom


def test_build_model_returns_probabilities_and_documented_keys():
    model = build_model(ARCH).eval()
    x = torch.randn(2, 3, 32, 32)
    probability = model(x)
    assert probability.shape == (2, 1, 32, 32)
    assert float(probability.min()) >= 0 and float(probability.max()) <= 1
    torch.testing.assert_close(probability, torch.sigmoid(model.net(x)))
    keys = list(model.state_dict())
    assert all(k.startswith("net.") for k in keys)
    assert "net.down.0.block.0.weight" in keys and "net.head.weight" in keys
    # A state dict round-trips into a freshly built model of the same architecture.
    other = build_model(ARCH).eval()
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(x), probability)


def test_architecture_of_a_train_config(tmp_path):
    config = TrainConfig(data=tmp_path, out=tmp_path / "run", base_channels=12, depth=3)
    assert architecture_of(config) == {"name": "unet", "in_channels": 3, "base_channels": 12, "depth": 3}
    assert size_multiple(architecture_of(config)) == 8


def test_unknown_or_incomplete_architecture_is_refused():
    with pytest.raises(InputError, match="unknown architecture 'resnet'"):
        build_model({"name": "resnet", "base_channels": 4, "depth": 2})
    with pytest.raises(InputError, match="base_channels"):
        build_model({"name": "unet", "depth": 2})


def test_torchscript_script_and_trace_match_eager():
    model = build_model(ARCH).eval()
    x = torch.randn(1, 3, 32, 32)
    expected = model(x)
    for compiled in (torch.jit.script(model), torch.jit.trace(model, x)):
        buffer = io.BytesIO()
        torch.jit.save(compiled, buffer)
        buffer.seek(0)
        torch.testing.assert_close(torch.jit.load(buffer)(x), expected)


def test_onnx_opset17_export_runs_in_onnxruntime_with_dynamic_batch():
    import onnxruntime as ort

    model = build_model(ARCH).eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), buffer, opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)
    (out,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-5)

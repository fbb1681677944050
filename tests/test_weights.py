"""The neutral weights file: strict loading and clear errors for bad files."""

import json
import struct

import numpy as np
import pytest

from resnet_port import weights as W
from resnet_port.spec import get_spec


def _tensors(arch="tiny", seed=0):
    """Random tensors of ``arch``; BatchNorm variances positive, as every file must hold them."""
    rng = np.random.default_rng(seed)
    t = {k: rng.standard_normal(s).astype(np.float32) for k, s in get_spec(arch).parameters().items()}
    return {k: np.abs(v) + np.float32(0.1) if W.is_variance(k) else v for k, v in t.items()}


def test_save_load_exact(tmp_path):
    t = _tensors()
    path = W.save(tmp_path / "w.safetensors", t, "tiny", producer="test")
    w = W.load(path, "tiny")
    assert w.arch == "tiny" and w.metadata["producer"] == "test" and w.metadata["format_version"] == "1"
    assert set(w.tensors) == set(t)
    for k in t:
        assert np.array_equal(w.tensors[k], t[k]) and w.tensors[k].dtype == np.float32


def test_missing_unexpected_misshaped_are_named(tmp_path):
    t = _tensors()
    del t["layer2.0.shortcut.bn.gamma"]
    t["layer9.0.conv1.kernel"] = np.zeros(3, np.float32)
    t["fc.kernel"] = np.zeros((32, 10), np.float32)
    with pytest.raises(W.WeightsError) as e:
        W.save(tmp_path / "w.safetensors", t, "tiny")
    msg = str(e.value)
    assert "1 missing (layer2.0.shortcut.bn.gamma)" in msg
    assert "1 unexpected (layer9.0.conv1.kernel)" in msg
    assert "fc.kernel (32, 100) expected, (32, 10) found" in msg
    assert "\n" not in msg  # one line, however many keys differ
    assert not (tmp_path / "w.safetensors").exists()


def test_wrong_architecture(tmp_path):
    path = W.save(tmp_path / "w.safetensors", _tensors(), "tiny")
    with pytest.raises(W.WeightsError, match="holds weights for architecture 'tiny', not 'resnet18'.*--arch tiny"):
        W.load(path, "resnet18")


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "not a resnet-port weights file"),
        (b"hello world, not weights at all", "not a resnet-port weights file"),
        (b"PK\x03\x04" + bytes(200), "not a resnet-port weights file"),
    ],
)
def test_not_a_weights_file(tmp_path, content, match):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(W.WeightsError, match=match):
        W.load(p)


def test_foreign_safetensors_file(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(p))
    with pytest.raises(W.WeightsError, match="safetensors file but not a resnet-port weights file"):
        W.load(p)


def test_truncated_file(tmp_path):
    path = W.save(tmp_path / "w.safetensors", _tensors(), "tiny")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(W.WeightsError, match="truncated"):
        W.load(path, "tiny")


def test_missing_file(tmp_path):
    with pytest.raises(W.WeightsError, match="not found"):
        W.load(tmp_path / "nope.safetensors")


def test_header_is_what_the_docs_say(tmp_path):
    path = W.save(tmp_path / "w.safetensors", _tensors(), "tiny")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert header["__metadata__"]["format"] == "resnet-port-weights"
    assert header["stem.conv.kernel"]["shape"] == [3, 3, 3, 8] and header["stem.conv.kernel"]["dtype"] == "F32"


def test_keras_and_torch_strict_import(tmp_path):
    """Each framework's importer refuses a mis-shaped tensor before touching the model."""
    from tf_impl import weights as tfw
    from tf_impl.model import build_model as tf_build
    from torch_impl import weights as tw
    from torch_impl.model import build_model as torch_build

    t = _tensors()
    t["layer3.0.conv2.kernel"] = t["layer3.0.conv2.kernel"][..., :8]
    with pytest.raises(W.WeightsError, match=r"layer3.0.conv2.kernel \(3, 3, 16, 16\) expected, \(3, 3, 16, 8\) found"):
        tw.from_numpy(torch_build("tiny"), t)
    with pytest.raises(W.WeightsError, match="layer3.0.conv2.kernel"):
        tfw.from_numpy(tf_build("tiny"), "tiny", t)

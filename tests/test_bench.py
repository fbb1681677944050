"""The benchmark runs end to end (tiny configuration) and counts FLOPs right.

It asserts no speed: performance figures come from `python -m resnet_port.bench`.
"""

import json
import statistics
import subprocess
import sys

from resnet_port.bench import flops_per_image
from resnet_port.spec import get_spec


def independent_tiny_flops() -> int:
    """Counted by hand from RECIPE.md's layer rules for the tiny variant (32x32 input).

    conv FLOPs = 2 * H_out * W_out * C_out * k * k * C_in + H_out * W_out * C_out (bias);
    dense = 2 * in * out + out.
    """
    def conv(h, c_out, k, c_in):
        return 2 * h * h * c_out * k * k * c_in + h * h * c_out

    total = conv(30, 8, 3, 3)  # stem, valid: 32 -> 30
    total += conv(30, 8, 3, 8) * 2  # layer1.0: two 3x3 convs, 8 -> 8, 30x30
    total += conv(15, 16, 3, 8) + conv(15, 16, 3, 16) + conv(15, 16, 1, 8)  # layer2.0 + shortcut, 30 -> 15
    total += conv(8, 16, 3, 16) + conv(8, 16, 3, 16) + conv(8, 16, 1, 16)  # layer3.0, 15 -> 8
    total += conv(4, 32, 3, 16) + conv(4, 32, 3, 32) + conv(4, 32, 1, 16)  # layer4.0, 8 -> 4
    total += 2 * 32 * 100 + 100  # fc
    return total


def test_flops_from_spec_match_an_independent_count():
    assert get_spec("tiny").forward_flops() == independent_tiny_flops()
    f = flops_per_image("tiny")
    assert f["train"] == 3 * f["inference"]
    # the seed's ResNet18: ~1.04 GFLOPs forward, ~3.1 per training image (RECIPE.md says ~3.1)
    assert 3.0e9 < flops_per_image("resnet18")["train"] < 3.2e9


def test_bench_end_to_end_tiny(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run(
        [sys.executable, "-m", "resnet_port.bench", "--arch", "tiny", "--batch-size", "8", "--warmup", "1", "--windows", "2", "--steps", "2", "--json", str(out),
         "--cli", "--cli-images", "64", "--cli-epochs", "2", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["arch"] == "tiny" and report["batch_size"] == 8 and report["precision"] == "fp32"
    for fw in ("tf", "torch"):
        r = report["results"][fw]
        for key in ("train_aug", "train", "inference", "augment", "matmul_gflops", "peak_memory_mb"):
            assert isinstance(r[key], (int, float)) and r[key] > 0, (fw, key, r.get(key))
            # two rounds, frameworks alternating: the figure is the median of both, each kept
            assert len(r[f"{key}_rounds"]) == 2 and r[key] == statistics.median(r[f"{key}_rounds"])
    assert report["ceiling_gflops"] > 0 and report["flops_per_image"]["train"] == 3 * get_spec("tiny").forward_flops()
    for key in ("train_aug", "train", "inference", "augment"):
        row = report["rows"][key]
        assert row["keras"] > 0 and row["pytorch"] > 0 and row["ratio"] > 0
    for key in ("train_aug", "train", "inference"):
        assert 0 < report["rows"][key]["pytorch_fraction_of_ceiling"] and 0 < report["rows"][key]["keras_fraction_of_ceiling"]
    assert report["keras_augment_over_train"] > 0 and report["pytorch_augment_over_train"] > 0
    assert "PT/Keras" in p.stdout and "augmentation alone" in p.stdout and "median of 2 round(s)" in p.stdout
    # --cli: each training CLI run as a user runs it, its second epoch timed by metrics.jsonl, next to its step
    cli = report["cli"]
    assert (cli["images"], cli["epochs"], cli["rounds"]) == (64, 2, 2)
    for fw in ("tf", "torch"):
        r = cli["results"][fw]
        assert not r.get("errors"), r.get("errors")
        assert len(r["step"]) == 2 and len(r["epoch"]) == 2 and len(r["train"]) == 2  # two rounds, epochs 2..2
        assert r["step_median"] > 0 and r["epoch_median"] > 0 and r["epoch_over_step"] == r["epoch_median"] / r["step_median"]
    assert "CLI vs its own step" in p.stdout and "whole epoch / step" in p.stdout


def test_bench_bad_input():
    p = subprocess.run([sys.executable, "-m", "resnet_port.bench", "--frameworks", "jax"], capture_output=True, text=True)
    assert p.returncode == 2 and "--frameworks takes tf and/or torch" in p.stderr

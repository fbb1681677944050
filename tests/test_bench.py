"""The benchmark runs end to end (tiny configuration) and counts FLOPs right.

It asserts no speed: performance figures come from `python -m resnet_port.bench`.
"""

import json
import subprocess
import sys

from resnet_port.bench import flops_per_image
from resnet_port.spec import get_spec


def independent_tiny_flops() -> int:
    """Counted by hand from the post's layer rules for the tiny variant (32x32 input).

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
    # the seed's ResNet18: ~1.04 GFLOPs forward, ~3.1 per training image (the post's layer rules give ~3.1)
    assert 3.0e9 < flops_per_image("resnet18")["train"] < 3.2e9


def test_bench_end_to_end_on_a_family_member(tmp_path):
    """bench and its --cli part on tiny-d-torch: ResNet-D's twin (deep stem, bottlenecks, average-pooled
    shortcuts), whose FLOPs the spec counts from its layers like any other variant's."""
    out = tmp_path / "bench.json"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnet_port.bench",
            "--arch",
            "tiny-d-torch",
            "--batch-size",
            "8",
            "--warmup",
            "1",
            "--windows",
            "2",
            "--steps",
            "2",
            "--json",
            str(out),
            "--cli",
            "--cli-images",
            "64",
            "--cli-epochs",
            "2",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["arch"] == "tiny-d-torch" and report["batch_size"] == 8 and report["precision"] == "fp32"
    for fw in ("tf", "torch"):
        r = report["results"][fw]
        for key in ("train_aug", "train", "inference", "augment", "matmul_gflops", "peak_memory_mb"):
            assert isinstance(r[key], (int, float)) and r[key] > 0, (fw, key, r.get(key))
            assert r[f"{key}_rounds"] == [r[key]]  # one round (run_rounds is tested below)
    flops = get_spec("tiny-d-torch").forward_flops()
    assert report["ceiling_gflops"] > 0 and report["flops_per_image"]["train"] == 3 * flops
    for key in ("train_aug", "train", "inference", "augment"):
        row = report["rows"][key]
        assert row["keras"] > 0 and row["pytorch"] > 0 and row["ratio"] > 0
    for key in ("train_aug", "train", "inference"):
        assert (
            0 < report["rows"][key]["pytorch_fraction_of_ceiling"]
            and 0 < report["rows"][key]["keras_fraction_of_ceiling"]
        )
    assert report["keras_augment_over_train"] > 0 and report["pytorch_augment_over_train"] > 0
    assert "PT/Keras" in p.stdout and "augmentation alone" in p.stdout and "median of 1 round(s)" in p.stdout
    # --cli: each training CLI run as a user runs it, its second epoch timed by metrics.jsonl, next to its step
    cli = report["cli"]
    assert (cli["images"], cli["epochs"], cli["rounds"]) == (64, 2, 1)
    for fw in ("tf", "torch"):
        r = cli["results"][fw]
        assert not r.get("errors"), r.get("errors")
        assert len(r["step"]) == 1 and len(r["epoch"]) == 1 and len(r["train"]) == 1  # one round, epochs 2..2
        assert (
            r["step_median"] > 0
            and r["epoch_median"] > 0
            and r["epoch_over_step"] == r["epoch_median"] / r["step_median"]
        )
    assert "CLI vs its own step" in p.stdout and "whole epoch / step" in p.stdout


def test_bench_bad_input():
    p = subprocess.run(
        [sys.executable, "-m", "resnet_port.bench", "--frameworks", "jax"], capture_output=True, text=True
    )
    assert p.returncode == 2 and "--frameworks takes tf and/or torch" in p.stderr


def test_rounds_alternate_the_frameworks_and_report_the_median_and_spread(monkeypatch):
    """The default bench: several rounds, the frameworks' order alternating, each figure the median with its range."""
    from resnet_port import bench

    calls, rates = [], {"tf": iter([10.0, 50.0, 20.0]), "torch": iter([30.0, 31.0, 5.0])}

    def fake(arch, batch_size, precision, frameworks, *args, **kw):
        (fw,) = frameworks
        calls.append(fw)
        v = next(rates[fw])
        return {fw: {k: v for k in bench.FIGURES}}

    monkeypatch.setattr(bench, "run_bench", fake)
    res = bench.run_rounds("tiny", 8, "fp32", ["tf", "torch"], 1, 1, 1, {}, rounds=3)
    assert calls == ["tf", "torch", "torch", "tf", "tf", "torch"]
    assert (
        res["tf"]["train_aug"] == 20.0
        and res["tf"]["train_aug_rounds"] == [10.0, 50.0, 20.0]
        and res["tf"]["rounds"] == 3
    )
    assert res["torch"]["train_aug"] == 30.0 and bench.spread(res["torch"], "train_aug") == " (5.0-31.0)"
    text, _ = bench.table(res, "tiny")
    assert "median of 3 round(s)" in text and "20.0 (10.0-50.0)" in text

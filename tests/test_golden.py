"""The spec and the neutral files are held to what the code wrote before blocks became data.

``fixtures/golden/specs.json`` was written by commit 90d0fb2 (the last with a hard-coded
BasicBlock): every registered variant's layers (name, kind, output shape at 32 and 224,
parameters, FLOPs) and every layer spec's fields.  ``fixtures/golden/<tiny>.<fw>.safetensors``
are the neutral weights files each framework wrote from fixed tensors (``conformance.fixed_tensors``) with that code (metadata
sorted, as files are written now).  Files written before the change load after it, and files
written after it are bit-identical.
"""

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from resnet_port import forkserver, frameworks
from resnet_port.spec import get_spec

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
SPECS = json.loads((GOLDEN / "specs.json").read_text())
TINY = sorted({p.name.split(".")[0] for p in GOLDEN.glob("*.safetensors")})


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_unchanged(name):
    spec, want = get_spec(name), SPECS[name]
    got = [
        [l.name, l.kind, list(l.output_shape), {k: list(v) for k, v in l.params.items()}, l.flops]
        for l in spec.layers()
    ]
    assert got == want["layers"]
    assert [[l.name, list(l.output_shape)] for l in spec.layers((224, 224, 3))] == want["layers_224"]
    assert list(spec.parameters()) == want["parameters"]
    assert [spec.count_parameters().trainable, spec.count_parameters().non_trainable] == want["counts"]
    layers = {l.name: dataclasses.asdict(l) for l in spec.layer_specs()}
    assert set(layers) == set(want["specs"])
    for layer, fields in want["specs"].items():
        assert {k: layers[layer][k] for k in fields} == fields, layer


@pytest.mark.parametrize("fw", [f.key for f in frameworks.ALL])
def test_weights_files_bit_identical(fw, tmp_path):
    """Each framework's model, given the golden tensors, writes the golden file byte for byte
    (one process per framework), and reads the golden file back to the same tensors."""
    code = (
        "import sys, json\nfrom pathlib import Path\nfrom resnet_port import backends\n"
        "from resnet_port.conformance import fixed_tensors\nfrom resnet_port.spec import get_spec\n"
        f"GOLDEN = Path({str(GOLDEN)!r})\n"
        f"b = backends.get({fw!r})\n"
        "for name in sys.argv[2:]:\n"
        "    spec = get_spec(name); m = b.build(spec); b.from_numpy(m, spec, fixed_tensors(spec))\n"
        "    b.save_weights(m, spec, Path(sys.argv[1]) / f'{name}.safetensors')\n"
        "    m2 = b.build(spec); b.load_weights(m2, spec, GOLDEN / f'{name}.{b.key}.safetensors')\n"
        "    got = b.to_numpy(m2, spec)\n"
        "    assert all((got[k] == v).all() for k, v in fixed_tensors(spec).items()), name\n"
    )
    root = Path(__file__).parent.parent
    p = forkserver.run(
        [sys.executable, "-c", code, str(tmp_path), *TINY],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        framework=fw,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for name in TINY:
        assert (tmp_path / f"{name}.safetensors").read_bytes() == (GOLDEN / f"{name}.{fw}.safetensors").read_bytes(), (
            name
        )

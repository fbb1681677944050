"""What both ONNX formats check in their graph: TF's one-sided 'same' pads survived, and every pad is a
constant.  ``onnx`` is imported only inside the functions."""

from __future__ import annotations

from pathlib import Path

from resnet_port.spec import ResNetSpec, same_padding


def asymmetric_same_convs(spec: ResNetSpec) -> list[str]:
    """The spec's convolutions whose TF 'same' padding is uneven at the spec's input size (one more after)."""
    shape, inputs = spec.input_shape, {}
    for layer in spec.layers():
        inputs[layer.name] = shape
        shape = layer.output_shape
    return [
        c.name
        for c in spec.convolutions()
        if c.padding == "same" and len(set(same_padding(inputs[c.name][0], c.kernel_size, c.stride))) > 1
    ]


def onnx_asymmetric_convs(path: Path) -> int:
    """How many Conv nodes of an ONNX graph pad unevenly: by their own ``pads``, by SAME_UPPER on an
    input that needs an odd total, or through a Pad node right before them."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*g.value_info, *g.input]}
    count = 0
    for n in g.node:
        if n.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        strides = list(attrs.get("strides", [1] * max(len(kernel), 2)))
        pads = list(attrs.get("pads", []))
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        uneven = bool(pads) and pads[: len(pads) // 2] != pads[len(pads) // 2 :]
        if auto in ("SAME_UPPER", "SAME_LOWER") and kernel:
            dims = shapes.get(n.input[0], [])[2:]
            uneven |= any(d and max((-(-d // s) - 1) * s + k - d, 0) % 2 for d, s, k in zip(dims, strides, kernel))
        src = producers.get(n.input[0])
        if src is not None and src.op_type == "Pad" and len(src.input) > 1 and src.input[1] in consts:
            p = [int(v) for v in consts[src.input[1]].ravel()]
            uneven |= p[: len(p) // 2] != p[len(p) // 2 :]
        count += uneven
    return count


def runtime_pads(path: Path) -> list[str]:
    """The Pad nodes whose amounts are computed at run time (Shape/Gather/Slice chains, not constants):
    with the input size fixed they are constants, and converters such as onnx2tf fail on the computed ones."""
    import onnx

    g = onnx.load(str(path)).graph
    consts = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    return [
        n.name or n.output[0] for n in g.node if n.op_type == "Pad" and len(n.input) > 1 and n.input[1] not in consts
    ]


def same_padding_check(path: Path, spec: ResNetSpec) -> tuple[str, bool]:
    """(what the ONNX graph's uneven 'same' pads are, whether there are exactly as many as the spec has
    and every pad is a constant): an exporter that made TF's one-sided pads symmetric computes another
    network; one that computes pads at run time is one converters cannot read."""
    expected = len(asymmetric_same_convs(spec))
    found = onnx_asymmetric_convs(path)
    computed = runtime_pads(path)
    text = f"{found} of {expected} uneven 'same' convs" + (f", {len(computed)} run-time pads" if computed else "")
    return text, found == expected and not computed


def check(row: dict, res: dict, path, spec: ResNetSpec, size, hw: tuple[int, int]) -> None:
    """The graph's pads (:func:`same_padding_check`) and its input's named (dynamic) dimensions: the batch
    always, height and width (at ``hw``) where the file takes any size."""
    row["same_padding"], padding_ok = same_padding_check(Path(path), spec)
    row["ok"] &= padding_ok
    shape = [str(d) for d in res["input_shape"]]
    dynamic = [i for i, d in enumerate(shape) if not d.isdigit()]
    row["ok"] &= 0 in dynamic and (size is not None or set(hw) <= set(dynamic))
    row["batch_dim"] = shape[0]


def reload(path: str, nchw: bool):
    """An ONNX file in onnxruntime: ``(run, facts)`` with the input's shape as its graph says."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]

    def run(x):
        return sess.run(None, {inp.name: np.ascontiguousarray(x.transpose(0, 3, 1, 2) if nchw else x)})[0]

    return run, {"input_shape": np.array([str(d) for d in inp.shape])}

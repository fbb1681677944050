"""A block type this project does not have, added through the spec module and its registry alone.

Loaded with ``RESNET_PORT_PLUGINS=resnet_port_triple`` (and this folder on ``PYTHONPATH``), as a
user would add their own block: three 3x3 convolutions, each followed by a BatchNorm, ReLUs
between them, a projection where the stride or the width changes (with an average pool in it
where the stride is 2, as ResNet-D's).  Nothing in ``tf_impl`` or
``torch_impl`` knows of it; the tests prove both realize it, conform and train alike.
"""

from resnet_port import spec as S


def shortcut(f: S.Layers, prefix: str, cin: int, width: int, stride: int) -> tuple:
    """ResNet-D's projection where the stride is 2 (a 2x2 average pool, PyTorch's ceil_mode=True and
    count_include_pad=False, then a stride-1 1x1 conv and BatchNorm); a plain projection elsewhere."""
    if stride == 1:
        return f.projection(prefix, cin, width, 1)
    pool = S.AvgPoolSpec(f"{prefix}.shortcut.pool", 2, stride, 0, ceil_mode=True)
    return (pool, *f.projection(prefix, cin, width, 1))


def triple_block(f: S.Layers, prefix: str, cin: int, width: int, stride: int, project: bool) -> S.BlockSpec:
    residual = []
    ch = cin
    for i in (1, 2, 3):
        residual += [f.conv(f"{prefix}.conv{i}", ch, width, 3, stride if i == 1 else 1), f.bn(f"{prefix}.bn{i}", width)]
        if i < 3:
            residual.append(f.relu(f"{prefix}.relu{i}"))
        ch = width
    return S.BlockSpec(
        prefix,
        residual=tuple(residual),
        add=f.add(f"{prefix}.add"),
        shortcut=shortcut(f, prefix, cin, width, stride) if project else (),
        post=(f.relu(f"{prefix}.relu3"),),
    )


S.register_block("triple", triple_block)
S.register(
    "tiny-triple",
    S.ResNetConfig(
        stage_blocks=(1, 1, 1, 1),
        stage_filters=(8, 16, 16, 32),
        stem_filters=8,
        conventions=S.PYTORCH,
        stem="cifar",
        block="triple",
        projection="stride_or_width",
    ),
)

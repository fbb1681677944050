"""ResNets as the published CIFAR repos define them, written here for the tests (no package ships them).

The module structure, and so the ``state_dict`` keys, follow the repos'
(measured against each library): kuangliu/pytorch-cifar's ``ResNet18``/``ResNet34`` (``conv1``,
``bn1``, ``layerN.i.shortcut.{0,1}``, ``linear``, ``F.avg_pool2d(out, 4)``) and
weiaicunzai/pytorch-cifar100's ``resnet18``/``resnet34`` (``conv1.{0,1}``,
``conv2_x``..``conv5_x``, ``residual_function.{0,1,3,4}``, ``shortcut.{0,1}``, ``fc``),
plus a pre-activation ResNet18 (kuangliu's ``PreActResNet18``) and timm's ResNet18-D.
This file is also what a user passes as ``--source-class tests/zoo_models.py:NAME``.

``python tests/zoo_models.py KIND OUT [--classes N] [--seed S]`` writes a state_dict of one of them
(``KIND``: kuangliu18, kuangliu34, kuangliu18-net, weiaicunzai18, weiaicunzai34, preact18,
kuangliu50, weiaicunzai50, torchvision18, torchvision34, torchvision50, timm18d, timmv2-50, timm18-hf, timm34-hf)
with BatchNorm that looks
trained, in a process of its own.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn


class KuangliuBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class KuangliuBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class KuangliuResNet(nn.Module):
    def __init__(self, num_blocks, num_classes=10, block=KuangliuBasicBlock):
        super().__init__()
        self.block = block
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(self.block(self.in_planes, planes, s))
            self.in_planes = planes * self.block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, out.shape[-1])  # the repo's avg_pool2d(out, 4) at 32x32, any size here
        return self.linear(out.flatten(1))


def ResNet18(num_classes=10):
    return KuangliuResNet([2, 2, 2, 2], num_classes)


def ResNet34(num_classes=10):
    return KuangliuResNet([3, 4, 6, 3], num_classes)


def ResNet50(num_classes=10):
    return KuangliuResNet([3, 4, 6, 3], num_classes, KuangliuBottleneck)


class WeiaicunzaiBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        return F.relu(self.residual_function(x) + self.shortcut(x))


class WeiaicunzaiBottleNeck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, stride=stride, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels * 4, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels * 4),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels * 4:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels * 4, stride=stride, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_channels * 4),
            )

    def forward(self, x):
        return F.relu(self.residual_function(x) + self.shortcut(x))


class WeiaicunzaiResNet(nn.Module):
    def __init__(self, num_block, num_classes=100, block=WeiaicunzaiBasicBlock):
        super().__init__()
        self.block = block
        self.in_channels = 64
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.conv2_x = self._make_layer(64, num_block[0], 1)
        self.conv3_x = self._make_layer(128, num_block[1], 2)
        self.conv4_x = self._make_layer(256, num_block[2], 2)
        self.conv5_x = self._make_layer(512, num_block[3], 2)
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, out_channels, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(self.block(self.in_channels, out_channels, s))
            self.in_channels = out_channels * self.block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(self.conv1(x)))))
        return self.fc(self.avg_pool(out).flatten(1))


def resnet18():
    return WeiaicunzaiResNet([2, 2, 2, 2])


def resnet34():
    return WeiaicunzaiResNet([3, 4, 6, 3])


def resnet50():
    return WeiaicunzaiResNet([3, 4, 6, 3], block=WeiaicunzaiBottleNeck)


class PreActBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet18(KuangliuResNet):
    def __init__(self, num_classes=10):
        nn.Module.__init__(self)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        for stage, (planes, stride) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2)), 1):
            blocks = []
            for s in (stride, 1):
                blocks.append(PreActBlock(self.in_planes, planes, s))
                self.in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def look_trained(model: nn.Module, seed: int = 1) -> nn.Module:
    """BatchNorm statistics and affine parameters away from their initial values, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=g)
            m.bias.data = 0.2 * torch.randn(c, generator=g)
            m.running_mean.data = 0.2 * torch.randn(c, generator=g)
            m.running_var.data = 0.5 + torch.rand(c, generator=g)
            m.num_batches_tracked.fill_(1000)
    return model


def build(kind: str, classes: int):
    import torchvision

    return {
        "kuangliu18": lambda: ResNet18(classes),
        "kuangliu34": lambda: ResNet34(classes),
        "weiaicunzai18": resnet18,
        "weiaicunzai34": resnet34,
        "kuangliu50": lambda: ResNet50(classes),
        "weiaicunzai50": resnet50,
        "preact18": lambda: PreActResNet18(classes),
        "torchvision18": lambda: torchvision.models.resnet18(num_classes=classes),
        "torchvision34": lambda: torchvision.models.resnet34(num_classes=classes),
        "torchvision50": lambda: torchvision.models.resnet50(num_classes=classes),
        # timm's ResNet-D (deep stem, average-pool shortcut) as a state_dict
        "timm18d": lambda: __import__("timm").create_model("resnet18d", num_classes=classes),
        # timm's pre-activation ResNetV2 (its own module names, BatchNormAct2d, a 1x1-conv classifier)
        "timmv2-50": lambda: __import__("timm").create_model("resnetv2_50", num_classes=classes),
        "timmv2-18": lambda: __import__("timm").create_model("resnetv2_18", num_classes=classes),  # PreActBasic
    }[kind]()


def write_all(plan: dict[str, tuple[str, int]], folder: str) -> None:
    """``{file name: (kind, classes)}`` written into ``folder``, in this one process."""
    from pathlib import Path

    for i, (name, (kind, classes)) in enumerate(plan.items()):
        main([kind, str(Path(folder) / name), "--classes", str(classes), "--seed", str(i)])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("kind")
    ap.add_argument("out")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.kind == "plan":  # python tests/zoo_models.py plan PLAN.json (a write_all plan with its folder)
        import json

        plan = json.loads(open(args.out).read())
        return write_all(plan["files"], plan["folder"])
    torch.manual_seed(args.seed)
    if args.kind.endswith("-hf"):  # timm's Hugging Face folder (save_for_hf)
        import timm
        from timm.models._hub import save_for_hf

        model = look_trained(
            timm.create_model(
                {"timm18-hf": "resnet18", "timm34-hf": "resnet34"}[args.kind],
                pretrained=False,
                num_classes=args.classes,
            ),
            args.seed + 1,
        )
        save_for_hf(model, args.out, safe_serialization=True)
        return
    kind = args.kind.removesuffix("-net")
    model = look_trained(build(kind, args.classes), args.seed + 1)
    state = model.state_dict()
    if args.kind.endswith(
        "-net"
    ):  # kuangliu's training script: {"net": state_dict, "acc": ..., "epoch": ...}, under DataParallel
        state = {"net": {f"module.{k}": v for k, v in state.items()}, "acc": 61.5, "epoch": 199}
    torch.save(state, args.out)


if __name__ == "__main__":
    main()

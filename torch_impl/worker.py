"""The PyTorch side of the cross-framework checks (see ``resnet_port.parity``).

``python -m torch_impl.worker JOB.json`` runs the job's operations in order.  An
operation may carry ``variant``, the name of a deliberately naive port
(``torch_impl.naive``), used to prove the checks detect it."""

from __future__ import annotations

import json

import numpy as np
import torch

from resnet_port import parity
from resnet_port import weights as neutral
from resnet_port.spec import get_spec

from . import weights
from .model import LayerRecorder, build_model


def _nchw(a: np.ndarray, dtype: str = "float32") -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)).permute(0, 3, 1, 2)


def _model(op):
    """The op's model, in ``op['dtype']`` (default float32)."""
    spec = get_spec(op["arch"])
    if op.get("variant"):
        from . import naive

        model = naive.build(spec, op["variant"])
    else:
        model = build_model(spec)
    if "weights" in op:
        weights.load_into(model, op["weights"])
    return spec, model.to(getattr(torch, op.get("dtype", "float32")))


def op_init(op):
    torch.manual_seed(op["seed"])
    spec = get_spec(op["arch"])
    model = build_model(spec)
    weights.from_numpy(model, parity.randomize_batchnorm_affine(weights.to_numpy(model), op["seed"]))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:  # one training pass whose batch statistics replace the moving ones
        bn.momentum = 1.0
    with torch.no_grad():
        model.train()(_nchw(parity.calibration_batch(spec, op["seed"])))
    for bn, m in zip(bns, saved):
        bn.momentum = m
    tensors = parity.perturb_moving_statistics(weights.to_numpy(model), op["seed"])
    neutral.save(op["out"], tensors, spec.name, producer="torch_impl")


def op_forward(op):
    spec, model = _model(op)
    model.train(bool(op["training"]))
    with torch.no_grad(), LayerRecorder(model) as rec:
        logits = model(_nchw(np.load(op["inputs"]), op.get("dtype", "float32")))
    arrays = dict(rec.outputs)
    arrays["logits"] = logits.numpy()
    np.savez(op["out"], **arrays)
    if op.get("weights_out"):
        weights.export(model, op["weights_out"])


def op_roundtrip(op):
    spec, model = _model(op)
    weights.export(model, op["out"])


def op_loss(op):
    from .objective import l2_parameters, loss_parts

    spec, model = _model(op)
    objective = parity.objective_of(op)
    model.train()
    logits = model(_nchw(np.load(op["images"]), op.get("dtype", "float32")))
    ce, l2 = loss_parts(logits, torch.from_numpy(np.load(op["labels"]).astype(np.int64)), l2_parameters(model, spec, objective), objective)
    total = ce + l2
    total.backward()
    out = {"total": total.detach().numpy(), "ce": ce.detach().numpy(), "l2": l2.detach().numpy()}
    out.update({f"grad/{k}": g for k, g in weights.gradients_to_numpy(model).items()})
    np.savez(op["out"], **out)


def op_train(op):
    """The recipe's optimiser steps through the training CLI's own step (torch_impl.engine.train_step)."""
    from .engine import train_step
    from .objective import l2_parameters, make_optimizer

    spec, model = _model(op)
    recipe = parity.recipe_of(op)
    model.train()
    opt = make_optimizer(model.parameters(), recipe.optimizer, parity.schedule_of(op))
    l2_params = l2_parameters(model, spec, recipe.objective)
    with np.load(op["batches"]) as z:
        images, labels = z["images"], z["labels"]
    for x, y in zip(images, labels):
        train_step(model, opt, _nchw(x, op.get("dtype", "float32")), torch.from_numpy(y.astype(np.int64)), l2_params, recipe.objective)
    weights.export(model, op["out"])
    probe = _nchw(np.load(op["probe"]), op.get("dtype", "float32"))
    with torch.no_grad():
        ev = model.eval()(probe).numpy()
        tr = model.train()(probe).numpy()
    np.savez(op["probe_out"], eval=ev, train=tr)
    if op.get("momentum_out"):
        np.savez(op["momentum_out"], **weights.per_parameter_to_numpy(model, lambda p: opt.state[p].get("momentum_buffer"), "momentum buffer"))


def op_augment(op):
    from resnet_port.augment import Draws

    from .data import augment

    d = Draws.load(op["draws"])
    spec, normalization = parity.augmentation_of(op)
    cut = [None if c is None else torch.from_numpy(c) for c in (d.cut_y, d.cut_x)]
    x = torch.from_numpy(np.load(op["images"])).permute(0, 3, 1, 2)
    out = augment(x, torch.from_numpy(d.dy), torch.from_numpy(d.dx), torch.from_numpy(d.flip), *cut, spec=spec, normalization=normalization)
    np.save(op["out"], out.permute(0, 2, 3, 1).numpy())


def op_schedule(op):
    from .objective import make_optimizer

    opt = make_optimizer([torch.zeros(1, requires_grad=True)], parity.recipe_of(op).optimizer, parity.schedule_of(op))
    values = []
    for step in op["steps"]:
        opt.param_groups[0]["iterations"] = step
        values.append(np.float32(opt.current_lr()))
    np.save(op["out"], np.array(values, dtype=np.float32))


def op_bench(op):
    from .bench import run

    with open(op["out"], "w") as f:
        json.dump(run(op), f)


def _port():
    from . import port

    return port


HANDLERS = {
    "read_source": lambda op: _port().op_read_source(op),
    "run_source": lambda op: _port().op_run_source(op),
    "export_torch": lambda op: _port().op_export_torch(op),
    "export_onnx": lambda op: _port().op_export_onnx(op),
    "export_native": lambda op: _port().op_export_native(op),
    "bench": op_bench,
    "init": op_init,
    "forward": op_forward,
    "roundtrip": op_roundtrip,
    "loss": op_loss,
    "train": op_train,
    "augment": op_augment,
    "schedule": op_schedule,
}


def main(argv=None):
    parity.worker_main("torch_impl.worker", HANDLERS, argv)


if __name__ == "__main__":
    main()

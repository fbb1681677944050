"""PyTorch's side of the backend contract (``resnet_port.backends.Backend``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from resnet_port import frameworks
from resnet_port import weights as neutral

from . import weights
from .model import LayerRecorder, as_numpy_dtype, build_model


def _nchw(a: np.ndarray, dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)).permute(0, 3, 1, 2)


class TorchBackend:
    framework = frameworks.PYTORCH
    key = frameworks.PYTORCH.key

    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def build(self, spec, dtype: str = "float32", naive: str | None = None):
        if naive:
            from . import naive as naive_ports

            model = naive_ports.build(spec, naive)
        else:
            model = build_model(spec)
        return model.to(getattr(torch, dtype))

    def _dtype(self, model) -> str:
        return str(next(model.parameters()).dtype).removeprefix("torch.")

    def to_numpy(self, model, spec):
        return weights.to_numpy(model, spec)

    def from_numpy(self, model, spec, tensors, source: str = "weights") -> None:
        weights.from_numpy(model, tensors, spec, source)

    def save_weights(self, model, spec, path, normalization=None, **extra):
        return weights.export(model, path, normalization=normalization, **extra)

    def load_weights(self, model, spec, path):
        return weights.load_into(model, path)

    def layer_outputs(self, model, spec, images, training: bool):
        model.train(bool(training))
        with torch.no_grad(), LayerRecorder(model) as rec:
            logits = model(_nchw(images, self._dtype(model)))
        return {**rec.outputs, "logits": as_numpy_dtype(logits).numpy()}

    def calibrate_batchnorm(self, model, spec, images) -> None:
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        saved = [bn.momentum for bn in bns]
        for bn in bns:
            bn.momentum = 1.0
        with torch.no_grad():
            model.train()(_nchw(images, self._dtype(model)))
        for bn, m in zip(bns, saved):
            bn.momentum = m

    def loss_and_gradients(self, model, spec, images, labels, objective):
        from .objective import l2_parameters, loss_parts

        model.train()
        model.zero_grad(set_to_none=True)
        logits = model(_nchw(images, self._dtype(model)))
        ce, l2 = loss_parts(
            logits,
            torch.from_numpy(np.asarray(labels).astype(np.int64)),
            l2_parameters(model, spec, objective),
            objective,
        )
        total = ce + l2
        total.backward()
        out = {"total": total.detach().numpy(), "ce": ce.detach().numpy(), "l2": l2.detach().numpy()}
        out.update({f"grad/{k}": g for k, g in weights.gradients_to_numpy(model).items()})
        return out

    def train_steps(self, model, spec, recipe, schedule, batches, naive: str | None = None, eager: bool = False):
        # PyTorch runs eagerly either way: ``eager`` changes nothing here
        from .engine import train_step
        from .objective import l2_parameters, make_optimizer

        # a naive PyTorch port is a model (built by build()); its optimiser is the recipe's
        model.train()
        opt = make_optimizer(model.parameters(), recipe.optimizer, schedule)
        l2_params = l2_parameters(model, spec, recipe.objective)
        for x, y in batches:
            train_step(
                model,
                opt,
                _nchw(x, self._dtype(model)),
                torch.from_numpy(np.asarray(y).astype(np.int64)),
                l2_params,
                recipe.objective,
            )
        return opt

    def momentum_buffers(self, optimizer, model, spec):
        return weights.per_parameter_to_numpy(
            model, lambda p: optimizer.state[p].get("momentum_buffer"), "momentum buffer"
        )

    def learning_rates(self, optimizer_spec, schedule, steps):
        from .objective import make_optimizer

        opt = make_optimizer([torch.zeros(1, requires_grad=True)], optimizer_spec, schedule)
        values = []
        for step in steps:
            opt.param_groups[0]["iterations"] = step
            values.append(np.float32(opt.current_lr()))
        return np.array(values, dtype=np.float32)

    def augment(self, images, draws, spec, normalization):
        from .data import augment

        cut = [None if c is None else torch.from_numpy(c) for c in (draws.cut_y, draws.cut_x)]
        x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2)
        out = augment(
            x,
            torch.from_numpy(draws.dy),
            torch.from_numpy(draws.dx),
            torch.from_numpy(draws.flip),
            *cut,
            spec=spec,
            normalization=normalization,
        )
        return out.permute(0, 2, 3, 1).numpy()

    @property
    def trainer(self):
        from .train import TorchBackend as Trainer

        return Trainer

    def write_checkpoint(self, path, tensors, state) -> None:
        from . import checkpoint

        checkpoint.save(Path(path), {**tensors, **state})

    def read_checkpoint(self, path):
        from . import checkpoint

        st = checkpoint.load(Path(path))
        tensor_keys = ("model", "optimizer", "scaler", "draw_state")
        return {k: st[k] for k in tensor_keys if k in st}, {k: v for k, v in st.items() if k not in tensor_keys}

    def bench(self, op: dict) -> dict:
        from .bench import run

        return run(op)

    def native_operations(self) -> dict:
        from . import port

        return {
            "read_source": port.op_read_source,
            "run_source": port.op_run_source,
            "export_torch": port.op_export_torch,
            "export_onnx": port.op_export_onnx,
            "export_native": port.op_export_native,
        }


BACKEND = TorchBackend()
__all__ = ["BACKEND", "TorchBackend", "neutral"]

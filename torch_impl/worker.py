"""The PyTorch side of the cross-framework checks: ``python -m torch_impl.worker JOB.json``
runs the job's operations (``resnet_port.worker``) on PyTorch's backend."""

from __future__ import annotations

from resnet_port import worker


def main(argv=None):
    from .backend import BACKEND

    worker.main(BACKEND, argv)


if __name__ == "__main__":
    main()

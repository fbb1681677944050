"""The Keras side of the cross-framework checks: ``python -m tf_impl.worker JOB.json``
runs the job's operations (``resnet_port.worker``) on Keras' backend."""

from __future__ import annotations

from resnet_port import worker


def main(argv=None):
    from .backend import BACKEND

    worker.main(BACKEND, argv)


if __name__ == "__main__":
    main()

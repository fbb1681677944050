"""tf_impl.compat: the Keras multi-worker workaround is applied on the Keras it was written for,
refused loudly when an internal it needs is missing, and not applied to other versions.

The workaround itself is exercised end to end by tests/test_distributed.py
(MultiWorkerMirroredStrategy over two processes equals one device)."""

import pytest


@pytest.fixture()
def model_and_trainer(monkeypatch):
    import keras
    from keras.src.backend.tensorflow import trainer as tf_trainer

    from tf_impl.model import build_model

    # the patch replaces a module function: restore it after the test
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", tf_trainer.reduce_per_replica)
    return build_model("tiny"), tf_trainer, keras.__version__


def test_applied_on_the_supported_keras(model_and_trainer):
    from tf_impl import compat

    model, tf_trainer, version = model_and_trainer
    assert compat.multiworker_patch_applies(version), (
        f"Keras {version} is outside {compat.CHECKED}: update CHECKED after testing it"
    )
    original = tf_trainer.reduce_per_replica
    assert compat.patch_fit_for_multiworker(model, strategy=object()) is True
    assert model._maybe_symbolic_build.__func__.__name__ == "build"  # the model's own build replaced
    assert tf_trainer.reduce_per_replica is not original and tf_trainer.reduce_per_replica._resnet_port
    # applying it twice does not wrap the wrapper
    patched = tf_trainer.reduce_per_replica
    compat.patch_fit_for_multiworker(model, strategy=object())
    assert tf_trainer.reduce_per_replica is patched


def test_refused_loudly_when_an_internal_is_missing(model_and_trainer, monkeypatch):
    from tf_impl import compat

    model, tf_trainer, version = model_and_trainer
    monkeypatch.delattr(tf_trainer, "reduce_per_replica")
    with pytest.raises(
        compat.CompatError,
        match=rf"Keras {version}: .* needs keras\.src\.backend\.tensorflow\.trainer\.reduce_per_replica, which this Keras does not have",
    ):
        compat.patch_fit_for_multiworker(model, strategy=object())
    assert not hasattr(tf_trainer, "reduce_per_replica")


def test_not_applied_to_other_keras_versions(model_and_trainer, monkeypatch, capsys):
    import keras

    from tf_impl import compat

    model, tf_trainer, _ = model_and_trainer
    original = tf_trainer.reduce_per_replica
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    assert compat.patch_fit_for_multiworker(model, strategy=object()) is False
    assert tf_trainer.reduce_per_replica is original
    assert "Keras 3.99.0 is outside the versions the multi-worker workaround was written for" in capsys.readouterr().err
    assert [compat.multiworker_patch_applies(v) for v in ("2.15.0", "3.0.0", "3.15.1", "3.16.0rc1", "4.0")] == [
        False,
        True,
        True,
        False,
        False,
    ]

"""The CIFAR-100 loader, on small files the tests write in the exact original format."""

import hashlib
import io
import pickle
import tarfile
import urllib.error

import numpy as np
import pytest

from resnet_port import data as D
from resnet_port import synthetic


@pytest.fixture()
def folder(tmp_path):
    return synthetic.write(tmp_path, n_train=300, n_test=100, num_classes=100)


@pytest.fixture(autouse=True)
def isolated_search(tmp_path, monkeypatch):
    """No test sees a real ~/.keras, ./data or $RESNET_PORT_DATA, nor the network."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)

    def offline(*a, **k):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(D.urllib.request, "urlopen", offline)


def test_original_layout_is_what_we_write(folder):
    """Byte layout: pickle protocol 2, byte-string keys, (N, 3072) uint8 rows of R, G, B planes."""
    with open(folder / "train", "rb") as f:
        raw = f.read()
    assert raw[:2] == b"\x80\x02"
    d = pickle.loads(raw, encoding="bytes")
    assert set(d) == {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"}
    assert d[b"data"].shape == (300, 3072) and d[b"data"].dtype == np.uint8
    ds = D.load(folder.parent, verify=False, val_size=50, quiet=True)
    img = np.concatenate([ds.train.images, ds.val.images])[7]
    assert np.array_equal(d[b"data"][7][:1024].reshape(32, 32), img[..., 0])
    assert np.array_equal(d[b"data"][7][2048:].reshape(32, 32), img[..., 2])


@pytest.mark.parametrize("archive", [False, True])
def test_split_sizes_labels_and_classes(tmp_path, archive):
    path = synthetic.write(tmp_path / "x", n_train=400, n_test=120, num_classes=100, archive=archive)
    ds = D.load(path, verify=False, val_size=100, quiet=True)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (300, 100, 120)
    assert ds.train.images.shape == (300, 32, 32, 3) and ds.train.images.dtype == np.uint8
    for s in (ds.train, ds.val, ds.test):
        assert s.fine.min() >= 0 and s.fine.max() <= 99 and s.coarse.min() >= 0 and s.coarse.max() <= 19
    assert len(ds.fine_names) == 100 and len(ds.coarse_names) == 20
    counts = np.bincount(ds.fine_to_coarse, minlength=20)
    assert (counts == 5).all(), counts  # every coarse class holds exactly 5 fine classes
    assert ds.verified is False


def test_validation_is_the_last_images(folder):
    full = D.load(folder, verify=False, val_size=0, quiet=True)
    ds = D.load(folder, verify=False, val_size=60, quiet=True)
    assert np.array_equal(ds.val.images, full.train.images[-60:]) and np.array_equal(
        ds.train.images, full.train.images[:-60]
    )
    assert np.array_equal(ds.val.fine, full.train.fine[-60:])
    with pytest.raises(D.DataError, match="--val-size must be between 0 and 299"):
        D.load(folder, verify=False, val_size=300, quiet=True)


def test_md5_mismatch_is_refused_with_advice(folder):
    with pytest.raises(D.DataError, match=r"md5 of 'train' is [0-9a-f]{32}, the original's is 16019d7e.*--no-verify"):
        D.load(folder, verify=True, val_size=50)


def test_md5_match_is_accepted(folder, monkeypatch):
    for name in ("train", "test", "meta"):
        monkeypatch.setitem(D.MD5, name, hashlib.md5((folder / name).read_bytes()).hexdigest())
    ds = D.load(folder, verify=True, val_size=50)
    assert ds.verified and len(ds.train) == 250


def test_archive_md5_checked(tmp_path, monkeypatch):
    path = synthetic.write(tmp_path / "a", n_train=100, n_test=20, archive=True)
    with pytest.raises(D.DataError, match="md5 of 'cifar-100-python.tar.gz'"):
        D.load(path, verify=True, val_size=10)


def test_no_verify_warns_once(folder, capsys):
    D.load(folder, verify=False, val_size=50)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "md5 checks are off" in err[0]


def test_truncated_pickle_names_the_file(folder):
    raw = (folder / "train").read_bytes()
    (folder / "train").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(D.DataError, match="'train' is truncated or corrupted"):
        D.load(folder, verify=False, val_size=50, quiet=True)
    with pytest.raises(D.DataError, match="md5 of 'train'"):  # and with md5 checks, that is what says so
        D.load(folder, verify=True, val_size=50)


def test_truncated_archive(tmp_path):
    path = synthetic.write(tmp_path / "a", n_train=100, n_test=20, archive=True)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(D.DataError, match="truncated or not a gzip'd tar"):
        D.load(path, verify=False, val_size=10, quiet=True)


def test_malicious_pickle_is_refused(folder):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": Evil()}, protocol=2))
    with pytest.raises(D.DataError, match=r"holds an object a CIFAR-100 file never contains \(__builtin__.print\)"):
        D.load(folder, verify=False, val_size=50, quiet=True)


def test_wrong_content_is_named(folder):
    (folder / "test").write_bytes(
        pickle.dumps(
            {b"data": np.zeros((3, 10), np.uint8), b"fine_labels": [0, 1, 2], b"coarse_labels": [0, 0, 0]}, protocol=2
        )
    )
    with pytest.raises(D.DataError, match=r"'test' holds data of shape \(3, 10\)"):
        D.load(folder, verify=False, val_size=50, quiet=True)


def test_missing_data_message(tmp_path):
    with pytest.raises(D.DataError) as e:
        D.load(tmp_path / "nowhere", verify=True)
    msg = str(e.value)
    assert "CIFAR-100 not found" in msg and "downloading it failed" in msg
    assert str(tmp_path / "nowhere" / "cifar-100-python") in msg and ".keras/datasets" in msg
    assert D.URL in msg and "--data-dir" in msg and D.ENV_VAR in msg
    assert not (tmp_path / "nowhere").exists()  # nothing written
    with pytest.raises(D.DataError, match="CIFAR-100 not found. Looked in"):
        D.load(tmp_path / "nowhere", download_if_missing=False)


def test_found_in_env_var_and_keras_cache(tmp_path, monkeypatch):
    env = synthetic.write(tmp_path / "env", n_train=100, n_test=20)
    monkeypatch.setenv(D.ENV_VAR, str(env.parent))
    assert D.find() == env
    monkeypatch.delenv(D.ENV_VAR)
    keras_cache = synthetic.write(tmp_path / "home" / ".keras" / "datasets", n_train=100, n_test=20)
    assert D.find() == keras_cache
    tv_root = synthetic.write(tmp_path / "data", n_train=100, n_test=20, archive=True)  # ./data, torchvision-style
    assert D.find(tmp_path / "data") == tv_root


class _FakeResponse(io.BytesIO):
    def __init__(self, payload, fail_after=None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}
        self.fail_after = fail_after

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise urllib.error.URLError("connection reset")
        return super().read(min(n, 4096) if n > 0 else n)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_download_is_atomic_and_checked(tmp_path, monkeypatch):
    src = synthetic.write(tmp_path / "src", n_train=100, n_test=20, archive=True)
    payload = src.read_bytes()
    monkeypatch.setitem(D.MD5, D.ARCHIVE, hashlib.md5(payload).hexdigest())
    dest = tmp_path / "dl"
    # an interrupted download leaves nothing that looks complete
    monkeypatch.setattr(D.urllib.request, "urlopen", lambda *a, **k: _FakeResponse(payload, fail_after=8192))
    with pytest.raises(D.DataError, match="downloading it failed"):
        D.load(dest, verify=False, val_size=10, quiet=True)
    assert not (dest / D.ARCHIVE).exists() and not list(dest.glob("*.part"))
    # a complete one is checked and used
    monkeypatch.setattr(D.urllib.request, "urlopen", lambda *a, **k: _FakeResponse(payload))
    ds = D.load(dest, verify=False, val_size=10, quiet=True)
    assert (dest / D.ARCHIVE).is_file() and len(ds.train) == 90
    # a download with the wrong md5 is refused and removed
    (dest / D.ARCHIVE).unlink()
    monkeypatch.setitem(D.MD5, D.ARCHIVE, "0" * 32)
    with pytest.raises(D.DataError, match="has md5"):
        D.download(dest, quiet=True)
    assert not (dest / D.ARCHIVE).exists()


def test_tar_members_must_be_there(tmp_path):
    p = tmp_path / D.ARCHIVE
    with tarfile.open(p, "w:gz") as tar:
        info = tarfile.TarInfo("something/else")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(D.DataError, match="does not contain cifar-100-python/train"):
        D.load(p, verify=False, quiet=True)


def test_synthetic_data_has_a_cli_that_the_real_loader_reads(tmp_path, capsys):
    """python -m resnet_port.synthetic FOLDER writes the cifar-100-python format (read by the real loader,
    md5 checks off); --help says what it is; writing over data needs --force; bad input is one line."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "resnet_port.synthetic", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "without CIFAR-100" in p.stdout and "--no-verify" in p.stdout
    assert synthetic.main([str(tmp_path / "d"), "--train", "40", "--test", "20", "--classes", "4"]) == 0
    assert "--data-dir" in capsys.readouterr().out
    c = D.load(tmp_path / "d", verify=False, val_size=10, download_if_missing=False, quiet=True)
    assert (len(c.train.images), len(c.val.images), len(c.test.images)) == (30, 10, 20) and set(c.test.fine) <= set(
        range(4)
    )
    assert synthetic.main([str(tmp_path / "d")]) == 2
    assert synthetic.main([str(tmp_path / "e"), "--classes", "101"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "exists; pass --force" in err[0] and "--classes 101: choose 1 to 100" in err[1]
    assert synthetic.main([str(tmp_path / "d"), "--force", "--train", "10", "--test", "5"]) == 0


def test_missing_data_error_says_how_to_try_without_it(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(D.DataError) as e:
        D.load(tmp_path / "empty", download_if_missing=False)
    assert "python -m resnet_port.synthetic" in str(e.value) and D.URL in str(e.value)

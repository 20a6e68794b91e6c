"""Tiny datasets written in the real on-disk formats, for torchvision's own classes to read.

Pixel values encode the label (channel 0 = 20 * label), so a test can check that images and labels
stay paired through every path. torchvision verifies CIFAR and SVHN files against the MD5 sums of
the real downloads; the fixtures point those class tables at the fixture files' sums instead.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from torchvision import datasets as tvd

CLASSES = 10


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _labels(n: int, num_classes: int = CLASSES) -> np.ndarray:
    return np.arange(n) % num_classes


def label_images(labels: np.ndarray, channels: int, size: int, seed: int = 0) -> np.ndarray:
    """``(N, C, size, size)`` uint8: channel 0 is ``20 * label``, the others noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(len(labels), channels, size, size), dtype=np.uint8)
    x[:, 0] = (20 * (labels % 12)).astype(np.uint8)[:, None, None]
    return x


def make_cifar(root: Path, monkeypatch: pytest.MonkeyPatch, hundred: bool = False, per_batch: int = 20,
               n_test: int = 20) -> None:
    """``cifar-10-batches-py`` (5 train batches) or ``cifar-100-python`` (one train file), as pickles."""
    cls = tvd.CIFAR100 if hundred else tvd.CIFAR10
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    num_classes = 100 if hundred else CLASSES
    label_key = "fine_labels" if hundred else "labels"
    names = [n for n, _ in cls.train_list] + [n for n, _ in cls.test_list]
    per_file = [per_batch * 10 if hundred else per_batch] * len(cls.train_list) + [n_test]
    start = 0
    for i, (name, n) in enumerate(zip(names, per_file)):
        labels = _labels(n, num_classes) if hundred else (np.arange(start, start + n) % num_classes)
        start += n
        data = label_images(labels, 3, 32, seed=i).reshape(n, 3072)  # rows: R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, label_key: labels.tolist(), "batch_label": name}, f)
    meta_key = cls.meta["key"]
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({meta_key: [f"class_{i}" for i in range(num_classes)]}, f)
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


def _idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist(root: Path, folder: str = "MNIST", gz: bool = False, n_train: int = 100, n_test: int = 20) -> None:
    """``<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, as torchvision expects."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _labels(n)
        _idx(raw / f"{prefix}-images-idx3-ubyte", label_images(labels, 1, 28)[:, 0], gz)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)


def corrupt_idx(path: Path, how: str) -> None:
    """Spoil a real idx file: ``truncate`` (half of it, as a broken download), ``header`` (not an idx
    magic number), or ``gz`` (the first half of a gzip copy; the uncompressed file removed)."""
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "header":
        path.write_bytes(b"\x00\x00\x00\x00" + data[4:])
    else:
        packed = gzip.compress(data)
        path.with_name(path.name + ".gz").write_bytes(packed[: len(packed) // 2])
        path.unlink()


def make_svhn(root: Path, monkeypatch: pytest.MonkeyPatch, n_train: int = 100, n_test: int = 20) -> None:
    """``<root>/svhn/{train,test}_32x32.mat``: ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1) with 10 for digit 0."""
    import scipy.io

    folder = root / "svhn"
    folder.mkdir(parents=True)
    table = dict(tvd.SVHN.split_list)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = _labels(n)
        x = label_images(labels, 3, 32).transpose(2, 3, 1, 0)
        path = folder / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": x, "y": np.where(labels == 0, 10, labels).reshape(-1, 1).astype(np.uint8)})
        table[split] = [table[split][0], path.name, _md5(path)]
    monkeypatch.setattr(tvd.SVHN, "split_list", table)


def make_image_folder(root: Path, splits: dict[str, int], classes: list[str], size: tuple[int, int] = (40, 30)) -> None:
    """``<root>/<split>/<class>/<i>.png`` with ``splits[split]`` images per class, ``size`` = (width, height)."""
    from PIL import Image

    for s, (split, per_class) in enumerate(splits.items()):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            images = label_images(np.full(per_class, label), 3, max(size), seed=s * 100 + label)
            for i, img in enumerate(images):
                Image.fromarray(img.transpose(1, 2, 0)[: size[1], : size[0]]).save(folder / f"{i}.png")

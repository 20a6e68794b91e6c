"""On-disk image datasets read through torchvision's own classes.

MNIST and Fashion-MNIST (LeCun et al. 1998; Xiao et al. 2017: idx files), CIFAR-10/100 (Krizhevsky
2009: python pickles), SVHN (Netzer et al. 2011: ``.mat`` files) and ``imagefolder``: any folder per
class (the ImageNet layout). Each builder returns an :class:`ImageSource` of raw splits; where a
dataset ships only train and test, a stratified, seeded validation split is held out of train.
Nothing is downloaded unless ``data.download=true``; missing data raises
:class:`~zoo.errors.DataNotFoundError` naming the expected directory.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from zoo.data.types import DATASETS, ArrayDataset, ImageSource
from zoo.engine.utils import atomic_path
from zoo.errors import ConfigError, CorruptDataError, DataNotFoundError, brief

log = logging.getLogger(__name__)


def labels_of(ds: Dataset) -> np.ndarray:
    """Every label of a torchvision dataset (or a ``Subset`` of one) without loading an image."""
    if isinstance(ds, Subset):
        return labels_of(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    for attr in ("targets", "labels"):
        labels = getattr(ds, attr, None)
        if labels is not None:
            return np.asarray(labels, dtype=np.int64)
    raise TypeError(f"{type(ds).__name__} has no targets/labels attribute")


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` with ``fraction`` of each class in val (stratified, seeded)."""
    from sklearn.model_selection import train_test_split

    if not 0 <= fraction < 1:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {fraction}")
    idx = np.arange(len(labels))
    if fraction == 0:
        return idx, idx[:0]
    try:
        train, val = train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError as e:
        raise ConfigError(f"cannot hold out data.val_fraction={fraction} of every class: {str(e).split('.')[0]}") from None
    return np.sort(train), np.sort(val)


def _with_val(name: str, root: Path, train: Dataset, test: Dataset, classes: list[str], val_fraction: float,
              split_seed: int, native_size: int | None = None, in_chans: int = 3) -> ImageSource:
    tr, va = holdout_split(labels_of(train), val_fraction, split_seed)
    return ImageSource(name, root, Subset(train, tr.tolist()), Subset(train, va.tolist()), test, classes, native_size,
                       in_chans)


# ---- torchvision-format datasets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchvisionSpec:
    """How one torchvision dataset is laid out on disk and opened."""

    title: str
    cls: str  # the class in torchvision.datasets (imported when the dataset is opened)
    folder: str  # under data.root
    layout: str  # the files expected there, for error messages
    num_classes: int
    in_chans: int
    native_size: int
    split_arg: str = "train"  # "train" (bool) or "split" (SVHN's "train"/"test")
    root_is_folder: bool = False  # torchvision's root is the folder itself (SVHN), not its parent

    def open(self, root: Path, train: bool, download: bool) -> Dataset:
        kwargs: dict[str, Any] = {"split": "train" if train else "test"} if self.split_arg == "split" else {"train": train}
        from torchvision import datasets as tvd

        cls: Callable[..., Dataset] = getattr(tvd, self.cls)
        return cls(str(root / self.folder if self.root_is_folder else root), download=download, **kwargs)


_IDX = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or .gz)"
TORCHVISION: dict[str, TorchvisionSpec] = {
    "mnist": TorchvisionSpec("MNIST", "MNIST", "MNIST/raw", _IDX, 10, 1, 28),
    "fashion_mnist": TorchvisionSpec("Fashion-MNIST", "FashionMNIST", "FashionMNIST/raw", _IDX, 10, 1, 28),
    "cifar10": TorchvisionSpec("CIFAR-10", "CIFAR10", "cifar-10-batches-py",
                               "data_batch_1..5, test_batch, batches.meta (the python version)", 10, 3, 32),
    "cifar100": TorchvisionSpec("CIFAR-100", "CIFAR100", "cifar-100-python", "train, test, meta (the python version)",
                                100, 3, 32),
    "svhn": TorchvisionSpec("SVHN", "SVHN", "svhn", "train_32x32.mat, test_32x32.mat (format 2)", 10, 3, 32,
                            split_arg="split", root_is_folder=True),
}


def _corrupt_idx(title: str, path: Path, reason: str) -> CorruptDataError:
    return CorruptDataError(f"{title}: cannot read {path} ({reason}); the file is corrupt or truncated: download it again "
                            f"(delete it and set data.download=true) or check the files in {path.parent}")


def _gunzip_idx(title: str, folder: Path) -> None:
    """torchvision reads MNIST's idx files uncompressed; unpack ``*.gz`` copies placed by hand."""
    for gz in folder.glob("*-ubyte.gz"):
        target = gz.with_suffix("")
        if not target.exists():
            with atomic_path(target) as tmp:
                try:
                    with gzip.open(gz, "rb") as src, open(tmp, "xb") as dst:
                        shutil.copyfileobj(src, dst)
                except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                    raise _corrupt_idx(title, gz, brief(str(e)) or type(e).__name__) from None


def _bad_idx_file(title: str, folder: Path) -> CorruptDataError | None:
    """The first idx file of ``folder`` that torchvision's reader fails on, as a :class:`CorruptDataError`."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for name, read in (("train-images-idx3", read_image_file), ("train-labels-idx1", read_label_file),
                       ("t10k-images-idx3", read_image_file), ("t10k-labels-idx1", read_label_file)):
        path = folder / f"{name}-ubyte"
        if path.is_file():  # a missing one is torchvision's "not found"
            try:
                read(str(path))
            except Exception as e:  # noqa: BLE001 - header assertions, reshape, dtype: all a bad file
                return _corrupt_idx(title, path, brief(str(e)) or "not an idx file: bad header")
    return None


def load_torchvision(spec: TorchvisionSpec, name: str, root: str, download: bool = False, val_fraction: float = 0.1,
                     split_seed: int = 0) -> ImageSource:
    """Open the train and test splits of ``spec`` under ``root`` and hold out a validation split."""
    base = Path(root).expanduser()
    folder = base / spec.folder
    hint = f"set data.download=true on a machine with internet access, or put {spec.layout} there"
    if not download and not folder.is_dir():
        raise DataNotFoundError(f"{spec.title} not found: expected the directory {folder} (data.root={base}); {hint}")
    idx = spec.folder.endswith("raw")
    if idx and folder.is_dir():
        _gunzip_idx(spec.title, folder)
    try:
        train, test = spec.open(base, True, download), spec.open(base, False, download)
    except (AssertionError, ValueError, TypeError, RuntimeError) as e:
        if idx and (bad := _bad_idx_file(spec.title, folder)) is not None:
            raise bad from None
        if not isinstance(e, RuntimeError):
            raise
        raise DataNotFoundError(f"{spec.title} in {folder} is incomplete or corrupted ({e}); {hint}") from None
    except OSError as e:
        raise DataNotFoundError(f"{spec.title}: could not download or read {folder} ({e}); {hint}") from None
    classes = [str(c) for c in getattr(train, "classes", range(spec.num_classes))]
    return _with_val(name, base, train, test, classes, val_fraction, split_seed, spec.native_size, spec.in_chans)


for _name, _spec in TORCHVISION.items():
    DATASETS.register(_name, num_classes=_spec.num_classes, in_chans=_spec.in_chans, paper=_spec.title)(
        partial(load_torchvision, _spec, _name)
    )


def tensors_of(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images (N, C, H, W), int64 labels)`` of an :class:`ArrayDataset`, or read from a torchvision
    dataset's uint8 arrays without per-image Python; ``None`` when the dataset keeps no such arrays
    (image folders)."""
    if isinstance(ds, ArrayDataset):
        return ds.images, ds.labels
    if isinstance(ds, Subset):
        whole = tensors_of(ds.dataset)
        if whole is None:
            return None
        idx = torch.as_tensor(np.asarray(ds.indices, dtype=np.int64))
        return whole[0][idx], whole[1][idx]
    from torchvision import datasets as tvd

    data = getattr(ds, "data", None)
    if isinstance(ds, tvd.MNIST):  # (N, H, W) uint8 tensor; FashionMNIST is a subclass
        x = data.unsqueeze(1)
    elif isinstance(ds, tvd.CIFAR10):  # (N, H, W, C) uint8 array; CIFAR100 is a subclass
        x = torch.from_numpy(data).permute(0, 3, 1, 2)
    elif isinstance(ds, tvd.SVHN):  # (N, C, H, W) uint8 array
        x = torch.from_numpy(data)
    else:
        return None
    return x.contiguous(), torch.as_tensor(labels_of(ds))


def data_files(ds: Dataset) -> list[str]:
    """The files ``ds`` reads its images from (an image folder's images, MNIST's idx files, CIFAR's
    pickles, SVHN's ``.mat``), for fingerprinting; empty for a dataset of another kind."""
    if isinstance(ds, Subset):
        return data_files(ds.dataset)
    if isinstance(ds, ClassFolder):
        return [path for path, _ in ds.samples]
    if isinstance(ds, ArrayDataset):
        return []
    from torchvision import datasets as tvd

    if isinstance(ds, tvd.MNIST):
        prefix = "train" if ds.train else "t10k"
        return [os.path.join(ds.raw_folder, f"{prefix}-{kind}-ubyte") for kind in ("images-idx3", "labels-idx1")]
    if isinstance(ds, tvd.CIFAR10):
        return [os.path.join(ds.root, ds.base_folder, name) for name, _ in (ds.train_list if ds.train else ds.test_list)]
    if isinstance(ds, tvd.SVHN):
        return [os.path.join(ds.root, ds.filename)]
    return []


# ---- image folders ---------------------------------------------------------------------------------------------


def read_image(path: str) -> Any:
    """Decode an image file to RGB; an unreadable file raises :class:`CorruptDataError` naming it."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptDataError(
            f"cannot read image {path} ({type(e).__name__}: {e}); replace or delete the file, "
            f"or set data.skip_corrupt=true to skip unreadable images"
        ) from None


class ClassFolder(Dataset):
    """One folder per class (torchvision's ``ImageFolder`` layout and its ``make_dataset`` scan) whose
    class indices follow ``classes`` (those of the training folder), so evaluation folders with missing
    classes keep the same labels. With ``skip_corrupt`` an unreadable image yields ``None``, dropped by
    the loader and counted."""

    def __init__(self, root: Path, classes: list[str] | None = None, skip_corrupt: bool = False) -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

        found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        fixed = classes is not None
        if classes is None:
            if not found:
                raise FileNotFoundError(f"Couldn't find any class folder in {root}.")
            classes = found
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ConfigError(f"{root} has class folders {extra[:5]} that the training folder lacks")
        self.root, self.classes, self.skip_corrupt = str(root), list(classes), skip_corrupt
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = make_dataset(self.root, self.class_to_idx, IMG_EXTENSIONS,
                                                           allow_empty=fixed)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        path, label = self.samples[index]
        try:
            return read_image(path), label
        except CorruptDataError:
            if self.skip_corrupt:
                return None
            raise


@DATASETS.register("imagefolder", num_classes=None, in_chans=3, paper="ImageNet layout", variable_size=True)
def image_folder(root: str, train_dir: str = "train", val_dir: str | None = None, test_dir: str | None = "val",
                 val_fraction: float = 0.1, split_seed: int = 0, skip_corrupt: bool = False,
                 download: bool = False) -> ImageSource:
    """``<root>/<train_dir>/<class>/<image>``; val from ``val_dir`` or held out of train (``val_fraction``);
    test from ``test_dir`` (ImageNet's labelled ``val/`` by default) or empty when ``null``."""
    if download:
        raise ConfigError("data=imagefolder cannot download; set data.download=false and point data.root at your images")
    base = Path(root).expanduser()
    layout = f"{base / train_dir}/<class name>/<image file> (one folder per class, e.g. the ImageNet train/ and val/ layout)"
    train_path = base / train_dir
    if not train_path.is_dir():
        raise DataNotFoundError(f"image folder not found: expected {layout}; set data.root=<your dataset directory>")

    def open_folder(sub: str, classes: list[str] | None) -> ClassFolder:
        path = base / sub
        if not path.is_dir():
            raise DataNotFoundError(f"image folder not found: expected {path}/<class name>/<image file>; "
                                    f"create it or set data.{'val' if sub == val_dir else 'test'}_dir")
        try:
            return ClassFolder(path, classes, skip_corrupt)
        except FileNotFoundError as e:
            raise DataNotFoundError(f"{e}; expected {layout}") from None

    train = open_folder(train_dir, None)
    test: Dataset = open_folder(test_dir, train.classes) if test_dir else Subset(train, [])
    if val_dir:
        return ImageSource("imagefolder", base, train, open_folder(val_dir, train.classes), test, list(train.classes))
    return _with_val("imagefolder", base, train, test, list(train.classes), val_fraction, split_seed)

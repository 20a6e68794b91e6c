"""Pascal VOC semantic segmentation (Everingham et al., IJCV 2010) in its original directory layout::

    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2012/SegmentationClass/<id>.png        palette PNG: 0 background, 1..20, 255 boundary
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt

(``<root>`` may also be the ``VOC2012`` folder itself.) Items are ``(image, {"mask", "image_id"})`` with the
image normalised by ``mean``/``std``. Training images are randomly rescaled (``min_scale``..``max_scale``),
padded (mask: 255) and cropped to ``crop_size`` squares and flipped; evaluation images keep their size,
so their batches are lists (the segmentation task evaluates them one by one). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from zoo.data.detection import VOC_CLASSES
from zoo.data.stats import photo_stats
from zoo.data.types import DATASETS, IGNORE_INDEX, SampleSplits
from zoo.errors import ConfigError, CorruptDataError, DataNotFoundError

#: the segmentation classes: background (label 0), then the 20 object classes
SEG_CLASSES = ["background", *VOC_CLASSES]


class VOCSegmentation(Dataset):
    """The images ``ids`` of a VOC folder; ``crop_size`` set = training-time scale/crop/flip."""

    def __init__(self, folder: Path, ids: list[str], mean: list[float], std: list[float], crop_size: int | None = None,
                 scale_range: tuple[float, float] = (0.5, 2.0), flip: bool = True) -> None:
        self.folder, self.ids, self.crop_size, self.scale_range, self.flip = folder, ids, crop_size, scale_range, flip
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        image_path = self.folder / "JPEGImages" / f"{image_id}.jpg"
        mask_path = self.folder / "SegmentationClass" / f"{image_id}.png"
        try:
            with Image.open(image_path) as im:
                image = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
            with Image.open(mask_path) as m:
                if m.mode not in ("P", "L"):
                    raise CorruptDataError(f"{mask_path} is a {m.mode} image; VOC masks are palette (P) PNGs of class indices")
                mask = torch.from_numpy(np.asarray(m, dtype=np.int64).copy())
        except FileNotFoundError as e:
            raise DataNotFoundError(f"VOC image {image_id!r} is listed but missing: {e.filename}") from None
        except OSError as e:
            raise CorruptDataError(f"cannot read VOC image {image_id!r}: {e}") from None
        if mask.shape != image.shape[-2:]:
            raise CorruptDataError(f"VOC image {image_id!r}: mask {tuple(mask.shape)} and image {tuple(image.shape[-2:])} differ in size")
        return image, mask

    def _augment(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random rescale, pad to ``crop_size`` (image 0 after normalisation, mask ignored), crop, flip."""
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        size = [max(1, round(s * scale)) for s in image.shape[-2:]]
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        c = int(self.crop_size)  # type: ignore[arg-type]
        pad_h, pad_w = max(c - size[0], 0), max(c - size[1], 0)
        image = F.pad(image, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(torch.randint(image.shape[-2] - c + 1, ()))
        left = int(torch.randint(image.shape[-1] - c + 1, ()))
        image, mask = image[:, top : top + c, left : left + c], mask[top : top + c, left : left + c]
        if self.flip and bool(torch.rand(()) < 0.5):
            image, mask = image.flip(-1), mask.flip(-1)
        return image.contiguous(), mask.contiguous()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, mask = self._read(self.ids[index])
        image = (image - self.mean) / self.std
        if self.crop_size:
            image, mask = self._augment(image, mask)
        return image, {"mask": mask, "image_id": self.ids[index]}


def _voc_folder(root: str, year: str) -> Path:
    base = Path(root).expanduser()
    for folder in (base / "VOCdevkit" / f"VOC{year}", base / f"VOC{year}", base):
        if (folder / "JPEGImages").is_dir() and (folder / "SegmentationClass").is_dir():
            return folder
    raise DataNotFoundError(f"Pascal VOC segmentation not found under {base}: expected VOCdevkit/VOC{year}/{{JPEGImages,"
                            f"SegmentationClass,ImageSets/Segmentation}}; set data.root=<the directory holding VOCdevkit>")


def _ids(folder: Path, split: str) -> list[str]:
    listing = folder / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DataNotFoundError(f"VOC split list {listing} not found; set data.<split>_split to one of the lists in {listing.parent}")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataNotFoundError(f"VOC split list {listing} is empty")
    return ids


@DATASETS.register("voc_seg", num_classes=len(SEG_CLASSES), in_chans=3)
def voc_seg(
    root: str,
    year: str = "2012",
    train_split: str = "train",
    val_split: str = "val",
    test_split: str = "val",
    crop_size: int = 320,
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    flip: bool = True,
    normalize: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    num_classes: int = len(SEG_CLASSES),
    in_chans: int = 3,
) -> SampleSplits:
    """VOC segmentation splits from the ``ImageSets/Segmentation`` lists (VOC has no public test masks,
    so ``test_split`` defaults to ``val``)."""
    if num_classes != len(SEG_CLASSES) or in_chans != 3:
        raise ConfigError(f"Pascal VOC has {len(SEG_CLASSES)} classes and 3 channels; set data.num_classes={len(SEG_CLASSES)} data.in_chans=3")
    if crop_size < 1 or not 0 < min_scale <= max_scale:
        raise ConfigError(f"need data.crop_size >= 1 and 0 < data.min_scale <= data.max_scale, got {crop_size}, {min_scale}, {max_scale}")
    mean, std = (photo_stats(normalize, 3, mean, std)[k] for k in ("mean", "std"))
    folder = _voc_folder(root, str(year))

    def make(split: str, train: bool) -> VOCSegmentation:
        return VOCSegmentation(folder, _ids(folder, split), mean, std, crop_size if train else None, (min_scale, max_scale), flip)

    return SampleSplits(train=make(train_split, True), val=make(val_split, False), test=make(test_split, False),
                        class_names=list(SEG_CLASSES), in_chans=3, image_size=int(crop_size), mean=mean, std=std)

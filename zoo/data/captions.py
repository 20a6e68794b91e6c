"""Captioning data: the vocabulary and caption datasets.

* :class:`Vocabulary`: words of the training captions seen at least ``min_freq`` times plus the special
  tokens ``<pad>`` (0), ``<bos>``, ``<eos>`` and ``<unk>``; stored in ``DataModule.info`` as a plain list,
  hence in every checkpoint (``data_info["info"]["vocab"]``), so evaluation and prediction rebuild nothing.
* ``coco_captions``: the COCO captions format (Chen et al. 2015), ``<root>/annotations/captions_<split>.json``
  with the images in ``<root>/<split>/``.
* ``karpathy``: the Karpathy-split JSON (Karpathy & Fei-Fei 2015: ``dataset_coco.json``,
  ``dataset_flickr8k.json``, ``dataset_flickr30k.json``), one file whose images carry a ``split`` field.
* ``digit_scene_captions``: the embedded digit scenes (:mod:`zoo.data.scenes`) with a vocabulary of
  their training captions ("a 3 left of a 7").

Items are ``(image, target)`` with ``target["caption"]`` (one reference) and ``target["captions"]``
(every reference of the image; training draws one of them per step).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch.utils.data import Dataset

from zoo.data.stats import Stats, photo_stats
from zoo.data.types import DATASETS, SampleSplits
from zoo.errors import ConfigError, DataNotFoundError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers; punctuation is dropped (the usual COCO caption preprocessing)."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Token <-> index maps; index 0 is ``<pad>``, then ``<bos>``, ``<eos>``, ``<unk>``, then the words."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ConfigError(f"a vocabulary must start with the special tokens {list(SPECIALS)}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.bos, self.eos, self.unk = (self.index[t] for t in SPECIALS)

    @classmethod
    def build(cls, captions: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> Vocabulary:
        """Words of ``captions`` seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
        if min_freq < 1:
            raise ConfigError(f"data.min_freq must be >= 1, got {min_freq}")
        counts = Counter(word for caption in captions for word in tokenize(caption))
        words = sorted((w for w, n in counts.items() if n >= min_freq and w not in SPECIALS), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words[:max_size]])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, caption: str, max_len: int | None = None) -> list[int]:
        """``<bos> words <eos>``; unknown words become ``<unk>``; at most ``max_len`` words are kept."""
        words = tokenize(caption)[:max_len]
        return [self.bos, *(self.index.get(w, self.unk) for w in words), self.eos]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of a generated sequence up to its first ``<eos>`` (``<bos>`` and ``<pad>`` skipped)."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i not in (self.bos, self.pad):
                words.append(self.tokens[i])
        return words

    def batch(self, captions: Sequence[str], max_len: int | None = None) -> torch.Tensor:
        """``(B, T)`` indices of encoded captions, right-padded with ``<pad>``."""
        encoded = [torch.tensor(self.encode(c, max_len)) for c in captions]
        return torch.nn.utils.rnn.pad_sequence(encoded, batch_first=True, padding_value=self.pad)


def with_vocabulary(splits: SampleSplits, captions: Iterable[str], min_freq: int, max_size: int | None = None) -> SampleSplits:
    """``splits`` whose ``info`` carries the vocabulary of ``captions`` (the training captions)."""
    vocab = Vocabulary.build(captions, min_freq, max_size)
    return replace(splits, info={**splits.info, "vocab": vocab.tokens, "vocab_size": len(vocab)})


# ---- image-file caption datasets -----------------------------------------------------------------------------


class CaptionImages(Dataset):
    """``(image, {"caption", "captions", "image_id"})`` of image files with their reference captions."""

    def __init__(self, items: list[tuple[Path, list[str], int]], image_size: int, mean: list[float], std: list[float],
                 in_chans: int = 3) -> None:
        from torchvision.transforms import v2

        self.items, self.in_chans = items, in_chans
        self.transform = v2.Compose([
            v2.PILToTensor(),
            v2.Resize((image_size, image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        from zoo.data.vision import read_image

        path, captions, image_id = self.items[index]
        image = read_image(str(path))
        if self.in_chans == 1:
            image = image.convert("L")
        return self.transform(image), {"caption": captions[0], "captions": list(captions), "image_id": image_id}


def _read_json(path: Path, layout: str) -> Any:
    if not path.is_file():
        raise DataNotFoundError(f"caption file not found: {path}; expected {layout} (set data.root)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); expected {layout}") from None


def _caption_splits(items: dict[str, list[tuple[Path, list[str], int]]], image_size: int, min_freq: int,
                    max_vocab: int | None, in_chans: int, where: str, stats: Stats) -> SampleSplits:
    if not items["train"]:
        raise ConfigError(f"{where} has no training images with captions")
    mean, std = list(stats["mean"]), list(stats["std"])
    splits = SampleSplits(**{s: CaptionImages(v, image_size, mean, std, in_chans) for s, v in items.items()},
                          class_names=[], in_chans=in_chans, image_size=image_size, mean=mean, std=std)
    return with_vocabulary(splits, (c for _, caps, _ in items["train"] for c in caps), min_freq, max_vocab)


def _check_root(root: str | None, layout: str) -> Path:
    if not root:
        raise DataNotFoundError(f"data.root is not set; point it at a folder holding {layout}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"data root {path} does not exist; expected {layout} (set data.root)")
    return path


@DATASETS.register("coco_captions", num_classes=0, in_chans=3)
def coco_captions(
    root: str | None = None,
    train_split: str = "train2017",
    val_split: str = "val2017",
    test_split: str = "val2017",
    image_size: int = 224,
    min_freq: int = 5,
    max_vocab: int | None = None,
    in_chans: int = 3,
    num_classes: int = 0,
    normalize: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> SampleSplits:
    """COCO captions: ``<root>/annotations/captions_<split>.json`` with images in ``<root>/<split>/<file_name>``."""
    layout = "annotations/captions_<split>.json and <split>/<image files> (the COCO layout)"
    base = _check_root(root, layout)
    items: dict[str, list[tuple[Path, list[str], int]]] = {}
    for split, name in (("train", train_split), ("val", val_split), ("test", test_split)):
        data = _read_json(base / "annotations" / f"captions_{name}.json", layout)
        captions: dict[int, list[str]] = {}
        for ann in data.get("annotations", []):
            captions.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]))
        items[split] = [(base / name / img["file_name"], captions[int(img["id"])], int(img["id"]))
                        for img in sorted(data.get("images", []), key=lambda im: int(im["id"])) if int(img["id"]) in captions]
    return _caption_splits(items, int(image_size), int(min_freq), max_vocab, int(in_chans), str(base),
                           photo_stats(normalize, int(in_chans), mean, std))


@DATASETS.register("karpathy", num_classes=0, in_chans=3)
def karpathy(
    root: str | None = None,
    json_file: str = "dataset_flickr8k.json",
    image_dir: str = "images",
    restval_to_train: bool = True,
    image_size: int = 224,
    min_freq: int = 5,
    max_vocab: int | None = None,
    in_chans: int = 3,
    num_classes: int = 0,
    normalize: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> SampleSplits:
    """Karpathy splits: ``<root>/<json_file>`` whose images (``<root>/<image_dir>/[<filepath>/]<filename>``)
    carry ``split`` (train/val/test/restval) and ``sentences`` (each with ``raw`` text)."""
    layout = f"{json_file} (Karpathy-split JSON) and {image_dir}/<image files>"
    base = _check_root(root, layout)
    data = _read_json(base / json_file, layout)
    items: dict[str, list[tuple[Path, list[str], int]]] = {"train": [], "val": [], "test": []}
    for k, img in enumerate(data.get("images", [])):
        split = img.get("split", "train")
        if split == "restval":
            split = "train" if restval_to_train else "val"
        if split not in items:
            continue
        captions = [s.get("raw") or " ".join(s.get("tokens", [])) for s in img.get("sentences", [])]
        if captions:
            path = base / image_dir / img.get("filepath", "") / img["filename"]
            items[split].append((path, captions, int(img.get("cocoid", img.get("imgid", k)))))
    return _caption_splits(items, int(image_size), int(min_freq), max_vocab, int(in_chans), str(base / json_file),
                           photo_stats(normalize, int(in_chans), mean, std))


# ---- digit scenes ----------------------------------------------------------------------------------------------


class _SceneCaptions(Dataset):
    """A digit-scenes split whose targets also list the caption as the only reference (``captions``)."""

    def __init__(self, scenes: Dataset) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.scenes[index]
        return image, {"caption": target["caption"], "captions": [target["caption"]], "image_id": target["image_id"]}


@DATASETS.register("digit_scene_captions", num_classes=11, in_chans=1)
def digit_scene_captions(min_freq: int = 1, max_vocab: int | None = None, **scene_options: Any) -> SampleSplits:
    """The digit scenes (:func:`zoo.data.scenes.digit_scenes`, same options) with the vocabulary of their
    training captions; targets keep only the captions."""
    from zoo.data.scenes import digit_scenes

    splits = digit_scenes(**scene_options)
    train = splits.train
    captions = (train.scene(i)["caption"] for i in range(len(train)))  # type: ignore[attr-defined]
    splits = replace(splits, train=_SceneCaptions(splits.train), val=_SceneCaptions(splits.val), test=_SceneCaptions(splits.test))
    return with_vocabulary(splits, captions, int(min_freq), max_vocab)

"""Transfer learning: pretrained weights, adapted to the model, and freeze policies.

Features learnt on one task transfer to another, the more so the closer the tasks and the lower the
layer (Yosinski et al. 2014, "How transferable are features in deep neural networks?"). So: with a
little data, train a new classifier on frozen features (``linear_probe``); with more, fine-tune the
last stages too (``finetune_last``); with a lot, fine-tune everything from the pretrained weights
at about a tenth of the learning rate for the pretrained layers (``finetune_all``). Discriminative
learning rates per stage and gradual unfreezing follow Howard & Ruder 2018 ("Universal language
model fine-tuning for text classification").

Sources (``model.pretrained=``), all read with ``torch.load(weights_only=True)``:

- a zoo checkpoint (``<run>/checkpoints/best.pt``): its ``model`` entry;
- ``torchvision:<model>.<weights>`` (``torchvision:resnet18.IMAGENET1K_V1``, ``torchvision:resnet18``
  for the default weights, or ``torchvision:ResNet18_Weights.IMAGENET1K_V1``): the file torchvision
  itself caches, ``$TORCH_HOME/hub/checkpoints/<file name of the weights' URL>``, downloaded there only
  when absent and the machine is online (``ZOO_OFFLINE=1`` forbids trying);
- any other file holding a state_dict (or ``{"state_dict": ...}`` / ``{"model": ...}``).

Loading adapts: a classifier whose shape differs (other ``num_classes``) keeps its fresh
initialisation; input convolutions whose channels differ (other ``in_chans``) are summed over the
channels (1 channel) or repeated and rescaled (N); anything else that does not fit is an error, and so
is a source that fills at most half of the model's non-classifier tensors (another model's checkpoint
whose few tensors happen to fit) unless loading is not strict (``transfer.strict=false``). One log line
sums up what was loaded, adapted, reinitialised, missing and unexpected. Any model may say
which of its layers are the classifier (``classifier_names()``, as :class:`~zoo.models.base.Classifier`
does) and how another library names its modules (``pretrained_aliases``: a mapping of a source prefix
to its own, tried for source keys it lacks; the detectors use it to load torchvision's checkpoints).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import re
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import torch
from torch import nn

from zoo.engine.checkpoint import is_zoo_checkpoint, load_checkpoint
from zoo.errors import CheckpointError, ConfigError, brief
from zoo.models.base import Classifier
from zoo.models.features import ParamStage, is_within, parameter_stages
from zoo.models.pretrained import TORCHVISION, torchvision_weights
from zoo.registry import close_names

log = logging.getLogger("zoo")

StateDict = dict[str, torch.Tensor]

# ---- sources ---------------------------------------------------------------------------------------------------------


def torchvision_cache_path(weights: Any) -> Path:
    """Where torchvision caches ``weights``: ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``) /
    ``checkpoints`` / the file name of the download URL."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _download(url: str, path: Path) -> None:
    """Fetch ``url`` into ``path`` as torchvision would (hash checked against the file name)."""
    if os.environ.get("ZOO_OFFLINE", "") not in ("", "0"):
        raise OSError("ZOO_OFFLINE is set")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.load_state_dict_from_url(url, model_dir=str(path.parent), progress=False, check_hash=True,
                                       map_location="cpu", weights_only=True)


def read_torchvision(spec: str) -> StateDict:
    """The state_dict of torchvision weights ``spec``, from the torch hub cache (downloaded when absent
    and online); a one-line :class:`CheckpointError` naming the expected file when it cannot be had."""
    weights = torchvision_weights(spec)
    path = torchvision_cache_path(weights)
    if not path.is_file():
        try:
            _download(weights.url, path)
        except Exception as e:  # noqa: BLE001 - no network, refused connection, proxy, bad hash: all one answer
            reason = brief(str(e), 120) or type(e).__name__
            raise CheckpointError(
                f"torchvision weights {spec} are not cached at {path} and could not be downloaded ({reason}); "
                f"fetch {weights.url} into that folder on a machine with internet, or point TORCH_HOME at a cache holding it"
            ) from None
    return load_checkpoint(path)


def _unwrap(state: dict[str, Any], source: str) -> StateDict:
    """The state_dict inside a zoo checkpoint or a ``{"state_dict"|"model": ...}`` wrapper, without the
    ``module.`` (DistributedDataParallel) or ``_orig_mod.`` (torch.compile) prefixes."""
    if is_zoo_checkpoint(state):
        state = state["model"]
    else:
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} holds no state_dict (a mapping of parameter names to tensors)")
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


#: torchvision's DenseNet files predate dots in layer names: ``denselayer1.norm.1`` -> ``denselayer1.norm1``
_LEGACY_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def read_pretrained(source: str) -> StateDict:
    """The state_dict named by ``source`` (see the module docstring)."""
    state = read_torchvision(source[len(TORCHVISION) :]) if source.startswith(TORCHVISION) else load_checkpoint(source)
    state = _unwrap(state, source)
    return {_LEGACY_DENSENET.sub(r"\1\2", k): v for k, v in state.items()}


# ---- adaptation ------------------------------------------------------------------------------------------------------


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first-layer kernel for ``in_chans`` input channels: summed over its channels for one (a grey
    image through RGB filters), else its channels repeated and scaled by ``old / new`` so an input
    that repeats one image over the channels gives the same response when ``in_chans`` is a multiple."""
    old = weight.shape[1]
    if in_chans == old:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_chans / old)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (old / in_chans)


def _input_conv_weights(model: nn.Module) -> set[str]:
    """Kernels that see the input image: ungrouped convolutions with the first one's input channels."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return set()
    in_chans = convs[0][1].in_channels
    return {f"{n}.weight" for n, m in convs if m.in_channels == in_chans and m.groups == 1}


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with each tensor of the source."""

    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    #: the target's non-classifier (floating-point) tensors, of which a clear majority must load
    backbone: list[str] = field(default_factory=list)

    @property
    def matched(self) -> list[str]:
        """The backbone tensors that were loaded or adapted."""
        taken = {*self.loaded, *self.adapted}
        return [k for k in self.backbone if k in taken]

    def foreign(self, model: str) -> str | None:
        """``<source>: 3 of 10 backbone tensors of <model> matched (...)`` when that is at most half, else None."""
        matched, total = self.matched, len(self.backbone)
        if not total or len(matched) * 2 > total:
            return None
        return f"{self.source}: {len(matched)} of {total} backbone tensors of {model} matched{_names(matched, False)}"

    def summary(self) -> str:
        return (f"pretrained {self.source}: loaded {len(self.loaded)} tensors; input channels adapted: {_names(self.adapted)}; "
                f"classifier reinitialised: {_names(self.reinitialised)}; missing: {_names(self.missing)}; "
                f"unexpected: {_names(self.unexpected)}")


def _names(keys: list[str], count: bool = True) -> str:
    """``2 (a, b)``, ``5 (a, b, c, ...)``; without ``count`` only the parenthesis."""
    listed = f" ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" if keys else ""
    return f"{len(keys)}{listed}" if count else listed


#: whether :func:`load_pretrained` refuses a source that fills at most half the model (``transfer.strict``)
_STRICT = contextvars.ContextVar("zoo_transfer_strict", default=True)


@contextlib.contextmanager
def strict_loading(strict: bool) -> Iterator[None]:
    """Within the block, every :func:`load_pretrained` without its own ``strict`` (the nested loads of
    ``backbone_pretrained``, ``encoder_pretrained`` too) uses ``strict``."""
    token = _STRICT.set(strict)
    try:
        yield
    finally:
        _STRICT.reset(token)


def _own_name(key: str, own: StateDict, aliases: dict[str, str]) -> str:
    """``key`` as the model names it: itself, or with the first alias prefix that makes it one of ``own``."""
    if key in own:
        return key
    for source, target in aliases.items():
        if key.startswith(source) and (renamed := target + key[len(source) :]) in own:
            return renamed
    return key


def load_state_dict_adapted(model: nn.Module, state: StateDict, source: str = "state_dict",
                            strict: bool | None = None) -> LoadReport:
    """Load ``state`` into ``model``, adapting the classifier and input convolutions (see the module
    docstring); a :class:`CheckpointError` when other tensors do not fit, none does or, ``strict``
    (default: :func:`strict_loading`'s), at most half of the non-classifier ones do."""
    own = model.state_dict()
    heads = model.classifier_names() if callable(getattr(model, "classifier_names", None)) else []
    aliases: dict[str, str] = getattr(model, "pretrained_aliases", {})
    inputs = _input_conv_weights(model)
    backbone = [k for k, v in own.items() if v.is_floating_point() and not any(is_within(k, h) for h in heads)]
    report = LoadReport(source, backbone=backbone)
    take: StateDict = {}
    misfits: list[str] = []
    for key, value in state.items():
        key = _own_name(key, own, aliases)
        target = own.get(key)
        if target is None:
            report.unexpected.append(key)
        elif value.shape == target.shape:
            take[key] = value
            report.loaded.append(key)
        elif any(is_within(key, h) for h in heads):
            report.reinitialised.append(key)
        elif key in inputs and value.dim() == 4 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
            take[key] = adapt_input_conv(value, target.shape[1])
            report.adapted.append(key)
        else:
            misfits.append(f"{key} {tuple(value.shape)} vs {tuple(target.shape)}")
    name = type(model).__name__
    if misfits:
        raise CheckpointError(f"{source}: {len(misfits)} tensors do not fit {name} (first: {misfits[0]}); "
                              "is it the checkpoint of another architecture or variant?")
    if not take:
        raise CheckpointError(f"{source}: none of its {len(state)} tensors fits {name}; is it the checkpoint of another model?")
    report.missing = [k for k in own if k not in take and k not in report.reinitialised]
    if (foreign := report.foreign(name)) is not None:
        if _STRICT.get() if strict is None else strict:
            raise CheckpointError(f"{foreign}; is this a checkpoint of another model? set transfer.strict=false to load anyway")
        log.warning("%s; loading anyway (transfer.strict=false)", foreign)
    model.load_state_dict(take, strict=False)
    return report


def load_pretrained(model: nn.Module, source: str, strict: bool | None = None) -> LoadReport:
    """Load pretrained weights from ``source`` into ``model`` (adapted, see :func:`load_state_dict_adapted`)
    and log the one-line summary."""
    report = load_state_dict_adapted(model, read_pretrained(str(source)), str(source), strict)
    log.info(report.summary())
    return report


# ---- freeze policies -------------------------------------------------------------------------------------------------

POLICIES = ("none", "linear_probe", "finetune_last", "finetune_all")


@dataclass(frozen=True)
class TransferConfig:
    """``configs/transfer/*.yaml``.

    ``name``: ``none`` (everything trains), ``linear_probe`` (only the classifier), ``finetune_last``
    (the classifier, the layers after the last stage and the last ``unfreeze`` stages),
    ``finetune_all`` (everything). ``backbone_lr_mult`` scales the learning rate of every trainable
    layer but the classifier, ``stage_lr_decay`` once more per stage below the deepest (Howard & Ruder
    use 1/2.6). ``gradual_unfreeze=k`` unfreezes one more stage every ``k`` epochs, from the deepest
    down, until all train. ``reset_classifier`` starts the classifier afresh (new classes).
    ``strict=false`` loads ``model.pretrained`` (with a warning) even when it fills at most half of the
    model's non-classifier tensors.
    """

    name: str = "none"
    unfreeze: int = 1
    backbone_lr_mult: float = 1.0
    stage_lr_decay: float = 1.0
    gradual_unfreeze: int | None = None
    reset_classifier: bool = False
    strict: bool = True

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            close = close_names(self.name, list(POLICIES))
            raise ConfigError(f"unknown transfer policy {self.name!r}; use one of {', '.join(POLICIES)}"
                              + (f" (did you mean {close[0]}?)" if close else ""))
        if self.name == "finetune_last" and self.unfreeze < 1:
            raise ConfigError(f"transfer.unfreeze must be >= 1 for finetune_last, got {self.unfreeze}; use transfer=linear_probe for 0")
        if not (self.backbone_lr_mult > 0 and self.stage_lr_decay > 0):
            raise ConfigError("transfer.backbone_lr_mult and transfer.stage_lr_decay must be > 0 (freeze layers instead of a zero rate)")
        if self.gradual_unfreeze is not None:
            if self.gradual_unfreeze < 1:
                raise ConfigError(f"transfer.gradual_unfreeze must be >= 1 epoch or null, got {self.gradual_unfreeze}")
            if self.name in ("none", "finetune_all"):
                raise ConfigError("transfer.gradual_unfreeze starts from frozen stages; use it with transfer=linear_probe or finetune_last")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | None) -> TransferConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown transfer option(s) {unknown}; known: {sorted(known)}")
        return cls(**cfg)

    @property
    def is_noop(self) -> bool:
        return self.name == "none" and self.backbone_lr_mult == 1.0 and self.stage_lr_decay == 1.0 and not self.reset_classifier


def _keep_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train`` of a frozen normalisation layer: its statistics stay those of the pretrained model."""
    return nn.Module.train(self, False)


def _freeze_norm(module: nn.Module, frozen: bool, training: bool) -> None:
    if frozen:
        module.train(False)
        module.train = types.MethodType(_keep_eval, module)  # type: ignore[method-assign]
    elif "train" in module.__dict__:
        del module.train
        module.train(training)


class TransferPolicy:
    """Freezes a classifier's stages as ``cfg`` says and gives the optimizer their learning-rate
    multipliers; :meth:`set_epoch` unfreezes stages by epoch (``gradual_unfreeze``; the trainer calls
    it through :class:`~zoo.engine.callbacks.Unfreeze`).

    Frozen parameters have ``requires_grad=False`` and their batch-norm layers stay in eval mode
    through ``model.train()``. Parameters that never train are left out of the optimizer; those a
    later epoch unfreezes are in it from the start (without gradients, optimizers skip them), so the
    optimizer and schedule keep their groups and a resumed run finds the same state.
    """

    def __init__(self, cfg: TransferConfig, model: Classifier) -> None:
        self.cfg = cfg
        self.model = model
        if cfg.reset_classifier:
            model.reset_classifier(model.num_classes)
        units = parameter_stages(model)
        self.stages, self.neck, self.classifier = units[:-2], units[-2], units[-1]
        n = len(self.stages)
        if cfg.name == "finetune_last" and cfg.unfreeze > n:
            raise ConfigError(f"transfer.unfreeze={cfg.unfreeze} but {type(model).__name__} has only {n} stages "
                              f"({', '.join(s.name for s in self.stages)}); use transfer=finetune_all")
        self.initial = {"linear_probe": 0, "finetune_last": cfg.unfreeze}.get(cfg.name, n)
        self.final = n if cfg.gradual_unfreeze else self.initial
        self._mult: dict[str, float] = {p: 1.0 for p in self.classifier.params}
        if self.final >= 1:  # the neck trains with the deepest stage
            self._mult.update({p: cfg.backbone_lr_mult for p in self.neck.params})
        for depth, stage in enumerate(reversed(self.stages[n - self.final :])):
            self._mult.update({p: cfg.backbone_lr_mult * cfg.stage_lr_decay**depth for p in stage.params})
        self.trainable = -1
        self.set_trainable(self.initial)

    def lr_mult(self, name: str) -> float | None:
        """Learning-rate multiplier of parameter ``name``; None for parameters that never train."""
        return self._mult.get(name)

    def stages_at(self, epoch: int) -> int:
        """How many stages (from the deepest) train in ``epoch``."""
        if not self.cfg.gradual_unfreeze:
            return self.initial
        return min(self.initial + epoch // self.cfg.gradual_unfreeze, self.final)

    def set_trainable(self, count: int) -> None:
        """Train the classifier and the deepest ``count`` stages (with the neck once ``count >= 1``)."""
        if count == self.trainable:
            return
        self.trainable = count
        n = len(self.stages)
        units: list[tuple[ParamStage, bool]] = [(s, i >= n - count) for i, s in enumerate(self.stages)]
        units += [(self.neck, count >= 1), (self.classifier, True)]
        params = dict(self.model.named_parameters())
        modules = dict(self.model.named_modules())
        for unit, train in units:
            for p in unit.params:
                params[p].requires_grad_(train)
            for m in unit.modules:
                if isinstance(modules[m], nn.modules.batchnorm._NormBase):
                    _freeze_norm(modules[m], not train, self.model.training)

    def describe(self) -> str:
        """One line: which stages are frozen, the learning-rate multipliers, the unfreezing schedule."""
        n = len(self.stages)
        frozen = [s.name for s in self.stages[: n - self.trainable]] + (["neck"] if self.trainable < 1 and self.neck.params else [])
        mults = ", ".join(f"{m:g}" for m in sorted(set(self._mult.values()), reverse=True))
        gradual = f"; one more stage every {self.cfg.gradual_unfreeze} epochs" if self.cfg.gradual_unfreeze else ""
        return (f"transfer {self.cfg.name}: {n - self.trainable} of {n} stages frozen ({', '.join(frozen) or 'none'}), "
                f"learning-rate multipliers {mults}{gradual}")

    def set_epoch(self, epoch: int) -> None:
        """Train the stages of ``epoch`` (0-based)."""
        count = self.stages_at(epoch)
        if count != self.trainable:
            self.set_trainable(count)
            log.info("gradual unfreezing: epoch %d trains %d of %d stages (%s trainable parameters)", epoch + 1, count,
                     len(self.stages), f"{sum(p.numel() for p in self.model.parameters() if p.requires_grad):,}")


def build_transfer(cfg: dict[str, Any] | None, model: nn.Module) -> TransferPolicy | None:
    """The policy of ``configs/transfer`` for ``model``; None when it changes nothing."""
    config = TransferConfig.from_dict(cfg)
    if config.is_noop:
        return None
    if not isinstance(model, Classifier):
        raise ConfigError(f"transfer={config.name} needs a classifier with declared stages; {type(model).__name__} is not one")
    return TransferPolicy(config, model)

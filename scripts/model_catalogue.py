#!/usr/bin/env python
"""The documentation's model catalogue, generated from the registry: one row per registered model with its
family, task, paper (authors and year), input size, parameters, GMACs of one forward pass and the torchvision weights it loads.

    python scripts/model_catalogue.py            # rewrite docs/models/catalogue.md
    python scripts/model_catalogue.py --check    # exit 1 when the file is not what the registry gives (CI)

Models are built on the meta device (no memory, no weights); MACs are half the FLOPs that
``torch.utils.flop_counter.FlopCounterMode`` counts for one sample at the registered input size (the builder's
default channels, the latent vector of a generator); "-" where a model's forward pass cannot run on meta tensors
(detectors, whose post-processing needs values) or takes no image (captioners).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's zoo, not an installed one

import torch  # noqa: E402

from zoo.models import MODELS, create_model, list_models, model_info, on_meta  # noqa: E402
from zoo.models.base import count_parameters  # noqa: E402
from zoo.models.pretrained import torchvision_weight_names  # noqa: E402
from zoo_results import generated_page  # noqa: E402

OUT = REPO / "docs" / "models" / "catalogue.md"
HEADER = """---
hide:
  - toc
---

# Model catalogue

Every registered model, generated from the registry by `python scripts/model_catalogue.py` (CI checks that this
page is current). `python train.py model=<name>` trains one; `create_model(name, num_classes=, in_chans=,
pretrained=)` builds one in Python; `pretrained=torchvision:<name>` loads the torchvision weights listed (from the
torch hub cache; see [Transfer learning](../transfer.md)). Parameters are at the registered class count (1,000 for
ImageNet models); GMACs are multiply-accumulates of one forward pass of one sample at the input size.
"""


def _without_batch_norm(model: torch.nn.Module) -> None:
    """Batch norms replaced by the identity: they multiply and add no weights (the counter counts none of their
    work), and the counter's Python decomposition of them was most of this page's time."""
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(parent, child_name, torch.nn.Identity())


def gmacs(name: str, model: torch.nn.Module, size: int) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    info = model_info(name)
    if info["task"] in ("detection", "captioning"):
        return None
    default = inspect.signature(MODELS.get(name).obj).parameters.get("in_chans")
    chans = default.default if default is not None and isinstance(default.default, int) else 3
    x = torch.empty(1, chans, size, size, device="meta")
    if info["task"] == "gan" and getattr(model, "generator", None) is not None:
        model, x = model.generator, torch.empty(1, model.latent_dim, device="meta")
    _without_batch_norm(model)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.eval()(x)
    except Exception:  # noqa: BLE001 - a model that needs real values (or another input): no count
        return None
    return counter.get_total_flops() / 2e9


def _cite(paper: str) -> str:
    """``Authors YEAR`` of a registry citation (``He et al. 2015, Deep residual learning ...``)."""
    m = re.match(r"^\s*(.*?\b(?:19|20)\d\d)\b", paper)
    return m.group(1) if m else paper.strip()


def rows() -> list[str]:
    out = []
    for name in list_models():
        info = model_info(name)
        with on_meta():
            model = create_model(name)
            params = count_parameters(model)
        macs = gmacs(name, model, int(info["input_size"]))
        weights = ", ".join(torchvision_weight_names(name)) or "-"
        paper = "; ".join(_cite(part) for part in (info.get("paper") or "-").split(";"))
        out.append(f"| `{name}` | {info['family']} | {info['task']} | {paper} | {info['input_size']} | {params:,} | "
                   f"{'-' if macs is None else f'{macs:.3g}'} | {weights} |")
    return out


def page() -> str:
    table = ["| model | family | task | paper | input | parameters | GMACs | torchvision weights |",
             "|---|---|---|---|---:|---:|---:|---|", *rows()]
    return HEADER + "\n" + "\n".join(table) + "\n"


def main() -> None:
    generated_page(OUT, page, __doc__)


if __name__ == "__main__":
    main()

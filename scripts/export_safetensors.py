#!/usr/bin/env python
"""Export the weights of a zoo checkpoint to safetensors (no pickle: safe to share and to load anywhere).

    python scripts/export_safetensors.py outputs/<run>/checkpoints/best.pt [-o model.safetensors]

The checkpoint is read with ``torch.load(weights_only=True)``; the model name and the resolved config
go into the safetensors metadata, so ``zoo.models.create_model`` can rebuild the model. The output is
written atomically and an existing file is never replaced unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def export(ckpt: Path, out: Path, force: bool = False) -> Path:
    from safetensors.torch import save_file

    from zoo.engine.checkpoint import is_zoo_checkpoint, load_checkpoint
    from zoo.engine.utils import atomic_path
    from zoo.errors import CheckpointError

    if out.exists() and not force:
        raise CheckpointError(f"{out} exists; pass --force to replace it or choose another -o")
    state = load_checkpoint(ckpt)
    weights = state["model"] if is_zoo_checkpoint(state) else state
    # safetensors wants contiguous tensors that share no storage
    tensors = {k: v.detach().clone().contiguous() for k, v in weights.items() if hasattr(v, "detach")}
    metadata = {"format": "pt", "source": str(ckpt)}
    if is_zoo_checkpoint(state):
        metadata["model_name"] = str(state.get("model_name"))
        metadata["config"] = json.dumps(state.get("config", {}), default=str)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=None, help="default: <checkpoint>.safetensors")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    from zoo.errors import ZooError

    try:
        out = export(args.checkpoint, args.output or args.checkpoint.with_suffix(".safetensors"), args.force)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(out)


if __name__ == "__main__":
    main()

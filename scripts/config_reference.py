#!/usr/bin/env python
"""The documentation's configuration reference, generated from ``configs/`` itself: every config group, every
option file in it and every key with its default and the comment the yaml gives it.

    python scripts/config_reference.py            # rewrite docs/reference/configs.md
    python scripts/config_reference.py --check    # exit 1 when the file is not what configs/ gives (CI)
"""

from __future__ import annotations

import re
from pathlib import Path

from zoo_results import generated_page

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
OUT = REPO / "docs" / "reference" / "configs.md"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[\w./@-]+):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")
HEADER = """# Configuration reference

Generated from `configs/` by `python scripts/config_reference.py` (CI checks that this page is current). Pick an
option file of a group with `group=name` (`python train.py model=resnet20 optimizer=nesterov`) and override any key
with `group.key=value`; files whose name starts with `_` hold keys that other files of the group share. The
[training guide](../training.md) explains the groups; `python train.py --cfg job` prints the composed config.
"""


def _escape(text: str) -> str:
    """Comment text as Markdown: ``<run>`` and the like shown, not taken for HTML tags."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def describe(path: Path) -> list[str]:
    """The header comment and a key table of one yaml file."""
    text = path.read_text().splitlines()
    prose, commands = [], []
    for line in text:
        if not line.startswith("#"):
            break
        if line.startswith("# @package"):
            continue
        content = line.lstrip("#").strip()
        if content.startswith(("python ", "torchrun ", "OMP_NUM_THREADS", "pytest ")):
            commands.append(content)
        elif content:
            prose.append(_escape(content))
    rows, stack = [], []
    for line in text:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.lstrip().startswith("- "):
            continue  # a list item: the defaults list, or a list value written as a block
        m = KEY.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([k for _, k in stack] + [m["key"]])
        if key == "defaults":
            continue
        value = m["value"].strip()
        if not value:
            stack.append((indent, m["key"]))
            if not m["comment"]:
                continue
        rows.append((key, value, (m["comment"] or "").strip()))
    out = [" ".join(prose)] if prose else []
    if commands:
        out += ["", "```bash", *commands, "```"]
    if rows:
        out += ["", "| key | default | |", "|---|---|---|"]
        out += [f"| `{k}` | {f'`{v}`' if v else ''} | {_escape(c).replace('|', '&#124;')} |" for k, v, c in rows]
    return out


def page() -> str:
    parts = [HEADER]
    for top in ("train.yaml", "evaluate.yaml"):
        parts += [f"## `{top}`", "", *describe(CONFIGS / top), ""]
    for group in sorted(p for p in CONFIGS.iterdir() if p.is_dir()):
        files = sorted(group.rglob("*.yaml"))
        parts += [f"## `{group.name}/`", ""]
        for path in files:
            name = path.relative_to(group).with_suffix("").as_posix()
            parts += [f"### `{group.name}={name}`" if not name.startswith("_") and "/" not in name
                      else f"### `{group.name}/{name}.yaml`", "", *describe(path), ""]
    return "\n".join(parts).rstrip() + "\n"


def main() -> None:
    generated_page(OUT, page, __doc__)


if __name__ == "__main__":
    main()

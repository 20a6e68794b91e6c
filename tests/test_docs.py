"""The documentation site (issue 26): it builds with ``mkdocs build --strict``, every page is in its navigation,
the generated pages are current and the README stays short."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text().replace("!!python", "#"))
    pages = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert set(_nav_pages(config["nav"])) == pages


def test_readme_is_short_and_links_the_site() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in ("docs/getting-started.md", "docs/training.md", "docs/models/catalogue.md", "docs/results.md"):
        assert f"]({page}" in readme and (REPO / page).exists()
    assert 'pip install -e ".[dev]"' in readme and "\npython train.py " in readme and "\npytest " in readme


@pytest.mark.parametrize("script", ["model_catalogue", "config_reference"])
def test_generated_pages_are_current(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``python scripts/<script>.py --check`` checks, in this process (torch and zoo are imported already)."""
    import importlib

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    module = importlib.import_module(script)
    assert module.OUT.read_text() == module.page(), f"run python scripts/{script}.py"


def test_the_catalogue_has_every_registered_model() -> None:
    from zoo.models import list_models

    text = (REPO / "docs" / "models" / "catalogue.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list_models()
    resnet50 = next(r for r in rows if r.startswith("| `resnet50`"))
    assert "25,557,032" in resnet50 and "| 4.09 |" in resnet50 and "IMAGENET1K_V2" in resnet50  # torchvision's numbers


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tmp_path / "site" / "models" / "catalogue" / "index.html").read_text()
    assert "resnet50" in html and (tmp_path / "site" / "api" / "index.html").exists()
    assert "create_model" in (tmp_path / "site" / "api" / "index.html").read_text()


def test_every_table_script_has_its_markers_on_a_page() -> None:
    """Each results script writes between its markers in whichever page holds them (zoo_results.update_readme)."""
    import re

    pages = "".join(p.read_text() for p in [REPO / "README.md", *(REPO / "docs").rglob("*.md")])
    scripts = {p.name: re.search(r'START, END = "(<!-- [\w-]+:start -->)", "(<!-- [\w-]+:end -->)"', p.read_text())
               for p in (REPO / "scripts").glob("*.py")}
    markers = {name: m.groups() for name, m in scripts.items() if m}
    assert len(markers) >= 10
    for name, (start, end) in markers.items():
        assert start in pages and end in pages, f"{name}: {start} has no page"

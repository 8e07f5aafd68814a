"""The layout the README draws is the layout of the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"


def design_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Design")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_readme_design_names_every_module() -> None:
    section = design_section()
    modules = sorted(
        str(p.relative_to(ROOT))
        for p in GATEWAY.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    )
    missing = [m for m in modules if f"`{m}`" not in section]
    assert not missing, f"README's Design section does not name: {missing}"
    named = set(re.findall(r"`(gateway/[\w/]+\.py)`", section))
    assert named <= set(modules), f"README names modules that do not exist: {named - set(modules)}"


def test_every_package_has_a_readme() -> None:
    packages = [p for p in GATEWAY.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert packages
    assert [p.name for p in packages if not (p / "README.md").is_file()] == []

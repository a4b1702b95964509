"""The package tree tells the data flow: imports point down the layers, and the torch-free layers import without torch.

Layers, lowest first: spec → config → data → {analysis, train} → bench → cli. `train` is what a rank runs (torch);
the launching process (`bench`, `cli`) starts it as a process and never imports it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pretrain_bench"
# package -> the packages it may import (besides itself)
ALLOWED = {
    "spec": set(),
    "config": {"spec"},
    "data": {"spec", "config"},
    "analysis": {"spec", "config"},
    "train": {"spec", "config", "data"},
    "bench": {"spec", "config", "data", "analysis"},
    "cli": {"spec", "config", "data", "analysis", "bench"},
}
TORCH_FREE = ("spec", "config", "data", "analysis", "bench", "cli")


def runtime_imports(path: Path) -> set[str]:
    """The pretrain_bench packages a module imports at run time (imports under `if TYPE_CHECKING:` are types only)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pretrain_bench"):
            names = ([node.module] if node.module != "pretrain_bench"
                     else [f"pretrain_bench.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("pretrain_bench.")]
        found |= {n.split(".")[1] for n in names if n.count(".") >= 1}
    return found


def test_every_module_lies_in_a_layer():
    top = sorted(p.name for p in SRC.iterdir() if p.suffix == ".py" and p.name != "__init__.py")
    assert top == [], f"modules outside the layers: {top}"
    assert {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down_the_flow(package):
    wrong = {str(p.relative_to(SRC)): sorted(runtime_imports(p) - ALLOWED[package] - {package})
             for p in (SRC / package).rglob("*.py")}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_torch_free_layers_import_without_torch():
    """Every module of the torch-free layers imports with torch (and DeepSpeed, transformers) made unimportable."""
    modules = [".".join(("pretrain_bench", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
               for layer in TORCH_FREE for p in sorted((SRC / layer).rglob("*.py")) if p.name != "__main__.py"]
    code = ("import sys, importlib\n"
            "for blocked in ('torch', 'deepspeed', 'transformers'):\n    sys.modules[blocked] = None\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n")
    subprocess.run([sys.executable, "-c", code], check=True)

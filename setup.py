"""Ships the top-level `configs/` and `results/reference/` inside the wheel, as `pretrain_bench/configs` and
`pretrain_bench/reference`: users find and edit them at the top of the repository, and a non-editable install
(`pip install .`, `pip install git+…`) still has them (config.compose.shipped finds either place).
Everything else about the package is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = {"configs": "configs", "results/reference": "reference"}  # repository path -> path inside the package


class BuildWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the repository's own copies
            return
        root = Path(__file__).resolve().parent
        for source, target in SHIPPED.items():
            for path in sorted((root / source).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    dest = Path(self.build_lib, "pretrain_bench", target, path.relative_to(root / source))
                    self.mkpath(str(dest.parent))
                    self.copy_file(str(path), str(dest))


setup(cmdclass={"build_py": BuildWithData})

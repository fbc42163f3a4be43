"""The one-way dependency rule, read from the source: experiments -> stages -> models -> data.

Imports are parsed with `ast`, nothing is imported, so an import inside a function counts as
much as one at the top of a module. `data/` is plain numpy/pandas/pyarrow and never imports
TensorFlow; `benchmarks/` and `tests/` may import anything.
"""

import ast
import pathlib
import subprocess
import sys
from typing import Iterator, List, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TENSORFLOW = ("tensorflow", "tensorflow_recommenders", "tf_keras", "keras")
# What each layer may not import (top-level package names).
FORBIDDEN = {
    "data": TENSORFLOW + ("models", "stages", "experiments"),
    "models": ("stages", "experiments"),
    "stages": ("experiments",),
}


def imports_of(path: pathlib.Path, root: pathlib.Path) -> Iterator[Tuple[int, str]]:
  """(line, absolute module name) of every import in the file at `path` under `root`."""
  tree = ast.parse(path.read_text(), filename=str(path))
  package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      # A relative import is resolved against the file's own package.
      parts = package.split(".") if package else []
      base = parts[:len(parts) - node.level + 1] if node.level else []
      if node.module:
        yield node.lineno, ".".join(base + [node.module])
      else:  # `from . import a, b`: the names are modules of the base package
        for alias in node.names:
          yield node.lineno, ".".join(base + [alias.name])


def layer_violations(layer: str, root: pathlib.Path = ROOT) -> List[str]:
  """`file:line imports module` for every import under root/layer that FORBIDDEN rules out."""
  found = []
  for path in sorted((root / layer).rglob("*.py")):
    for line, module in imports_of(path, root):
      if module.split(".")[0] in FORBIDDEN[layer]:
        found.append(f"{path.relative_to(root).as_posix()}:{line} imports {module}")
  return found


def test_scan_sees_absolute_relative_and_function_level_imports(tmp_path):
  (tmp_path / "data").mkdir()
  probe = tmp_path / "data" / "probe.py"
  probe.write_text("import numpy as np\nfrom data import io\n"
                   "def f():\n  import tensorflow\n  from . import world\n"
                   "  from .. import stages\n")
  assert sorted(m for _, m in imports_of(probe, tmp_path)) == [
      "data", "data.world", "numpy", "stages", "tensorflow"]
  assert layer_violations("data", tmp_path) == ["data/probe.py:4 imports tensorflow",
                                                "data/probe.py:6 imports stages"]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_no_higher_layer(layer):
  assert list((ROOT / layer).glob("*.py")), f"no modules found under {ROOT / layer}"
  assert layer_violations(layer) == []


def test_importing_data_generate_does_not_load_tensorflow():
  probe = ("import sys\nimport data.generate\n"
           f"print(sorted(m for m in {TENSORFLOW!r} if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=True)
  assert result.stdout.strip() == "[]", result.stderr

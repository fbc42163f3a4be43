"""The one-way dependency rule, read from the source: experiments -> stages -> models -> data.

Imports are parsed with `ast`, nothing is imported, so an import inside a function counts as
much as one at the top of a module. `data/` is plain numpy/pandas/pyarrow and never imports
TensorFlow; `benchmarks/` and `tests/` may import anything. Inside `data/` the same holds
between its sub-packages: world and stats build on plumbing, ingest on all three (DATA_ALLOWED).
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
# Inside data/, what each sub-package may import from data (module prefixes): the plumbing
# (commands, engine, waits, files) and the statistics know nothing of the world, and the world
# nothing of its commands (data.generate, data.verify, data.ingest) or of the statistics.
DATA_ALLOWED = {
    "plumbing": ("data.plumbing",),
    "stats": ("data.stats", "data.plumbing"),
    "world": ("data.world", "data.plumbing"),
    "ingest": ("data.ingest", "data.world", "data.stats", "data.plumbing"),
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


def data_violations(package: str, root: pathlib.Path = ROOT) -> List[str]:
  """`file:line imports module` for every import of data/ that data/<package> may not make."""
  allowed = DATA_ALLOWED[package]
  found = []
  for path in sorted((root / "data" / package).rglob("*.py")):
    for line, module in imports_of(path, root):
      inside_data = module == "data" or module.startswith("data.")
      if inside_data and not any(module == a or module.startswith(a + ".") for a in allowed):
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


def test_data_sub_package_scan_refuses_the_plumbing_reaching_into_the_world(tmp_path):
  (tmp_path / "data" / "plumbing").mkdir(parents=True)
  (tmp_path / "data" / "plumbing" / "probe.py").write_text(
      "from data.plumbing import files\nimport dataclasses\n"
      "def f():\n  from data.world import io\n  from .. import stats\n")
  assert data_violations("plumbing", tmp_path) == [
      "data/plumbing/probe.py:4 imports data.world",
      "data/plumbing/probe.py:5 imports data.stats"]


@pytest.mark.parametrize("package", sorted(DATA_ALLOWED))
def test_data_sub_package_imports_only_what_it_may(package):
  assert list((ROOT / "data" / package).glob("*.py")), f"no modules under data/{package}"
  assert data_violations(package) == []


def test_every_data_sub_package_has_a_rule():
  packages = {p.parent.name for p in (ROOT / "data").glob("*/__init__.py")}
  assert packages == set(DATA_ALLOWED)

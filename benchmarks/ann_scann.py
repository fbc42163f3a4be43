"""ScaNN's side of benchmarks/ann.py, in a process without TensorFlow (see its docstring).

  python -m benchmarks.ann_scann DIR K BATCH '[[num_leaves, leaves_searched], ...]'

Reads DIR/items.npy and DIR/queries.npy, builds a ScaNN searcher (tree, asymmetric hashing,
exact reordering of 2K) per setting, times the search in batches after a warm-up, writes each
setting's ids to DIR and prints one JSON line of rows for the parent. ScaNN's package
`__init__` loads its TensorFlow ops whenever TensorFlow is installed, and those are built for
TensorFlow 2.20; its numpy API does not need them, so the package is registered without
running that `__init__`.
"""

import importlib.util
import json
import os
import sys
import time
import types

import numpy as np


def import_scann_numpy_api():
  spec = importlib.util.find_spec("scann")
  if spec is None:
    raise SystemExit("scann is not on the path (pip install --no-deps --target DIR scann)")
  package = types.ModuleType("scann")
  package.__path__ = list(spec.submodule_search_locations or [])
  sys.modules["scann"] = package
  from scann.scann_ops.py import scann_ops_pybind  # type: ignore[import-not-found]
  return scann_ops_pybind


def main(directory: str, k: int, batch: int, settings) -> None:
  pybind = import_scann_numpy_api()
  items = np.load(os.path.join(directory, "items.npy")).astype(np.float32)
  queries = np.load(os.path.join(directory, "queries.npy")).astype(np.float32)
  n = len(queries)
  rows = []
  for leaves, searched in settings:
    started = time.perf_counter()
    searcher = (pybind.builder(items, k, "dot_product")
                .tree(num_leaves=leaves, num_leaves_to_search=searched,
                      training_sample_size=len(items))
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .reorder(2 * k).build())
    build = time.perf_counter() - started
    searcher.search_batched(queries[:batch])
    wall, cpu = time.perf_counter(), time.process_time()
    ids = np.concatenate([searcher.search_batched(queries[s:s + batch])[0]
                          for s in range(0, n, batch)]).astype(np.int64)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    name = f"scann_{leaves}_{searched}.npy"
    np.save(os.path.join(directory, name), ids)
    rows.append({"index": f"scann (tree {leaves} leaves, {searched} searched, AH, reorder "
                          f"{2 * k})", "build_s": build, "wall": wall, "cpu": cpu,
                 "scored": searched / leaves, "ids_file": name})
  print(json.dumps(rows))


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]))

r"""Benchmark of retrieval's top-k indexes: exact brute force against ANN indexes, in one run.

  python -m benchmarks.ann --world_dir=/tmp/worlds/small --model_dir=/tmp/msmall [--day=8] \
      [--k=1000] [--requests=4096] [--batch_requests=256] [--scann_path=DIR]

Prints figures, asserts nothing. The retrieval export (`stages.retrieval`) is searched for the
replayed day's requests (a seeded subset of --requests), --batch_requests at a time as the
replay does, by:
  * brute_force: the export's own TFRS BruteForce signature (what the replay serves with);
  * faiss_flat: FAISS's exact inner-product search over the same vectors (a reference);
  * faiss_ivf at several nprobe, faiss_hnsw at several ef_search (models.ann);
  * scann (tree + asymmetric hashing + reordering), only with --scann_path: ScaNN 1.4.2 cannot
    be installed beside TensorFlow 2.21 (its package loads TF ops built for 2.20, and then
    `import tensorflow_recommenders` fails; BUILD_NOTES.md, "Retrieval index"), so it runs in
    a TensorFlow-free child process from a directory made with
    `pip install --no-deps --target DIR scann==1.4.2`, on the same vectors.
For each: index build seconds; recall@K and recall@100 against the exact top K (the share of
the exact top K the index returns, mean over requests); recall@K of the day's clicked items
(what stages.retrieval reports); requests/s (wall) and CPU ms per request, the user tower
included (the SavedModel's `user_vectors` signature for the ANN indexes, inside the
BruteForce signature for the exact one); the share of the corpus scored per request where the
index says. The machine's load average is printed before and after.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf  # after models, which picks TensorFlow's Keras

import data
from data.stats import metrics as metrics_lib
from models import ann
from models import export
from stages import serving

FLAGS = flags.FLAGS
IVF_NPROBES = (32, 48, 64, 96, 128)
HNSW_EF_SEARCH = (1000, 2000)
SCANN_LEAVES = ((1000, 50), (1000, 100), (1000, 200))  # (num_leaves, leaves searched)


def define_flags() -> None:
  flags.DEFINE_string("world_dir", None, "The world (python -m data.generate).")
  flags.DEFINE_string("model_dir", None, "Model root holding retrieval/baseline.")
  flags.DEFINE_integer("day", None, "Day whose requests are the queries (default: the last).")
  flags.DEFINE_integer("k", 1000, "Items retrieved per request (the funnel's N1).")
  flags.DEFINE_integer("requests", 4096, "Requests timed (a seeded subset of the day; 0: all).")
  flags.DEFINE_integer("batch_requests", 256, "Requests per index call (the replay's batch).")
  flags.DEFINE_string("scann_path", "", "A directory holding ScaNN (pip install --no-deps "
                      "--target DIR scann==1.4.2); empty: ScaNN is not measured.")


def load_average() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_batches(search: Callable[[int, int], np.ndarray], n: int,
                  batch: int) -> Tuple[np.ndarray, float, float]:
  """(ids [n, k], wall seconds, CPU seconds) of `search(start, stop)` over every batch, after
  one untimed warm-up batch."""
  search(0, min(batch, n))
  wall, cpu = time.perf_counter(), time.process_time()
  ids = np.concatenate([search(s, min(s + batch, n)) for s in range(0, n, batch)])
  return ids, time.perf_counter() - wall, time.process_time() - cpu


def recall_against(ids: np.ndarray, exact: np.ndarray, k: int) -> float:
  """Mean share of each row's exact top k among the index's top k."""
  return float(np.mean(metrics_lib.topk_overlap(ids[:, :k], exact[:, :k])))


def clicked_recall(ids: np.ndarray, relevant: List[np.ndarray], k: int) -> float:
  return float(metrics_lib.recall_at_k(ids, relevant, [k])[k])


def day_queries(world, day: int, n: int, index: serving.RetrievalIndex):
  """The day's requests (a seeded subset of n), their query features and clicked items."""
  request_ids = np.sort(world.request_arrays([day], ["request_id"])["request_id"])
  if 0 < n < len(request_ids):
    request_ids = np.sort(np.random.default_rng(0).choice(request_ids, n, replace=False))
  rows = serving.request_rows(world, [day], request_ids)
  logs = world.logs([day])
  clicks = logs[(logs["click"] > 0) & logs["request_id"].isin(request_ids)]
  by_request = {r: g["item_id"].to_numpy() for r, g in clicks.groupby("request_id")}
  relevant = [by_request.get(r, np.zeros(0, np.int64)) for r in request_ids]
  return {name: rows[name] for name in index.query_inputs}, relevant


def scann_rows(scann_path: str, items: np.ndarray, queries: np.ndarray, k: int,
               batch: int) -> List[Dict[str, Any]]:
  """ScaNN's figures from a TensorFlow-free child process (see the module docstring); its ids
  are rows of `items`."""
  with tempfile.TemporaryDirectory() as tmp:
    np.save(os.path.join(tmp, "items.npy"), items)
    np.save(os.path.join(tmp, "queries.npy"), queries)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [scann_path, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]))
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.ann_scann", tmp, str(k), str(batch),
         json.dumps(SCANN_LEAVES)], env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
      raise RuntimeError(f"the ScaNN child failed:\n{result.stderr[-2000:]}")
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    for row in rows:
      row["ids"] = np.load(os.path.join(tmp, row.pop("ids_file")))
    return rows


def main(argv) -> None:
  del argv
  print(f"load average before: {load_average()}")
  world = data.load(FLAGS.world_dir, verify="size")
  day = FLAGS.day or world.days[-1]
  exact_index = serving.load_retrieval(FLAGS.model_dir)
  k = FLAGS.k
  queries, relevant = day_queries(world, day, FLAGS.requests, exact_index)
  n, batch = len(relevant), FLAGS.batch_requests
  export_dir = exact_index.path
  items = np.load(os.path.join(export_dir, exact_index.meta["item_vectors"]))
  item_ids = np.load(os.path.join(export_dir, exact_index.meta["item_ids"]))
  user_tower = export.load_saved_model(export_dir).signatures["user_vectors"]

  def tower(start, stop):
    """The export's user tower on requests start..stop: [n, d] query vectors."""
    return np.asarray(user_tower(**{name: tf.constant(v[start:stop])
                                    for name, v in queries.items()})["user_vectors"])

  print(f"world {FLAGS.world_dir}, day {day}: {n} requests, {len(items)} items, "
        f"{items.shape[1]}-d vectors, top {k}, {batch} requests per call")
  rows: List[Dict[str, Any]] = []

  def batch_queries(start, stop):
    return {name: v[start:stop] for name, v in queries.items()}

  exact, wall, cpu = timed_batches(
      lambda s, e: exact_index.top_items(batch_queries(s, e), k, batch), n, batch)
  rows.append({"index": "brute_force (TFRS, the export)", "build_s": 0.0, "ids": exact,
               "wall": wall, "cpu": cpu, "scored": 1.0})
  query_vectors = np.concatenate([tower(s, min(s + batch, n)) for s in range(0, n, batch)])
  faiss = ann.import_faiss()
  flat = faiss.IndexFlatIP(items.shape[1])
  flat.add(np.ascontiguousarray(items, np.float32))
  ids, wall, cpu = timed_batches(
      lambda s, e: item_ids[flat.search(tower(s, e), k)[1]], n, batch)
  rows.append({"index": "faiss_flat (exact)", "build_s": 0.0, "ids": ids, "wall": wall,
               "cpu": cpu, "scored": 1.0})
  specs = ([ann.IndexSpec(ann.FAISS_IVF, nprobe=p) for p in IVF_NPROBES]
           + [ann.IndexSpec(ann.FAISS_HNSW, ef_search=e) for e in HNSW_EF_SEARCH])
  for spec in specs:
    started = time.perf_counter()
    index = ann.FaissTopK(spec, k=k).index(items, item_ids)
    build = time.perf_counter() - started
    ids, wall, cpu = timed_batches(
        lambda s, e: item_ids[index.search(tower(s, e), k)[1]], n, batch)
    knobs = ", ".join(f"{key}={value}" for key, value in spec.describe().items()
                      if key not in ("kind", "seed"))
    cells = ann.ivf_cells(len(items), spec.nlist)
    rows.append({"index": f"{spec.kind} ({knobs or 'defaults'}"
                 + (f", {cells} cells" if spec.kind == ann.FAISS_IVF else "") + ")",
                 "build_s": build, "ids": ids, "wall": wall, "cpu": cpu,
                 "scored": min(1.0, spec.nprobe / cells) if spec.kind == ann.FAISS_IVF
                 else float("nan")})
  if FLAGS.scann_path:
    tower_wall = timed_batches(tower, n, batch)
    for row in scann_rows(FLAGS.scann_path, items, query_vectors, k, batch):
      # The child timed the search alone; add this process's user-tower time.
      row["ids"] = item_ids[row["ids"]]
      row["wall"] += tower_wall[1]
      row["cpu"] += tower_wall[2]
      rows.append(row)
  print(f"\n| index | build s | recall@{k} vs exact | recall@100 vs exact | clicked-item "
        f"recall@{k} | requests/s (wall) | CPU ms/request | share of items scored |")
  print("|---|---|---|---|---|---|---|---|")
  for row in rows:
    scored = "" if np.isnan(row["scored"]) else f"{row['scored']:.1%}"
    print(f"| {row['index']} | {row['build_s']:.2f} | {recall_against(row['ids'], exact, k):.4f}"
          f" | {recall_against(row['ids'], exact, 100):.4f} | "
          f"{clicked_recall(row['ids'], relevant, k):.4f} | {n / row['wall']:,.0f} | "
          f"{1e3 * row['cpu'] / n:.3f} | {scored} |")
  print(f"\nload average after: {load_average()}")


def run() -> None:
  define_flags()
  flags.mark_flags_as_required(["world_dir", "model_dir"])
  app.run(main)


if __name__ == "__main__":
  run()

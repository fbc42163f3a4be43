"""Top-k indexes over precomputed item vectors, behind TFRS's `factorized_top_k.TopK` call.

Retrieval scores a user vector against every item of the corpus. TFRS ships two indexes behind
one `TopK` interface (`index(candidates, identifiers)`, then `scores, ids = index(queries, k)`):
`BruteForce`, exact, and `ScaNN`, whose TensorFlow ops are built against TensorFlow 2.20 and do
not load beside the project's 2.21 (BUILD_NOTES.md, "Retrieval index"). `FaissTopK` is an
approximate index from FAISS (`faiss-cpu`) behind that same call, so the retrieval stage and
the replay use either without knowing which:

  brute_force  TFRS BruteForce: every item scored, exact.
  faiss_ivf    FAISS IVF-Flat, inner product (the default): items clustered into `nlist` cells
               by k-means; a query scores the items of its `nprobe` nearest cells only.
  faiss_hnsw   FAISS HNSW-Flat, inner product: a navigable small-world graph searched with a
               beam of `ef_search` (at least k).

`benchmarks/ann.py` measures recall@K against the exact top K, requests/s and build time of
each side by side; `docs/scaling.md` uses its figures. A FAISS index searches numpy arrays, so
`FaissTopK` runs eagerly (it cannot live inside a SavedModel graph): the retrieval export keeps
its exact SavedModel signature and adds the user tower and the item vectors, from which an ANN
index is built (or read back from the export, `save` / `load`).
"""

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import numpy.typing as npt
import tensorflow as tf
import tensorflow_recommenders as tfrs

BRUTE_FORCE = "brute_force"
FAISS_IVF = "faiss_ivf"
FAISS_HNSW = "faiss_hnsw"
INDEXES = (BRUTE_FORCE, FAISS_IVF, FAISS_HNSW)
INDEX_FILE = "ann.faiss"  # an ANN index saved beside an export's item vectors
# The default of stages.retrieval and experiments.replay: its recall@1000 against the exact
# top 1000 is 0.98 on the small world (benchmarks/ann.py), above the 0.95 below which the
# default would stay exact.
DEFAULT_INDEX = FAISS_IVF


@dataclasses.dataclass(frozen=True)
class IndexSpec:
  """Which index, and its knobs (each used by one kind; the defaults are benchmarks/ann.py's
  choice on the small world: see docs/scaling.md)."""
  kind: str = BRUTE_FORCE
  nlist: int = 0          # faiss_ivf cells; 0: 4 * sqrt(n_items), at most n_items // 39
  nprobe: int = 64        # faiss_ivf cells searched per query
  hnsw_m: int = 32        # faiss_hnsw links per node
  ef_search: int = 0      # faiss_hnsw search beam; 0: 2 * k
  seed: int = 0           # k-means seed (faiss_ivf)

  def __post_init__(self) -> None:
    if self.kind not in INDEXES:
      raise ValueError(f"unknown index {self.kind!r}; expected one of {', '.join(INDEXES)}")

  @property
  def exact(self) -> bool:
    return self.kind == BRUTE_FORCE

  def describe(self) -> Dict[str, Any]:
    """The knobs that matter for this kind (for metrics.json and the export's meta)."""
    knobs = {FAISS_IVF: ("nlist", "nprobe", "seed"), FAISS_HNSW: ("hnsw_m", "ef_search")}
    return {"kind": self.kind, **{name: getattr(self, name) for name in knobs.get(self.kind, ())}}


def import_faiss() -> Any:  # the faiss module (untyped)
  """The faiss module; an ImportError that says how to install it otherwise."""
  try:
    import faiss
  except ImportError:
    raise ImportError("an ANN index needs FAISS: pip install -c constraints.txt faiss-cpu"
                      ) from None
  return faiss


def ivf_cells(n_items: int, nlist: int = 0) -> int:
  """The IVF cell count: `nlist`, or 4 sqrt(n) (FAISS's rule of thumb), with >= 39 training
  points per cell (k-means' own floor) and at least one cell."""
  cells = nlist or int(4 * np.sqrt(n_items))
  return max(1, min(cells, n_items // 39))


def build_faiss(spec: IndexSpec, vectors: np.ndarray, k: int) -> Any:  # a faiss.Index
  """A FAISS inner-product index over `vectors` [n, d] (rows are ids 0..n-1)."""
  faiss = import_faiss()
  vectors = np.ascontiguousarray(vectors, dtype=np.float32)
  n, dim = vectors.shape
  if spec.kind == FAISS_IVF:
    cells = ivf_cells(n, spec.nlist)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = spec.seed
    index.train(vectors)
    index.add(vectors)
    index.nprobe = min(spec.nprobe, cells)
  elif spec.kind == FAISS_HNSW:
    index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    index.hnsw.efSearch = max(spec.ef_search or 2 * k, k)
  else:
    raise ValueError(f"{spec.kind} is not a FAISS index")
  return index


class FaissTopK(tfrs.layers.factorized_top_k.TopK):
  """A FAISS index behind TFRS's TopK call: `scores, ids = index(queries, k)`.

  `query_model` (optional, as in TFRS) maps raw query features to query vectors; without it
  the queries are the vectors. Runs eagerly: FAISS searches numpy arrays.
  """

  def __init__(self, spec: IndexSpec, query_model: Optional[Any] = None, k: int = 10,
               **kwargs: Any) -> None:
    super().__init__(k=k, **kwargs)
    if spec.exact:
      raise ValueError("FaissTopK is an approximate index; use TFRS's BruteForce for "
                       f"{BRUTE_FORCE}")
    self.spec = spec
    self.query_model = query_model
    self._faiss: Any = None
    self._identifiers: np.ndarray = np.zeros(0, np.int64)

  def index(self, candidates: npt.ArrayLike,
            identifiers: Optional[npt.ArrayLike] = None) -> "FaissTopK":
    vectors = np.asarray(candidates, dtype=np.float32)
    self._faiss = build_faiss(self.spec, vectors, self._k)
    self._identifiers = (np.arange(len(vectors), dtype=np.int64) if identifiers is None
                         else np.asarray(identifiers))
    return self

  def call(self, queries: tf.Tensor, k: Optional[int] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    if self._faiss is None:
      raise ValueError("The index is empty: call index() first")
    k = k if k is not None else self._k
    if self.query_model is not None:
      queries = self.query_model(queries)
    scores, rows = self.search(np.asarray(queries, dtype=np.float32), k)
    return tf.constant(scores), tf.constant(self._identifiers[rows])

  def search(self, vectors: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers) [n, k], best first. A row FAISS could not fill (-1: fewer than k
    items in the cells searched) gets the best items not yet in it, scored -inf."""
    scores, rows = self._faiss.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    short = rows < 0
    if short.any():
      rows, scores = _fill_short_rows(rows, scores, short, len(self._identifiers))
    return scores, rows

  def is_exact(self) -> bool:
    return False

  @property
  def n_items(self) -> int:
    return len(self._identifiers)

  def save(self, directory: str) -> str:
    """Writes the FAISS index to directory/INDEX_FILE (the identifiers are the export's)."""
    path = os.path.join(directory, INDEX_FILE)
    import_faiss().write_index(self._faiss, path)
    return path

  def load(self, directory: str, identifiers: np.ndarray) -> "FaissTopK":
    """Reads an index `save` wrote; `identifiers` are the item ids of its rows."""
    faiss = import_faiss()
    self._faiss = faiss.read_index(os.path.join(directory, INDEX_FILE))
    if self._faiss.ntotal != len(identifiers):
      raise ValueError(f"{directory}/{INDEX_FILE} holds {self._faiss.ntotal} items, the export "
                       f"{len(identifiers)}")
    if self.spec.kind == FAISS_IVF:
      faiss.extract_index_ivf(self._faiss).nprobe = self.spec.nprobe
    elif self.spec.kind == FAISS_HNSW:
      self._faiss.hnsw.efSearch = max(self.spec.ef_search or 2 * self._k, self._k)
    self._identifiers = np.asarray(identifiers)
    return self


def _fill_short_rows(rows: np.ndarray, scores: np.ndarray, short: np.ndarray,
                     n_items: int) -> Tuple[np.ndarray, np.ndarray]:
  """Replaces FAISS's -1 slots with the lowest item rows not already returned (score -inf),
  so every query gets k distinct items as the exact index would."""
  rows, scores = rows.copy(), scores.copy()
  for r in np.flatnonzero(short.any(axis=1)):
    taken = set(rows[r][~short[r]].tolist())
    fill = [i for i in range(n_items) if i not in taken][:int(short[r].sum())]
    rows[r, short[r]] = fill
    scores[r, short[r]] = -np.inf
  return rows, scores


def make_index(spec: IndexSpec, query_model: Optional[Any],
               k: int) -> tfrs.layers.factorized_top_k.TopK:
  """The TopK layer for `spec`: TFRS BruteForce (exact) or a FaissTopK."""
  if spec.exact:
    return tfrs.layers.factorized_top_k.BruteForce(query_model, k=k)
  return FaissTopK(spec, query_model, k=k)

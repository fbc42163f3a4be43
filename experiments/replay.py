"""Replay a held-out day through the trained funnel and score it against the world's oracle.

  python -m experiments.replay --world_dir=W --model_dir=M --run_dir=R --day=8 \
      --funnel=retrieval:1000,coarse:100,fine:10 --coarse_variant=pfd_md --cvr_variant=pfd \
      --ctr_variant=baseline --rank_by=ctcvr_gmv [--label=...] [--seed=0] [--max_requests=0] \
      [--batch_requests=256] [--cascade_sample=0] [--store_retrieved] [--overwrite]

Every request of the day goes, in batches, through the exported stages: the retrieval index
returns N1 items of the whole corpus; the coarse two-tower scores them (one matrix product) and
keeps N2; the fine CTR and CVR models score those N2 on their point-in-time features and show
the top K by `--rank_by` (ctr: pCTR, ctcvr: pCTR*pCVR, ctcvr_gmv: pCTR*pCVR*price), at
positions 0..K-1 in that order.

The oracle then says what each page earns in expectation (clicks, conversions, GMV) and what
the best page of K over the whole corpus would earn on the objective the page was ranked by;
per stage, how many of those best items survive; how well coarse agrees with fine on the N1
(coarse->fine recall, and Kendall tau between the coarse score and the fine stage's ranking
score, i.e. the --rank_by objective); offline AUC / GAUC of each model on the day's logged
impressions; and wall-clock latency per stage. The cascade figures need the fine models on all
N1 candidates, the replay's most expensive step (~50 ms of CPU per request at N1 = 1000), so
`--cascade_sample` limits them to a seeded subset of requests (summary: cascade/n_requests).

Outputs, read by `experiments.compare` (keep them in step with its docstring):
  R/summary.json        format 1: label, seed, day, world_hash, config, models, flat metrics
  R/per_request.parquet one row per request: outcomes, survival, cascade, page / coarse ids
The run is resumable: each finished batch is written to R/.partial/chunk-NNNNN.parquet (with
its timings in chunk-NNNNN.json); a rerun with the same configuration skips finished batches.
summary.json is written last, so a directory with one always holds a finished replay.
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import data
from data import files
from data import numeric
from data import ids as id_lookup
from data import oracle as oracle_lib
from data.config import SECONDS_PER_DAY
from models import export
from data import metrics as metrics_lib
from stages import common
from stages import fine as _fine  # noqa: F401  (defines --ctr_variant, which replay shares)
from stages import serving

FLAGS = flags.FLAGS
OBJECTIVES = ("ctr", "ctcvr", "ctcvr_gmv")
# The oracle outcome each objective is the expected value of (the property-tested one).
OBJECTIVE_OUTCOME = {"ctr": "clicks", "ctcvr": "conversions", "ctcvr_gmv": "gmv"}
OUTCOMES = ("clicks", "conversions", "gmv")
STAGES = ("retrieval", "coarse", "fine")
PARTIAL = ".partial"
SUMMARY = "summary.json"
PER_REQUEST = "per_request.parquet"
CASCADE_ROWS = 1 << 15  # (request, candidate) rows the fine models score at once for the cascade


# --world_dir, --seed and --overwrite come from data/cli.py, --model_dir from stages/common.py
# and --ctr_variant from stages/fine.py: shared flags are defined once, where they belong.
flags.DEFINE_string("run_dir", None, "Where summary.json and per_request.parquet are written.")
flags.DEFINE_integer("day", None, "The held-out day to replay. Default: the world's last day.")
flags.DEFINE_string("funnel", "retrieval:1000,coarse:100,fine:10",
                    "Items kept by each stage: retrieval:N1,coarse:N2,fine:K (K = page size).")
flags.DEFINE_string("coarse_variant", "pfd_md", "Coarse model: MODEL_DIR/coarse/<variant>.")
flags.DEFINE_string("cvr_variant", "pfd", "Fine CVR model: MODEL_DIR/fine/cvr/<variant>.")
flags.DEFINE_enum("rank_by", "ctcvr_gmv", list(OBJECTIVES), "What the fine stage sorts the page "
                  "by: ctr = pCTR, ctcvr = pCTR*pCVR, ctcvr_gmv = pCTR*pCVR*price.")
flags.DEFINE_string("label", None, "Run label for compare. Default: coarse=<v>,cvr=<v>[,...].")
flags.DEFINE_integer("max_requests", 0, "Replay a seeded random subset of this many requests "
                     "(0: every request of the day).")
flags.DEFINE_integer("batch_requests", 256, "Requests per batch (and per resumable chunk).")
flags.DEFINE_integer("cascade_sample", 0, "Score the N1 candidates with the fine models for a "
                     "seeded random subset of this many requests (0: all) for coarse->fine "
                     "recall and Kendall tau.")
flags.DEFINE_bool("store_retrieved", False, "Also store retrieval's N1 ids per request.")
flags.DEFINE_integer("log_every_batches", 10, "Log progress every this many batches.")
flags.DEFINE_string("oracle_cache_dir", None, "Keep the oracle's best pages here and reuse "
                    "them in later replays of the same world, day, page size and objective "
                    "(they depend on nothing else). Default: no cache.")
flags.DEFINE_integer("oracle_block_pairs", 1 << 20, "(request, item) pairs the oracle's "
                     "best-page search evaluates at once (bounds its memory).")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Funnel:
  """How many items each stage keeps: N1 retrieved, N2 after coarse, K on the page."""
  retrieval: int
  coarse: int
  page: int

  def spec(self) -> str:
    return f"retrieval:{self.retrieval},coarse:{self.coarse},fine:{self.page}"


def parse_funnel(spec: str) -> Funnel:
  """'retrieval:1000,coarse:100,fine:10' -> Funnel(1000, 100, 10); errors say what is wrong."""
  sizes = {}
  for part in str(spec).split(","):
    name, _, value = part.strip().partition(":")
    if name not in STAGES or not value.strip().isdigit():
      raise common.StageError(f"--funnel={spec!r}: expected retrieval:N1,coarse:N2,fine:K "
                              "with positive integers")
    sizes[name] = int(value)
  if set(sizes) != set(STAGES):
    raise common.StageError(f"--funnel={spec!r} must name retrieval, coarse and fine")
  funnel = Funnel(sizes["retrieval"], sizes["coarse"], sizes["fine"])
  if not funnel.retrieval >= funnel.coarse >= funnel.page >= 1:
    raise common.StageError(f"--funnel={spec!r}: need N1 >= N2 >= K >= 1")
  return funnel


@dataclasses.dataclass
class ReplayConfig:
  """One replay, independent of absl (tests and experiments.paper build it directly)."""
  world_dir: str
  model_dir: str
  run_dir: str
  day: Optional[int] = None
  coarse_variant: str = "pfd_md"
  cvr_variant: str = "pfd"
  ctr_variant: str = "baseline"
  rank_by: str = "ctcvr_gmv"
  label: Optional[str] = None
  seed: int = 0
  max_requests: int = 0
  batch_requests: int = 256
  cascade_sample: int = 0
  store_retrieved: bool = False
  overwrite: bool = False
  log_every_batches: int = 10
  oracle_block_pairs: int = 1 << 20
  oracle_cache_dir: Optional[str] = None

  def run_label(self) -> str:
    """--label, or the variants that make this run differ from the default funnel."""
    if self.label:
      return self.label
    label = f"coarse={self.coarse_variant},cvr={self.cvr_variant}"
    if self.ctr_variant != "baseline":
      label += f",ctr={self.ctr_variant}"
    if self.rank_by != "ctcvr_gmv":
      label += f",rank_by={self.rank_by}"
    return label


# Config fields that do not change a replay's per-request results (a resumed run may differ).
_NOT_RESULTS = ("world_dir", "model_dir", "run_dir", "label", "overwrite", "log_every_batches",
                "oracle_block_pairs", "oracle_cache_dir")


# ---------------------------------------------------------------------------------------------
# Models: load, and refuse models of another world or trained on the replayed day
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FunnelModels:
  """The four exports a funnel serves with, plus what produced each (for summary.json)."""
  retrieval: serving.RetrievalIndex
  coarse: serving.CoarseScorer
  fine_ctr: export.ServingModel
  fine_cvr: export.ServingModel
  facts: Dict[str, Dict[str, Any]]
  fingerprint: str


def check_model(name: str, path: str, meta: dict, world, day: int) -> Dict[str, Any]:
  """Refuses a model of another world or one that trained on `day`; returns its facts."""
  extra = meta.get("extra") or {}
  where = os.path.join(path, export.META_FILE)
  if "world_hash" not in extra or "train_days" not in extra:
    raise common.StageError(f"{name} model at {path}: {where} records no world_hash / "
                            "train_days; retrain it with its stage command")
  if extra["world_hash"] != world.world_hash:
    raise common.StageError(
        f"{name} model at {path} was trained on another world (world_hash "
        f"{str(extra['world_hash'])[:12]}..., this world {world.world_hash[:12]}...); replay "
        "with that model's world or retrain it on this one")
  train_days = [int(d) for d in extra["train_days"]]
  if day in train_days:
    raise common.StageError(
        f"--day={day} is a training day of the {name} model at {path} (train_days "
        f"{train_days}); replay a held-out day")
  return {"variant": extra.get("variant"), "path": os.path.abspath(path),
          "train_days": train_days}


def _files_digest(paths: Sequence[str]) -> str:
  digest = hashlib.sha256()
  for path in paths:
    if os.path.exists(path):
      with open(path, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


def load_models(config: ReplayConfig, world, day: int) -> FunnelModels:
  """Loads and checks every stage's export; StageError names the command to train a missing one."""
  retrieval = serving.load_retrieval(config.model_dir)
  coarse = serving.load_coarse(config.model_dir, config.coarse_variant)
  fine_ctr = serving.load_fine(config.model_dir, "ctr", config.ctr_variant)
  fine_cvr = serving.load_fine(config.model_dir, "cvr", config.cvr_variant)
  loaded = {"retrieval": (retrieval.path, retrieval.meta),
            "coarse": (coarse.path, coarse.model.meta),
            "fine_ctr": (fine_ctr.path, fine_ctr.meta), "fine_cvr": (fine_cvr.path, fine_cvr.meta)}
  facts = {name: check_model(name, path, meta, world, day)
           for name, (path, meta) in loaded.items()}
  paths = [os.path.join(path, name) for path, _ in loaded.values()
           for name in (export.META_FILE, "variables/variables.index", serving.ITEM_VECTORS)]
  return FunnelModels(retrieval, coarse, fine_ctr, fine_cvr, facts, _files_digest(paths))


# ---------------------------------------------------------------------------------------------
# The funnel's stages (each takes a batch of requests)
# ---------------------------------------------------------------------------------------------


def top_k_by(scores: np.ndarray, item_ids: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
  """Each row's k best items by score, best first (ties: the earlier column): (ids, scores)."""
  if k < scores.shape[1]:
    # Only the k best need sorting: keep every column tied with the k-th, then sort those.
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]
    keep = scores >= kth
    width = int(keep.sum(1).max())
    cols = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    inner = np.argsort(-np.take_along_axis(scores, cols, 1), axis=1, kind="stable")[:, :k]
    order = np.take_along_axis(cols, inner, 1)
  else:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(item_ids, order, 1), np.take_along_axis(scores, order, 1)


def retrieve(index: serving.RetrievalIndex, queries: Dict[str, np.ndarray],
             k: int) -> np.ndarray:
  """Retrieval's top-k item ids of the whole corpus per request, best first: [n, k]."""
  return index.top_items(queries, k).astype(np.int64)


def coarse_rank(scorer: serving.CoarseScorer, queries: Dict[str, np.ndarray],
                retrieved: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
  """Coarse scores of the retrieved items [n, N1] and the k it keeps, best first [n, k]."""
  scores = scorer.score(queries, retrieved)
  kept, _ = top_k_by(scores, retrieved, k)
  return scores, kept


def fine_objective(world, models: FunnelModels, request_ids: np.ndarray, item_ids: np.ndarray,
                   rank_by: str) -> np.ndarray:
  """The fine stage's ranking score of candidates [n, m] on their point-in-time features."""
  features = world.features.compute(request_ids, item_ids)
  score = models.fine_ctr.predict_candidates(features).astype(np.float64)
  if rank_by in ("ctcvr", "ctcvr_gmv"):
    score = score * models.fine_cvr.predict_candidates(features).astype(np.float64)
  if rank_by == "ctcvr_gmv":
    score = score * features["item_price"].astype(np.float64)
  return score


def fine_rank(world, models: FunnelModels, request_ids: np.ndarray, candidates: np.ndarray,
              k: int, rank_by: str) -> np.ndarray:
  """The shown page: the k candidates with the best fine objective, in page order [n, k]."""
  page, _ = top_k_by(fine_objective(world, models, request_ids, candidates, rank_by),
                     candidates, k)
  return page


# ---------------------------------------------------------------------------------------------
# Oracle: what a page earns, and the best page of the whole corpus
# ---------------------------------------------------------------------------------------------


def page_outcomes(oracle, request_ids: np.ndarray, page_ids: np.ndarray) -> Dict[str, np.ndarray]:
  """Expected clicks, conversions and GMV of each page (item j shown at position j): [n] each."""
  expected = oracle.expected_outcomes(request_ids, page_ids,
                                      positions=np.arange(page_ids.shape[1]))
  return {"clicks": expected["click"].sum(1), "conversions": expected["conversion"].sum(1),
          "gmv": expected["gmv"].sum(1)}


def oracle_item_values(oracle, request_ids: np.ndarray, item_ids: np.ndarray, rank_by: str,
                       prices: np.ndarray) -> np.ndarray:
  """The true per-item value of `rank_by` at position 0: P(click) [* P(conv) [* price]]."""
  value = oracle.p_click(request_ids, item_ids)
  if rank_by in ("ctcvr", "ctcvr_gmv"):
    value = value * oracle.p_convert(request_ids, item_ids)
  if rank_by == "ctcvr_gmv":
    value = value * prices[item_ids].astype(np.float64)
  return value


class ConversionBounds:
  """Lower and upper bounds of P(conversion | click) as a function of its latent mean.

  P(conv | click) = expected_sigmoid(mean) is increasing in the mean, so its values at the
  grid points around a mean bound it from both sides. Used to screen the corpus; the items
  that pass are then valued exactly by the oracle.
  """

  LOW, HIGH, STEP = -40.0, 40.0, 1.0 / 256

  def __init__(self):
    grid = np.arange(self.LOW, self.HIGH + self.STEP / 2, self.STEP)
    values = oracle_lib.expected_sigmoid(grid)
    # Cell c >= 1 holds means in [grid[c-1], grid[c]); cell 0 everything below the grid and
    # the last cell everything above it (np.take's mode="clip" sends outliers there).
    self._lower = np.concatenate([[0.0], values]).astype(np.float32)
    self._upper = np.concatenate([values, [1.0]]).astype(np.float32)

  def __call__(self, means: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of each mean; overwrites `means` (a temporary) to save memory passes."""
    means -= np.float32(self.LOW - self.STEP)
    means *= np.float32(1.0 / self.STEP)
    cell = means.astype(np.int32)  # truncation: negative cells clip to 0, which is safe
    return (np.take(self._lower, cell, mode="clip"), np.take(self._upper, cell, mode="clip"))


# Relative error allowed for the float32 screen (far above its rounding error, ~1e-6).
_SCREEN_SLACK = 1e-3


@dataclasses.dataclass
class _Screen:
  """Running state of the best-page screen of a block of requests over the corpus."""
  top_lower: np.ndarray   # [b, K] the K largest lower bounds seen so far
  ids: np.ndarray         # [b, C] items that may still be in the best K (-1: none)
  upper: np.ndarray       # [b, C] their upper bounds (-inf: none)


class OracleBestPage:
  """The oracle's best page of K items over the whole corpus, for requests of one day.

  The best page holds the K items of highest true value on the objective (e.g. P(click at
  position 0) * P(conversion) * price), in decreasing order. Valuing all ~10^5 items exactly
  per request would cost ~0.2 s, so the corpus is screened in float32 chunks with bounds on
  the value that use the oracle's own formulas (data.oracle): the click logit with no repeat
  views (exact for items the user was not shown in the last 7 days, a lower bound otherwise)
  and `ConversionBounds`. An item whose upper bound falls below the K-th largest lower bound
  cannot be in the best K. Items the user was shown in the last 7 days (the only ones with
  views) are bounded again with their view counts. The survivors, ~K per request, are then
  valued exactly with `world.oracle`, so the result is the exact best page.
  """

  def __init__(self, world, day: int, k: int, rank_by: str, block_pairs: int = 1 << 20):
    e = world.entities
    self.world, self.day, self.k, self.rank_by = world, day, k, rank_by
    self.block_pairs = max(block_pairs, k)
    self._truth = world.request_truth([day])
    self._user_taste = e.user_taste.astype(np.float32)
    self._sensitivity = e.user_price_sensitivity.astype(np.float32)
    self._item_taste = e.item_taste.astype(np.float32)
    self._item_taste_t = np.ascontiguousarray(self._item_taste.T)
    self._quality = e.item_quality.astype(np.float32)
    self._prices = e.item_price.astype(np.float32)
    self._log_price = np.log(e.item_price.astype(np.float64)).astype(np.float32)
    self._category, self._shop = e.item_category, e.item_shop
    # Per-item factors of the bounds: price (for GMV) and the float32 slack, folded together.
    scale = self._prices if rank_by == "ctcvr_gmv" else np.ones_like(self._prices)
    self._lower_scale = scale * np.float32(1 - _SCREEN_SLACK)
    self._upper_scale = scale * np.float32(1 + _SCREEN_SLACK)
    self._conversion = ConversionBounds()
    self._recent = RecentlyShown(world)
    intent = oracle_lib.purchase_intent(world.config, self._truth["request_id"],
                                        self._truth["user_id"])
    self._intent = None if intent is None else intent.astype(np.float32)

  def save(self) -> None:
    """Nothing to keep (see CachedBestPage)."""

  def top(self, request_ids: np.ndarray) -> np.ndarray:
    """The best page of each request, best first: item ids [n, K]."""
    rows = np.searchsorted(self._truth["request_id"], request_ids)
    screen = self._screen(rows)
    candidates = _unique_per_row(np.concatenate([screen.ids, self._recent_candidates(
        rows, screen.top_lower.min(axis=1, keepdims=True))], axis=1))
    valid = candidates >= 0
    values = oracle_item_values(self.world.oracle, request_ids, np.where(valid, candidates, 0),
                                self.rank_by, self._prices)
    values = np.where(valid, values, -np.inf)
    # Ties (equal values) go to the smaller item id, so the page is deterministic.
    order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), -values), axis=1)
    return np.take_along_axis(candidates, order[:, :self.k], 1)

  def _recent_candidates(self, rows: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Recently shown items that may be in the best K once their 7-day views count: [n, F].

    The screen valued them without views (a lower bound only), so their bounds are redone
    here with the feature service's view counts."""
    t = self._truth
    users, timestamps = t["user_id"][rows], t["timestamp"][rows]
    items = self._recent.items(users, timestamps)
    real = items >= 0
    items = np.where(real, items, 0)
    views = self.world.features.views_7d(users[:, None], items, timestamps[:, None])
    taste_dot = np.einsum("nd,nfd->nf", self._user_taste[users], self._item_taste[items])
    lower, upper = self._value_bounds(
        rows, items, taste_dot, views.astype(np.float32), self._quality[items],
        self._log_price[items], self._lower_scale[items], self._upper_scale[items])
    upper[~real] = -np.inf
    return _entries_above(upper, threshold, items)[0]

  def _screen(self, rows: np.ndarray) -> _Screen:
    n, n_items = len(rows), len(self._quality)
    screen = _Screen(np.full((n, self.k), -np.inf, np.float32), np.zeros((n, 0), np.int64),
                     np.zeros((n, 0), np.float32))
    width = max(self.k, self.block_pairs // max(n, 1))
    for start in range(0, n_items, width):
      items = np.arange(start, min(start + width, n_items))
      lower, upper = self._bounds(rows, items)
      _update_screen(screen, items, lower, upper, self.k)
    return screen

  def _bounds(self, rows: np.ndarray, items: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """float32 lower and upper bounds of each (request, item) value, views taken as 0."""
    users = self._truth["user_id"][rows]
    taste_dot = self._user_taste[users] @ self._item_taste_t[:, items]
    row = lambda values: values[items][None, :]  # noqa: E731  (per-item values as a row)
    return self._value_bounds(rows, items[None, :], taste_dot, np.float32(0.0),
                              row(self._quality), row(self._log_price), row(self._lower_scale),
                              row(self._upper_scale))

  def _value_bounds(self, rows, items, taste_dot, views, quality, log_price, lower_scale,
                    upper_scale) -> Tuple[np.ndarray, np.ndarray]:
    """Bounds of the value from the oracle's formulas; item-side inputs broadcast with
    `items` ([1, m] or [n, m]), request-side ones are gathered from `rows` [n]."""
    t = self._truth
    same_category = (self._category[items] == t["intent_category"][rows][:, None])
    same_shop = (self._shop[items] == t["intent_shop"][rows][:, None])
    same_category, same_shop = same_category.astype(np.float32), same_shop.astype(np.float32)
    sensitivity = self._sensitivity[t["user_id"][rows]][:, None]
    click = oracle_lib.click_logit(self.world.config, taste_dot, same_category, same_shop, views,
                                   quality, log_price, sensitivity)
    click *= np.float32(0.5)  # P(click at position 0) = sigmoid(logit), in place
    np.tanh(click, out=click)
    click += np.float32(1.0)
    click *= np.float32(0.5)
    if self.rank_by == "ctr":
      return click * lower_scale, click * upper_scale
    intent = None if self._intent is None else self._intent[rows][:, None]
    mean = oracle_lib.conversion_mean(taste_dot, same_category, same_shop, quality, log_price,
                                      sensitivity, bias=self.world.config.conversion_bias,
                                      purchase_intent=intent)
    conversion_lower, conversion_upper = self._conversion(mean)
    conversion_lower *= click
    conversion_lower *= lower_scale
    conversion_upper *= click
    conversion_upper *= upper_scale
    return conversion_lower, conversion_upper


class CachedBestPage:
  """`OracleBestPage` with its pages kept on disk for later replays.

  The best page depends only on the world, the day, K and the objective, not on the models, so
  the replays of many variants on one day (a comparison, the paper's online study) compute each
  page once. The file is named by those four and written atomically by `save`.
  """

  def __init__(self, oracle: OracleBestPage, cache_dir: str):
    self.oracle = oracle
    name = (f"best_pages_{oracle.world.world_hash[:16]}_day{oracle.day}_k{oracle.k}_"
            f"{oracle.rank_by}.npz")
    self.path = os.path.join(cache_dir, name)
    self._ids = np.zeros(0, np.int64)
    self._pages = np.zeros((0, oracle.k), np.int64)
    if os.path.exists(self.path):
      with np.load(self.path) as cached:
        self._ids, self._pages = cached["request_ids"], cached["pages"]
    self._new_ids: List[np.ndarray] = []
    self._new_pages: List[np.ndarray] = []

  def top(self, request_ids: np.ndarray) -> np.ndarray:
    request_ids = np.asarray(request_ids, np.int64)
    pos, hit = id_lookup.find_rows(self._ids, request_ids)
    pages = np.empty((len(request_ids), self.oracle.k), np.int64)
    pages[hit] = self._pages[pos[hit]]
    if not hit.all():
      pages[~hit] = self.oracle.top(request_ids[~hit])
      self._new_ids.append(request_ids[~hit])
      self._new_pages.append(pages[~hit])
    return pages

  def save(self) -> None:
    """Adds the pages computed since loading to the cache file (atomically)."""
    if not self._new_ids:
      return
    ids = np.concatenate([self._ids] + self._new_ids)
    pages = np.concatenate([self._pages] + self._new_pages)
    ids, first = np.unique(ids, return_index=True)
    self._ids, self._pages = ids, pages[first]
    self._new_ids, self._new_pages = [], []
    def write(tmp: str) -> None:
      with open(tmp, "wb") as f:
        np.savez(f, request_ids=self._ids, pages=self._pages)
    files.write_with(self.path, write)


def _update_screen(screen: _Screen, items: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                   k: int) -> None:
  """Folds one corpus chunk into the screen: new threshold, then drop what falls below it."""
  chunk_top = lower if lower.shape[1] <= k else np.partition(lower, -k, axis=1)[:, -k:]
  pool = np.concatenate([screen.top_lower, chunk_top], axis=1)
  screen.top_lower = np.partition(pool, -k, axis=1)[:, -k:]
  threshold = screen.top_lower.min(axis=1, keepdims=True)
  new_ids, new_upper = _entries_above(upper, threshold, items)
  screen.ids, screen.upper = _entries_above(
      np.concatenate([screen.upper, new_upper], axis=1), threshold,
      np.concatenate([screen.ids, new_ids], axis=1))


def _entries_above(upper: np.ndarray, threshold: np.ndarray,
                   ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Per row, the ids whose upper bound reaches the row's threshold, and those bounds, padded
  to a common width with -1 / -inf. `ids` is [n, m], or [m] shared by every row."""
  rows, columns = np.nonzero(upper >= threshold)
  n = upper.shape[0]
  counts = np.bincount(rows, minlength=n)
  width = int(counts.max(initial=0))
  slot = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
  kept_ids = np.full((n, width), -1, np.int64)
  kept_upper = np.full((n, width), -np.inf, np.float32)
  kept_ids[rows, slot] = ids[columns] if ids.ndim == 1 else ids[rows, columns]
  kept_upper[rows, slot] = upper[rows, columns]
  return kept_ids, kept_upper


def _unique_per_row(ids: np.ndarray) -> np.ndarray:
  """Each row's distinct ids (>= 0), sorted, padded with -1 to a common width."""
  ids = np.sort(ids, axis=1)
  duplicate = np.zeros(ids.shape, bool)
  duplicate[:, 1:] = ids[:, 1:] == ids[:, :-1]
  ids = np.where(duplicate | (ids < 0), -1, ids)
  ids = -np.sort(-ids, axis=1)  # real ids first
  width = max(1, int((ids >= 0).sum(axis=1).max()))
  return ids[:, :width]


class RecentlyShown:
  """The items each user was shown shortly before a time (their 7-day views may be > 0)."""

  WINDOW = 7 * SECONDS_PER_DAY + 1  # a little wider than the view counter's 7 days

  def __init__(self, world):
    shown = world.log_arrays(world.days, ["user_id", "item_id", "timestamp"])
    self._span = int(world.config.n_days + 1) * SECONDS_PER_DAY + 1
    keys = shown["user_id"].astype(np.int64) * self._span + shown["timestamp"]
    order = np.argsort(keys, kind="stable")
    self._keys, self._items = keys[order], shown["item_id"][order].astype(np.int64)

  def items(self, users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Items shown to users[i] in [timestamps[i] - WINDOW, timestamps[i]]: [n, F], -1 padded."""
    base = users.astype(np.int64) * self._span
    start = np.searchsorted(self._keys, base + np.maximum(timestamps - self.WINDOW, 0))
    end = np.searchsorted(self._keys, base + timestamps, side="right")
    counts = end - start
    width = max(1, int(counts.max(initial=0)))
    offsets = np.arange(width)[None, :]
    valid = offsets < counts[:, None]
    index = np.where(valid, start[:, None] + offsets, 0)
    return np.where(valid, self._items[index] if len(self._items) else 0, -1)


# ---------------------------------------------------------------------------------------------
# Per-stage figures of a batch
# ---------------------------------------------------------------------------------------------


def stage_survival(oracle_ids: np.ndarray, retrieved: np.ndarray, kept: np.ndarray,
                   page: np.ndarray) -> Dict[str, np.ndarray]:
  """Per request: the share of the oracle's best K in the N1, the N2 and on the page."""
  return {"retrieval": metrics_lib.topk_overlap(retrieved, oracle_ids),
          "coarse": metrics_lib.topk_overlap(kept, oracle_ids),
          "fine": metrics_lib.topk_overlap(page, oracle_ids)}


def cascade_agreement(coarse_scores: np.ndarray, fine_scores: np.ndarray, retrieved: np.ndarray,
                      kept: np.ndarray, k: int) -> Dict[str, np.ndarray]:
  """Coarse vs fine on the N1: coarse->fine recall (share of fine's top k over the N1 that
  coarse keeps) and Kendall tau between the two scores, per request."""
  fine_top, _ = top_k_by(fine_scores, retrieved, k)
  return {"coarse_fine_recall": metrics_lib.topk_overlap(kept, fine_top),
          "kendall_tau": metrics_lib.kendall_tau(coarse_scores, fine_scores)}


# ---------------------------------------------------------------------------------------------
# One batch of requests end to end
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DayRequests:
  """The requests a replay serves, in order, with their user-side columns."""
  request_ids: np.ndarray           # int64[n], ascending
  queries: Dict[str, np.ndarray]    # user profile, behaviour sequence, context; row i = request i
  in_cascade_sample: np.ndarray     # bool[n]: fine also scores this request's N1

  def batch(self, start: int, stop: int) -> Tuple[np.ndarray, Dict[str, np.ndarray], np.ndarray]:
    return (self.request_ids[start:stop], {k: v[start:stop] for k, v in self.queries.items()},
            self.in_cascade_sample[start:stop])


def select_requests(world, day: int, config: ReplayConfig) -> DayRequests:
  """Every request of `day` (or a seeded subset of --max_requests), and the cascade sample."""
  request_ids = np.sort(world.request_arrays([day], ["request_id"])["request_id"])
  if not len(request_ids):
    raise common.StageError(f"day {day} of the world at {world.world_dir} has no requests")
  rng = np.random.default_rng([config.seed, day])
  if 0 < config.max_requests < len(request_ids):
    request_ids = np.sort(rng.choice(request_ids, config.max_requests, replace=False))
  in_sample = np.ones(len(request_ids), bool)
  if 0 < config.cascade_sample < len(request_ids):
    in_sample[:] = False
    in_sample[rng.choice(len(request_ids), config.cascade_sample, replace=False)] = True
  return DayRequests(request_ids, serving.request_rows(world, [day], request_ids), in_sample)


class Replayer:
  """Serves batches of requests through the funnel and scores them with the oracle."""

  def __init__(self, world, models: FunnelModels, funnel: Funnel, config: ReplayConfig,
               day: int):
    self.world, self.models, self.funnel, self.config = world, models, funnel, config
    self.best_page = OracleBestPage(world, day, funnel.page, config.rank_by,
                                    config.oracle_block_pairs)
    if config.oracle_cache_dir:
      self.best_page = CachedBestPage(self.best_page, config.oracle_cache_dir)

  def run_batch(self, request_ids, queries, in_sample) -> Tuple[pa.Table, Dict[str, float]]:
    """Per-request results of one batch, and its wall-clock seconds per step."""
    clock = _Clock()
    funnel, models, rank_by = self.funnel, self.models, self.config.rank_by
    retrieved = clock.time("retrieval", retrieve, models.retrieval, queries, funnel.retrieval)
    coarse_scores, kept = clock.time("coarse", coarse_rank, models.coarse, queries, retrieved,
                                     funnel.coarse)
    page = clock.time("fine", fine_rank, self.world, models, request_ids, kept, funnel.page,
                      rank_by)
    oracle_page = clock.time("oracle", self.best_page.top, request_ids)
    outcomes = clock.time("oracle", page_outcomes, self.world.oracle, request_ids, page)
    best = clock.time("oracle", page_outcomes, self.world.oracle, request_ids, oracle_page)
    cascade = clock.time("cascade", self._cascade, request_ids, coarse_scores, retrieved, kept,
                         in_sample)
    columns = {"request_id": request_ids, "user_id": queries["user_id"].astype(np.int64)}
    columns.update({f"exp_{name}": outcomes[name] for name in OUTCOMES})
    columns.update({f"oracle_{name}": best[name] for name in OUTCOMES})
    survival = stage_survival(oracle_page, retrieved, kept, page)
    columns.update({f"survival_{stage}": survival[stage] for stage in STAGES})
    columns.update(cascade)
    lists = {"page_item_ids": page, "coarse_item_ids": kept, "oracle_item_ids": oracle_page}
    if self.config.store_retrieved:
      lists["retrieved_item_ids"] = retrieved
    return _per_request_table(columns, lists), clock.seconds

  def _cascade(self, request_ids, coarse_scores, retrieved, kept, in_sample):
    """Coarse->fine recall and Kendall tau for the sampled requests (nan for the others).

    Fine scores the N1 candidates of a few requests at a time: every candidate row repeats
    the request's behaviour sequence, so this bounds memory to ~CASCADE_ROWS rows."""
    out = {name: np.full(len(request_ids), np.nan) for name in ("coarse_fine_recall",
                                                                  "kendall_tau")}
    sampled = np.flatnonzero(in_sample)
    step = max(1, CASCADE_ROWS // retrieved.shape[1])
    for start in range(0, len(sampled), step):
      rows = sampled[start:start + step]
      fine_scores = fine_objective(self.world, self.models, request_ids[rows], retrieved[rows],
                                   self.config.rank_by)
      agreement = cascade_agreement(coarse_scores[rows], fine_scores, retrieved[rows],
                                    kept[rows], self.funnel.page)
      for name, values in agreement.items():
        out[name][rows] = values
    return out


class _Clock:
  """Accumulates wall-clock seconds per named step."""

  def __init__(self):
    self.seconds: Dict[str, float] = {}

  def time(self, name: str, fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
    return result


def _list_column(matrix: np.ndarray) -> pa.ListArray:
  matrix = np.ascontiguousarray(matrix, dtype=np.int64)
  offsets = np.arange(0, matrix.size + 1, max(matrix.shape[1], 1), dtype=np.int32)
  return pa.ListArray.from_arrays(pa.array(offsets[:matrix.shape[0] + 1]),
                                  pa.array(matrix.reshape(-1)))


def _per_request_table(columns: Dict[str, np.ndarray], lists: Dict[str, np.ndarray]) -> pa.Table:
  arrays = {name: pa.array(np.asarray(values)) for name, values in columns.items()}
  arrays.update({name: _list_column(values) for name, values in lists.items()})
  return pa.table(arrays)


# ---------------------------------------------------------------------------------------------
# Run directory: resumable chunks, atomic outputs
# ---------------------------------------------------------------------------------------------


class RunDir:
  """R/.partial/chunk-NNNNN.{json,parquet} while running; summary.json + per_request.parquet
  when done. A chunk's Parquet file is renamed into place last, so it marks a finished chunk."""

  def __init__(self, path: str):
    self.path = path
    self.partial = os.path.join(path, PARTIAL)

  def _chunk(self, index: int, ext: str) -> str:
    return os.path.join(self.partial, f"chunk-{index:05d}.{ext}")

  def start(self, key: Dict[str, Any], overwrite: bool) -> Optional[dict]:
    """Prepares the dir for `key`; returns the summary if this replay already finished."""
    summary_path = os.path.join(self.path, SUMMARY)
    if os.path.exists(summary_path) and not overwrite:
      summary = files.read_json(summary_path)
      if summary.get("replay_key") == _key_digest(key):
        return summary
      raise common.StageError(f"{self.path} already holds a finished replay with another "
                              "configuration; use another --run_dir or pass --overwrite")
    config_path = os.path.join(self.partial, "config.json")
    if os.path.exists(config_path) and not overwrite:
      held = files.read_json(config_path)
      if held != key:
        changed = sorted(name for name in set(held) | set(key) if held.get(name) != key.get(name))
        raise common.StageError(
            f"{self.partial} holds an unfinished replay with another configuration (differs "
            f"in {', '.join(changed)}); rerun with the same flags to resume, or pass --overwrite")
    elif overwrite:
      self.clear()
    os.makedirs(self.partial, exist_ok=True)
    files.write_json(config_path, key)
    return None

  def clear(self) -> None:
    for name in (SUMMARY, PER_REQUEST):
      if os.path.exists(os.path.join(self.path, name)):
        os.remove(os.path.join(self.path, name))
    shutil.rmtree(self.partial, ignore_errors=True)

  def chunk_done(self, index: int) -> bool:
    return os.path.exists(self._chunk(index, "parquet"))

  def write_chunk(self, index: int, table: pa.Table, seconds: Dict[str, float]) -> None:
    files.write_json(self._chunk(index, "json"), seconds)
    files.write_parquet(self._chunk(index, "parquet"), table)

  def read_chunks(self, n_chunks: int) -> Tuple[pa.Table, List[Dict[str, float]]]:
    tables = [pq.read_table(self._chunk(i, "parquet")) for i in range(n_chunks)]
    seconds = [files.read_json(self._chunk(i, "json")) for i in range(n_chunks)]
    return pa.concat_tables(tables), seconds

  def finish(self, table: pa.Table, summary: dict) -> None:
    """per_request.parquet, then summary.json (the finished marker), then drop .partial."""
    files.write_parquet(os.path.join(self.path, PER_REQUEST), table)
    files.write_json(os.path.join(self.path, SUMMARY), summary)
    shutil.rmtree(self.partial, ignore_errors=True)


def _key_digest(key: Dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def online_metrics(frame: pd.DataFrame) -> Dict[str, float]:
  """Per-1k outcomes, shares of the oracle, survival and cascade means: the definitions
  experiments.compare recomputes from per_request.parquet (mean over requests, nan skipped;
  shares are ratios of sums)."""
  out: Dict[str, float] = {}
  for outcome in OUTCOMES:
    out[f"online/exp_{outcome}_per_1k"] = 1000.0 * _nanmean(frame[f"exp_{outcome}"])
    out[f"online/oracle_{outcome}_per_1k"] = 1000.0 * _nanmean(frame[f"oracle_{outcome}"])
  for outcome in OUTCOMES:
    attainable = frame[f"oracle_{outcome}"].to_numpy(np.float64).sum()
    earned = frame[f"exp_{outcome}"].to_numpy(np.float64).sum()
    out[f"online/share_of_oracle_{outcome}"] = earned / attainable if attainable else math.nan
  for stage in STAGES:
    out[f"survival/{stage}"] = _nanmean(frame[f"survival_{stage}"])
  out["cascade/coarse_fine_recall"] = _nanmean(frame["coarse_fine_recall"])
  out["cascade/kendall_tau"] = _nanmean(frame["kendall_tau"])
  return out


def _nanmean(column: pd.Series) -> float:
  values = column.to_numpy(np.float64, na_value=np.nan)
  values = values[~np.isnan(values)]
  return float(values.sum() / len(values)) if len(values) else math.nan


def speed_metrics(seconds: Sequence[Dict[str, float]], n_requests: int) -> Dict[str, float]:
  """Latency per stage (ms per request) and throughput, summed over every chunk's batch."""
  total = {name: sum(s.get(name, 0.0) for s in seconds)
           for name in ("retrieval", "coarse", "fine", "oracle", "cascade", "total")}
  per_request_ms = 1000.0 / max(n_requests, 1)
  out = {f"latency/{name}_ms": total[name] * per_request_ms
         for name in ("retrieval", "coarse", "fine", "oracle", "cascade")}
  funnel_seconds = total["retrieval"] + total["coarse"] + total["fine"]
  out["throughput/requests_per_second"] = n_requests / total["total"] if total["total"] else 0.0
  out["throughput/funnel_requests_per_second"] = (n_requests / funnel_seconds
                                                  if funnel_seconds else 0.0)
  return out


def offline_metrics(world, models: FunnelModels, day: int) -> Dict[str, float]:
  """AUC and GAUC (by user) of each model on the day's logged impressions: the coarse
  student and fine CTR on every impression (label click), fine CVR on clicked ones."""
  logs = world.log_arrays([day])
  groups = logs["user_id"]
  request_ids, first, inverse = np.unique(logs["request_id"], return_index=True,
                                          return_inverse=True)
  users = models.coarse.user_vectors({k: v[first] for k, v in logs.items()})[inverse.reshape(-1)]
  coarse_logit = models.coarse.scale * np.einsum(
      "nd,nd->n", users, models.coarse.item_vectors[logs["item_id"]])
  clicked = logs["click"] > 0
  scored = {
      "coarse": (logs["click"], numeric.sigmoid(coarse_logit), groups),
      "fine_ctr": (logs["click"], models.fine_ctr.predict(logs), groups),
      "fine_cvr": (logs["conversion"][clicked],
                   models.fine_cvr.predict({k: v[clicked] for k, v in logs.items()}),
                   groups[clicked]),
  }
  out = {}
  for name, (labels, probs, by_user) in scored.items():
    result = metrics_lib.ranking_metrics(labels, probs, by_user)
    out[f"offline/{name}_auc"] = result["auc"]
    out[f"offline/{name}_gauc"] = result["gauc"]
  return out


def build_summary(config: ReplayConfig, funnel: Funnel, day: int, world, models: FunnelModels,
                  frame: pd.DataFrame, seconds, offline, key) -> dict:
  """summary.json, the contract experiments.compare reads."""
  metrics = online_metrics(frame)
  metrics.update(offline)
  metrics.update(speed_metrics(seconds, len(frame)))
  metrics["n_requests"] = int(len(frame))
  metrics["cascade/n_requests"] = int(frame["kendall_tau"].notna().sum())
  flag_values = dataclasses.asdict(config)
  flag_values.update(day=day, funnel=funnel.spec(), label=config.run_label())
  return {"format": 1, "label": config.run_label(), "seed": int(config.seed), "day": int(day),
          "world_hash": world.world_hash, "config": flag_values, "models": models.facts,
          "metrics": metrics, "per_request_file": PER_REQUEST, "replay_key": _key_digest(key)}


# ---------------------------------------------------------------------------------------------
# The replay
# ---------------------------------------------------------------------------------------------


def resolve_day(world, day: Optional[int]) -> int:
  day = world.days[-1] if day is None else int(day)
  if day not in world.days:
    raise common.StageError(f"--day={day} is not a day of the world at {world.world_dir}: "
                            f"it has days {world.days[0]}..{world.days[-1]}")
  return day


def check_funnel(funnel: Funnel, world, models: FunnelModels) -> None:
  n_items = len(world.items)
  if funnel.retrieval > min(models.retrieval.k, n_items):
    raise common.StageError(
        f"--funnel asks retrieval for {funnel.retrieval} items; the index at "
        f"{models.retrieval.path} returns at most {models.retrieval.k} (corpus: {n_items})")


def replay_key(config: ReplayConfig, funnel: Funnel, day: int, world,
               models: FunnelModels) -> Dict[str, Any]:
  """Everything a replay's per-request results depend on (a resumed run must match it)."""
  key = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_RESULTS}
  key.update(day=day, funnel=funnel.spec(), world_hash=world.world_hash,
             models=models.fingerprint)
  return key


def replay(world, funnel: Funnel, config: ReplayConfig) -> dict:
  """Replays a day through the funnel; writes the run dir and returns summary.json's content.

  Raises common.StageError (one-line message) for models of another world, a replayed day
  the models trained on, missing models (naming the command that trains them), or a run dir
  holding another configuration.
  """
  day = resolve_day(world, config.day)
  models = load_models(config, world, day)
  check_funnel(funnel, world, models)
  key = replay_key(config, funnel, day, world, models)
  run_dir = RunDir(config.run_dir)
  finished = run_dir.start(key, config.overwrite)
  if finished is not None:
    logging.info("%s already holds this finished replay; nothing to do", config.run_dir)
    return finished
  requests = select_requests(world, day, config)
  replayer = Replayer(world, models, funnel, config, day)
  n_chunks = run_chunks(replayer, requests, run_dir, config)
  replayer.best_page.save()
  table, seconds = run_dir.read_chunks(n_chunks)
  frame = table.to_pandas()
  offline = offline_metrics(world, models, day)
  summary = build_summary(config, funnel, day, world, models, frame, seconds, offline, key)
  run_dir.finish(table, summary)
  return files.read_json(os.path.join(config.run_dir, SUMMARY))


def run_chunks(replayer: Replayer, requests: DayRequests, run_dir: RunDir,
               config: ReplayConfig) -> int:
  """Serves every batch not yet on disk, writing each as a chunk; returns the chunk count."""
  n = len(requests.request_ids)
  size = max(1, config.batch_requests)
  n_chunks = -(-n // size)
  started, done = time.perf_counter(), 0
  for index in range(n_chunks):
    if run_dir.chunk_done(index):
      continue
    batch_start = time.perf_counter()
    table, seconds = replayer.run_batch(*requests.batch(index * size, (index + 1) * size))
    seconds["total"] = time.perf_counter() - batch_start
    seconds["n"] = table.num_rows
    run_dir.write_chunk(index, table, seconds)
    done += table.num_rows
    if (index + 1) % max(1, config.log_every_batches) == 0 or index + 1 == n_chunks:
      logging.info("replay: batch %d/%d, %d/%d requests, %.1f requests/s", index + 1, n_chunks,
                   min((index + 1) * size, n), n, done / (time.perf_counter() - started))
  return n_chunks


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

TABLE_ROWS = ("online/exp_clicks_per_1k", "online/exp_conversions_per_1k", "online/exp_gmv_per_1k",
              "online/share_of_oracle_clicks", "online/share_of_oracle_conversions",
              "online/share_of_oracle_gmv", "survival/retrieval", "survival/coarse",
              "survival/fine", "cascade/coarse_fine_recall", "cascade/kendall_tau",
              "offline/coarse_auc", "offline/fine_ctr_auc", "offline/fine_cvr_auc",
              "latency/retrieval_ms", "latency/coarse_ms", "latency/fine_ms",
              "throughput/requests_per_second", "throughput/funnel_requests_per_second",
              "n_requests", "cascade/n_requests")


def format_table(summary: dict) -> str:
  """The main online and funnel figures, one per line."""
  metrics = summary["metrics"]
  lines = [f"replay {summary['label']} (day {summary['day']}, seed {summary['seed']})"]
  for name in TABLE_ROWS:
    value = metrics.get(name)
    shown = "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
    lines.append(f"  {name:<42} {shown:>12}")
  return "\n".join(lines)


def config_from_flags(need_run_dir: bool = True) -> ReplayConfig:
  """The replay's configuration from its flags (benchmarks reuse them without --run_dir)."""
  for name in ("world_dir", "model_dir") + (("run_dir",) if need_run_dir else ()):
    if not FLAGS[name].value:
      raise common.StageError(f"--{name} is required")
  return ReplayConfig(
      world_dir=FLAGS.world_dir, model_dir=FLAGS.model_dir, run_dir=FLAGS.run_dir or "",
      day=FLAGS.day, coarse_variant=FLAGS.coarse_variant, cvr_variant=FLAGS.cvr_variant,
      ctr_variant=FLAGS.ctr_variant, rank_by=FLAGS.rank_by, label=FLAGS.label,
      seed=int(FLAGS.seed or 0), max_requests=FLAGS.max_requests,
      batch_requests=FLAGS.batch_requests, cascade_sample=FLAGS.cascade_sample,
      store_retrieved=FLAGS.store_retrieved, overwrite=FLAGS.overwrite,
      log_every_batches=FLAGS.log_every_batches, oracle_block_pairs=FLAGS.oracle_block_pairs,
      oracle_cache_dir=FLAGS.oracle_cache_dir)


def open_world(world_dir: str):
  if not os.path.exists(os.path.join(world_dir, data.io.MANIFEST)):
    raise common.StageError(f"no world at {world_dir} (no manifest.json); make one with "
                            f"`python -m data.generate --world_dir={world_dir}`")
  return data.load(world_dir, verify="size")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    sys.exit(2)
  try:
    config = config_from_flags()
    funnel = parse_funnel(FLAGS.funnel)
    summary = replay(open_world(config.world_dir), funnel, config)
  except (common.StageError, ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(format_table(summary))
  print(f"run dir: {config.run_dir}")


def run() -> None:
  """Console-script entry point (pfd-replay)."""
  app.run(main)


if __name__ == "__main__":
  run()

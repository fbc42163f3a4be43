"""The funnel a replay serves with: its sizes, its four exports, and its three stages.

A request goes retrieve (the exported index's top N1 of the whole corpus) -> coarse rank (the
two-tower student scores the N1, keeps N2) -> fine rank (fine CTR and CVR score the N2 on their
point-in-time features; the page is the top K by the `rank_by` objective). `load_models` loads
the four exports (stages.serving) and refuses a model of another world or one trained on the
replayed day.
"""

import dataclasses
import hashlib
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from data.plumbing.command import UserError
from data.world import numeric
from experiments import offline_table
from models import ann
from models import export
from stages import serving

STAGES = ("retrieval", "coarse", "fine")
# What the fine stage can sort the page by: pCTR, pCTR*pCVR, pCTR*pCVR*price.
OBJECTIVES = ("ctr", "ctcvr", "ctcvr_gmv")


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
      raise UserError(f"--funnel={spec!r}: expected retrieval:N1,coarse:N2,fine:K "
                              "with positive integers")
    sizes[name] = int(value)
  if set(sizes) != set(STAGES):
    raise UserError(f"--funnel={spec!r} must name retrieval, coarse and fine")
  funnel = Funnel(sizes["retrieval"], sizes["coarse"], sizes["fine"])
  if not funnel.retrieval >= funnel.coarse >= funnel.page >= 1:
    raise UserError(f"--funnel={spec!r}: need N1 >= N2 >= K >= 1")
  return funnel


NO_CVR = "none"  # --cvr_variant of a funnel without a fine CVR model (pages ranked by pCTR)


@dataclasses.dataclass
class FunnelModels:
  """The exports a funnel serves with, plus what produced each (for summary.json); fine_cvr
  is None for a funnel ranked by pCTR alone (--cvr_variant=none)."""
  retrieval: serving.RetrievalIndex
  coarse: serving.CoarseScorer
  fine_ctr: export.ServingModel
  fine_cvr: Optional[export.ServingModel]
  facts: Dict[str, Dict[str, Any]]
  fingerprint: str


def check_model(name: str, path: str, meta: dict, world, day: int) -> Dict[str, Any]:
  """Refuses a model of another world or one that trained on `day`; returns its facts."""
  extra = meta.get("extra") or {}
  where = os.path.join(path, export.META_FILE)
  if "world_hash" not in extra or "train_days" not in extra:
    raise UserError(f"{name} model at {path}: {where} records no world_hash / "
                            "train_days; retrain it with its stage command")
  if extra["world_hash"] != world.world_hash:
    raise UserError(
        f"{name} model at {path} was trained on another world (world_hash "
        f"{str(extra['world_hash'])[:12]}..., this world {world.world_hash[:12]}...); replay "
        "with that model's world or retrain it on this one")
  train_days = [int(d) for d in extra["train_days"]]
  if day in train_days:
    raise UserError(
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


def load_models(model_dir: str, variants: Dict[str, str], world, day: int,
                index: str = ann.BRUTE_FORCE) -> FunnelModels:
  """Loads and checks every stage's export; `variants` names the coarse, fine_ctr and
  fine_cvr variants, `index` how retrieval searches (models.ann). A missing export's error
  names the command that trains it."""
  retrieval = serving.load_retrieval(model_dir, index)
  coarse = serving.load_coarse(model_dir, variants["coarse"])
  fine_ctr = serving.load_fine(model_dir, "ctr", variants["fine_ctr"])
  fine_cvr = (None if variants["fine_cvr"] == NO_CVR
              else serving.load_fine(model_dir, "cvr", variants["fine_cvr"]))
  loaded = {"retrieval": (retrieval.path, retrieval.meta),
            "coarse": (coarse.path, coarse.model.meta),
            "fine_ctr": (fine_ctr.path, fine_ctr.meta)}
  if fine_cvr is not None:
    loaded["fine_cvr"] = (fine_cvr.path, fine_cvr.meta)
  facts = {name: check_model(name, path, meta, world, day)
           for name, (path, meta) in loaded.items()}
  asked = {"retrieval": (retrieval, "baseline", f"--model_dir={model_dir}"),
           "coarse": (coarse, variants["coarse"], f"--coarse_variant={variants['coarse']}"),
           "fine_ctr": (fine_ctr, variants["fine_ctr"], f"--ctr_variant={variants['fine_ctr']}"),
           "fine_cvr": (fine_cvr, variants["fine_cvr"], f"--cvr_variant={variants['fine_cvr']}")}
  for name, (model, variant, flag) in asked.items():
    if model is not None:  # no CVR model: --cvr_variant=none
      serving.check_loaded(name, model, variant, world, flag)
  facts["retrieval"]["index"] = retrieval.spec.describe()
  if retrieval.build_seconds is not None:
    facts["retrieval"]["index_build_seconds"] = retrieval.build_seconds
  paths = [os.path.join(path, name) for path, _ in loaded.values()
           for name in (export.META_FILE, "variables/variables.index", serving.ITEM_VECTORS)]
  return FunnelModels(retrieval, coarse, fine_ctr, fine_cvr, facts, _files_digest(paths))


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


def fine_scores(world, models: FunnelModels, request_ids: np.ndarray, item_ids: np.ndarray,
                rank_by: str) -> Dict[str, np.ndarray]:
  """The fine stage's scores of candidates [n, m] on their point-in-time features: "ctr",
  the fine CTR model's pCTR, and "objective", the ranking score `rank_by` names."""
  features = world.features.compute(request_ids, item_ids)
  ctr = models.fine_ctr.predict_candidates(features).astype(np.float64)
  score = ctr
  if rank_by in ("ctcvr", "ctcvr_gmv"):
    if models.fine_cvr is None:
      raise UserError(f"--rank_by={rank_by} needs a fine CVR model (--cvr_variant={NO_CVR})")
    score = score * models.fine_cvr.predict_candidates(features).astype(np.float64)
  if rank_by == "ctcvr_gmv":
    score = score * features["item_price"].astype(np.float64)
  return {"ctr": ctr, "objective": score}


def fine_objective(world, models: FunnelModels, request_ids: np.ndarray, item_ids: np.ndarray,
                   rank_by: str) -> np.ndarray:
  """The fine stage's ranking score of candidates [n, m] on their point-in-time features."""
  return fine_scores(world, models, request_ids, item_ids, rank_by)["objective"]


def fine_rank(world, models: FunnelModels, request_ids: np.ndarray, candidates: np.ndarray,
              k: int, rank_by: str) -> np.ndarray:
  """The shown page: the k candidates with the best fine objective, in page order [n, k]."""
  page, _ = top_k_by(fine_objective(world, models, request_ids, candidates, rank_by),
                     candidates, k)
  return page


def check_funnel(funnel: Funnel, world, models: FunnelModels) -> None:
  n_items = len(world.items)
  if funnel.retrieval > min(models.retrieval.k, n_items):
    raise UserError(
        f"--funnel asks retrieval for {funnel.retrieval} items; the index at "
        f"{models.retrieval.path} returns at most {models.retrieval.k} (corpus: {n_items})")


def offline_scores(world, models: FunnelModels, day: int) -> pd.DataFrame:
  """Every logged impression of `day` scored by the coarse student and fine CTR, and the
  clicked ones by fine CVR (experiments.offline_table: the rows its AUC, GAUC and eAUC
  figures are computed from)."""
  logs = world.log_arrays([day])
  _, first, inverse = np.unique(logs["request_id"], return_index=True, return_inverse=True)
  users = models.coarse.user_vectors({k: v[first] for k, v in logs.items()})[inverse.reshape(-1)]
  coarse_logit = models.coarse.scale * np.einsum(
      "nd,nd->n", users, models.coarse.item_vectors[logs["item_id"]])
  clicked = logs["click"] > 0
  scores = {"coarse": numeric.sigmoid(coarse_logit), "fine_ctr": models.fine_ctr.predict(logs)}
  if models.fine_cvr is not None:  # a funnel without CVR has no fine_cvr column
    fine_cvr = np.full(len(clicked), np.nan)
    fine_cvr[clicked] = models.fine_cvr.predict({k: v[clicked] for k, v in logs.items()})
    scores["fine_cvr"] = fine_cvr
  return offline_table.score_table(world, logs, scores)

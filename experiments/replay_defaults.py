"""The replay's defaults, chosen from what the model dir and the world hold, and said.

`python -m experiments.replay`'s flags default to the simulated world's full funnel: the
coarse PFD+MD student, the CVR PFD student, pages ranked by pCTR x pCVR x price, 1,000
candidates from retrieval. A world from real logs may have no prices, no conversions (so no
CVR model) and fewer items than that, and a user may have trained other variants. For each of
these flags the user did not give, `resolve` picks what exists and prints one line saying so:

  --coarse_variant  the first of pfd_md, pfd, md, baseline, lupi trained under MODEL_DIR;
  --cvr_variant     the first of pfd, pfd_md, md, baseline, lupi, else `none` (no CVR model);
  --ctr_variant     baseline, else md;
  --rank_by         ctcvr_gmv with a CVR model and prices (item_price, not all 0), ctcvr
                    with a CVR model, else ctr;
  --funnel          retrieval:1000,coarse:100,fine:10 clamped to the corpus and to the
                    retrieval index's k.

A flag the user gave is kept as given (and refused later if it cannot be served).
"""

import dataclasses
import os
from typing import Any, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from data.plumbing import files
from data.plumbing.command import UserError
from experiments import funnel as funnel_lib
from models import export
from stages import layout

COARSE_ORDER = ("pfd_md", "pfd", "md", "baseline", "lupi")
CVR_ORDER = ("pfd", "pfd_md", "md", "baseline", "lupi")
CTR_ORDER = ("baseline", "md")
NO_CVR = "none"
DEFAULT_SIZES = (1000, 100, 10)


def trained(model_dir: str, stage: str, order: Sequence[str]) -> List[str]:
  """The variants of `stage` (in `order`) with an export under `model_dir`."""
  return [v for v in order
          if os.path.exists(os.path.join(layout.export_path(model_dir, stage, v),
                                         "saved_model.pb"))]


def has_prices(world) -> bool:
  """Whether the world's items have a price that is not 0 everywhere."""
  return "item_price" in world.items.columns and bool(np.any(world.items["item_price"] > 0))


def _index_k(model_dir: str) -> Optional[int]:
  meta = os.path.join(layout.export_path(model_dir, "retrieval", "baseline"), export.META_FILE)
  if not os.path.exists(meta):
    return None
  return int(files.read_json(meta).get("k", 0)) or None


def resolve(world, config: Any, funnel: funnel_lib.Funnel, given: Sequence[str]
            ) -> Tuple[Any, funnel_lib.Funnel, List[str]]:
  """(config, funnel, notes): the ReplayConfig `config` with each flag not in `given` chosen
  as above, the funnel clamped, and one note per choice."""
  changes: dict = {}
  notes: List[str] = []
  model_dir = config.model_dir

  def pick(flag: str, stage: str, order: Sequence[str], fallback: Optional[str]) -> None:
    if flag in given:
      return
    found = trained(model_dir, stage, order)
    choice = found[0] if found else fallback
    if choice is None or choice == getattr(config, flag):
      return
    changes[flag] = choice
    why = (f"{stage}/{getattr(config, flag)} is not trained in {model_dir}"
           + (f"; found {', '.join(found)}" if found else "; none is"))
    notes.append(f"--{flag}={choice} ({why})")

  pick("coarse_variant", "coarse", COARSE_ORDER, None)
  pick("ctr_variant", "fine/ctr", CTR_ORDER, None)
  pick("cvr_variant", "fine/cvr", CVR_ORDER, NO_CVR)
  cvr = changes.get("cvr_variant", config.cvr_variant)
  if "rank_by" not in given:
    rank_by = ("ctr" if cvr == NO_CVR else "ctcvr_gmv" if has_prices(world) else "ctcvr")
    if rank_by != config.rank_by:
      changes["rank_by"] = rank_by
      notes.append(f"--rank_by={rank_by} (" + ("no fine CVR model" if cvr == NO_CVR else
                                               "the items have no price") + ")")
  if "funnel" not in given:
    corpus = len(world.items)
    k = _index_k(model_dir) or corpus
    n1 = min(DEFAULT_SIZES[0], corpus, k)
    sizes = (n1, min(DEFAULT_SIZES[1], n1), min(DEFAULT_SIZES[2], n1))
    clamped = funnel_lib.Funnel(*sizes)
    if clamped != funnel:
      notes.append(f"--funnel={clamped.spec()} (the corpus has {corpus} items, the retrieval "
                   f"index returns {k})")
      funnel = clamped
  for note in notes:
    logging.info("replay default: %s", note)
  return dataclasses.replace(config, **changes), funnel, notes


def check(config, world) -> None:
  """Refuses a ranking that needs a model or a column the run does not have."""
  if config.cvr_variant == NO_CVR and config.rank_by != "ctr":
    raise UserError(f"--rank_by={config.rank_by} needs a fine CVR model, and --cvr_variant="
                    f"{NO_CVR}; pass --rank_by=ctr or train one (python -m stages.fine "
                    "--task=cvr)")
  if config.rank_by == "ctcvr_gmv" and "item_price" not in world.items.columns:
    raise UserError(f"--rank_by=ctcvr_gmv needs item prices, and the world at "
                    f"{world.world_dir} has none (no item_price); pass --rank_by=ctcvr or ctr")

"""The training-cost study: what a teacher adds to the student's training time, per scheme.

The paper's four schemes (independent teacher then student, independent simultaneous, shared
simultaneous, shared except the user id) are coarse pfd runs with different settings; "student
alone" is the baseline. Wall-clock seconds from each run's metrics.json, paired per (world
seed, seed); `python -m benchmarks.train_cost` times them back to back in one process.
"""

from typing import Dict, List, Optional

import pandas as pd

from experiments.paper_stats import PAIR
from experiments.paper_stats import Section
from experiments.paper_stats import stat_cells
from experiments.paper_stats import with_pairs
from experiments.studies.base import Plan
from experiments.studies.base import Report
from experiments.studies.base import Settings
from experiments.studies.base import Study
from experiments.studies.base import Trial
from stages import catalogue

# The schemes, as the variant and settings of a coarse run.
SCHEMES: Dict[str, tuple] = {
    "student alone": ("baseline", ()),
    "independent teacher, then student": ("pfd", (("mode", "pretrained"),)),
    "independent, simultaneous": ("pfd", (("share_embeddings", False),)),
    "shared, simultaneous": ("pfd", (("unshared_features", ()),)),
    "shared except user id, simultaneous": ("pfd", (("unshared_features", ("user_id",)),)),
}
PAPER_COST = {"independent teacher, then student": "+99.5%", "independent, simultaneous": "+55%",
              "shared, simultaneous": "+2.9%", "shared except user id, simultaneous": "+11.4%"}


class CostStudy(Study):
  name = "cost"
  title = "Training cost (coarse, wall-clock seconds of training)"

  def declare(self, plan: Plan) -> List[Trial]:
    trials = []
    for seed in plan.seeds:
      for scheme, (variant, settings) in SCHEMES.items():
        typed: Settings = settings
        trials.append(Trial(self.name, catalogue.COARSE.name, variant, seed, plan.short_days,
                            settings=typed, scheme=scheme))
    return trials

  def section(self, report: Report) -> Optional[Section]:
    frame = report.frame
    rows = with_pairs(frame[frame["study"] == self.name])
    if rows.empty:
      return None
    alone = rows[rows["scheme"] == "student alone"].set_index(list(PAIR))["train_seconds"]
    lines = []
    for scheme in dict.fromkeys(rows["scheme"]):
      own = rows[rows["scheme"] == scheme].set_index(list(PAIR))["train_seconds"]
      pairs = own.index.intersection(alone.index)
      extra = 100.0 * (own[pairs] / alone[pairs] - 1.0)
      line: Dict[str, object] = {"scheme": scheme}
      line.update(stat_cells("train seconds", own.to_numpy()))
      line.update(stat_cells("extra over the student alone, %",
                             [] if scheme == "student alone" else extra.to_numpy()))
      line["paper"] = PAPER_COST.get(scheme, "")
      lines.append(line)
    return Section(pd.DataFrame(lines), [
        "", "Wall-clock seconds are only as steady as the machine was: runs that shared it "
        "with other jobs (or with the study's own parallel workers) are noisy. `python -m "
        "benchmarks.train_cost` times the schemes back to back on one process."])

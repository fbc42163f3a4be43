"""Two follow-up studies of coarse PFD+MD: distillation on unlabelled candidates, and a teacher
trained on longer history than its student.

unlabelled: the coarse pfd_md student distilled on logged impressions only, and also on
  retrieved-but-unshown candidates that only the teacher can label (Yang et al., NeurIPS 2022
  found the latter helps);
teacher: the coarse pfd_md student on --short_days, taught by the fine CTR model of the same
  days and by one trained on every day before the eval day, as a production fine ranker would
  be.
"""

import math
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from experiments.paper_stats import Section
from experiments.paper_stats import metric_values
from experiments.paper_stats import on_shared_pairs
from experiments.paper_stats import pairs_for_power
from experiments.paper_stats import stat_cells
from experiments.studies.base import Plan
from experiments.studies.base import Report
from experiments.studies.base import Study
from experiments.studies.base import Trial
from stages import catalogue

UNLABELLED = "distill_unlabelled=True"  # the model dir of the unlabelled runs


class UnlabelledStudy(Study):
  name = "unlabelled"
  title = "Distillation on unlabelled candidates"
  only_when_named = True

  def declare(self, plan: Plan) -> List[Trial]:
    days = plan.long_days
    trials: List[Trial] = []
    for seed in plan.seeds:
      # The unlabelled run's dir needs its own retrieval model (it picks the candidates) and
      # fine CTR teacher.
      trials += [Trial(self.name, catalogue.FINE_CTR.name, "baseline", seed, days),
                 Trial(self.name, catalogue.COARSE.name, "pfd_md", seed, days),
                 Trial(self.name, catalogue.RETRIEVAL.name, "baseline", seed, days,
                       model_group=UNLABELLED),
                 Trial(self.name, catalogue.FINE_CTR.name, "baseline", seed, days,
                       model_group=UNLABELLED),
                 Trial(self.name, catalogue.COARSE.name, "pfd_md", seed, days,
                       settings=(("distill_unlabelled", True),))]
    return trials

  def section(self, report: Report) -> Optional[Section]:
    frame = report.frame
    rows = frame[frame["study"] == self.name]
    if rows.empty or "distill_unlabelled" not in rows:
      return None
    with_unlabelled = rows["distill_unlabelled"].fillna(False).astype(bool)
    coarse = rows["stage"] == "coarse"
    lines = []
    for name, part in (("logged impressions only", rows[coarse & ~with_unlabelled]),
                       ("+ retrieved, unshown candidates", rows[coarse & with_unlabelled])):
      line: Dict[str, object] = {"coarse PFD+MD": name}
      line.update(stat_cells("student AUC", metric_values(part, "auc")))
      line.update(stat_cells("teacher AUC", metric_values(part, "teacher_auc")))
      lines.append(line)
    return Section(pd.DataFrame(lines))


class TeacherStudy(Study):
  name = "teacher"
  title = "Coarse PFD+MD: a teacher trained on longer history"
  only_when_named = True

  def declare(self, plan: Plan) -> List[Trial]:
    short, long = plan.short_days, plan.long_days
    trials: List[Trial] = []
    for seed in plan.seeds:
      trials += [Trial(self.name, catalogue.FINE_CTR.name, "baseline", seed, short),
                 Trial(self.name, catalogue.FINE_CTR.name, "baseline", seed, long),
                 Trial(self.name, catalogue.COARSE.name, "baseline", seed, short),
                 Trial(self.name, catalogue.COARSE.name, "pfd_md", seed, short),
                 Trial(self.name, catalogue.COARSE.name, "pfd_md", seed, short,
                       teacher_days=len(long))]
    return trials

  def section(self, report: Report) -> Optional[Section]:
    """Each teacher's student, paired against the baseline student on the same pairs."""
    frame = report.frame
    rows = frame[(frame["study"] == self.name) & (frame["stage"] == "coarse")]
    if rows.empty:
      return None
    teacher_days = (rows["teacher_days"] if "teacher_days" in rows
                    else pd.Series(np.nan, rows.index))
    base = rows[rows["variant"] == "baseline"]
    student_days = int(base["train_days"].map(len).max()) if not base.empty else 0
    lines = []
    for days in [math.nan] + sorted(teacher_days.dropna().unique()):
      part = rows[(rows["variant"] == "pfd_md")
                  & (teacher_days.isna() if math.isnan(days) else teacher_days == days)]
      own, paired_base = on_shared_pairs(part, base)
      deltas = {m: metric_values(own, m) - metric_values(paired_base, m) for m in ("auc", "eauc")}
      shown_days = student_days if math.isnan(days) else int(days)
      line: Dict[str, object] = {"teacher: fine CTR on": f"{shown_days} day"
                                 + ("s" * (shown_days != 1)), "n": len(own)}
      for metric in ("teacher_auc", "teacher_eauc", "auc", "eauc"):
        line.update(stat_cells(metric.replace("_", " ").replace("auc", "AUC"),
                               metric_values(own, metric)))
      line.update(stat_cells("Δ AUC", deltas["auc"]))
      line.update(stat_cells("Δ eAUC", deltas["eauc"]))
      line["pairs for 80% power"] = pairs_for_power(deltas["eauc"])
      lines.append(line)
    baseline: Dict[str, object] = {"teacher: fine CTR on": "none (baseline)", "n": len(base)}
    baseline.update(stat_cells("AUC", metric_values(base, "auc")))
    baseline.update(stat_cells("eAUC", metric_values(base, "eauc")))
    baseline.update(stat_cells("ceiling eAUC", metric_values(base, "ceiling_eauc")))
    return Section(pd.DataFrame([baseline] + lines), [
        "", f"The coarse student trains on {student_days} day(s) in every row; only its "
        "teacher's history changes. Δ: paired on (world seed, seed) against the baseline "
        "student; teacher AUC and eAUC are the fine CTR teacher's on the student's eval rows."])

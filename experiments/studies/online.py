"""The simulated online A/B: whole funnels replayed on the eval day, scored by the oracle.

The paper's headline: coarse PFD+MD gave +5.0% clicks and fine CVR PFD +2.3% conversions in
Taobao's online A/B test. Here every training seed's funnels (retrieval, fine CTR, fine CVR
baseline or PFD, coarse baseline or PFD+MD, all on every day before the eval day) replay the
eval day (`experiments.replay`), and `experiments.compare` sets the PFD funnels beside the
baseline funnel, paired by training seed, with the oracle's expected clicks, conversions and
GMV per 1,000 requests.
"""

import os
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

import data
from experiments import compare
from experiments import funnel as funnel_lib
from experiments import paper_worlds
from experiments import replay
from experiments import run_dir as run_dir_lib
from experiments.paper_stats import Section
from experiments.studies.base import Plan
from experiments.studies.base import Report
from experiments.studies.base import Study
from experiments.studies.base import Trial
from stages import catalogue

# name -> (coarse variant, CVR variant) of each funnel.
FUNNELS = {"baseline": ("baseline", "baseline"), "coarse_pfd_md": ("pfd_md", "baseline"),
           "cvr_pfd": ("baseline", "pfd")}
PAPER_ONLINE = {("coarse_pfd_md", "clicks"): "+5.0%", ("cvr_pfd", "conversions"): "+2.3%"}
REPORTS = "online"  # Report.extras key: {comparison: path of its report.md}


class OnlineStudy(Study):
  name = "online"
  title = "Simulated online A/B (replayed funnel, oracle outcomes)"

  def declare(self, plan: Plan) -> List[Trial]:
    if plan.world_seed != plan.paper.first_world_seed:  # compare pairs by seed, on one world
      return []
    trials: List[Trial] = []
    days = plan.long_days
    for seed in plan.seeds:
      trials += [Trial(self.name, catalogue.RETRIEVAL.name, "baseline", seed, days),
                 Trial(self.name, catalogue.FINE_CTR.name, "baseline", seed, days)]
      trials += [Trial(self.name, catalogue.FINE_CVR.name, v, seed, days)
                 for v in ("baseline", "pfd")]
      trials += [Trial(self.name, catalogue.COARSE.name, v, seed, days)
                 for v in ("baseline", "pfd_md")]
    return trials

  def follow_up(self, paper: Any, days: Sequence[int], seeds: Sequence[int], work_dir: str,
                engine: Any) -> Dict[str, Any]:
    """Replays the eval day through the three funnels per seed; compares them."""
    day = days[-1]
    runs: Dict[str, List[str]] = {name: [] for name in FUNNELS}
    world_seed = paper.first_world_seed
    world_dir = paper_worlds.world_path(work_dir, paper_worlds.MAIN, world_seed)
    world = data.load(world_dir, verify="size")
    for seed in seeds:
      trial = Trial(self.name, catalogue.COARSE.name, "baseline", seed, tuple(days[:-1]),
                    world_seed=world_seed)
      for name, (coarse_variant, cvr_variant) in FUNNELS.items():
        run_dir = os.path.join(work_dir, "replays", f"{name}_seed{seed}")
        config = replay.ReplayConfig(
            world_dir=world_dir, model_dir=trial.model_dir(work_dir),
            run_dir=run_dir, day=day, coarse_variant=coarse_variant, cvr_variant=cvr_variant,
            label=name, seed=seed, max_requests=paper.online_max_requests, cascade_sample=500,
            oracle_cache_dir=os.path.join(work_dir, "oracle_cache"))
        if not os.path.exists(os.path.join(run_dir, run_dir_lib.SUMMARY)):
          replay.replay(world, funnel_lib.parse_funnel(paper.paper_funnel), config, engine)
        runs[name].append(run_dir)
    reports = {}
    for name in ("coarse_pfd_md", "cvr_pfd"):
      out = os.path.join(paper.report_dir, "online", name)
      reports[name] = compare.compare(runs["baseline"] + runs[name], out, baseline="baseline")
    return {REPORTS: reports}

  def section(self, report: Report) -> Optional[Section]:
    online: Dict[str, str] = report.extras.get(REPORTS) or {}
    if not online:
      return None
    lines = []
    for name, path in online.items():
      table = pd.read_csv(os.path.join(os.path.dirname(path), "tables.csv"))
      for outcome in ("clicks", "conversions", "gmv"):
        metric = f"online/exp_{outcome}_per_1k"
        base = table[(table["variant"] == "baseline") & (table["metric"] == metric)]
        treated = table[(table["variant"] != "baseline") & (table["metric"] == metric)]
        if base.empty or treated.empty:
          continue
        t = treated.iloc[0]
        lines.append({
            "comparison": name, "outcome per 1,000 requests": outcome,
            "baseline": float(base.iloc[0]["mean"]), "treatment": float(t["mean"]),
            "Δ relative, %": 100 * float(t["rel_delta"]),
            "CI low, %": 100 * float(t["rel_lo"]), "CI high, %": 100 * float(t["rel_hi"]),
            "CI method": t["delta_method"], "paper": PAPER_ONLINE.get((name, outcome), "")})
    return Section(pd.DataFrame(lines), [
        "", "On the study's first world (replays are paired by training seed). Full "
        "comparisons: " + ", ".join(f"[{name}](online/{name}/report.md)" for name in online)])

"""The paper study's report: each study's sections, in the registry's order, as one page.

Every figure is the mean over pairs (world seed, training seed) with a Student-t 95% CI; the
paper's own figure stands beside ours where it has one (method.md: Xu et al., KDD 2020). Input
is the frame of trial rows written by `experiments.paper` (one row per stage run: study, stage,
variant, seed, days, settings, and the run's metrics.json numbers) and what studies computed
after their trials (`Report.extras`). Each study renders its own sections
(`experiments.studies`); the learning section, which spans the tables, follows Tables A and B;
`paper_stats.render_section` is the one place a table becomes Markdown. The report opens with
a headline (`headline_section`): each variant's paired Δ against its baseline student and the
online A/B, each with a verdict; it is also written as one HTML page (experiments.html_report).
"""

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from data.plumbing import files
from experiments import html_report
from experiments import paper_learning
from experiments import studies as studies_lib
from experiments.paper_stats import PAIR
from experiments.paper_stats import Section
from experiments.paper_stats import render_section
from experiments.paper_stats import with_pairs
from experiments.studies.tables import PAPER_GAP_CLOSURE
from experiments.studies.tables import display

LEARNING = "Learning: the baselines beside their ceiling and the linear reference"


def sections(report: studies_lib.Report,
             chosen: Sequence[str]) -> List[Tuple[str, Optional[Section]]]:
  """(heading, section) of every chosen study in the registry's order, the learning section
  after the tables."""
  parts: List[Tuple[str, Optional[Section]]] = []
  studies = studies_lib.selected(list(chosen))
  for study in [s for s in studies if s.table]:
    parts += list(study.sections(report))
  parts.append((LEARNING, paper_learning.learning_section(report.frame, report.plots_dir)))
  for study in [s for s in studies if not s.table]:
    parts += list(study.sections(report))
  return parts


def _verdict(mean: float, half: float) -> str:
  """The paired interval's plain reading (experiments.compare_report's words)."""
  if mean is None or half is None or math.isnan(mean) or math.isnan(half):
    return "no interval"
  low, high = mean - half, mean + half
  return ("significant gain" if low > 0 else "significant loss" if high < 0
          else "no difference")


def headline_section(sections) -> Optional[Section]:
  """The answer first: each variant's paired Δ eAUC and Δ AUC against its baseline student
  (Tables A and B) and the online A/B's relative change, each with its interval and verdict."""
  rows = []
  for title, section in sections:
    table = None if section is None else section.table
    if table is None or table.empty:
      continue
    if title.startswith(("Table A", "Table B")):
      stage = "coarse" if title.startswith("Table A") else "fine CVR"
      rows_of = table[~table["method"].isin(["baseline", "linear reference"])]
      for row in rows_of.to_dict("records"):
        rows.append({"what": f"{stage} {row['method']}, {row['days']} day(s)",
                     "Δ eAUC": row.get("Δ eAUC", math.nan),
                     "Δ eAUC ±": row.get("Δ eAUC ±", math.nan),
                     "Δ AUC": row.get("Δ AUC", math.nan), "Δ AUC ±": row.get("Δ AUC ±", math.nan),
                     "Δ relative, %": math.nan, "pairs": int(row.get("Δ pairs", 0)),
                     "verdict": _verdict(row.get("Δ eAUC"), row.get("Δ eAUC ±")),
                     "paper": row.get("paper", "")})
    elif title.startswith("Simulated online"):
      for row in table.to_dict("records"):
        low, high = row["CI low, %"], row["CI high, %"]
        rows.append({"what": f"online {row['comparison']}: {row['outcome per 1,000 requests']}"
                             " per 1,000 requests", "Δ eAUC": math.nan, "Δ eAUC ±": math.nan,
                     "Δ AUC": math.nan, "Δ AUC ±": math.nan,
                     "Δ relative, %": row["Δ relative, %"], "pairs": math.nan,
                     "verdict": _verdict((low + high) / 2, (high - low) / 2),
                     "paper": row.get("paper", "")})
  if not rows:
    return None
  return Section(pd.DataFrame(rows), [
      "", "Δ: the variant minus its baseline student, paired on (world seed, training seed), "
      "mean ± 95% t-interval; online: relative change with its interval, from the online "
      "comparisons below. Verdict: a significant gain when the interval lies above 0, a "
      "significant loss when below, no difference when it holds 0 (eAUC decides the model "
      "rows)."])


def write(frame: pd.DataFrame, extras: Dict[str, Any], report_dir: str, command: str,
          studies: Sequence[str]) -> str:
  """Writes report.md, tables.csv and plots/ under `report_dir`; returns report.md's path."""
  plots_dir = os.path.join(report_dir, "plots")
  os.makedirs(plots_dir, exist_ok=True)
  pairs = len(with_pairs(frame).groupby(list(PAIR))) if not frame.empty else 0
  world_seeds = with_pairs(frame)["world_seed"].nunique() if not frame.empty else 0
  lines = ["# Privileged Features Distillation on the simulator", "",
           f"Made by `{command}`. Every figure: mean ± 95% CI (Student t) over up to {pairs} "
           f"pairs (world seed, training seed; {world_seeds} world seeds); every Δ is paired on "
           "them. AUC and eAUC on the held-out day. The paper's figures (Xu et al., KDD 2020) "
           "come from its own data: compare shapes, not levels.", ""]
  report = studies_lib.Report(frame, plots_dir, dict(extras))
  parts = sections(report, studies)
  headline = render_section(headline_section(parts))
  if headline:
    lines += ["## Headline: does PFD help here?", ""] + headline + [""]
  for title, section in parts:
    body = render_section(section)
    if body:
      lines += [f"## {title}", ""] + body + [""]
  lines += ["Paper gap closure for reference: " + ", ".join(
      f"{display(v)} {s}: {g}" for (s, v), g in PAPER_GAP_CLOSURE.items()), ""]
  table = frame.drop(columns=[paper_learning.LEARNING_CURVE], errors="ignore")
  files.write_with(os.path.join(report_dir, "tables.csv"),
                   lambda tmp: table.to_csv(tmp, index=False))
  path = os.path.join(report_dir, "report.md")
  files.write_text(path, "\n".join(lines))
  html_report.write_page(path)
  return path

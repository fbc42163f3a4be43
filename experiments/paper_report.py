"""The paper study's report: Tables A and B, gap closure, λ sweep, cost, online A/B, noise sweep.

Every figure is the mean over seeds with a Student-t 95% CI (models.metrics); the paper's own
figure stands beside ours where it has one (method.md: Xu et al., KDD 2020). Input is the frame
of trial rows written by `experiments.paper` (one row per stage run: study, stage, variant,
seed, days, knobs, and the run's metrics.json numbers).

Each section function returns a `Section`: its table as a DataFrame (one row per line of the
report's table) and the Markdown lines that follow it (a plot, a note); `render_section` is the
one place a table becomes Markdown.
"""

import dataclasses
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from data import files
from data import intervals

VARIANTS = ("baseline", "lupi", "md", "pfd", "pfd_md")
NAMES = {"baseline": "baseline", "lupi": "LUPI", "md": "MD", "pfd": "PFD", "pfd_md": "PFD+MD"}
# The paper's figures: student AUC (teacher AUC); None where the paper reports none.
PAPER_CTR_1DAY = {"baseline": "0.6625", "lupi": "0.6637 (0.6687)", "md": "0.6704 (0.6892)",
                  "pfd": "0.6712 (0.6921)", "pfd_md": "0.6745 (0.7110)"}
PAPER_CTR_10DAYS = {"baseline": "0.7042", "pfd_md": "0.7160 (0.7411)"}
PAPER_CVR_30DAYS = {"baseline": "0.9040", "lupi": "0.8965 (0.9651)", "md": "0.9052 (0.9058)",
                    "pfd": "0.9084 (0.9901)", "pfd_md": "0.9082 (0.9911)"}
PAPER_GAP_CLOSURE = {("coarse", "pfd_md"): "0.25 (1 day)", ("fine_cvr", "pfd"): "0.05 (30 days)"}
PAPER_COST = {"independent teacher, then student": "+99.5%", "independent, simultaneous": "+55%",
              "shared, simultaneous": "+2.9%", "shared except user id, simultaneous": "+11.4%"}
PAPER_ONLINE = {("coarse_pfd_md", "clicks"): "+5.0%", ("cvr_pfd", "conversions"): "+2.3%"}


@dataclasses.dataclass
class Section:
  """One report section: its table and the Markdown lines after it."""
  table: pd.DataFrame
  notes: List[str] = dataclasses.field(default_factory=list)


def render_section(section: Optional[Section]) -> List[str]:
  """The section's Markdown lines: the table (header, rule, one line per row), then notes."""
  if section is None:
    return []
  table = section.table
  lines = ["| " + " | ".join(str(c) for c in table.columns) + " |",
           "|" + "---|" * len(table.columns)]
  lines += ["| " + " | ".join(str(v) for v in row) + " |"
            for row in table.itertuples(index=False)]
  return lines + list(section.notes)


def mean_ci(values, signed: bool = False) -> str:
  mean, half = intervals.mean_ci_over_seeds(values)
  if math.isnan(mean):
    return "-"
  text = f"{mean:+.4f}" if signed else f"{mean:.4f}"
  return text if math.isnan(half) else f"{text} ± {half:.4f}"


def _rows(frame: pd.DataFrame, **where) -> pd.DataFrame:
  mask = np.ones(len(frame), bool)
  for column, value in where.items():
    mask &= (frame[column] == value).to_numpy() if column in frame else False
  return frame[mask].sort_values("seed")


def student_teacher(frame: pd.DataFrame, **where) -> str:
  rows = _rows(frame, **where)
  if rows.empty:
    return "-"
  text = mean_ci(rows["auc"])
  if "teacher_auc" in rows and rows["teacher_auc"].notna().any():
    text += f" ({mean_ci(rows['teacher_auc'])})"
  return text


def gap_closure(frame: pd.DataFrame, variant: str, **where) -> str:
  """(student - baseline student) / (teacher - baseline student), per seed, then mean ± CI;
  n/a unless the teacher beats the baseline student (95% CI of the gap above 0)."""
  rows, base = paired_with_baseline(frame, variant, **where)
  if rows.empty or "teacher_auc" not in rows:
    return "-"
  gap = (rows["teacher_auc"] - base).to_numpy()
  mean, half = intervals.mean_ci_over_seeds(gap)
  if not mean - np.nan_to_num(half) > 0:
    return "n/a (no significant gap)"  # teacher - baseline may be ~0 or below: no ratio
  return mean_ci((rows["auc"] - base).to_numpy() / gap)


def paired_delta(frame: pd.DataFrame, variant: str, **where) -> str:
  """Student AUC minus the baseline student's, per seed (same data order and initialisation),
  then mean ± CI: the test of "variant beats baseline"."""
  rows, base = paired_with_baseline(frame, variant, **where)
  if rows.empty:
    return "-"
  return mean_ci((rows["auc"] - base).to_numpy(), signed=True)


def paired_with_baseline(frame: pd.DataFrame, variant: str, **where):
  """(the variant's rows, the baseline student's AUC), both indexed by the seeds they share."""
  base = _rows(frame, variant="baseline", **where).set_index("seed")["auc"]
  rows = _rows(frame, variant=variant, **where).set_index("seed")
  seeds = rows.index.intersection(base.index)
  return rows.loc[seeds], base[seeds]


def auc_table(frame: pd.DataFrame, stage: str, study: str, columns: Dict[str, str],
              paper: Dict[str, Dict[str, str]]) -> pd.DataFrame:
  """One row per method: ours per days column | paper's figures | paired delta vs
  baseline | gap closure."""
  header = ["method"] + [f"ours, days {c}" for c in columns.values()]
  header += list(paper) + [f"Δ vs baseline, days {c}" for c in columns.values()]
  header += [f"gap closure, days {c}" for c in columns.values()]
  rows = []
  for variant in VARIANTS:
    cells = [NAMES[variant]]
    cells += [student_teacher(frame, study=study, stage=stage, variant=variant, days=d)
              for d in columns]
    cells += [figures.get(variant, "") for figures in paper.values()]
    cells += ["" if variant == "baseline" else
              paired_delta(frame, variant, study=study, stage=stage, days=d) for d in columns]
    cells += ["" if variant == "baseline" else
              gap_closure(frame, variant, study=study, stage=stage, days=d) for d in columns]
    rows.append(cells)
  return pd.DataFrame(rows, columns=header)


def lambda_section(frame: pd.DataFrame, plots_dir: str) -> Optional[Section]:
  rows = frame[frame["study"] == "lambda"]
  if rows.empty:
    return None
  series = [("coarse", "pfd"), ("fine_cvr", "pfd"), ("fine_cvr", "lupi")]
  lambdas = sorted(rows["distill_lambda"].dropna().unique())
  header = ["λ"] + [f"{s} {NAMES[v]}" for s, v in series]
  lines = []
  # λ = 0 is the baseline student, when the study ran it (Tables A and B) on the same days.
  days = rows["days"].iloc[0]
  baseline = [student_teacher(frame[frame["study"].isin(["coarse", "cvr"])], stage=s,
                              variant="baseline", days=days) for s, _ in series]
  if any(cell != "-" for cell in baseline):
    lines.append(["0 (baseline)"] + baseline)
  for lam in lambdas:
    cells = [student_teacher(rows, stage=s, variant=v, distill_lambda=lam) for s, v in series]
    lines.append([f"{lam:g}"] + cells)
  _line_plot(rows, series, "distill_lambda", "auc", "λ", "student AUC",
             os.path.join(plots_dir, "lambda_sweep.png"))
  return Section(pd.DataFrame(lines, columns=header), ["", "![λ sweep](plots/lambda_sweep.png)"])


def cost_section(frame: pd.DataFrame) -> Optional[Section]:
  rows = frame[frame["study"] == "cost"]
  if rows.empty:
    return None
  alone = rows[rows["scheme"] == "student alone"].set_index("seed")["train_seconds"]
  lines = []
  for scheme in dict.fromkeys(rows["scheme"]):
    own = rows[rows["scheme"] == scheme].set_index("seed")["train_seconds"]
    seeds = own.index.intersection(alone.index)
    extra = 100.0 * (own[seeds] / alone[seeds] - 1.0)
    mean, half = intervals.mean_ci_over_seeds(extra.to_numpy())
    extra_text = "" if scheme == "student alone" else f"{mean:+.1f}% ± {half:.1f}"
    seconds, spread = intervals.mean_ci_over_seeds(own.to_numpy())
    lines.append([scheme, f"{seconds:.1f} ± {spread:.1f}", extra_text,
                  PAPER_COST.get(scheme, "")])
  table = pd.DataFrame(lines, columns=["scheme", "train seconds",
                                       "extra over the student alone", "paper"])
  return Section(table, ["", "Wall-clock seconds are only as steady as the machine was: runs that "
                  "shared it with other jobs are noisy. `python -m benchmarks.train_cost` "
                  "times the schemes back to back on one process."])


def online_section(online: Dict[str, str]) -> Optional[Section]:
  if not online:
    return None
  header = ["comparison", "outcome per 1,000 requests", "baseline", "treatment",
            "relative delta [95% CI]", "CI method", "paper"]
  lines = []
  for name, report in online.items():
    table = pd.read_csv(os.path.join(os.path.dirname(report), "tables.csv"))
    for outcome in ("clicks", "conversions", "gmv"):
      metric = f"online/exp_{outcome}_per_1k"
      base = table[(table["variant"] == "baseline") & (table["metric"] == metric)]
      treated = table[(table["variant"] != "baseline") & (table["metric"] == metric)]
      if base.empty or treated.empty:
        continue
      t = treated.iloc[0]
      lines.append([
          name, outcome, f"{base.iloc[0]['mean']:.2f}", f"{t['mean']:.2f}",
          f"{100 * t['rel_delta']:+.2f}% [{100 * t['rel_lo']:+.2f}%, {100 * t['rel_hi']:+.2f}%]",
          t["delta_method"], PAPER_ONLINE.get((name, outcome), "")])
  return Section(pd.DataFrame(lines, columns=header), ["", "Full comparisons: " + ", ".join(
      f"[{name}](online/{name}/report.md)" for name in online)])


def noise_section(frame: pd.DataFrame, plots_dir: str) -> Optional[Section]:
  rows = frame[frame["study"] == "noise"].copy()
  if rows.empty:
    return None
  rows["noise"] = rows["world"].str.split("=").str[1].astype(float)
  header = ["post_click_noise", "CVR baseline", "CVR PFD (teacher)", "PFD gain over baseline"]
  lines = []
  gains = []
  for noise in sorted(rows["noise"].unique()):
    at = rows[rows["noise"] == noise]
    pfd, base = paired_with_baseline(at, "pfd")
    gain = (pfd["auc"] - base).to_numpy()
    gains.append((noise, *intervals.mean_ci_over_seeds(gain)))
    lines.append([f"{noise:g}", mean_ci(base.to_numpy()), student_teacher(at, variant="pfd"),
                  mean_ci(gain, signed=True)])
  _gain_plot(gains, os.path.join(plots_dir, "noise_sweep.png"))
  return Section(pd.DataFrame(lines, columns=header),
                 ["", "![noise sweep](plots/noise_sweep.png)"])


def unlabelled_section(frame: pd.DataFrame) -> Optional[Section]:
  rows = frame[frame["study"] == "unlabelled"]
  if rows.empty or "distill_unlabelled" not in rows:
    return None
  with_unlabelled = rows["distill_unlabelled"].fillna(False).astype(bool)
  plain = rows[(rows["stage"] == "coarse") & ~with_unlabelled]
  extra = rows[(rows["stage"] == "coarse") & with_unlabelled]
  return Section(pd.DataFrame(
      [["logged impressions only", student_teacher(plain)],
       ["+ retrieved, unshown candidates", student_teacher(extra)]],
      columns=["coarse PFD+MD", "student AUC (teacher)"]))


def _auc_bars(frame: pd.DataFrame, stage: str, study: str, days: Sequence[str],
              path: str) -> None:
  """Student AUC per method (one panel per training-days column) with 95% CIs over seeds; the
  dashed line is the baseline student."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(1, len(days), figsize=(4.5 * len(days), 3.6), squeeze=False)
  for axis, day in zip(axes[0], days):
    stats = [intervals.mean_ci_over_seeds(
        _rows(frame, study=study, stage=stage, variant=v, days=day)["auc"]) for v in VARIANTS]
    means, halves = (np.array(x, float) for x in zip(*stats))
    # Points, not bars: AUCs differ in the third decimal, and a bar's length would mislead.
    axis.errorbar([NAMES[v] for v in VARIANTS], means, yerr=np.nan_to_num(halves), fmt="o",
                  capsize=4)
    if np.isfinite(means[0]):
      axis.axhline(means[0], color="grey", linewidth=0.8, linestyle="--")
    axis.set_title(f"{stage}, days {day}")
    axis.set_ylabel("student AUC")
  files.write_png(path, figure)


def _line_plot(rows, series, x, y, xlabel, ylabel, path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(figsize=(6, 4))
  for stage, variant in series:
    part = rows[(rows["stage"] == stage) & (rows["variant"] == variant)]
    stats = [(v, *intervals.mean_ci_over_seeds(g[y])) for v, g in part.groupby(x)]
    if stats:
      xs, means, halves = zip(*stats)
      axes.errorbar(xs, means, yerr=np.nan_to_num(halves), marker="o", capsize=3,
                    label=f"{stage} {NAMES[variant]}")
  axes.set_xlabel(xlabel)
  axes.set_ylabel(ylabel)
  axes.legend()
  files.write_png(path, figure)


def _gain_plot(gains, path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(figsize=(6, 4))
  xs, means, halves = zip(*gains)
  axes.errorbar(xs, means, yerr=np.nan_to_num(halves), marker="o", capsize=3)
  axes.axhline(0.0, color="grey", linewidth=0.8)
  axes.set_xscale("log")
  axes.set_xlabel("post_click_noise (higher: less informative privileged features)")
  axes.set_ylabel("CVR AUC gain of PFD over baseline")
  files.write_png(path, figure)


def write(frame: pd.DataFrame, online: Dict[str, str], report_dir: str, command: str,
          studies: Sequence[str]) -> str:
  """Writes report.md, tables.csv and plots/ under `report_dir`; returns report.md's path."""
  plots_dir = os.path.join(report_dir, "plots")
  os.makedirs(plots_dir, exist_ok=True)
  n_seeds = frame["seed"].nunique() if not frame.empty else 0
  lines = ["# Privileged Features Distillation on the simulator", "",
           f"Made by `{command}`. Every figure: mean ± 95% CI (Student t) over {n_seeds} "
           "seeds; AUC on the held-out day. Student AUC, teacher AUC in brackets. The paper's "
           "figures (Xu et al., KDD 2020) come from its own data: compare shapes, not levels.",
           ""]
  sections = []
  if "coarse" in studies:
    coarse_days = sorted(_rows(frame, study="coarse", stage="coarse")["days"].unique(),
                         key=lambda d: len(d))
    _auc_bars(frame, "coarse", "coarse", coarse_days, os.path.join(plots_dir, "table_a.png"))
    sections.append(("Table A: coarse CTR (two-tower student)", Section(auc_table(
        frame, "coarse", "coarse", {d: d for d in coarse_days},
        {"paper, 1 day": PAPER_CTR_1DAY, "paper, 10 days": PAPER_CTR_10DAYS}),
        ["", "![Table A](plots/table_a.png)"])))
  if "cvr" in studies:
    cvr_days = sorted(_rows(frame, study="cvr", stage="fine_cvr")["days"].unique())
    _auc_bars(frame, "fine_cvr", "cvr", cvr_days, os.path.join(plots_dir, "table_b.png"))
    sections.append(("Table B: fine CVR (trained on clicks)", Section(auc_table(
        frame, "fine_cvr", "cvr", {d: d for d in cvr_days},
        {"paper, 30 days": PAPER_CVR_30DAYS}), ["", "![Table B](plots/table_b.png)"])))
  sections += [("λ sweep", lambda_section(frame, plots_dir)),
               ("Training cost (coarse, wall-clock seconds of training)", cost_section(frame)),
               ("Simulated online A/B (replayed funnel, oracle outcomes)",
                online_section(online)),
               ("Post-click noise sweep (CVR)", noise_section(frame, plots_dir)),
               ("Distillation on unlabelled candidates", unlabelled_section(frame))]
  for title, section in sections:
    body = render_section(section)
    if body:
      lines += [f"## {title}", ""] + body + [""]
  lines += ["Paper gap closure for reference: " + ", ".join(
      f"{NAMES[v]} {s}: {g}" for (s, v), g in PAPER_GAP_CLOSURE.items()), ""]
  files.write_with(os.path.join(report_dir, "tables.csv"),
                           lambda tmp: frame.to_csv(tmp, index=False))
  path = os.path.join(report_dir, "report.md")
  files.write_text(path, "\n".join(lines))
  return path

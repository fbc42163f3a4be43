"""The paper study's report: Tables A and B, gap closure, λ sweep, cost, online A/B, noise sweep.

Every figure is the mean over seeds with a Student-t 95% CI (models.metrics); the paper's own
figure stands beside ours where it has one (method.md: Xu et al., KDD 2020). Input is the frame
of trial rows written by `experiments.paper` (one row per stage run: study, stage, variant,
seed, days, knobs, and the run's metrics.json numbers).

Each section function returns a `Section`: its table as a DataFrame (one row per line of the
report's table) and the Markdown lines that follow it (a plot, a note); `render_section` is the
one place a table becomes Markdown.
"""

import math
import os
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from data import files
from data import intervals
from experiments import html_report
from experiments import paper_learning
from experiments import paper_regime
from experiments.paper_stats import PAIR
from experiments.paper_stats import Section
from experiments.paper_stats import gap_closures
from experiments.paper_stats import metric_values
from experiments.paper_stats import on_shared_pairs
from experiments.paper_stats import paired_deltas
from experiments.paper_stats import paired_with_baseline
from experiments.paper_stats import reference_auc
from experiments.paper_stats import render_section
from experiments.paper_stats import rows_where
from experiments.paper_stats import stat_cells
from experiments.paper_stats import with_pairs

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


# ----------------------------------------------------------------------------- sections


def auc_table(frame: pd.DataFrame, stage: str, study: str, days: Sequence[str],
              paper: Dict[str, Dict[str, str]]) -> pd.DataFrame:
  """One row per (method, training days): the student's AUC and eAUC beside its ceiling, the
  linear reference and its teacher; paired Δ AUC and Δ eAUC vs the baseline student with n
  pairs; gap closure; the paper's figure for those days (`paper`: days -> variant -> text)."""
  rows = []
  for day in days:
    where = dict(study=study, stage=stage, days=day)
    for variant in VARIANTS:
      own = rows_where(frame, variant=variant, **where)
      if own.empty and variant != "baseline":
        continue  # not run (experiments.paper --variants)
      row: Dict[str, object] = {"method": NAMES[variant], "days": day, "n": len(own)}
      for metric, name in (("auc", "AUC"), ("eauc", "eAUC"), ("teacher_auc", "teacher AUC"),
                           ("teacher_eauc", "teacher eAUC"), ("ceiling_auc", "ceiling AUC"),
                           ("ceiling_eauc", "ceiling eAUC")):
        row.update(stat_cells(name, metric_values(own, metric)))
      row.update(stat_cells("linear AUC", reference_auc(frame, **where)))
      delta = variant != "baseline"
      for metric, name in (("auc", "Δ AUC"), ("eauc", "Δ eAUC")):
        row.update(stat_cells(name, paired_deltas(frame, variant, metric, **where)
                              if delta else []))
      row["Δ pairs"] = len(paired_deltas(frame, variant, "auc", **where)) if delta else 0
      row["pairs for 80% power"] = (pairs_for_power(paired_deltas(frame, variant, "eauc",
                                                                  **where))
                                    if delta else math.nan)
      row.update(stat_cells("gap closure", gap_closures(frame, variant, **where)
                            if delta else []))
      row["paper"] = paper.get(day, {}).get(variant, "")
      rows.append(row)
  return pd.DataFrame(rows)


def pairs_for_power(deltas, power_z: float = 0.8416, alpha_z: float = 1.96) -> float:
  """Pairs a paired test at 5% needs for 80% power if the true Δ eAUC were the mean seen here,
  at the spread seen here: ((z_0.975 + z_0.8) * sd / |mean|)^2 (normal approximation)."""
  deltas = np.asarray(deltas, dtype=np.float64)
  deltas = deltas[~np.isnan(deltas)]
  if len(deltas) < 2 or np.mean(deltas) == 0:
    return math.nan
  return float(math.ceil(((alpha_z + power_z) * np.std(deltas, ddof=1) / abs(np.mean(deltas)))
                         ** 2))


AUC_NOTES = ["", "AUC and eAUC on the eval day; ceiling: the oracle's true probability as the "
             "score on the same rows; linear: the logistic-regression reference on the same "
             "serving inputs; Δ: paired on (world seed, seed) against the baseline student, "
             "mean ± 95% t-interval over the Δ pairs. Gap closure (student - baseline) / "
             "(teacher - baseline) is n/a unless the teacher's gap is significant. Pairs for "
             "80% power: how many (world seed, seed) pairs a paired test at 5% would need to "
             "detect the Δ eAUC seen here at the spread seen here. n/a: not measured by these "
             "runs."]


def lambda_section(frame: pd.DataFrame, plots_dir: str) -> Optional[Section]:
  rows = frame[frame["study"] == "lambda"]
  if rows.empty:
    return None
  series = [("coarse", "pfd"), ("fine_cvr", "pfd"), ("fine_cvr", "lupi")]
  lambdas = sorted(rows["distill_lambda"].dropna().unique())
  lines = []
  # λ = 0 is the baseline student, when the study ran it (Tables A and B) on the same days.
  days = rows["days"].iloc[0]
  tables = frame[frame["study"].isin(["coarse", "cvr"])]
  baseline: Dict[str, object] = {"λ": 0.0}
  for stage, variant in series:
    base = rows_where(tables, stage=stage, variant="baseline", days=days)
    baseline.update(stat_cells(f"{stage} {NAMES[variant]}", metric_values(base, "auc")))
    baseline.update(stat_cells(f"{stage} {NAMES[variant]} teacher", []))
  if any(not math.isnan(v) for k, v in baseline.items() if k != "λ"):
    lines.append(baseline)
  for lam in lambdas:
    line: Dict[str, object] = {"λ": float(lam)}
    for stage, variant in series:
      own = rows_where(rows, stage=stage, variant=variant, distill_lambda=lam)
      name = f"{stage} {NAMES[variant]}"
      line.update(stat_cells(name, metric_values(own, "auc")))
      line.update(stat_cells(f"{name} teacher", metric_values(own, "teacher_auc")))
    lines.append(line)
  _line_plot(rows, series, "distill_lambda", "auc", "λ", "student AUC",
             os.path.join(plots_dir, "lambda_sweep.png"))
  table = pd.DataFrame(lines)
  table["λ"] = [f"{lam:g}" if lam else "0 (baseline)" for lam in table["λ"]]
  return Section(table, ["", "Student AUC and its teacher's; λ = 0 is the baseline student.",
                         "", "![λ sweep](plots/lambda_sweep.png)"])


def cost_section(frame: pd.DataFrame) -> Optional[Section]:
  rows = with_pairs(frame[frame["study"] == "cost"])
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
      "", "Wall-clock seconds are only as steady as the machine was: runs that shared it with "
      "other jobs (or with the study's own parallel workers) are noisy. `python -m "
      "benchmarks.train_cost` times the schemes back to back on one process."])


def online_section(online: Dict[str, str]) -> Optional[Section]:
  if not online:
    return None
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
      lines.append({
          "comparison": name, "outcome per 1,000 requests": outcome,
          "baseline": float(base.iloc[0]["mean"]), "treatment": float(t["mean"]),
          "Δ relative, %": 100 * float(t["rel_delta"]),
          "CI low, %": 100 * float(t["rel_lo"]), "CI high, %": 100 * float(t["rel_hi"]),
          "CI method": t["delta_method"], "paper": PAPER_ONLINE.get((name, outcome), "")})
  return Section(pd.DataFrame(lines), ["", "On the world of world seed 0 (replays are paired by "
                                       "training seed). Full comparisons: " + ", ".join(
      f"[{name}](online/{name}/report.md)" for name in online)])


def noise_section(frame: pd.DataFrame, plots_dir: str) -> Optional[Section]:
  rows = frame[frame["study"] == "noise"].copy()
  if rows.empty:
    return None
  rows["noise"] = rows["world"].str.split("=").str[1].astype(float)
  lines = []
  gains = []
  for noise in sorted(rows["noise"].unique()):
    at = rows[rows["noise"] == noise]
    pfd, base = paired_with_baseline(at, "pfd")
    gain = metric_values(pfd, "auc") - metric_values(base, "auc")
    gains.append((noise, *intervals.mean_ci_over_seeds(gain)))
    line: Dict[str, object] = {"post_click_noise": f"{noise:g}"}
    line.update(stat_cells("CVR baseline AUC", metric_values(base, "auc")))
    line.update(stat_cells("CVR PFD AUC", metric_values(pfd, "auc")))
    line.update(stat_cells("PFD teacher AUC", metric_values(pfd, "teacher_auc")))
    line.update(stat_cells("Δ AUC", gain))
    line.update(stat_cells("Δ eAUC", metric_values(pfd, "eauc") - metric_values(base, "eauc")))
    line["pairs"] = len(gain)
    lines.append(line)
  _gain_plot(gains, os.path.join(plots_dir, "noise_sweep.png"))
  return Section(pd.DataFrame(lines), ["", "![noise sweep](plots/noise_sweep.png)"])


def teacher_section(frame: pd.DataFrame) -> Optional[Section]:
  """Coarse PFD+MD taught by fine CTR models trained on the student's days and on more days,
  each Δ paired against the baseline student on the same pairs."""
  rows = frame[(frame["study"] == "teacher") & (frame["stage"] == "coarse")]
  if rows.empty:
    return None
  teacher_days = rows["teacher_days"] if "teacher_days" in rows else pd.Series(np.nan, rows.index)
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
  baseline = {"teacher: fine CTR on": "none (baseline)", "n": len(base)}
  baseline.update(stat_cells("AUC", metric_values(base, "auc")))
  baseline.update(stat_cells("eAUC", metric_values(base, "eauc")))
  baseline.update(stat_cells("ceiling eAUC", metric_values(base, "ceiling_eauc")))
  return Section(pd.DataFrame([baseline] + lines), [
      "", f"The coarse student trains on {student_days} day(s) in every row; only its teacher's "
      "history changes. Δ: paired on (world seed, seed) against the baseline student; teacher "
      "AUC and eAUC are the fine CTR teacher's on the student's eval rows."])


def unlabelled_section(frame: pd.DataFrame) -> Optional[Section]:
  rows = frame[frame["study"] == "unlabelled"]
  if rows.empty or "distill_unlabelled" not in rows:
    return None
  with_unlabelled = rows["distill_unlabelled"].fillna(False).astype(bool)
  lines = []
  for name, part in (("logged impressions only", rows[(rows["stage"] == "coarse")
                                                      & ~with_unlabelled]),
                     ("+ retrieved, unshown candidates", rows[(rows["stage"] == "coarse")
                                                              & with_unlabelled])):
    line: Dict[str, object] = {"coarse PFD+MD": name}
    line.update(stat_cells("student AUC", metric_values(part, "auc")))
    line.update(stat_cells("teacher AUC", metric_values(part, "teacher_auc")))
    lines.append(line)
  return Section(pd.DataFrame(lines))


def _auc_bars(frame: pd.DataFrame, stage: str, study: str, days: Sequence[str],
              path: str) -> None:
  """Student AUC per method (one panel per training-days column) with 95% CIs over seeds; the
  dashed line is the baseline student."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(1, len(days), figsize=(4.5 * len(days), 3.6), squeeze=False)
  run = [v for v in VARIANTS if v == "baseline" or not rows_where(
      frame, study=study, stage=stage, variant=v).empty]
  for axis, day in zip(axes[0], days):
    stats = [intervals.mean_ci_over_seeds(
        rows_where(frame, study=study, stage=stage, variant=v, days=day)["auc"]) for v in run]
    means, halves = (np.array(x, float) for x in zip(*stats))
    # Points, not bars: AUCs differ in the third decimal, and a bar's length would mislead.
    axis.errorbar([NAMES[v] for v in run], means, yerr=np.nan_to_num(halves), fmt="o",
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
      for row in table[table["method"] != "baseline"].to_dict("records"):
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


def write(frame: pd.DataFrame, online: Dict[str, str], report_dir: str, command: str,
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
  sections = []
  if "coarse" in studies:
    coarse_days = sorted(rows_where(frame, study="coarse", stage="coarse")["days"].unique(),
                         key=lambda d: len(d))
    _auc_bars(frame, "coarse", "coarse", coarse_days, os.path.join(plots_dir, "table_a.png"))
    # The paper's 1-day figures beside a 1-day column, its 10-day ones beside a longer last one.
    paper = {d: PAPER_CTR_1DAY for d in coarse_days if "-" not in d}
    if coarse_days and "-" in coarse_days[-1]:
      paper[coarse_days[-1]] = PAPER_CTR_10DAYS
    sections.append(("Table A: coarse CTR (two-tower student)", Section(
        auc_table(frame, "coarse", "coarse", coarse_days, paper),
        AUC_NOTES + ["Paper: 1 day beside the shortest column, 10 days beside the longest.", "",
                     "![Table A](plots/table_a.png)"])))
  if "cvr" in studies:
    cvr_days = sorted(rows_where(frame, study="cvr", stage="fine_cvr")["days"].unique())
    _auc_bars(frame, "fine_cvr", "cvr", cvr_days, os.path.join(plots_dir, "table_b.png"))
    sections.append(("Table B: fine CVR (trained on clicks)", Section(
        auc_table(frame, "fine_cvr", "cvr", cvr_days, {d: PAPER_CVR_30DAYS for d in cvr_days}),
        AUC_NOTES + ["Paper: 30 days.", "", "![Table B](plots/table_b.png)"])))
  sections.append(("Learning: the baselines beside their ceiling and the linear reference",
                   paper_learning.learning_section(frame, plots_dir)))
  if "regime" in studies:
    sections.append(("Regime map: where CVR PFD helps (eAUC gain over the baseline student)",
                     paper_regime.regime_section(frame, plots_dir)))
  sections += [("λ sweep", lambda_section(frame, plots_dir)),
               ("Training cost (coarse, wall-clock seconds of training)", cost_section(frame)),
               ("Simulated online A/B (replayed funnel, oracle outcomes)",
                online_section(online)),
               ("Post-click noise sweep (CVR)", noise_section(frame, plots_dir)),
               ("Distillation on unlabelled candidates", unlabelled_section(frame)),
               ("Coarse PFD+MD: a teacher trained on longer history", teacher_section(frame))]
  headline = render_section(headline_section(sections))
  if headline:
    lines += ["## Headline: does PFD help here?", ""] + headline + [""]
  for title, section in sections:
    body = render_section(section)
    if body:
      lines += [f"## {title}", ""] + body + [""]
  lines += ["Paper gap closure for reference: " + ", ".join(
      f"{NAMES[v]} {s}: {g}" for (s, v), g in PAPER_GAP_CLOSURE.items()), ""]
  table = frame.drop(columns=[paper_learning.LEARNING_CURVE], errors="ignore")
  files.write_with(os.path.join(report_dir, "tables.csv"),
                   lambda tmp: table.to_csv(tmp, index=False))
  path = os.path.join(report_dir, "report.md")
  files.write_text(path, "\n".join(lines))
  html_report.write_page(path)
  return path

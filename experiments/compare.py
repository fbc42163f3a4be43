"""Lay replay runs side by side: every metric per variant with a 95% CI, and deltas vs a baseline.

  python -m experiments.compare --run_dirs=runs/base_s*,runs/pfd_s* --report_dir=reports/pfd \
      [--baseline=LABEL_OR_RUN_DIR] [--allow_mixed_worlds] [--flagfile=...]

Each run dir is written by `python -m experiments.replay`: `summary.json` (label, seed, day,
world hash, flat metrics) and a per-request Parquet file. Runs with the same label are seeds of
one variant. The baseline is `--baseline` or the first run given.

How intervals are computed (also written into the report):
  * a variant with >= 2 seeds: mean over seeds with a Student-t 95% CI;
  * a variant with 1 seed: a percentile bootstrap over users (or requests) of the per-request
    outcomes, for every metric that per_request.parquet can recompute; none otherwise;
  * deltas: paired by seed with a t CI when >= 2 seeds are shared; Welch's t when both sides
    have >= 2 seeds but do not share them; otherwise a bootstrap over the per-request outcomes,
    paired by request_id when both runs replayed the same requests.

Outputs (each file written to a temp name, then renamed into place): report.md (the answer
first: a headline table with verdicts, then the other figures and diagnostics), report.html (the
same as one self-contained page, figures embedded; `python -m experiments.browser_check
--report_dir=R` opens it in a headless Chromium), tables.csv (long format) and plots/*.png.

The work is split by job: compare_runs (loading and checking runs), compare_stats (intervals
and deltas, a DataFrame of numbers), compare_report (tables, then Markdown), compare_plots.
This module keeps the library function `compare` and the command.
"""

import dataclasses
import os
from typing import List, Optional, Sequence

from data.plumbing import command
from data.plumbing import files
from experiments import compare_plots
from experiments import compare_report
from experiments import compare_runs
from experiments import compare_stats
from experiments import html_report
from experiments.compare_runs import CompareInputError  # noqa: F401
from experiments.compare_runs import ReplayRun  # noqa: F401
from experiments.compare_runs import load_run  # noqa: F401
from experiments.compare_stats import BootstrapOptions  # noqa: F401
from experiments.compare_stats import build_tables  # noqa: F401


@dataclasses.dataclass
class CompareConfig:
  """The command's configuration; its flags are generated from these fields."""
  run_dirs: List[str] = dataclasses.field(default_factory=list, metadata={
      "help": "Replay run dirs to compare; glob patterns are expanded."})
  report_dir: Optional[str] = dataclasses.field(default=None, metadata={
      "help": "Where report.md, tables.csv and plots/ are written."})
  baseline: Optional[str] = dataclasses.field(default=None, metadata={
      "help": "Label or run dir of the baseline (default: first run)."})
  allow_mixed_worlds: bool = dataclasses.field(default=False, metadata={
      "help": "Compare runs of different worlds anyway."})
  n_boot: int = dataclasses.field(default=1000, metadata={
      "help": "Bootstrap replicates for per-request CIs."})
  bootstrap_seed: int = dataclasses.field(default=0, metadata={
      "help": "Seed of the bootstrap resampling."})
  bootstrap_unit: str = dataclasses.field(default="user", metadata={
      "help": "Resample whole users (requests of a user are correlated) or requests.",
      "choices": ("user", "request")})

  def options(self) -> BootstrapOptions:
    return BootstrapOptions(self.n_boot, self.bootstrap_seed, self.bootstrap_unit)


def compare(run_dirs: Sequence[str], report_dir: str, baseline: Optional[str] = None,
            allow_mixed_worlds: bool = False,
            options: BootstrapOptions = BootstrapOptions()) -> str:
  """Compares replay runs and writes the report; returns the path of report.md.

  Raises CompareInputError (a data.plumbing.command.UserError) for input it cannot use (missing or
  unfinished runs, mixed worlds, an unknown baseline, an empty glob).
  """
  if os.path.exists(report_dir) and not os.path.isdir(report_dir):
    raise compare_runs.CompareInputError(f"--report_dir={report_dir} is a file, not a "
                                         "directory")
  runs = [load_run(run_dir) for run_dir in compare_runs.expand_run_dirs(run_dirs)]
  compare_runs.check_same_world(runs, allow_mixed_worlds)
  variants = compare_runs.group_variants(runs)
  baseline_label = compare_runs.resolve_baseline(variants, baseline)
  table = compare_stats.build_tables(variants, baseline_label, options)
  plots_dir = os.path.join(report_dir, "plots")
  os.makedirs(plots_dir, exist_ok=True)
  plot_names = compare_plots.write_plots(table, list(variants), plots_dir)
  files.write_with(os.path.join(report_dir, "tables.csv"),
                   lambda temp_path: table.to_csv(temp_path, index=False))
  report_path = os.path.join(report_dir, "report.md")
  text = compare_report.report_markdown(table, variants, baseline_label, options, plot_names)
  files.write_text(report_path, text)
  page = html_report.write_page(report_path)
  print(text.split("\n## Other quality figures")[0].split("\n## Diagnostics")[0].rstrip())
  print(f"\none page: {page}\nreport: {report_path}")
  return report_path


def main() -> None:
  config = command.config_from_flags(CompareConfig)
  if not config.run_dirs or not config.report_dir:
    raise command.UserError("--run_dirs and --report_dir are required")
  compare(config.run_dirs, config.report_dir, config.baseline, config.allow_mixed_worlds,
          config.options())


def run() -> None:
  """Console-script entry point (pfd-compare)."""
  command.define_config_flags(CompareConfig)
  command.start(command.run_command(main, "experiments.compare"))


if __name__ == "__main__":
  run()

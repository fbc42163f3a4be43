"""experiments.paper end to end on the tiny world: every declared study reaches the report."""

import os
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_paper_study_writes_tables_plots_and_the_command(tmp_path):
  report_dir = tmp_path / "paper"
  flags = [sys.executable, "-m", "experiments.paper", "--preset=tiny", "--seeds=2",
           f"--report_dir={report_dir}", "--lambdas=0.5", "--noise_levels=0.5,2",
           "--hidden_units=16", "--embedding_dim=4", "--batch_size=1024", "--max_steps=20"]
  command = flags + ["--studies=lambda,noise"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stderr[-3000:]
  report = (report_dir / "report.md").read_text()
  for section in ("λ sweep", "Post-click noise sweep", "python -m experiments.paper"):
    assert section in report, section
  assert os.path.exists(report_dir / "plots" / "lambda_sweep.png")
  assert os.path.exists(report_dir / "plots" / "noise_sweep.png")
  trials = pd.read_csv(report_dir / "tables.csv")
  assert set(trials["seed"]) == {0, 1}
  assert set(trials[trials["study"] == "noise"]["world"]) == {"noise=0.5", "noise=2"}
  # Rerunning reuses every finished stage run instead of training again.
  finished = {str(p): p.stat().st_mtime_ns for p in (report_dir / "work").rglob("metrics.json")}
  again = subprocess.run(flags + ["--studies=noise"], capture_output=True, text=True,
                         timeout=1800)
  assert again.returncode == 0, again.stderr[-3000:]
  assert finished and finished == {
      str(p): p.stat().st_mtime_ns for p in (report_dir / "work").rglob("metrics.json")}

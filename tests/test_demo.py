"""`make demo`'s job on the tiny world, as a user runs it (slow): it says nothing about CUDA on
a CPU machine, its report opens with the headline, and its HTML page renders in a real
headless Chromium with every figure loaded and a screenshot kept beside it."""

import os
import subprocess
import sys

import pytest

from experiments import browser_check

pytestmark = pytest.mark.slow
START_UP_NOISE = ("cuInit", "cuda drivers", "CUDA", "absl::InitializeLog", "oneDNN")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  work = tmp_path_factory.mktemp("demo")
  result = subprocess.run([sys.executable, "-m", "experiments.demo", f"--work_dir={work}",
                           "--preset=tiny"], capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stderr[-3000:]
  return work, result.stdout + result.stderr


def test_the_demo_prints_no_cuda_or_absl_start_up_warning(demo):
  _, output = demo
  for notice in START_UP_NOISE:
    assert notice not in output, notice


def test_the_demo_report_opens_with_the_headline_table(demo):
  work, output = demo
  report = (work / "report" / "report.md").read_text()
  assert report.startswith("# Replay comparison: pfd against baseline\n\n**pfd against "
                           "baseline**")
  assert report.split("\n## ")[1].startswith("Headline: pfd against baseline")
  assert "## Headline: pfd against baseline" in output  # printed too, before the report path


def test_the_demo_report_page_renders_in_headless_chromium(demo):
  work, _ = demo
  if browser_check.find_chromium() is None:
    pytest.skip("Chromium is not installed and could not be: `apt-get install -y chromium` "
                "(.ci/run installs it where apt-get works)")
  page = browser_check.check_page(str(work / "report" / "report.html"))
  assert page.ok, page
  assert page.images == page.loaded == len(os.listdir(work / "report" / "plots")) >= 3
  assert page.tables >= 3 and page.heading.startswith("Replay comparison")
  assert page.screenshot == str(work / "report" / "report.png")
  assert os.path.getsize(page.screenshot) > 10_000

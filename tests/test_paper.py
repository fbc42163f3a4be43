"""experiments.paper: the declared trials, their runs and dependencies, the worlds; end to end on
the tiny world (slow): every declared study reaches the report, and 2 workers give the numbers
of 1."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from data.plumbing import command
from experiments import jobs
from experiments import paper
from experiments import paper_config
from experiments import paper_worlds
from experiments import progress
from experiments import studies
from stages import config as config_lib

DAYS = [1, 2, 3, 4]


def _paper(**overrides):
  return paper_config.PaperConfig(report_dir="R", **overrides)


def _trials(config, name, days, seeds, world_seed=0):
  return studies.get(name).trials(studies.Plan(config, days, seeds, world_seed))


def test_defaults_give_the_power_the_issue_asks_for():
  config = _paper()
  assert config.seeds >= 6 and config.world_seeds >= 2
  assert "regime" not in config.studies and "unlabelled" not in config.studies


def test_regime_trials_cover_days_sparsity_and_strength_on_named_worlds():
  config = _paper(regime_days=("1", "3", "7"), regime_conversion_biases=("-4.5", "-8.8"),
                  regime_strengths=("0", "1"))
  trials = _trials(config, "regime", DAYS, [0, 1], world_seed=1)
  # Days capped at the 3 before the eval day: 1 and 3; 2 x 2 worlds; 3 variants; 2 seeds.
  assert len(trials) == 2 * 2 * 2 * 3 * 2
  assert {t.train_days for t in trials} == {(1,), (1, 2, 3)}
  assert {t.world for t in trials} == {
      "conversion_bias=-4.5,purchase_intent_sd=0", "conversion_bias=-4.5,purchase_intent_sd=1",
      "conversion_bias=-8.8,purchase_intent_sd=0", "conversion_bias=-8.8,purchase_intent_sd=1"}
  assert {t.world_seed for t in trials} == {1} and {t.stage for t in trials} == {"fine_cvr"}
  assert paper_worlds.name_knobs(trials[0].world) == {"conversion_bias": "-4.5",
                                                      "purchase_intent_sd": "0"}


def test_a_run_declared_by_two_studies_runs_once_and_waits_for_what_it_reads():
  config = _paper()
  trials = (_trials(config, "coarse", DAYS, [0])
            + _trials(config, "cvr", DAYS, [0]))
  runs, run_of = paper.distinct_runs(trials)
  assert len(runs) < len(trials) and len(run_of) == len(trials)
  fine_ctr = [i for i, r in enumerate(runs) if r.stage == "fine_ctr"]
  assert len(fine_ctr) == 2  # 1 day and days 1-3, once each although both studies declare it
  after = paper.run_dependencies(runs)
  for i, run in enumerate(runs):
    waits = {runs[j].stage for j in after[i]}
    assert waits == ({"fine_ctr"} if run.stage in ("coarse", "fine_cvr") else set()), run
    assert all(runs[j].model_dir("") == run.model_dir("") for j in after[i])


def test_the_teacher_study_waits_for_a_teacher_trained_on_every_day_before_eval(tmp_path):
  config = _paper(linear_reference=False)
  trials = _trials(config, "teacher", DAYS, [0], world_seed=1)
  runs, _ = paper.distinct_runs(trials)
  long_taught = [r for r in runs if r.teacher_days]
  assert len(long_taught) == 1 and long_taught[0].train_days == (1,)
  teacher = long_taught[0].teacher_trial()
  assert (teacher.stage, teacher.train_days, teacher.world_seed) == ("fine_ctr", (1, 2, 3), 1)
  after = paper.run_dependencies(runs)
  waits = {(runs[j].stage, runs[j].train_days) for j in after[runs.index(long_taught[0])]}
  assert waits == {("fine_ctr", (1, 2, 3))}  # the long teacher, not its own dir's (none)
  base = config_lib.TrainConfig(world_dir="W", model_dir=str(tmp_path))
  student = paper.stage_job(long_taught[0], base, str(tmp_path)).config
  assert student.teacher_dir == teacher.model_dir(str(tmp_path)) != student.model_dir
  same_days = next(r for r in runs if r.variant == "pfd_md" and not r.teacher_days)
  assert paper.stage_job(same_days, base, str(tmp_path)).config.teacher_dir == \
      same_days.model_dir(str(tmp_path))


def test_variants_columns_and_the_linear_reference_pick_the_declared_trials():
  config = _paper(variants=("pfd", "pfd_md"), coarse_columns=("short",))
  trials = _trials(config, "coarse", DAYS, [0])
  assert {t.train_days for t in trials} == {(1,)}
  assert sorted(t.variant for t in trials if t.stage == "coarse") == [
      "baseline", "pfd", "pfd_md", studies.LINEAR]
  cvr = _trials(_paper(linear_reference=False), "cvr", DAYS, [0])
  # the fine CTR run, then every registered kind (baseline, lupi, md, pfd, pfd_md, self)
  assert studies.LINEAR not in {t.variant for t in cvr} and len(cvr) == 1 + 6
  with pytest.raises(command.UserError, match="--variants"):
    _paper(variants=("pfd", "distil"))
  with pytest.raises(command.UserError, match="--coarse_columns"):
    _paper(coarse_columns=("medium",))


def test_a_linear_reference_trial_runs_the_reference_command_on_the_baselines_dir():
  trial = studies.Trial("coarse", "coarse", studies.LINEAR, 0, (1,))
  base = config_lib.TrainConfig(world_dir="W", model_dir="M", epochs=1)
  job = paper.stage_job(trial, base, "WORK")
  config = job.config
  assert config.variant == "baseline" and config.epochs == paper.reference.REFERENCE_EPOCHS
  task = job.task_class()
  argv = jobs.command_line(job)
  assert argv[2] == "experiments.reference" and "--stage=coarse" in argv
  names = {a.split("=")[0] for a in argv[3:]}
  assert not names & {"--variant", "--mode", "--teacher_variant", "--task"}
  assert task.output_dir(config) == os.path.join(config.model_dir, "reference", "coarse")
  assert config.model_dir == studies.Trial("coarse", "coarse", "baseline", 0, (1,)).model_dir(
      "WORK")


def test_world_seed_zero_keeps_the_old_paths_and_others_get_their_own():
  assert paper_worlds.world_path("W", "main") == os.path.join("W", "worlds", "main")
  assert paper_worlds.world_path("W", "noise=2", 1) == os.path.join("W", "worlds",
                                                                    "noise=2@seed1")
  trial = studies.Trial("cvr", "fine_cvr", "pfd", 0, (1, 2), world_seed=1)
  assert "main@seed1" in trial.model_dir("W")


def test_world_settings_cast_knobs_from_a_flagfile_and_refuse_unknown_ones():
  knobs = paper_worlds.read_flagfile("experiments/configs/world_taobao.cfg")
  settings = paper_worlds.world_settings("tiny", {**knobs, "conversion_bias": "-6.5"}, seed=3)
  assert settings.conversion_bias == -6.5 and settings.click_bias == -4.9
  assert settings.seed == 3 and settings.n_users == 400
  with pytest.raises(command.UserError, match="unknown world knob"):
    paper_worlds.world_settings("tiny", {"colour": "1"}, seed=0)


def test_the_regime_flagfile_parses_into_a_config():
  flags = paper_worlds.read_flagfile("experiments/configs/paper_regime.cfg")
  assert "regime" in flags["studies"].split(",")
  assert int(flags["seeds"]) >= 6 and int(flags["world_seeds"]) >= 2


TINY = [sys.executable, "-m", "experiments.paper", "--preset=tiny", "--hidden_units=16",
        "--embedding_dim=4", "--batch_size=1024", "--max_steps=20"]


def _run(flags):
  result = subprocess.run(TINY + flags, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_paper_study_writes_tables_plots_and_the_command(tmp_path):
  report_dir = tmp_path / "paper"
  flags = ["--seeds=2", "--world_seeds=1", f"--report_dir={report_dir}", "--lambdas=0.5",
           "--noise_levels=0.5,2"]
  _run(flags + ["--studies=lambda,noise,teacher"])
  report = (report_dir / "report.md").read_text()
  for section in ("λ sweep", "Post-click noise sweep", "python -m experiments.paper",
                  "a teacher trained on longer history", "| 3 days | 2 |"):
    assert section in report, section
  assert os.path.exists(report_dir / "plots" / "lambda_sweep.png")
  assert os.path.exists(report_dir / "plots" / "noise_sweep.png")
  trials = pd.read_csv(report_dir / "tables.csv")
  assert set(trials["seed"]) == {0, 1}
  assert set(trials[trials["study"] == "noise"]["world"]) == {"noise=0.5", "noise=2"}
  # The study can be watched: its status file, and one HParams session per distinct run.
  status = subprocess.run([sys.executable, "-m", "experiments.paper", "--status",
                           f"--report_dir={report_dir}"], capture_output=True, text=True,
                          timeout=300, check=True).stdout
  assert status.startswith("study: finished")
  runs_total = progress.read_status(str(report_dir / "work"))["runs_total"]
  assert f"{runs_total}/{runs_total} runs done" in status
  sessions = list((report_dir / "work" / "models").rglob(
      f"tensorboard/events.out.tfevents.*{progress.HPARAMS_SUFFIX}"))
  assert len(sessions) == runs_total
  assert list((report_dir / "work").glob(f"events.out.tfevents.*{progress.HPARAMS_SUFFIX}"))
  assert (report_dir / "report.html").exists()
  # Rerunning reuses every finished stage run instead of training again.
  finished = {str(p): p.stat().st_mtime_ns for p in (report_dir / "work").rglob("metrics.json")}
  _run(flags + ["--studies=noise"])
  assert finished and finished == {
      str(p): p.stat().st_mtime_ns for p in (report_dir / "work").rglob("metrics.json")}


TIMING = ("train_seconds", "seconds", "examples_per_second")


@pytest.mark.slow
def test_two_workers_give_the_numbers_of_one(tmp_path):
  tables = []
  for workers in (1, 2):
    report_dir = tmp_path / f"workers{workers}"
    _run(["--seeds=1", "--world_seeds=2", "--studies=cvr", f"--workers={workers}",
          "--max_worker_gb=0", f"--report_dir={report_dir}"])
    tables.append(pd.read_csv(report_dir / "tables.csv"))
  one, two = (t.drop(columns=[c for c in t.columns if any(x in c for x in TIMING)])
              for t in tables)
  assert set(one["world_seed"]) == {0, 1}
  pd.testing.assert_frame_equal(one, two)
  # The linear reference ran beside each baseline, and the report sets the baseline beside it,
  # its ceiling and its learning curve.
  assert len(one[one["variant"] == studies.LINEAR]) == 2
  cvr_baselines = one[(one["variant"] == "baseline") & (one["stage"] == "fine_cvr")]
  assert len(cvr_baselines) == 2 and cvr_baselines["reference_auc"].notna().all()
  report = (tmp_path / "workers1" / "report.md").read_text()
  assert "the baselines beside their ceiling and the linear reference" in report
  for plot in ("learning_steps.png", "learning_days.png"):
    assert os.path.exists(tmp_path / "workers1" / "plots" / plot)


@pytest.mark.slow
def test_regime_study_maps_the_gains_on_worlds_it_generates(tmp_path):
  report_dir = tmp_path / "regime"
  _run(["--seeds=1", "--world_seeds=2", "--studies=regime", "--workers=2", "--regime_days=1",
        "--regime_conversion_biases=-4.5,-8.8", "--regime_strengths=1",
        f"--report_dir={report_dir}"])
  report = (report_dir / "report.md").read_text()
  assert "Regime map" in report
  assert os.path.exists(report_dir / "plots" / "regime_pfd.png")
  trials = pd.read_csv(report_dir / "tables.csv")
  assert set(trials["conversion_bias"]) == {-4.5, -8.8}
  assert len(trials) == 2 * 3 * 2  # worlds x variants x (world seed, seed) pairs
  assert os.path.isdir(report_dir / "work" / "worlds" /
                       "conversion_bias=-8.8,purchase_intent_sd=1@seed1")


def test_table_b_can_train_on_a_world_of_its_own_evaluated_on_its_last_day():
  config = _paper(cvr_world="n_users=800,n_days=6", ctcvr=False, linear_reference=False)
  trials = _trials(config, "cvr", DAYS, [0])
  assert {t.world for t in trials} == {"n_users=800,n_days=6"}
  assert {t.train_days for t in trials} == {(1, 2, 3, 4, 5)}
  assert {t.stage for t in trials} == {"fine_cvr"}  # no fine CTR run without --ctcvr
  base = config_lib.TrainConfig(world_dir="W", model_dir="M", eval_day=4)
  assert paper.stage_job(trials[0], base, "WORK").config.eval_day == 6
  with pytest.raises(command.UserError, match="--cvr_world"):
    _paper(cvr_world="colour=blue")

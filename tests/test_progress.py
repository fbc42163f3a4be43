"""experiments.progress: the study's log line, its status file and time left, and the
TensorBoard HParams event files (read back with TensorBoard's own event reader)."""

import glob
import json
import os

from experiments import progress


class Clock:
  def __init__(self):
    self.now = 1_000_000.0

  def __call__(self):
    return self.now


def _runs(tmp_path, n=4):
  runs = []
  for i in range(n):
    out = tmp_path / "models" / f"run{i}"
    out.mkdir(parents=True)
    runs.append(progress.RunInfo(f"coarse pfd seed {i}",
                                 {"stage": "coarse", "variant": "pfd", "seed": i,
                                  "days": "1-7", "knob/distill_lambda": 0.5},
                                 str(out)))
  return runs


def _finish(run, when):
  path = os.path.join(run.out_dir, "metrics.json")
  with open(path, "w") as f:
    json.dump({"auc": 0.7}, f)
  os.utime(path, (when, when))


def test_time_left_is_the_pace_of_trained_runs_and_reused_runs_cost_nothing(tmp_path):
  clock = Clock()
  runs = _runs(tmp_path)
  _finish(runs[0], clock.now - 3600)  # made by an earlier study: reused
  watch = progress.StudyProgress(runs, str(tmp_path / "work"), "python -m experiments.paper",
                                 clock=clock)
  watch.done(0, {"auc": 0.7, "eauc": 0.69})
  assert watch.reused == [0] and watch.seconds_left() is None  # nothing measured yet
  clock.now += 120
  _finish(runs[1], clock.now)
  watch.done(1, {"auc": 0.71, "eauc": 0.70})
  # One run trained in 120 s; two runs left.
  assert watch.seconds_left() == 240
  status = progress.read_status(str(tmp_path / "work"))
  assert status["runs_done"] == 2 and status["runs_reused"] == 1 and status["state"] == "running"
  assert status["seconds_left"] == 240 and status["last"]["auc"] == 0.71
  text = progress.format_status(status)
  assert "2/4 runs done (1 reused)" in text and "~4m00s" in text
  watch.finish()
  assert "study: finished" in progress.format_status(progress.read_status(str(tmp_path /
                                                                              "work")))


def test_a_running_status_whose_process_is_gone_says_so(tmp_path):
  watch = progress.StudyProgress(_runs(tmp_path, 1), str(tmp_path / "work"))
  status = progress.read_status(str(tmp_path / "work"))
  status["pid"] = 2 ** 22 + 12345  # no such process
  assert "stopped (process" in progress.format_status(status)
  del watch


def _events(logdir):
  from tensorboard.backend.event_processing import event_file_loader
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    events += list(event_file_loader.EventFileLoader(path).Load())
  return events


def _hparams_data(events):
  from tensorboard.plugins.hparams import plugin_data_pb2
  out = []
  for event in events:
    for value in event.summary.value:
      if value.metadata.plugin_data.plugin_name == "hparams":
        out.append(plugin_data_pb2.HParamsPluginData.FromString(
            value.metadata.plugin_data.content))
  return out


def test_hparams_experiment_and_one_session_per_run_are_in_the_event_files(tmp_path):
  runs = _runs(tmp_path, 2)
  work = tmp_path / "work"
  watch = progress.StudyProgress(runs, str(work))
  for i in range(2):
    watch.done(i, {"auc": 0.7 + i / 100, "eauc": 0.6, "train_seconds": 12.5, "note": "x"})
  experiment = [d.experiment for d in _hparams_data(_events(str(work))) if d.HasField("experiment")]
  assert len(experiment) == 1
  names = {h.name for h in experiment[0].hparam_infos}
  assert {"stage", "variant", "seed", "days", "knob/distill_lambda"} <= names
  assert "final/auc" in {m.name.tag for m in experiment[0].metric_infos}
  for i, run in enumerate(runs):
    events = _events(os.path.join(run.out_dir, "tensorboard"))
    sessions = [d.session_start_info for d in _hparams_data(events)
                if d.HasField("session_start_info")]
    assert len(sessions) == 1
    assert sessions[0].hparams["seed"].number_value == i
    assert sessions[0].hparams["variant"].string_value == "pfd"
    scalars = {v.tag: v for e in events for v in e.summary.value if v.tag.startswith("final/")}
    assert set(scalars) == {"final/auc", "final/eauc", "final/train_seconds"}


def test_a_second_study_replaces_its_sessions_instead_of_adding_to_them(tmp_path):
  runs = _runs(tmp_path, 1)
  for _ in range(2):
    watch = progress.StudyProgress(runs, str(tmp_path / "work"))
    watch.done(0, {"auc": 0.7})
  logdir = os.path.join(runs[0].out_dir, "tensorboard")
  sessions = [d for d in _hparams_data(_events(logdir)) if d.HasField("session_start_info")]
  assert len(sessions) == 1


def test_durations_read_as_a_person_would_say_them():
  assert progress.duration(42) == "42s"
  assert progress.duration(845) == "14m05s"
  assert progress.duration(3720) == "1h02m"
  assert progress.duration(None) == "?"

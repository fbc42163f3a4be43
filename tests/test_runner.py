"""experiments.runner: stage runs in child processes, configured exactly like in-process ones."""

import pytest

from experiments import runner
from stages import common


def test_command_line_carries_every_setting_and_drops_other_stages_settings():
  config = common.StageConfig(world_dir="W", model_dir="M", train_days=[1, 2], seed=3,
                              variant="pfd_md", unshared_features=(), share_embeddings=False,
                              reuse=True, extra={"distill_unlabelled": True, "scheme": "x"})
  argv = runner.command_line("coarse", config)
  assert argv[1:3] == ["-m", "stages.coarse"]
  for flag in ("--world_dir=W", "--model_dir=M", "--train_days=1,2", "--seed=3",
               "--variant=pfd_md", "--unshared_features=", "--noshare_embeddings", "--reuse",
               "--distill_unlabelled"):
    assert flag in argv, flag
  assert not any(a.startswith(("--scheme", "--mode=", "--eval_day", "--callbacks")) for a in argv)
  assert "--distill_unlabelled" not in runner.command_line("retrieval", config)
  assert "--task=cvr" in runner.command_line("fine_cvr", config)


@pytest.mark.slow
def test_a_stage_run_in_a_child_process_matches_the_same_run_in_process(tiny_world_dir, tmp_path):
  settings = dict(hidden_units=(16,), embedding_dim=4, batch_size=512, max_steps=10)
  child = runner.run_stage("fine_ctr", common.StageConfig(
      world_dir=tiny_world_dir, model_dir=str(tmp_path / "child"), **settings))
  from stages import fine
  here = fine.train(common.StageConfig(world_dir=tiny_world_dir,
                                       model_dir=str(tmp_path / "here"),
                                       extra={"task": "ctr"}, **settings))
  for key in ("auc", "gauc", "logloss", "config_key", "n_train"):
    assert child[key] == here[key], key


@pytest.mark.slow
def test_a_finished_run_is_reused_without_a_process_and_a_changed_one_is_not(
    tiny_world_dir, tmp_path, monkeypatch):
  config = common.StageConfig(world_dir=tiny_world_dir, model_dir=str(tmp_path), reuse=True,
                              hidden_units=(8,), embedding_dim=4, batch_size=512, max_steps=3)
  first = runner.run_stage("fine_ctr", config)
  spawned = []
  real_run = runner.subprocess.run
  monkeypatch.setattr(runner.subprocess, "run",
                      lambda argv, **kw: spawned.append(argv) or real_run(argv, **kw))
  assert runner.run_stage("fine_ctr", config) == first
  assert spawned == []
  # Another setting is another command: the child decides (and here retrains).
  changed = runner.run_stage("fine_ctr", common.StageConfig(**{**config.__dict__, "max_steps": 4}))
  assert len(spawned) == 1 and changed["config_key"] != first["config_key"]
  # Back to the first command: its receipt was replaced by the other run's, so it runs again.
  assert runner.run_stage("fine_ctr", config)["config_key"] == first["config_key"]
  assert len(spawned) == 2

"""experiments.runner: stage runs in child processes, configured exactly like in-process ones."""

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

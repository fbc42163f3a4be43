"""Bad input that needs trained exports: identity, forged signatures, teachers, the audit.

Each row copies trained tiny models (the `tiny_models_root` fixture: ROOT/funnel to
{case}/models, ROOT/late to {case}/late) beside a copy of the tiny world, damages or renames
something, and runs one command in-process through the harness of tests/bad_input.py: the exit
status and message must match, no traceback, and the case directory must be exactly as it was
(a refused replay leaves no run dir, a refused student no stage dir, a refused teacher keeps
the previous run's checkpoints). Slow: training the models takes about a minute.
"""

import os
from typing import List

import pytest

from data import generate
from data.plumbing import files
from data.world import config as world_config
from models import export
from stages import layout
from tests import bad_input as bad
from tests.bad_input import Case

pytestmark = pytest.mark.slow

COARSE, REPLAY, AUDIT = "stages.coarse", "experiments.replay", "experiments.audit"
REPLAY_ARGS = ["--world_dir={world}", "--model_dir={models}", "--run_dir={run}"]
AUDIT_ARGS = ["--model_dir={models}", "--world_dir={world}"]
STUDENT = ["--world_dir={world}", "--model_dir={case}/student", "--variant=pfd_md"]


# ----------------------------------------------------------------------------- mutations


def another_world(case_dir: str) -> None:
  """{case}/world becomes the tiny world of seed 1 (the models were trained on seed 0)."""
  world_dir = os.path.join(case_dir, "world")
  files.remove_tree(world_dir)
  generate.generate(world_dir, world_config.preset("tiny", seed=1))


def without_world_json(case_dir: str) -> None:
  os.remove(os.path.join(case_dir, "models", "world.json"))


def rename(stage: str, old: str, new: str) -> bad.Mutation:
  """MODEL_DIR/<stage>/<old> moved to <new> (a careless `mv`)."""
  def mutate(case_dir: str) -> None:
    models = os.path.join(case_dir, "models")
    files.remove_tree(layout.stage_dir(models, stage, new))
    os.rename(layout.stage_dir(models, stage, old), layout.stage_dir(models, stage, new))
  return mutate


def drop_meta_input(stage: str, variant: str, name: str) -> bad.Mutation:
  """The export's meta no longer lists `name`, which its signatures still take."""
  def mutate(case_dir: str) -> None:
    path = os.path.join(layout.export_path(os.path.join(case_dir, "models"), stage, variant),
                        export.META_FILE)
    meta = files.read_json(path)
    del meta["inputs"][name]
    files.write_json(path, meta, indent=1)
  return mutate


def remove_meta(stage: str, variant: str) -> bad.Mutation:
  def mutate(case_dir: str) -> None:
    os.remove(os.path.join(layout.export_path(os.path.join(case_dir, "models"), stage,
                                              variant), export.META_FILE))
  return mutate


def forged_cvr_export(keep_meta: bool) -> bad.Mutation:
  """fine/cvr/pfd replaced by a SavedModel whose signature reads dwell_seconds (a post-click
  signal, privileged at serving), written around export_serving's check, its meta listing it
  (or no meta at all)."""
  def mutate(case_dir: str) -> None:
    import tensorflow as tf

    from data.world import io
    from data.world import schema as schema_lib
    path = layout.export_path(os.path.join(case_dir, "models"), "fine/cvr", "pfd")
    meta = files.read_json(os.path.join(path, export.META_FILE))
    manifest = files.read_json(os.path.join(case_dir, "world", io.MANIFEST))
    schema = schema_lib.Schema.from_json(manifest["schema"])
    names = list(meta["inputs"]) + ["dwell_seconds"]
    specs = export.signature_specs([schema[n] for n in names])

    class Forged(tf.Module):
      @tf.function(input_signature=[specs])
      def serve(self, inputs):
        logits = tf.cast(inputs["dwell_seconds"], tf.float32) / 100.0
        return {"logits": logits, "probabilities": tf.sigmoid(logits)}

    module = Forged()
    meta["inputs"]["dwell_seconds"] = "float32"
    export.save_module(module, path, {"serving_default": module.serve.get_concrete_function()},
                       meta)
    if not keep_meta:
      os.remove(os.path.join(path, export.META_FILE))
  return mutate


def both(*mutations: bad.Mutation) -> bad.Mutation:
  def mutate(case_dir: str) -> None:
    for mutation in mutations:
      mutation(case_dir)
  return mutate


# ----------------------------------------------------------------------------- the table

CASES: List[Case] = [
    # --teacher_model_dir: the teacher's own record, not its model dir's world.json
    Case("coarse: another world's teacher copied without world.json", COARSE,
         STUDENT + ["--teacher_model_dir={models}"], 2,
         "--teacher_model_dir={case}/models: the export at", both(another_world,
                                                                  without_world_json),
         models=True, finding="22.4"),
    Case("coarse: a teacher trained on days 2-4 for eval day 4", COARSE,
         STUDENT + ["--teacher_model_dir={late}"], 2,
         "trained on days [2, 3, 4], which do not end before this run's --eval_day=4",
         models=True, finding="22.5"),
    Case("coarse: a damaged teacher beside a finished student", COARSE,
         ["--world_dir={world}", "--model_dir={models}", "--variant=pfd_md"], 2,
         "not a readable SavedModel", bad.garbage_export("fine/ctr", "baseline"), models=True,
         finding="22.28"),
    # replay: each export is what its flag asks for, and serves only what it may
    Case("replay: fine/cvr/pfd renamed baseline, --cvr_variant=baseline", REPLAY,
         REPLAY_ARGS + ["--cvr_variant=baseline"], 2,
         "--cvr_variant=baseline: the export at", rename("fine/cvr", "pfd", "baseline"),
         models=True, finding="22.7"),
    Case("replay: coarse/pfd_md renamed baseline, --coarse_variant=baseline", REPLAY,
         REPLAY_ARGS + ["--coarse_variant=baseline"], 2, "records variant 'pfd_md'",
         rename("coarse", "pfd_md", "baseline"), models=True, finding="22.7"),
    Case("replay: a signature input its meta does not list", REPLAY, REPLAY_ARGS, 2,
         "takes 'item_price', which its meta's 'inputs' does not list",
         drop_meta_input("fine/ctr", "baseline", "item_price"), models=True, finding="22.12"),
    Case("replay: a forged export that reads dwell_seconds", REPLAY, REPLAY_ARGS, 2,
         "reads 'dwell_seconds' (privileged_post_click", forged_cvr_export(keep_meta=True),
         models=True, finding="22.23"),
    Case("replay: NaN in the oracle's truth/items, hashes redone", REPLAY, REPLAY_ARGS, 2,
         "column 'item_quality'",
         bad.set_column("truth/items.parquet", "item_quality", bad.nan_first), models=True,
         finding="22.24"),
    Case("replay: models of another world", REPLAY, REPLAY_ARGS, 2,
         "was trained on another world", another_world, models=True, finding="22.4"),
    Case("replay: an export without pfd_serving.json", REPLAY, REPLAY_ARGS, 2,
         "no pfd_serving.json", remove_meta("fine/ctr", "baseline"), models=True,
         finding="22.6"),
    # audit: never "ok" for what it cannot check
    Case("audit: a leaky export without pfd_serving.json", AUDIT, AUDIT_ARGS, 1,
         "LEAK: signature 'serving_default' reads 'dwell_seconds'",
         forged_cvr_export(keep_meta=False), models=True, finding="22.6"),
    Case("audit: an export without pfd_serving.json", AUDIT, AUDIT_ARGS, 1,
         "IDENTITY: no pfd_serving.json", remove_meta("retrieval", "baseline"), models=True,
         finding="22.6"),
    Case("audit: fine/cvr/pfd renamed baseline", AUDIT, AUDIT_ARGS, 1,
         "records variant 'pfd', not 'baseline'", rename("fine/cvr", "pfd", "baseline"),
         models=True, finding="22.7"),
    Case("audit: --world_dir of another world", AUDIT, AUDIT_ARGS, 1,
         "trained on another world", another_world, models=True, finding="22.4"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_exports_are_refused_in_one_line_and_change_nothing(case, tiny_world_dir,
                                                                tiny_models_root, tmp_path):
  bad.check_case(case, tiny_world_dir, str(tmp_path / "case"), tiny_models_root)


def test_the_trained_models_pass_every_check_the_rows_break(tiny_world_dir, tiny_models_root,
                                                             tmp_path):
  """The rows fail for what they damage: untouched, the replay and the audit accept them,
  and a student taught from --teacher_model_dir records its teacher's identity."""
  models = os.path.join(tiny_models_root, "funnel")
  code, out, err = bad.run_in_process(REPLAY, [
      f"--world_dir={tiny_world_dir}", f"--model_dir={models}", f"--run_dir={tmp_path}/run",
      "--max_requests=20", "--funnel=retrieval:50,coarse:20,fine:5"])
  assert code == 0, out + err
  code, out, err = bad.run_in_process(AUDIT, [f"--model_dir={models}",
                                              f"--world_dir={tiny_world_dir}"])
  assert code == 0 and out.count(": ok") == 4, out + err
  code, out, err = bad.run_in_process(COARSE, [
      f"--world_dir={tiny_world_dir}", f"--model_dir={tmp_path}/student", "--variant=pfd_md",
      f"--teacher_model_dir={models}", "--hidden_units=8", "--embedding_dim=4",
      "--max_steps=2", "--validation_fraction=0"])
  assert code == 0, out + err
  meta = files.read_json(os.path.join(layout.export_path(f"{tmp_path}/student", "coarse",
                                                         "pfd_md"), export.META_FILE))
  teacher = meta["extra"]["teacher"]
  recorded = files.read_json(os.path.join(layout.export_path(models, "fine/ctr", "baseline"),
                                          export.META_FILE))["extra"]
  assert teacher["export"] == "fine/ctr/baseline"
  assert teacher["world_hash"] == recorded["world_hash"]
  assert teacher["config_key"] == recorded["config_key"]
  assert teacher["train_days"] == [1, 2, 3]

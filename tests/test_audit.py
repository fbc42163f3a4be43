"""The leak audit: a clean export passes, one that reads a privileged feature is named."""

import os
import subprocess
import sys

import data
from data.world import schema as schema_lib
from experiments import audit
import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from models import distillation
from models import export
from models import inputs as inputs_lib
from models import rankers


def _export_fine_cvr(world, path, leak: bool):
  """An (untrained) fine CVR ranker; with `leak`, one that also reads the post-click signals,
  written past the export guard (the way a hand-rolled export could)."""
  features = distillation.student_features(world.schema, "fine_cvr")
  if leak:
    features = features + world.schema.privileged_features("fine_cvr")
  student = rankers.DNNRanker(features, inputs_lib.EmbeddingBank(4), widths=(8,), name="s")
  module = export._ServingModule(student)
  variant = os.path.basename(os.path.dirname(path))  # MODEL_DIR/fine/cvr/<variant>/saved_model
  identity = {"variant": variant, "world_hash": world.world_hash, "train_days": [1, 2, 3]}
  meta = {"stage": "fine_cvr", "architecture": "dnn",
          "inputs": {f.name: f.dtype for f in features}, "extra": identity}
  export.save_module(module, path, module.signatures(), meta)


def test_audit_passes_a_clean_export_and_names_the_leaked_feature(tiny_world_dir, tmp_path):
  world = data.load(tiny_world_dir)
  model_dir = tmp_path / "models"
  _export_fine_cvr(world, str(model_dir / "fine" / "cvr" / "clean" / "saved_model"), leak=False)
  _export_fine_cvr(world, str(model_dir / "fine" / "cvr" / "leaky" / "saved_model"), leak=True)
  findings = audit.audit(audit.AuditConfig(model_dir=str(model_dir), world_dir=tiny_world_dir,
                                           audit_rows=64))
  verdicts = {os.path.basename(os.path.dirname(f.model)): f for f in findings}
  assert verdicts["clean"].ok
  assert not verdicts["leaky"].ok
  assert any("dwell_seconds" in v and schema_lib.PRIVILEGED_POST_CLICK in v
             for v in verdicts["leaky"].violations)
  # The second, independent check: permuting privileged columns moves only the leaky model.
  rows = audit.eval_rows(world, 256, seed=0)
  for name, moves in (("clean", False), ("leaky", True)):
    moved = audit.check_invariance(verdicts[name].model, world.schema, "fine_cvr", rows, 0)
    assert bool(moved) == moves, (name, moved)


def test_audit_command_exits_nonzero_on_a_leak(tiny_world_dir, tmp_path):
  world = data.load(tiny_world_dir)
  _export_fine_cvr(world, str(tmp_path / "fine" / "cvr" / "leaky" / "saved_model"), leak=True)
  result = subprocess.run([sys.executable, "-m", "experiments.audit",
                           f"--model_dir={tmp_path}", f"--world_dir={tiny_world_dir}"],
                          capture_output=True, text=True)
  assert result.returncode == 1
  assert "LEAK" in result.stdout and "dwell_seconds" in result.stdout

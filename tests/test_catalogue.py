"""The stage catalogue and the teacher-kind registry: one declaration each, and a new teacher
kind is one registry entry that reaches training, the study's trials, its tables and plots."""

import dataclasses

import matplotlib
import numpy as np
import pandas as pd
import pytest

from data.plumbing import files
from data.world import schema as schema_lib
from experiments import jobs
from experiments import paper_config
from experiments import paper_learning
from experiments import studies
from experiments.studies import tables
from models import distillation
from models import teacher_kinds
from stages import catalogue
from stages import config as config_lib
from stages import driver
from stages import teachers


def test_every_stage_resolves_and_its_config_names_itself():
  assert list(catalogue.STAGES) == list(schema_lib.STAGES)  # the schema's stages, same names
  for stage in catalogue.STAGES.values():
    config = stage.make_config(config_lib.TrainConfig(world_dir="W", model_dir="M"))
    assert config.stage == stage.name and config.output == stage.output
    assert issubclass(stage.task_class(), driver.StageTask)
    assert stage.task_class().__module__ == stage.module
    assert jobs.command_line(config)[2] == stage.module
    assert all(r in catalogue.STAGES for r in stage.reads)
  assert catalogue.FINE_CVR.command == "python -m stages.fine --task=cvr"


def test_stages_train_after_the_stages_they_read():
  order = [s.name for s in catalogue.training_order()]
  for stage in catalogue.STAGES.values():
    assert all(order.index(r) < order.index(stage.name) for r in stage.reads)


def test_a_misspelled_setting_is_an_error_not_a_silently_ignored_knob():
  base = config_lib.TrainConfig(world_dir="W", model_dir="M")
  with pytest.raises(ValueError, match="distil_lambda"):
    catalogue.FINE_CVR.make_config(base, distil_lambda=0.3)
  with pytest.raises(ValueError, match="contradicts"):
    catalogue.FINE_CVR.make_config(base, task="ctr")
  with pytest.raises(ValueError, match="does not have"):
    studies.Trial("lambda", "fine_cvr", "pfd", 0, (1,), settings=(("lamda", 0.3),))


def test_variants_follow_the_registry_and_the_stages_privileged_features():
  assert catalogue.RETRIEVAL.variants() == ("baseline",)
  assert set(catalogue.FINE_CTR.variants()) == {"baseline", "md", "self"}  # no privileged
  assert set(catalogue.COARSE.variants()) == set(teacher_kinds.names())
  assert teacher_kinds.get("pfd").teacher_architecture("two_tower") == "two_tower"
  assert teacher_kinds.get("pfd_md").teacher_architecture("two_tower") == "dnn"
  assert teacher_kinds.get("md").teacher_widths((8, 4)) == (16, 8)
  assert teacher_kinds.get("self").teacher_widths((8, 4)) == (8, 4)
  assert teachers.default_mode("coarse", "pfd_md") == "pretrained"
  assert teachers.default_mode("fine_cvr", "pfd_md") == "simultaneous"


def test_the_self_distillation_teacher_reads_exactly_the_students_features():
  schema = schema_lib.DECLARED
  for stage in ("coarse", "fine_cvr"):
    student = {f.name for f in distillation.student_features(schema, stage)}
    assert {f.name for f in distillation.teacher_features("self", schema, stage)} == student
    pfd = {f.name for f in distillation.teacher_features("pfd", schema, stage)}
    assert pfd - student == {f.name for f in schema.privileged_features(stage)}


PROBE = teacher_kinds.TeacherKind(
    "probe", "Probe", adds=(schema_lib.PRIVILEGED_POST_CLICK,), colour="tab:olive",
    description="a throwaway kind: post-click features only where they exist")


@pytest.fixture
def probe_kind():
  with teacher_kinds.registered(PROBE) as kind:
    yield kind


def test_a_new_kind_is_accepted_by_the_configs_and_declared_by_the_study(probe_kind):
  base = config_lib.TrainConfig(world_dir="W", model_dir="M")
  assert catalogue.FINE_CVR.make_config(base, variant="probe").variant == "probe"
  with pytest.raises(config_lib.StageError, match="probe"):
    catalogue.FINE_CTR.make_config(base, variant="probe")  # fine CTR has no post-click
  paper = paper_config.PaperConfig(report_dir="R", variants=("pfd", "probe"),
                                   linear_reference=False)
  trials = studies.get("cvr").trials(studies.Plan(paper, [1, 2, 3, 4], [0, 1]))
  assert {t.variant for t in trials if t.stage == "fine_cvr"} == {"baseline", "pfd", "probe"}
  assert paper_learning.colours()["probe"] == "tab:olive"


@pytest.mark.slow
def test_a_new_kind_trains_with_its_teachers_features(probe_kind, tiny_world_dir, tmp_path):
  base = config_lib.TrainConfig(world_dir=tiny_world_dir, model_dir=str(tmp_path), max_steps=5,
                                hidden_units=(8,), embedding_dim=4)
  config = catalogue.FINE_CVR.make_config(base, variant="probe")
  metrics = driver.train(catalogue.FINE_CVR.task_class(), config)
  assert metrics["variant"] == "probe" and 0.0 <= metrics["teacher_auc"] <= 1.0


def test_a_new_kind_reaches_table_b_and_its_plot(probe_kind, tmp_path, monkeypatch):
  rows = [dict(study="cvr", stage="fine_cvr", variant=variant, world_seed=0, seed=seed,
               days="1-3", auc=0.7 + gain + 0.01 * seed, eauc=0.7, teacher_auc=0.8)
          for seed in range(3) for variant, gain in (("baseline", 0.0), ("probe", 0.01))]
  frame = pd.DataFrame(rows)
  table = tables.auc_table(frame, "fine_cvr", "cvr", ["1-3"], {})
  probe = table[table["method"] == "Probe"].iloc[0]
  assert np.isclose(probe["Δ AUC"], 0.01)
  drawn = {}
  monkeypatch.setattr(files, "write_png", lambda path, figure: drawn.update(figure=figure))
  tables.auc_bars(frame, "fine_cvr", "cvr", ["1-3"], str(tmp_path / "b.png"))
  axis = drawn["figure"].axes[0]
  labels = [t.get_text() for t in axis.get_xticklabels()]
  assert "Probe" in labels
  colours = {matplotlib.colors.to_hex(line.get_color()) for line in axis.lines}
  assert matplotlib.colors.to_hex("tab:olive") in colours


def test_built_in_kinds_cannot_be_unregistered_nor_registered_twice():
  with pytest.raises(ValueError, match="built-in"):
    teacher_kinds.unregister("pfd")
  with pytest.raises(ValueError, match="already"):
    teacher_kinds.register(dataclasses.replace(teacher_kinds.get("pfd")))

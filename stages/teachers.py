"""The teacher policy: which teacher a run distils from, and where it comes from. Decided here.

A run's variant names the teacher's kind (`models.teacher_kinds`, which holds each kind's
rules); its mode says whether the teacher trains in the same steps as the student
(`simultaneous`) or is trained first and frozen (`pretrained`). A pre-trained teacher comes
from one of two places:
  - another stage's export, where the kind says so (`TeacherKind.exported_from`): the coarse
    pfd_md teacher is the fine CTR model, MODEL_DIR/fine/ctr/<teacher_variant> (the paper's
    unified distillation; MODEL_DIR is --teacher_model_dir when set, e.g. a fine ranker
    trained on longer history), and its identity goes into the student's reuse key
    (`upstream`);
  - trained alone here first, kept under OUT_DIR/teacher/ (the paper's "independent teacher,
    then student"), with the kind's architecture rule (the coarse pfd teacher is then an
    inner-product model like its student).
By default only a kind's exported teacher is pre-trained; every other teacher is simultaneous.
A simultaneous teacher warms up before λ turns on: --swap_step=-1 (the default) puts k at
`config.AUTO_SWAP_FRACTION` of the first epoch; a pre-trained teacher needs no warm-up (k=0).
"""

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

from absl import logging
import tensorflow as tf

from data.plumbing import files
from models import distillation
from models import export
from models import pipeline
from models import teacher_kinds
from stages import catalogue
from stages import config as config_lib
from stages import layout
from stages import training

NONE, SIMULTANEOUS, PRETRAIN, EXPORT = "none", "simultaneous", "pretrain", "export"


def default_mode(stage: str, variant: str) -> str:
  """pretrained where the kind's teacher is another stage's export (coarse pfd_md: the fine
  CTR model), else simultaneous."""
  if teacher_kinds.get(variant).export_stage(stage):
    return distillation.PRETRAINED
  return distillation.SIMULTANEOUS


@dataclasses.dataclass(frozen=True)
class TeacherPlan:
  """A run's teacher: its kind, its mode and where it comes from (`source`)."""
  kind: str
  mode: str
  source: str  # NONE, SIMULTANEOUS (built with the student), PRETRAIN or EXPORT
  export: Optional[Tuple[catalogue.Stage, str]] = None  # (stage, variant) of an EXPORT teacher


def plan(config: config_lib.TrainConfig) -> TeacherPlan:
  """The teacher of `config`'s run (its mode resolved with `default_mode` if unset)."""
  kind = teacher_kinds.get(config.variant)
  mode = config.mode or default_mode(config.stage, kind.name)
  if not kind.has_teacher:
    return TeacherPlan(kind.name, distillation.SIMULTANEOUS, NONE)
  if mode == distillation.SIMULTANEOUS:
    return TeacherPlan(kind.name, mode, SIMULTANEOUS)
  exported_from = kind.export_stage(config.stage)
  if exported_from:
    variant = getattr(config, "teacher_variant", teacher_kinds.BASELINE)
    return TeacherPlan(kind.name, mode, EXPORT, export=(catalogue.stage(exported_from), variant))
  return TeacherPlan(kind.name, mode, PRETRAIN)


def upstream(config: config_lib.TrainConfig) -> Dict[str, Optional[str]]:
  """{"fine/ctr/<variant>": its config_key} for a teacher loaded from an export, else {}."""
  teacher = plan(config)
  if teacher.export is None:
    return {}
  stage, variant = teacher.export
  return {f"{stage.output}/{variant}": layout.export_identity(teacher_dir(config), stage.output,
                                                              variant)}


def teacher_flag(config: config_lib.TrainConfig) -> str:
  """The flag that names where an EXPORT teacher is read from, for messages."""
  source = teacher_dir(config)
  if getattr(config, "teacher_model_dir", ""):
    return f"--teacher_model_dir={source}"
  return f"--model_dir={source}"


def check_teacher(world, config: config_lib.TrainConfig, load: bool = True) -> Dict[str, Any]:
  """The identity of `config`'s teacher, for the run's facts; an EXPORT teacher checked first.

  The export (the coarse pfd_md student's: the fine CTR '<teacher_variant>' model) must be that
  model of this world by its own recorded identity (a copied or renamed export is refused even
  without its model dir's world.json), and its training days must end before the student's
  eval day (else the student learns the eval day's labels through it). With `load`, the
  SavedModel is read too, so a damaged one is refused before the run writes anything. `config`
  is resolved (its eval day is set).
  """
  teacher = plan(config)
  facts: Dict[str, Any] = {"kind": teacher.kind, "mode": teacher.mode, "source": teacher.source}
  if teacher.export is None:
    return facts
  stage, variant = teacher.export
  source, flag = teacher_dir(config), teacher_flag(config)
  if os.path.exists(source) and not os.path.isdir(source):
    raise config_lib.StageError(f"{flag} is a file, not a model directory")
  pinned = os.path.join(source, "world.json")
  if os.path.exists(pinned):
    held = files.read_json(pinned).get("world_hash")
    if held != world.world_hash:
      raise config_lib.StageError(
          f"{flag} holds models of another world (world_hash {str(held)[:12]}... in {pinned}, "
          f"this world is {world.world_hash[:12]}...); the teacher must be trained on this "
          "world")
  path = layout.require_stage(
      source, stage.output, variant,
      f"{stage.command} --variant={variant} --world_dir={config.world_dir} --model_dir={source}")
  meta = layout.read_export_meta(path)
  layout.check_export_identity(path, meta, stage.name, variant, world.world_hash, flag)
  extra = meta["extra"]
  train_days = sorted(int(d) for d in extra["train_days"])
  if train_days and train_days[-1] >= config.evaluation_day:
    raise config_lib.StageError(
        f"{flag}: the teacher at {path} trained on days {train_days}, which do not end before "
        f"this run's --eval_day={config.eval_day}: it would teach the eval day's labels; use a "
        f"teacher trained before day {config.eval_day} or a later --eval_day")
  if load:
    export.load_serving(path)
  facts.update(export=f"{stage.output}/{variant}", path=os.path.abspath(path),
               config_key=extra.get("config_key"), world_hash=extra["world_hash"],
               train_days=train_days)
  return facts


def teacher_dir(config: config_lib.TrainConfig) -> str:
  """The model dir an EXPORT teacher is read from (--teacher_model_dir, else --model_dir)."""
  return getattr(config, "teacher_dir", config.model_dir)


def swap_step(config: config_lib.TrainConfig, teacher: TeacherPlan, n_train_rows: int) -> int:
  """k: --swap_step, or for auto (-1) a warm-up for a simultaneous teacher, 0 for a trained one."""
  if config.swap_step == config_lib.AUTO and teacher.source in (EXPORT, PRETRAIN):
    return 0
  return config.resolved_swap_step(n_train_rows)


def build_model(world, config: config_lib.TrainConfig, architecture: str, label: str,
                train_arrays, out_dir: str, distill_unlabelled: bool = True,
                validation=None):
  """The student of `architecture` and its teacher, per the plan (pre-training it if asked).

  A teacher pre-trained here stops on the `validation` rows like its student.
  """
  teacher = plan(config)
  spec = distillation.DistillationSpec(
      teacher_kind=teacher.kind, architecture=architecture, label=label, mode=teacher.mode,
      distill_weight=config.distill_lambda,
      swap_step=swap_step(config, teacher, len(train_arrays[label])),
      share_embeddings=config.share_embeddings, unshared=tuple(config.unshared_features),
      widths=tuple(config.hidden_units), embedding_dim=config.embedding_dim,
      distill_unlabelled=distill_unlabelled)
  pretrained = None
  if teacher.export is not None:
    check_teacher(world, config, load=False)  # the driver checked it before writing; again
    pretrained = load_exported_teacher(config, *teacher.export)
  elif teacher.source == PRETRAIN:
    pretrained = pretrain_teacher(world.schema, config, teacher, architecture, train_arrays,
                                  out_dir, label, validation)
  return distillation.build_distillation(world.schema, config.stage, spec,
                                         pretrained_teacher=pretrained)


def load_exported_teacher(config: config_lib.TrainConfig, stage: catalogue.Stage, variant: str):
  """The logits of another stage's serving export (frozen by the distillation model)."""
  source = teacher_dir(config)
  path = layout.require_stage(
      source, stage.output, variant,
      f"{stage.command} --variant={variant} --world_dir={config.world_dir} --model_dir={source}")
  return export.load_serving(path).logits


def pretrain_teacher(schema, config: config_lib.TrainConfig, teacher: TeacherPlan,
                     student_architecture: str, arrays: Dict[str, Any], out_dir: str,
                     label: str, validation=None):
  """Trains the teacher alone (the paper's "independent teacher, then student").

  The trained head is kept under `out_dir/teacher/checkpoints/final`; a rerun (e.g. resuming a
  killed student) restores it instead of training it again.
  """
  head = distillation.build_teacher(teacher.kind, schema, config.stage,
                                    student_architecture=student_architecture,
                                    student_widths=config.hidden_units,
                                    embedding_dim=config.embedding_dim)
  wrapper = distillation.DistillationModel(head, None, label=label)
  teacher_dir = os.path.join(out_dir, "teacher")
  final = os.path.join(teacher_dir, "checkpoints", "final", "ckpt")
  if os.path.exists(final + ".index"):
    wrapper.compile(optimizer=training.make_optimizer(config))
    wrapper(pipeline.take_rows(arrays, slice(0, 2)))
    tf.train.Checkpoint(model=wrapper).read(final).expect_partial()
    logging.info("restored the pre-trained %s teacher from %s", teacher.kind, final)
  else:
    logging.info("pre-training the %s teacher alone", teacher.kind)
    training.fit(wrapper, arrays, config, teacher_dir, validation=validation)
  return head

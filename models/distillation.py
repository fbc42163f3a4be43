"""Privileged Features Distillation: the one loss component every stage composes.

    L = (1 - λ) · L_s(y, f_s) + λ · L_d(stop_gradient(sigmoid(f_t)), f_s) + L_t(y, f_t)

All three terms are binary log-loss on logits; L_d's label is the teacher's probability (no
temperature). λ is 0 until the swapping step k, then fixed. The stop-gradient means L_d only
ever moves the student: a teacher that learns from its student co-adapts and degrades.
Rows whose label is -1 (unlabelled, e.g. retrieved-but-not-shown candidates) count only in L_d,
because only a teacher can label them.

`PrivilegedDistillation` is the task (a Keras layer owning the loss terms, the schedule and the
metrics, like `tfrs.tasks.Ranking`). `DistillationModel` is the `tfrs.models.Model` that runs a
student head and an optional teacher head on a batch dict and hands their logits to the task.
Modes: 'simultaneous' (the teacher trains in the same steps, by L_t only) and 'pretrained' (a
frozen teacher: a Keras head or any callable batch -> logits, e.g. a loaded SavedModel; no L_t).

The builders `build_student`, `build_teacher` and `build_distillation` (which takes a
`DistillationSpec`) read every feature list from the schema, so a student can never be built
over a feature its stage may not serve.
"""

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tensorflow_recommenders as tfrs

from data.world import schema as schema_lib
from models import distribute
from models import inputs as inputs_lib
from models import rankers
from models import teacher_kinds
from models import towers

SIMULTANEOUS, PRETRAINED = "simultaneous", "pretrained"
MODES = (SIMULTANEOUS, PRETRAINED)
# The built-in kinds' names; every kind, with its rules, is in `models.teacher_kinds`.
BASELINE, PFD, MD, PFD_MD, LUPI, SELF = (teacher_kinds.BASELINE, teacher_kinds.PFD,
                                         teacher_kinds.MD, teacher_kinds.PFD_MD,
                                         teacher_kinds.LUPI, teacher_kinds.SELF)
UNLABELLED = schema_lib.UNLABELLED  # the label of rows only a teacher can label


def _masked_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """The weighted mean over the whole (global) batch. In a step of several synchronous
  replicas each returns its rows' share, so the summed gradients are the global batch's."""
  return tf.math.divide_no_nan(tf.reduce_sum(values * weights),
                               distribute.replica_sum(tf.reduce_sum(weights)))


def _replica_estimate(term: tf.Tensor) -> tf.Tensor:
  """A replica's share of a global mean, scaled so that the replicas' average (what a Keras
  Mean metric aggregates) is that mean."""
  replicas = distribute.replica_count()
  return term if replicas == 1 else term * float(replicas)


def _log_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


class PrivilegedDistillation(tf.keras.layers.Layer):
  """The PFD objective, its λ schedule and its metrics.

  Args:
    distill_weight: λ in [0, 1], the weight of L_d once the schedule has swapped.
    swap_step: k >= 0; λ is 0 while the step counter is below k.
    with_teacher: False gives the baseline (L = L_s; no teacher metrics).
    train_teacher: add L_t (simultaneous mode); False for a frozen, pre-trained teacher.
    distill_unlabelled: include unlabelled rows (label -1) in L_d; they never enter L_s, L_t.
    auc_thresholds: thresholds of the streaming AUC metrics.
  Metrics: student_auc, student_logloss, and with a teacher teacher_auc, teacher_logloss,
  plus the running means loss_student, loss_distill, loss_teacher and distill_lambda.
  """

  def __init__(self, distill_weight: float = 0.5, swap_step: int = 0, with_teacher: bool = True,
               train_teacher: bool = True, distill_unlabelled: bool = True,
               auc_thresholds: int = 500, **kwargs: Any) -> None:
    kwargs.setdefault("name", "distillation")
    super().__init__(**kwargs)
    if not 0.0 <= float(distill_weight) <= 1.0:
      raise ValueError(f"distill_weight (lambda) must be in [0, 1], got {distill_weight}")
    if int(swap_step) < 0 or int(swap_step) != swap_step:
      raise ValueError(f"swap_step (k) must be a non-negative integer, got {swap_step}")
    self.distill_weight = float(distill_weight)
    self.swap_step = int(swap_step)
    self.with_teacher = with_teacher
    self.train_teacher = with_teacher and train_teacher
    self.distill_unlabelled = distill_unlabelled
    self.student_auc = tf.keras.metrics.AUC(num_thresholds=auc_thresholds, name="student_auc")
    self.student_logloss = tf.keras.metrics.Mean(name="student_logloss")
    self.loss_student = tf.keras.metrics.Mean(name="loss_student")
    if with_teacher:
      self.teacher_auc = tf.keras.metrics.AUC(num_thresholds=auc_thresholds, name="teacher_auc")
      self.teacher_logloss = tf.keras.metrics.Mean(name="teacher_logloss")
      self.loss_distill = tf.keras.metrics.Mean(name="loss_distill")
      self.loss_teacher = tf.keras.metrics.Mean(name="loss_teacher")
      self.distill_lambda = tf.keras.metrics.Mean(name="distill_lambda")

  def schedule(self, step: tf.Tensor) -> tf.Tensor:
    """λ at `step`: 0 before the swapping step, `distill_weight` from it on."""
    step = tf.cast(step, tf.int64)
    return tf.where(step >= self.swap_step, tf.constant(self.distill_weight, tf.float32), 0.0)

  def components(self, labels: tf.Tensor, student_logits: tf.Tensor,
                 teacher_logits: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    """The separate terms: 'student' (L_s), and with a teacher 'distill' (L_d), 'teacher' (L_t).

    L_t is returned even for a frozen teacher (for monitoring); `call` leaves it out then.
    """
    labels = tf.cast(labels, tf.float32)
    student_logits = tf.cast(student_logits, tf.float32)
    labelled = tf.cast(labels >= 0.0, tf.float32)
    targets = tf.maximum(labels, 0.0)
    terms = {"student": _masked_mean(_log_loss(targets, student_logits), labelled)}
    if teacher_logits is None:
      return terms
    teacher_logits = tf.cast(teacher_logits, tf.float32)
    soft = tf.stop_gradient(tf.sigmoid(teacher_logits))
    distilled = tf.ones_like(labelled) if self.distill_unlabelled else labelled
    terms["distill"] = _masked_mean(_log_loss(soft, student_logits), distilled)
    terms["teacher"] = _masked_mean(_log_loss(targets, teacher_logits), labelled)
    return terms

  def call(self, labels: tf.Tensor, student_logits: tf.Tensor,
           teacher_logits: Optional[tf.Tensor] = None, step: tf.Tensor = 0,
           compute_metrics: bool = True) -> tf.Tensor:
    """The total loss at `step`; also updates the metrics on the labelled rows."""
    if self.with_teacher and teacher_logits is None:
      raise ValueError("this distillation task has a teacher; pass teacher_logits")
    terms = self.components(labels, student_logits, teacher_logits if self.with_teacher else None)
    if not self.with_teacher:
      total = terms["student"]
    else:
      lam = self.schedule(step)
      total = (1.0 - lam) * terms["student"] + lam * terms["distill"]
      if self.train_teacher:
        total += terms["teacher"]
    if compute_metrics:
      self._update_metrics(labels, student_logits, teacher_logits, terms, step)
    return total

  def _update_metrics(self, labels: tf.Tensor, student_logits: tf.Tensor,
                      teacher_logits: Optional[tf.Tensor], terms: Dict[str, tf.Tensor],
                      step: tf.Tensor) -> None:
    labels = tf.cast(labels, tf.float32)
    labelled = tf.cast(labels >= 0.0, tf.float32)
    targets = tf.maximum(labels, 0.0)
    self.student_auc.update_state(targets, tf.sigmoid(student_logits), sample_weight=labelled)
    self.student_logloss.update_state(_log_loss(targets, student_logits), sample_weight=labelled)
    self.loss_student.update_state(_replica_estimate(terms["student"]))
    if not self.with_teacher:
      return
    self.teacher_auc.update_state(targets, tf.sigmoid(teacher_logits), sample_weight=labelled)
    self.teacher_logloss.update_state(_log_loss(targets, teacher_logits), sample_weight=labelled)
    self.loss_distill.update_state(_replica_estimate(terms["distill"]))
    self.loss_teacher.update_state(_replica_estimate(terms["teacher"]))
    self.distill_lambda.update_state(self.schedule(step))


# A head `build_head` makes.
Head = Union[rankers.DNNRanker, rankers.TwoTowerScorer]
# A teacher: a Keras head, or (pretrained) a callable batch dict -> logits.
Teacher = Union[tf.keras.layers.Layer, Callable[[Dict[str, tf.Tensor]], tf.Tensor]]


class FrozenTeacher(tf.keras.layers.Layer):
  """A pre-trained teacher that never trains: a Keras head (frozen, run in inference mode) or a
  callable batch dict -> logits (e.g. `export.load_serving(path).logits`). Its output is
  wrapped in stop_gradient, and a callable's variables are not tracked by the student's model.
  """

  def __init__(self, teacher: Teacher, **kwargs: Any) -> None:
    kwargs.setdefault("name", "frozen_teacher")
    super().__init__(trainable=False, **kwargs)
    if isinstance(teacher, tf.keras.layers.Layer):
      teacher.trainable = False
      self.layer: Optional[tf.keras.layers.Layer] = teacher
      self._fn: Optional[Callable[[Any], Any]] = None
    elif callable(teacher):
      self.layer = None
      self._fn = lambda batch: teacher(batch)  # A lambda keeps Keras from tracking it.
    else:
      raise TypeError(f"a pretrained teacher must be a Keras layer or a callable, got {teacher!r}")
    # A callable's inputs: its own, or (a bound method, e.g. a serving model's `logits`) its
    # object's.
    self.input_names = list(getattr(teacher, "input_names", None)
                            or getattr(getattr(teacher, "__self__", None), "input_names", None)
                            or [])

  def call(self, batch: Dict[str, tf.Tensor], training: Optional[bool] = None) -> tf.Tensor:
    if self.input_names:
      inputs_lib.check_batch(batch, self.input_names, "pretrained teacher")
    if self.layer is not None:
      logits = self.layer(batch, training=False)
    else:
      assert self._fn is not None
      logits = self._fn(batch)
    return tf.stop_gradient(tf.reshape(tf.cast(logits, tf.float32), [-1]))


class DistillationModel(tfrs.models.Model):
  """A student head, an optional teacher head and the `PrivilegedDistillation` task.

  `model(batch)` returns the student's logits, so `predict` and export see only the student.
  `model.step` counts training steps (it drives the λ schedule) and is checkpointed.
  A simultaneous teacher and the student run on one lookup cache, so a table they share is
  gathered (and its sparse gradient formed) once per step.

  Args:
    student: a head (e.g. `rankers.DNNRanker`, `rankers.TwoTowerScorer`).
    teacher: None (baseline), a trainable head (simultaneous mode) or, in pretrained mode, a
      Keras head or callable batch -> logits that is frozen.
    label: the label column, 'click' or 'conversion' (-1 marks unlabelled rows).
    mode: 'simultaneous' or 'pretrained'.
    distill_weight, swap_step, distill_unlabelled: see `PrivilegedDistillation`.
    teacher_kind: recorded for reports ('baseline', 'pfd', 'md', 'pfd_md', 'lupi').
  """

  def __init__(self, student: tf.keras.layers.Layer, teacher: Optional[Teacher] = None, *,
               label: str = "click",
               mode: str = SIMULTANEOUS, distill_weight: float = 0.5, swap_step: int = 0,
               distill_unlabelled: bool = True, teacher_kind: Optional[str] = None,
               **kwargs: Any) -> None:
    super().__init__(**kwargs)
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    self.student = student
    self.label = label
    self.mode = mode
    self.teacher_kind = teacher_kind or (BASELINE if teacher is None else "custom")
    if teacher is not None and mode == PRETRAINED:
      teacher = FrozenTeacher(teacher)
    self.teacher: Optional[tf.keras.layers.Layer] = teacher  # a head, or a FrozenTeacher
    self.task = PrivilegedDistillation(
        distill_weight, swap_step, with_teacher=teacher is not None,
        train_teacher=mode == SIMULTANEOUS, distill_unlabelled=distill_unlabelled)
    # Counted once per step, however many replicas run it (a mirrored variable needs to know).
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def call(self, batch: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    return self.student(batch, training=training)

  def teacher_logits(self, batch: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    if self.teacher is None:
      raise ValueError("this model has no teacher (baseline)")
    return self.teacher(batch, training=training)

  def heads_logits(self, batch: Dict[str, tf.Tensor],
                   training: bool = False) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
    """(student logits, teacher logits or None) for one batch."""
    if self.label not in batch:
      raise inputs_lib.MissingFeatureError(f"batch is missing the label column {self.label!r}")
    if self.teacher is None:
      return self.student(batch, training=training), None
    if isinstance(self.teacher, FrozenTeacher):
      return self.student(batch, training=training), self.teacher(batch, training=training)
    cache: inputs_lib.Cache = {}  # Shared tables are looked up once for both heads.
    student = self.student(batch, training=training, cache=cache)
    return student, self.teacher(batch, training=training, cache=cache)

  def build_variables(self, batch: Dict[str, tf.Tensor]) -> None:
    """Creates every variable (student and teacher) from one batch, leaving the metrics alone
    (under a distribution strategy they may be updated only inside a training step). A frozen
    teacher has none to create: it is not called (a loaded SavedModel under a strategy runs
    only inside the replicas' step)."""
    if self.teacher is None or isinstance(self.teacher, FrozenTeacher):
      self.student(batch, training=False)
    else:
      self.heads_logits(batch, training=False)

  def compute_loss(self, batch: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    student, teacher = self.heads_logits(batch, training=training)
    return self.task(batch[self.label], student, teacher, step=self.step)

  def train_step(self, batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    logs: Dict[str, tf.Tensor] = super().train_step(batch)
    self.step.assign_add(1)
    return logs


# ----------------------------------------------------------------------------- builders


def student_features(schema: schema_lib.Schema, stage: str,
                     names: Optional[Sequence[str]] = None) -> List[schema_lib.Feature]:
  """The features a student at `stage` reads: `names` (checked) or all its serving features.

  Raises ValueError naming any requested feature the stage may not serve.
  """
  if names is None:
    return schema.features_for(stage, schema_lib.STUDENT)
  schema.check_serving(stage, list(names))
  return [schema[n] for n in names]


def teacher_features(kind: str, schema: schema_lib.Schema, stage: str,
                     student_names: Optional[Sequence[str]] = None) -> List[schema_lib.Feature]:
  """The features a teacher of `kind` reads at `stage` (`TeacherKind.teacher_features`)."""
  teacher = teacher_kinds.get(kind)
  if not teacher.has_teacher:
    raise ValueError(f"teacher kind must be one of {teacher_kinds.names()[1:]}, got {kind!r}")
  return teacher.teacher_features(schema, stage, student_features(schema, stage, student_names))


def build_head(architecture: str, features: Sequence[schema_lib.Feature],
               bank: inputs_lib.EmbeddingBank,
               widths: Sequence[int] = towers.DEFAULT_WIDTHS,
               private_bank: Optional[inputs_lib.EmbeddingBank] = None,
               sequence_pooling: str = "mean", scale: float = 5.0, name: Optional[str] = None,
               **head_kwargs: Any) -> Head:
  """A 'dnn' or 'two_tower' head over `features` (see `rankers`)."""
  if architecture == rankers.DNN:
    return rankers.DNNRanker(features, bank, widths, private_bank, sequence_pooling,
                             name=name, **head_kwargs)
  if architecture == rankers.TWO_TOWER:
    user, item = rankers.split_by_side(features)
    if not user or not item:
      raise ValueError(f"a two-tower head needs user-side and item-side features; got "
                       f"user={[f.name for f in user]}, item={[f.name for f in item]}")
    return rankers.TwoTowerScorer(user, item, bank, widths, scale, private_bank,
                                  name=name, **head_kwargs)
  raise ValueError(f"architecture must be one of {rankers.ARCHITECTURES}, got {architecture!r}")


def build_student(schema: schema_lib.Schema, stage: str, architecture: str = rankers.DNN,
                  bank: Optional[inputs_lib.EmbeddingBank] = None,
                  features: Optional[Sequence[str]] = None,
                  widths: Sequence[int] = towers.DEFAULT_WIDTHS, embedding_dim: int = 16,
                  name: str = "student", **head_kwargs: Any) -> Head:
  """The serving model of `stage`, over its serving features (or the named subset).

  Raises ValueError naming a requested feature that is privileged at `stage`.
  `head_kwargs`: sequence_pooling, scale, batch_norm, dropout, numeric_log1p.
  """
  feats = student_features(schema, stage, features)
  bank = bank if bank is not None else inputs_lib.EmbeddingBank(embedding_dim, name="embeddings")
  return build_head(architecture, feats, bank, widths, name=name, **head_kwargs)


def teacher_widths(kind: str, widths: Sequence[int]) -> Tuple[int, ...]:
  """The teacher's MLP widths for a student of `widths` (`TeacherKind.teacher_widths`)."""
  return teacher_kinds.get(kind).teacher_widths(widths)


def build_teacher(kind: str, schema: schema_lib.Schema, stage: str,
                  bank: Optional[inputs_lib.EmbeddingBank] = None,
                  private_bank: Optional[inputs_lib.EmbeddingBank] = None,
                  student_names: Optional[Sequence[str]] = None,
                  student_architecture: str = rankers.DNN,
                  widths: Optional[Sequence[int]] = None,
                  student_widths: Sequence[int] = towers.DEFAULT_WIDTHS,
                  embedding_dim: int = 16, name: str = "teacher",
                  **head_kwargs: Any) -> Head:
  """A teacher head of `kind` for `stage`, beside a student of `student_architecture` and
  `student_widths`: its features, architecture and widths follow the kind's rules
  (`models.teacher_kinds`; e.g. at coarse rank a pfd teacher beside the two-tower student is
  the paper's inner-product teacher with the cross features on the user side). `widths`
  overrides the kind's widths.
  """
  teacher = teacher_kinds.get(kind)
  feats = teacher_features(kind, schema, stage, student_names)
  architecture = teacher.teacher_architecture(student_architecture)
  widths = tuple(widths) if widths else teacher.teacher_widths(student_widths)
  bank = bank if bank is not None else inputs_lib.EmbeddingBank(
      embedding_dim, name="teacher_embeddings")
  return build_head(architecture, feats, bank, widths, private_bank, name=name, **head_kwargs)


@dataclasses.dataclass(frozen=True)
class DistillationSpec:
  """Everything `build_distillation` needs besides the schema, the stage and a frozen teacher.

  Fields:
    teacher_kind: a registered kind's name (`models.teacher_kinds`): 'baseline', 'pfd' ...
    architecture: the student's, 'dnn' or 'two_tower'.
    label: the label column, 'click' or 'conversion'.
    mode: 'simultaneous' builds and trains the teacher; 'pretrained' uses the
      `pretrained_teacher` given to `build_distillation` (a Keras head or callable), frozen.
    distill_weight, swap_step, distill_unlabelled: see `PrivilegedDistillation`.
    share_embeddings: teacher and student read one EmbeddingBank, except the features named
      in `unshared` (e.g. ('user_id',)), of which the teacher gets its own copy.
    widths, embedding_dim: the student's MLP widths and every embedding's width.
    teacher_widths: overrides the teacher's widths (default: the kind's width rule).
    student_names: the student's features (default: every serving feature of the stage).
    head_kwargs: sequence_pooling, scale, batch_norm, dropout, numeric_log1p (both heads; a
      two-tower head always mean-pools).
  """
  teacher_kind: str = PFD
  architecture: str = rankers.DNN
  label: str = "click"
  mode: str = SIMULTANEOUS
  distill_weight: float = 0.5
  swap_step: int = 0
  distill_unlabelled: bool = True
  share_embeddings: bool = True
  unshared: Tuple[str, ...] = ()
  widths: Tuple[int, ...] = tuple(towers.DEFAULT_WIDTHS)
  embedding_dim: int = 16
  teacher_widths: Optional[Tuple[int, ...]] = None
  student_names: Optional[Tuple[str, ...]] = None
  head_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    teacher_kinds.get(self.teacher_kind)  # a ValueError naming the registered kinds
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


def build_distillation(schema: schema_lib.Schema, stage: str, spec: DistillationSpec,
                       pretrained_teacher: Optional[Teacher] = None) -> DistillationModel:
  """One call from a stage's settings to a ready-to-compile `DistillationModel`.

  `pretrained_teacher` (a Keras head or callable batch -> logits) is required when
  `spec.mode` is 'pretrained' and the kind is not 'baseline'.
  """
  names = spec.student_names
  bank = inputs_lib.EmbeddingBank(spec.embedding_dim, name="embeddings")
  student = build_student(schema, stage, spec.architecture, bank=bank, features=names,
                          widths=spec.widths, **_for_arch(spec.architecture, spec.head_kwargs))
  teacher = None
  if spec.teacher_kind != BASELINE and spec.mode == PRETRAINED:
    if pretrained_teacher is None:
      raise ValueError("mode='pretrained' needs pretrained_teacher (a head or a callable)")
    teacher = pretrained_teacher
  elif spec.teacher_kind != BASELINE:
    kind = spec.teacher_kind
    t_arch = teacher_kinds.get(kind).teacher_architecture(spec.architecture)
    read = {f.name for f in teacher_features(kind, schema, stage, names)}
    t_bank, private = _teacher_banks(schema, bank, spec.share_embeddings,
                                     [n for n in spec.unshared if n in read],
                                     spec.embedding_dim)
    teacher = build_teacher(kind, schema, stage, bank=t_bank, private_bank=private,
                            student_names=names, student_architecture=spec.architecture,
                            widths=spec.teacher_widths, student_widths=spec.widths,
                            **_for_arch(t_arch, spec.head_kwargs))
  return DistillationModel(student, teacher, label=spec.label, mode=spec.mode,
                           distill_weight=spec.distill_weight, swap_step=spec.swap_step,
                           distill_unlabelled=spec.distill_unlabelled,
                           teacher_kind=spec.teacher_kind)


def _for_arch(architecture: str, head_kwargs: Mapping[str, Any]) -> Dict[str, Any]:
  if architecture == rankers.TWO_TOWER:
    return {k: v for k, v in head_kwargs.items() if k != "sequence_pooling"}
  return {k: v for k, v in head_kwargs.items() if k != "scale"}


def _teacher_banks(schema: schema_lib.Schema, shared_bank: inputs_lib.EmbeddingBank,
                   share_embeddings: bool, unshared: Sequence[str], embedding_dim: int
                   ) -> Tuple[inputs_lib.EmbeddingBank, Optional[inputs_lib.EmbeddingBank]]:
  """(bank, private bank) for a simultaneous teacher."""
  if not share_embeddings:
    return inputs_lib.EmbeddingBank(embedding_dim, name="teacher_embeddings"), None
  if not unshared:
    return shared_bank, None
  private = inputs_lib.EmbeddingBank(embedding_dim, name="teacher_private_embeddings")
  private.ensure([schema[n] for n in unshared])
  return shared_bank, private

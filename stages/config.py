"""The typed configuration of a stage run: one frozen dataclass per stage, flags from its fields.

`TrainConfig` holds what every stage trains with; `FineConfig`, `CoarseConfig` and
`RetrievalConfig` add their stage's own settings. A field is the one place its default and its
flag help are written: a command's `run()` calls `define_flags(FineConfig)` and
`from_flags(FineConfig)`, the runner writes a child's command line from the same fields, and
the reuse key (`layout.config_key`) digests the fields whose `metadata["key"]` is not False.

A config is checked when it is built (`__post_init__`), with messages naming the flag, so no
training code ever sees an invalid one. Values the world decides (the default eval day and
training days) and the default teacher mode are resolved later, into a new config
(`dataclasses.replace`); a config is never changed in place.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

from absl import flags

from data.plumbing import command
from data.plumbing.command import field as _field
from models import ann
from models import distillation
from models import distribute
from models import optimizers
from models import teacher_kinds
from models import validation
from stages import catalogue

StageError = command.UserError  # The stages' user-facing error: one line, exit status 2.
Config = TypeVar("Config", bound="TrainConfig")

MODES = distillation.MODES
FINE_TASKS = ("ctr", "cvr")
AUTO = -1  # swap_step: derived from the epoch's length (`resolved_swap_step`)
AUTO_SWAP_FRACTION = 0.5  # of the first epoch's steps: the teacher's warm-up (BUILD_NOTES.md)


def variant_help() -> str:
  return ", ".join(teacher_kinds.names())


def parse_days(spec: str) -> List[int]:
  """'1-7' -> [1..7]; '1,3,5' -> [1, 3, 5]; '1-3,6' -> [1, 2, 3, 6]."""
  days: List[int] = []
  try:
    for part in str(spec).split(","):
      part = part.strip()
      if "-" in part:
        lo, hi = (int(x) for x in part.split("-", 1))
        if hi < lo:
          raise ValueError
        days.extend(range(lo, hi + 1))
      elif part:
        days.append(int(part))
  except ValueError:
    raise StageError(f"--train_days: cannot parse {spec!r}; expected e.g. '1-7' or '1,2,3'")
  if not days:
    raise StageError(f"--train_days: {spec!r} names no day")
  return sorted(set(days))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """What every stage trains with. Tests and drivers build it directly; commands from flags."""
  world_dir: str = _field(None, "The world's directory (written by `python -m data.generate`).",
                          key=False)
  model_dir: str = _field(None, "Root of trained models; this stage writes "
                          "MODEL_DIR/<stage>/<variant>/.", key=False)
  train_days: Optional[Tuple[int, ...]] = _field(
      None, "Training days, e.g. '1-7' or '1,2,3'. Default: every day before --eval_day.",
      days=True)
  eval_day: Optional[int] = _field(None, "Held-out evaluation day. Default: the world's last "
                                   "day.")
  seed: int = _field(0, "Seed of initialisation and shuffling.")
  batch_size: int = _field(0, "Training batch size; 0: the stage's default "
                           "(stages.catalogue: 1024 on impressions, 128 for fine CVR, which "
                           "trains on clicks).")
  epochs: int = _field(0, "Training epochs: an upper bound when validation stopping is on "
                       "(--validation_fraction > 0), the length when it is off; 0: the stage's "
                       "default (stages.catalogue: 4 for coarse and fine CTR, which validation "
                       "stops, 1 for retrieval and fine CVR, which it does not). The paper "
                       "trains one.")
  learning_rate: float = _field(0.003, "Learning rate.")
  optimizer: str = _field("adam", "Optimizer: adam (row-wise updates of the embedding tables, "
                          "Keras Adam for dense weights), adagrad (the paper's), or dense_adam "
                          "(Keras Adam everywhere).", choices=optimizers.OPTIMIZERS)
  max_steps: int = _field(0, "Stop after this many steps in total (0: no limit). For smoke "
                          "runs and the resume test.")
  validation_fraction: float = _field(
      0.1, "Share of the last training day's requests held out (whole requests) for "
      "validation stopping; 0 turns it off (the paper's fixed-length training).")
  validation_days: int = _field(
      1, "Validation rows come from the last N training days' requests (0: every training "
      "day): a sparse label (conversions) needs more days for its held-out rows to hold "
      "--min_validation_positives.", keyed_off_default=True)
  min_validation_positives: int = _field(
      100, "Fewest positive labels the held-out rows must hold for validation stopping; with "
      "fewer (sparse conversions) it is off and the run trains --epochs on every row.")
  validate_every: int = _field(0, "Check the validation rows every N steps (and at each epoch "
                               "end); 0: ten times per epoch.")
  patience: int = _field(3, "Validation checks without improvement before training stops; "
                         "the best check's weights are kept.")
  monitor: str = _field("auc", "Validation figure that stopping watches: auc (the ranking "
                        "the stages are judged on) or logloss (keeps falling while the model "
                        "calibrates, after its ranking has peaked; BUILD_NOTES.md).",
                        choices=validation.MONITORS)
  checkpoint_every: int = _field(200, "Save resumable training state every N steps.", key=False)
  # Thread settings: chosen by a paired measurement on 2 cores (BUILD_NOTES.md, "Input stream
  # inside TensorFlow"); not in the reuse key (op determinism makes the results the same).
  inter_op_threads: int = _field(0, "TensorFlow's inter-op threads (0: TensorFlow's default, "
                                 "one per core); set once per process.", key=False)
  intra_op_threads: int = _field(0, "TensorFlow's intra-op threads (0: TensorFlow's default, "
                                 "one per core); set once per process.", key=False)
  # Not in the reuse key: a synchronous strategy trains the model one process would, to float
  # rounding; parameter_server's asynchronous updates do enter it (`key_values`).
  strategy: str = _field(
      distribute.DEFAULT, "Where training runs (tf.distribute): default (one process, one "
      "device), mirrored (this process's devices), multi_worker (synchronous, every TF_CONFIG "
      "worker runs this command) or parameter_server (asynchronous; the TF_CONFIG chief runs "
      "it, workers and ps tasks serve). --batch_size is the global batch. README: 'Running "
      "across machines'.", choices=distribute.STRATEGIES, key=False)
  ps_shard_bytes: int = _field(
      distribute.DEFAULT_SHARD_BYTES, "With --strategy=parameter_server: an embedding table is "
      "split across the ps tasks into shards of at least this many bytes (one per ps task at "
      "most); smaller tables stay whole.", key=False)
  cluster_timeout: float = _field(
      distribute.DEFAULT_CLUSTER_TIMEOUT, "With --strategy=multi_worker or parameter_server: "
      "seconds to wait for the TF_CONFIG cluster's other tasks to be reachable and connect "
      "before giving up with one line (0: wait forever).", key=False)
  variant: str = _field("baseline", "Distillation variant: a teacher kind of "
                        f"models.teacher_kinds, {variant_help()}.")
  mode: Optional[str] = _field(
      None, "Teacher training: `pretrained` (frozen teacher trained first) or `simultaneous` "
      "(teacher trained in the same steps). Default: pretrained for coarse pfd_md (the fine "
      "CTR model), else simultaneous.", choices=MODES)
  distill_lambda: float = _field(0.5, "λ: weight of the distillation loss, in [0, 1].")
  swap_step: int = _field(-1, "k: λ is 0 before this step (teacher warm-up); -1: auto, "
                          f"{AUTO_SWAP_FRACTION:g} of the first epoch's steps.")
  hidden_units: Tuple[int, ...] = _field((256, 128, 64), "Student MLP widths.")
  embedding_dim: int = _field(16, "Embedding width of every categorical feature.")
  unshared_features: Tuple[str, ...] = _field(
      ("user_id",), "Features whose embedding the teacher does not share with the student "
      "(the paper's best CTR setting: user_id).")
  share_embeddings: bool = _field(True, "A simultaneous teacher reads the student's embedding "
                                  "tables (except --unshared_features); false gives it its own.")
  reuse: bool = _field(False, "Skip training when the output dir already holds a finished run "
                       "with the same configuration (its metrics.json is returned).", key=False)
  # Extra Keras callbacks for every fit of the run (not a flag; tests use it to simulate a kill).
  callbacks: Sequence[Any] = dataclasses.field(default=(), compare=False,
                                               metadata={"flag": False, "key": False})

  def __post_init__(self):
    if isinstance(self.train_days, str):
      self._set("train_days", parse_days(self.train_days) if self.train_days else None)
    for name, item in (("train_days", int), ("hidden_units", int), ("unshared_features", str)):
      value = getattr(self, name)
      if isinstance(value, str):
        value = [v for v in value.split(",") if v]
      if value is not None:
        try:
          self._set(name, tuple(item(v) for v in value))
        except ValueError:
          raise StageError(f"--{name} must be a list of {item.__name__}, got {value}") from None
    self._set("callbacks", tuple(self.callbacks))
    self.validate()

  def _set(self, name: str, value: Any) -> None:
    object.__setattr__(self, name, value)

  # ---------------------------------------------------------------- what the stage is

  BASE_STAGE = "training"  # the stage of the settings every stage shares (a driver's base)

  @property
  def stage(self) -> str:
    """The stage's name in metrics and exports ('coarse', 'fine_ctr' ...)."""
    return self.BASE_STAGE

  @property
  def output(self) -> str:
    """The stage's dir under MODEL_DIR ('coarse', 'fine/ctr' ...): the catalogue's."""
    return catalogue.stage(self.stage).output if self.stage in catalogue.STAGES else self.stage

  def variants(self) -> Sequence[str]:
    """The variants the stage accepts (the catalogue's; any teacher kind for a base config)."""
    if self.stage in catalogue.STAGES:
      return catalogue.stage(self.stage).variants()
    return teacher_kinds.names()

  # ---------------------------------------------------------------- checks, one place

  def validate(self) -> None:
    """Refuses settings no run can use, naming the flag."""
    for name in ("world_dir", "model_dir"):
      if not getattr(self, name):
        raise StageError(f"--{name} is required")
    self._check_variant()
    positive = ("learning_rate", "checkpoint_every", "embedding_dim", "ps_shard_bytes")
    for name in positive:
      if not getattr(self, name) > 0:
        raise StageError(f"--{name} must be positive, got {getattr(self, name)}")
    for name in ("seed", "batch_size", "epochs", "max_steps", "validate_every",
                 "min_validation_positives", "validation_days", "cluster_timeout"):
      if getattr(self, name) < 0:
        raise StageError(f"--{name} must be >= 0, got {getattr(self, name)}")
    for name in ("inter_op_threads", "intra_op_threads"):
      if getattr(self, name) < 0:
        raise StageError(f"--{name} must be >= 0, got {getattr(self, name)}")
    if self.swap_step < AUTO:
      raise StageError(f"--swap_step must be >= 0 (or -1: auto), got {self.swap_step}")
    if not 0.0 <= self.validation_fraction < 1.0:
      raise StageError(f"--validation_fraction must be in [0, 1), got {self.validation_fraction}")
    if self.patience < 1:
      raise StageError(f"--patience must be >= 1, got {self.patience}")
    if self.monitor not in validation.MONITORS:
      raise StageError(f"--monitor={self.monitor}: expected one of "
                       f"{', '.join(validation.MONITORS)}")
    if not 0.0 <= self.distill_lambda <= 1.0:
      raise StageError(f"--distill_lambda must be in [0, 1], got {self.distill_lambda}")
    if not self.hidden_units or any(int(w) <= 0 for w in self.hidden_units):
      raise StageError(f"--hidden_units must be positive widths, got {list(self.hidden_units)}")
    if self.mode is not None and self.mode not in MODES:
      raise StageError(f"--mode={self.mode}: expected one of {', '.join(MODES)}")
    if self.train_days is not None and self.eval_day in self.train_days:
      raise StageError(f"--train_days and --eval_day overlap: day {self.eval_day} is in both")
    self._check_strategy()

  def _check_strategy(self) -> None:
    if self.strategy not in distribute.STRATEGIES:
      raise StageError(f"--strategy={self.strategy}: expected one of "
                       f"{', '.join(distribute.STRATEGIES)}")
    if self.strategy == distribute.PARAMETER_SERVER and self.validates:
      # Its checks would read weights that the workers are still updating, at steps the
      # coordinator has scheduled but not run (BUILD_NOTES.md, "Training on tf.distribute").
      raise StageError("--strategy=parameter_server does not support validation stopping; "
                       "pass --validation_fraction=0 (fixed-length training, --epochs / "
                       "--max_steps)")

  @property
  def days(self) -> List[int]:
    """The training days of a resolved config (`stages.driver.resolve` fills them in)."""
    if self.train_days is None:
      raise RuntimeError("the config's training days are not resolved yet (driver.resolve)")
    return list(self.train_days)

  @property
  def evaluation_day(self) -> int:
    """The eval day of a resolved config (`stages.driver.resolve` fills it in)."""
    if self.eval_day is None:
      raise RuntimeError("the config's eval day is not resolved yet (driver.resolve)")
    return self.eval_day

  @property
  def validates(self) -> bool:
    """Whether the run holds out validation rows and stops on them."""
    return self.validation_fraction > 0

  def resolved_swap_step(self, n_train_rows: int) -> int:
    """k itself, or for --swap_step=-1 the auto warm-up: a share of the first epoch's steps."""
    if self.swap_step != AUTO:
      return self.swap_step
    batch_size = self.batch_size or catalogue.stage(self.stage).batch_size
    steps_per_epoch = max(1, -(-n_train_rows // batch_size))
    return int(AUTO_SWAP_FRACTION * steps_per_epoch)

  def _check_variant(self) -> None:
    if self.variant not in self.variants():
      raise StageError(f"--variant={self.variant} is not valid for the {self.stage} stage; "
                       f"expected one of {', '.join(self.variants())}")


@dataclasses.dataclass(frozen=True)
class FineConfig(TrainConfig):
  """A fine-rank run: the CTR model over impressions or the CVR model over clicks."""
  task: str = _field("ctr", "ctr: click model over impressions; cvr: conversion model over "
                     "clicks.", choices=FINE_TASKS)
  ctr_variant: str = _field("baseline", "For --task=cvr: the fine CTR model whose pCTR makes "
                            "the CTCVR evaluation (MODEL_DIR/fine/ctr/<ctr_variant>).")

  @property
  def stage(self) -> str:
    return f"fine_{self.task}"

  def validate(self) -> None:
    if self.task not in FINE_TASKS:
      raise StageError(f"--task={self.task}: expected one of {', '.join(FINE_TASKS)}")
    super().validate()
    ctr_variants = catalogue.FINE_CTR.variants()
    if self.ctr_variant not in ctr_variants:
      raise StageError(f"--ctr_variant={self.ctr_variant}: expected one of "
                       f"{', '.join(ctr_variants)}")

  def _check_variant(self) -> None:
    if self.variant not in self.variants():
      hint = (" (at fine rank the cross features are regular inputs, so the CTR model has no "
              "privileged features to distil)" if self.task == "ctr" else "")
      raise StageError(f"--variant={self.variant} is not valid for --task={self.task}; "
                       f"expected one of {', '.join(self.variants())}{hint}")


@dataclasses.dataclass(frozen=True)
class CoarseConfig(TrainConfig):
  """A coarse-rank run: the two-tower CTR model and its variant's teacher."""
  teacher_variant: str = _field("baseline", "For --variant=pfd_md with a pre-trained teacher: "
                                "the fine CTR model MODEL_DIR/fine/ctr/<teacher_variant>.")
  # Not in the key: the teacher export's own identity (config_key) is (`teachers.upstream`).
  teacher_model_dir: str = _field("", "For --variant=pfd_md with a pre-trained teacher: the "
                                  "model dir (of the same world) whose fine/ctr/"
                                  "<teacher_variant> export teaches, e.g. a fine ranker "
                                  "trained on longer history. Empty: --model_dir.", key=False)
  distill_unlabelled: bool = _field(False, "Also distil on retrieved-but-not-shown candidates "
                                    "(label -1), which only the teacher labels.")
  unlabelled_per_request: int = _field(3, "With --distill_unlabelled: candidates per training "
                                       "request, drawn from the retrieval model's top 100.")

  @property
  def stage(self) -> str:
    return "coarse"

  @property
  def teacher_dir(self) -> str:
    """Where the pfd_md student's fine CTR teacher export lives."""
    return self.teacher_model_dir or self.model_dir

  def validate(self) -> None:
    super().validate()
    ctr_variants = catalogue.FINE_CTR.variants()
    if self.teacher_variant not in ctr_variants:
      raise StageError(f"--teacher_variant={self.teacher_variant}: expected one of "
                       f"{', '.join(ctr_variants)}")
    if self.unlabelled_per_request <= 0:
      raise StageError("--unlabelled_per_request must be positive, got "
                       f"{self.unlabelled_per_request}")
    if self.distill_unlabelled and self.variant == distillation.BASELINE:
      raise StageError("--distill_unlabelled needs a teacher; --variant=baseline has none")


@dataclasses.dataclass(frozen=True)
class RetrievalConfig(TrainConfig):
  """A retrieval run: the two-tower trained with in-batch negatives, exported as a top-K index."""
  temperature: float = _field(0.1, "Softmax temperature of the in-batch retrieval loss (the "
                              "towers' vectors are unit length).")
  export_k: int = _field(1000, "How many items the exported index returns per query.")
  # In the reuse key unless brute_force, so exact runs keep the keys they had before --index.
  index: str = _field(ann.DEFAULT_INDEX, "The top-k index the metrics are measured through "
                      "and that is saved with the export: faiss_ivf (FAISS IVF, approximate: "
                      "recall@1000 0.98 of the exact top 1000 on the small world, "
                      "benchmarks/ann.py), faiss_hnsw, or brute_force (TFRS BruteForce, "
                      "exact). The export also serves exactly.", choices=ann.INDEXES,
                      key_unless=ann.BRUTE_FORCE)
  validation_fraction: float = _field(0.0, "Ignored: retrieval trains with in-batch negatives "
                                      "and has no validation stopping.")

  @property
  def stage(self) -> str:
    return "retrieval"

  @property
  def validates(self) -> bool:
    return False  # A study's --validation_fraction is for the ranking stages.

  def validate(self) -> None:
    super().validate()
    for name in ("temperature", "export_k"):
      if not getattr(self, name) > 0:
        raise StageError(f"--{name} must be positive, got {getattr(self, name)}")
    if self.index not in ann.INDEXES:
      raise StageError(f"--index={self.index}: expected one of {', '.join(ann.INDEXES)}")

  def _check_variant(self) -> None:
    if self.variant not in self.variants():
      raise StageError(f"--variant={self.variant}: retrieval has one variant, 'baseline' "
                       "(distillation applies to the ranking stages)")


# ----------------------------------------------------------------------------- fields and flags


def flag_fields(config_class: Type[TrainConfig]) -> List[dataclasses.Field]:
  """The fields a command line sets, in declaration order."""
  return [f for f in dataclasses.fields(config_class) if f.metadata.get("flag", True)]


def _flag(name: str, value: Any) -> List[str]:
  if value is None:
    return []
  if isinstance(value, bool):
    return [f"--{name}" if value else f"--no{name}"]
  if isinstance(value, (list, tuple)):
    return [f"--{name}=" + ",".join(str(v) for v in value)]
  return [f"--{name}={value}"]


def command_flags(config: TrainConfig, config_class: Optional[Type[TrainConfig]] = None,
                  skip: Sequence[str] = ()) -> List[str]:
  """The command-line flags that give `config`: one per field of `config_class` (default: the
  config's own class), except `skip` and unset (None) ones."""
  flags_: List[str] = []
  for field in flag_fields(config_class or type(config)):
    if field.name not in skip:
      flags_ += _flag(field.name, getattr(config, field.name))
  return flags_


def field_values(config: TrainConfig) -> Dict[str, Any]:
  """The flag fields of `config` as JSON values (tuples as lists): `config_class(**values)`
  builds the same config again."""
  return {f.name: list(v) if isinstance(v, tuple) else v
          for f in flag_fields(type(config)) for v in [getattr(config, f.name)]}


def key_values(config: TrainConfig) -> Dict[str, Any]:
  """The fields that change the trained model (not where it goes or how it is checkpointed);
  a field with `key_unless=V` in its metadata is left out while its value is V."""
  values = {}
  for field in dataclasses.fields(config):
    if field.metadata.get("key", True):
      value = getattr(config, field.name)
      if "key_unless" in field.metadata and value == field.metadata["key_unless"]:
        continue
      if field.metadata.get("keyed_off_default") and value == field.default:
        continue  # a field added later: at its default, the keys of earlier runs still hold
      values[field.name] = list(value) if isinstance(value, tuple) else value
  if config.strategy == distribute.PARAMETER_SERVER:
    values["asynchronous"] = True  # stale gradients: another model than synchronous training's
  return values


def define_flags(config_class: Type[TrainConfig], skip: Sequence[str] = ()) -> None:
  """One flag per field of `config_class` (but `skip`); day lists are strings ('1-7', '1,3')."""
  for field in flag_fields(config_class):
    if field.metadata.get("days") and field.name not in flags.FLAGS and field.name not in skip:
      flags.DEFINE_string(field.name, None, field.metadata["help"])
  command.define_config_flags(config_class, skip=skip)


def from_flags(config_class: Type[Config], **overrides: Any) -> Config:
  """The config the parsed flags describe; `overrides` win over flags."""
  return command.config_from_flags(config_class, **overrides)

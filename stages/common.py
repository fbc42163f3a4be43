"""What every stage command shares: flags, the world and model-dir contracts, training loop.

A stage command reads a world, trains on `--train_days`, evaluates on `--eval_day` and writes
`MODEL_DIR/<stage>/<variant>/` holding `saved_model/` (the serving export), `checkpoints/`
(resumable training state), `tensorboard/` and `metrics.json`. `MODEL_DIR/world.json` pins the
model dir to one world, so models of different worlds are never mixed.
"""

import dataclasses
import hashlib
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

import data
from data import files
from data import numeric
from data import cli  # noqa: F401  (--world_dir, --seed)
from models import distillation
from data import metrics as metrics_lib
from models import pipeline

FLAGS = flags.FLAGS

VARIANTS = ("baseline", "pfd", "md", "pfd_md", "lupi")
MODES = ("pretrained", "simultaneous")

flags.DEFINE_string("model_dir", None, "Root of trained models; this stage writes "
                    "MODEL_DIR/<stage>/<variant>/.")
flags.DEFINE_string("train_days", None, "Training days, e.g. '1-7' or '1,2,3'. "
                    "Default: every day before --eval_day.")
flags.DEFINE_integer("eval_day", None, "Held-out evaluation day. Default: the world's last day.")
flags.DEFINE_integer("batch_size", 1024, "Training batch size.")
flags.DEFINE_integer("epochs", 1, "Training epochs (the paper trains one).")
flags.DEFINE_float("learning_rate", 0.003, "Learning rate.")
flags.DEFINE_enum("optimizer", "adam", ["adam", "adagrad"], "Optimizer (the paper: Adagrad).")
flags.DEFINE_integer("max_steps", 0, "Stop after this many steps in total (0: no limit). "
                     "For smoke runs and the resume test.")
flags.DEFINE_integer("checkpoint_every", 200, "Save resumable training state every N steps.")
flags.DEFINE_string("variant", "baseline", f"Distillation variant: one of {', '.join(VARIANTS)}.")
flags.DEFINE_enum("mode", None, list(MODES), "Teacher training: `pretrained` (frozen "
                  "teacher trained first) or `simultaneous` (teacher trained in the same "
                  "steps). Default: pretrained for coarse pfd_md (the fine CTR model), "
                  "else simultaneous.")
flags.DEFINE_float("distill_lambda", 0.5, "λ: weight of the distillation loss, in [0, 1].")
flags.DEFINE_integer("swap_step", 0, "k: λ is 0 before this step (teacher warm-up).")
flags.DEFINE_list("hidden_units", ["256", "128", "64"], "Student MLP widths.")
flags.DEFINE_integer("embedding_dim", 16, "Embedding width of every categorical feature.")
flags.DEFINE_bool("share_embeddings", True, "A simultaneous teacher reads the student's "
                  "embedding tables (except --unshared_features); false gives it its own.")
flags.DEFINE_bool("reuse", False, "Skip training when the output dir already holds a finished "
                  "run with the same configuration (its metrics.json is returned).")
flags.DEFINE_list("unshared_features", ["user_id"], "Features whose embedding the teacher "
                  "does not share with the student (the paper's best CTR setting: user_id).")


class StageError(Exception):
  """A user-facing error: printed as one line, exit status 2."""


@dataclasses.dataclass
class StageConfig:
  """One training run of one stage, independent of absl (tests build it directly)."""
  world_dir: str
  model_dir: str
  train_days: Optional[List[int]] = None
  eval_day: Optional[int] = None
  seed: int = 0
  batch_size: int = 1024
  epochs: int = 1
  learning_rate: float = 0.003
  optimizer: str = "adam"
  max_steps: int = 0
  checkpoint_every: int = 200
  variant: str = "baseline"
  mode: Optional[str] = None
  distill_lambda: float = 0.5
  swap_step: int = 0
  hidden_units: Sequence[int] = (256, 128, 64)
  embedding_dim: int = 16
  unshared_features: Sequence[str] = ("user_id",)
  share_embeddings: bool = True
  extra: Dict[str, Any] = dataclasses.field(default_factory=dict)
  reuse: bool = False
  # Extra Keras callbacks for every fit of the run (not a flag; tests use it to simulate a kill).
  callbacks: Sequence[Any] = ()

  @classmethod
  def from_flags(cls, extra: Optional[Dict[str, Any]] = None, world_dir: Optional[str] = None,
                 model_dir: Optional[str] = None) -> "StageConfig":
    """The config the command-line flags describe; `world_dir`/`model_dir` override them."""
    world_dir = world_dir or FLAGS.world_dir
    model_dir = model_dir or FLAGS.model_dir
    for name, value in (("world_dir", world_dir), ("model_dir", model_dir)):
      if not value:
        raise StageError(f"--{name} is required")
    try:
      hidden = [int(w) for w in FLAGS.hidden_units]
    except ValueError:
      raise StageError(f"--hidden_units must be integers, got {FLAGS.hidden_units}") from None
    return cls(
        world_dir=world_dir, model_dir=model_dir,
        train_days=parse_days(FLAGS.train_days) if FLAGS.train_days else None,
        eval_day=FLAGS.eval_day, seed=FLAGS.seed or 0, batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate, optimizer=FLAGS.optimizer,
        max_steps=FLAGS.max_steps, checkpoint_every=FLAGS.checkpoint_every,
        variant=FLAGS.variant, mode=FLAGS.mode, distill_lambda=FLAGS.distill_lambda,
        swap_step=FLAGS.swap_step, hidden_units=hidden, embedding_dim=FLAGS.embedding_dim,
        unshared_features=list(FLAGS.unshared_features), reuse=FLAGS.reuse,
        share_embeddings=FLAGS.share_embeddings, extra=dict(extra or {}))


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


# ----------------------------------------------------------------------------- world and dirs


def open_world(config: StageConfig):
  """Loads the world and resolves the train/eval split, with errors that say what to run."""
  manifest = os.path.join(config.world_dir, "manifest.json")
  if not os.path.exists(manifest):
    raise StageError(f"no world at {config.world_dir} (no manifest.json); make one with "
                     f"`python -m data.generate --world_dir={config.world_dir} --preset=small`")
  world = data.load(config.world_dir, verify="size")
  days = list(world.days)
  if config.eval_day is None:
    config.eval_day = days[-1]
  if config.eval_day not in days:
    raise StageError(f"--eval_day={config.eval_day} is outside the world: it has days "
                     f"{days[0]}..{days[-1]}")
  if config.train_days is None:
    config.train_days = [d for d in days if d < config.eval_day]
  outside = [d for d in config.train_days if d not in days]
  if outside:
    raise StageError(f"--train_days {outside} are outside the world: it has days "
                     f"{days[0]}..{days[-1]}")
  if config.eval_day in config.train_days:
    raise StageError(f"--train_days and --eval_day overlap: day {config.eval_day} is in both")
  if not config.train_days:
    raise StageError(f"no training day before --eval_day={config.eval_day}")
  return world


def claim_model_dir(model_dir: str, world) -> None:
  """Pins MODEL_DIR to one world; refuses a model dir that holds another world's models."""
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, "world.json")
  if os.path.exists(path):
    with open(path) as f:
      held = json.load(f).get("world_hash")
    if held != world.world_hash:
      raise StageError(f"--model_dir={model_dir} holds models of another world "
                       f"(world_hash {held} in {path}, this world is {world.world_hash}); "
                       "use a fresh --model_dir")
    return
  files.write_json(path, {"world_hash": world.world_hash, "world_dir": os.path.abspath(world.world_dir)})


def stage_dir(model_dir: str, stage: str, variant: str) -> str:
  """MODEL_DIR/<stage>/<variant>; `stage` may be nested, e.g. 'fine/ctr'."""
  return os.path.join(model_dir, *stage.split("/"), variant)


def require_stage(model_dir: str, stage: str, variant: str, command: str) -> str:
  """The export dir of a stage this one depends on, or an error naming the command to run."""
  path = os.path.join(stage_dir(model_dir, stage, variant), "saved_model")
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    raise StageError(f"{stage} model '{variant}' not found at {path}; train it first with "
                     f"`{command}`")
  return path


# ----------------------------------------------------------------------------- training


def seed_everything(seed: int) -> None:
  """Seeds Python, numpy and TF, and makes TF ops deterministic."""
  tf.keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()


def make_optimizer(config: StageConfig):
  if config.optimizer == "adagrad":
    return tf.keras.optimizers.Adagrad(config.learning_rate)
  return tf.keras.optimizers.Adam(config.learning_rate)


class _StepCounter(tf.keras.callbacks.Callback):
  """Counts optimizer steps in Python (reading the variable every batch would stall the loop).

  Starts from the optimizer's counter at train begin, after BackupAndRestore has restored it.
  """

  def on_train_begin(self, logs=None):
    self.step = int(self.model.optimizer.iterations.numpy())

  def on_train_batch_end(self, batch, logs=None):
    self.step += 1
    self.after_step(logs or {})

  def after_step(self, logs):
    raise NotImplementedError


class _StopAfterSteps(_StepCounter):
  """Stops training once the run has made `max_steps` optimizer steps in total."""

  def __init__(self, max_steps: int):
    super().__init__()
    self.max_steps = max_steps

  def after_step(self, logs):
    if self.step >= self.max_steps:
      self.model.stop_training = True


class _ProgressLog(_StepCounter):
  """One absl log line every `every` steps and at each epoch's end."""

  def __init__(self, every: int, total_steps: Optional[int]):
    super().__init__()
    self.every, self.total = every, total_steps

  def after_step(self, logs):
    if self.step % self.every == 0:
      logging.info("step %d/%s %s", self.step, self.total or "?", _format_logs(logs))

  def on_epoch_end(self, epoch, logs=None):
    logging.info("epoch %d done: %s", epoch + 1, _format_logs(logs or {}))


def _format_logs(logs) -> str:
  return ", ".join(f"{k}={float(v):.4f}" for k, v in sorted(logs.items()))


def resumable_dataset(arrays: Dict[str, np.ndarray], batch_size: int, seed: int,
                      start_step: Callable[[], int]) -> Tuple[tf.data.Dataset, int]:
  """An endless stream of shuffled batches that can pick up at any global step.

  Epoch e visits the rows in a permutation seeded by (seed, e). The stream starts at
  `start_step()`, read when iteration begins (after Keras has restored a backup), so a resumed
  run sees exactly the batches an uninterrupted run would have. Returns (dataset, steps/epoch).
  """
  n = len(next(iter(arrays.values())))
  steps_per_epoch = max(1, -(-n // batch_size))

  def batches():
    step = int(start_step())
    while True:
      epoch, first = divmod(step, steps_per_epoch)
      order = np.random.default_rng([seed, epoch]).permutation(n)
      for b in range(first, steps_per_epoch):
        rows = np.sort(order[b * batch_size:(b + 1) * batch_size])
        yield {k: v[rows] for k, v in arrays.items()}
      step = (epoch + 1) * steps_per_epoch

  spec = {k: tf.TensorSpec((None,) + v.shape[1:], tf.as_dtype(v.dtype))
          for k, v in arrays.items()}
  dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
  return dataset.prefetch(2), steps_per_epoch


def fit(model: tf.keras.Model, arrays: Dict[str, np.ndarray], config: StageConfig,
        out_dir: str,
        extra_callbacks: Sequence[tf.keras.callbacks.Callback] = ()) -> tf.keras.callbacks.History:
  """Trains with Keras fit, resumable: a killed run continues from its last saved step.

  BackupAndRestore keeps the model, optimizer and epoch/step counters under
  `out_dir/checkpoints/backup` every `checkpoint_every` steps and at each epoch end, and
  deletes them once training completes; the final weights go to `checkpoints/final`.
  """
  model.compile(optimizer=make_optimizer(config))
  # Build every variable (teacher included) before BackupAndRestore looks for them.
  model.compute_loss({k: tf.constant(v[:2]) for k, v in arrays.items()}, training=False)
  model.built = True
  model.reset_metrics()
  dataset, steps_per_epoch = resumable_dataset(
      arrays, config.batch_size, config.seed, lambda: model.optimizer.iterations.numpy())
  callbacks: List[tf.keras.callbacks.Callback] = [
      tf.keras.callbacks.BackupAndRestore(os.path.join(out_dir, "checkpoints", "backup"),
                                          save_freq=config.checkpoint_every),
      tf.keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"), update_freq=100),
      _ProgressLog(every=max(config.checkpoint_every, 100),
                   total_steps=(steps_per_epoch or 0) * config.epochs or None),
  ]
  if config.max_steps:
    callbacks.append(_StopAfterSteps(config.max_steps))
  callbacks.extend(extra_callbacks)
  callbacks.extend(config.callbacks)
  history = model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=callbacks, verbose=0)
  checkpoint = tf.train.Checkpoint(model=model)
  checkpoint.write(os.path.join(out_dir, "checkpoints", "final", "ckpt"))
  return history


def evaluate_heads(model, arrays: Dict[str, np.ndarray], label: str) -> Dict[str, Any]:
  """The student's ranking metrics on `arrays` (and the teacher's, prefixed `teacher_`)."""
  labels = arrays[label]
  groups = arrays["user_id"]
  student = pipeline.predict(lambda b: model.student(b, training=False), arrays)
  result: Dict[str, Any] = metrics_lib.ranking_metrics(labels, numeric.sigmoid(student), groups)
  result["n_eval"] = int(len(labels))
  if getattr(model, "teacher", None) is not None:
    teacher = pipeline.predict(lambda b: model.teacher_logits(b, training=False), arrays)
    for name, value in metrics_lib.ranking_metrics(labels, numeric.sigmoid(teacher), groups).items():
      result[f"teacher_{name}"] = value
  return result


def pretrain_teacher(schema, stage: str, kind: str, arrays: Dict[str, np.ndarray],
                     config: StageConfig, out_dir: str, label: str,
                     architecture: Optional[str] = None):
  """Trains a `kind` teacher alone (the paper's "independent teacher, then student").

  The trained head is kept under `out_dir/teacher/checkpoints/final`; a rerun (e.g. resuming a
  killed student) restores it instead of training it again.
  """
  teacher = distillation.build_teacher(kind, schema, stage, architecture=architecture,
                                       student_widths=config.hidden_units,
                                       embedding_dim=config.embedding_dim)
  wrapper = distillation.DistillationModel(teacher, None, label=label)
  teacher_dir = os.path.join(out_dir, "teacher")
  final = os.path.join(teacher_dir, "checkpoints", "final", "ckpt")
  if os.path.exists(final + ".index"):
    wrapper.compile(optimizer=make_optimizer(config))
    wrapper(pipeline.take_rows(arrays, slice(0, 2)))
    tf.train.Checkpoint(model=wrapper).read(final).expect_partial()
    logging.info("restored the pre-trained %s teacher from %s", kind, final)
  else:
    logging.info("pre-training the %s teacher alone", kind)
    fit(wrapper, arrays, config, teacher_dir)
  return teacher


def config_key(config: StageConfig) -> str:
  """A digest of everything in `config` that changes the trained model (not where it goes)."""
  fields = dataclasses.asdict(dataclasses.replace(config, callbacks=()))
  for name in ("world_dir", "model_dir", "callbacks", "checkpoint_every", "reuse"):
    fields.pop(name)
  blob = json.dumps(files.json_safe(fields), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished_metrics(out_dir: str, config: StageConfig) -> Optional[Dict[str, Any]]:
  """The metrics of a finished run in `out_dir` with the same config, else None.

  Lets drivers (the demo, the paper study) skip work already done; a run counts as finished
  once its metrics.json, written last, exists.
  """
  path = os.path.join(out_dir, "metrics.json")
  if not config.reuse or not os.path.exists(path):
    return None
  metrics = files.read_json(path)
  if metrics.get("config_key") != config_key(config):
    return None
  logging.info("reusing the finished run in %s (same configuration)", out_dir)
  return metrics


def run_facts(world, config: StageConfig, stage: str) -> Dict[str, Any]:
  """What produced a model: world, stage, variant and the knobs, for metrics.json and meta."""
  return {"world_hash": world.world_hash, "stage": stage, "variant": config.variant,
          "config_key": config_key(config),
          "mode": config.mode if config.variant != "baseline" else None,
          "train_days": list(config.train_days), "eval_day": config.eval_day,
          "seed": config.seed, "distill_lambda": config.distill_lambda,
          "swap_step": config.swap_step, "hidden_units": list(config.hidden_units),
          "embedding_dim": config.embedding_dim, "batch_size": config.batch_size,
          "epochs": config.epochs, "learning_rate": config.learning_rate,
          "optimizer": config.optimizer}


def run_main(train_fn: Callable[[StageConfig], Dict[str, Any]],
             stage_flags: Callable[[], Dict[str, Any]] = dict) -> Callable:
  """An absl main: config from flags (plus the stage's own, via `stage_flags`), errors as one line."""

  def main(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
      sys.exit(2)
    try:
      config = StageConfig.from_flags(stage_flags())
      metrics = train_fn(config)
    except (StageError, ValueError, FileNotFoundError) as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(2)
    print(json.dumps(files.json_safe(metrics), indent=2, sort_keys=True))

  return main

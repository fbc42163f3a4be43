r"""Training cost of distillation schemes, relative to training the student alone.

Reproduces the shape of the paper's cost table (CTR, coarse stage): student alone; teacher then
student (independently); simultaneous with separate embeddings; simultaneous with shared
embeddings; shared except user_id. Also fits the same student network as a plain Keras model
(`compile` + `fit`, same tf.data pipeline) so the distillation component's own overhead shows.

  python -m benchmarks.train_cost --world_dir=/tmp/worlds/small --days=1 --steps=200

Prints examples/second per scheme and the time ratio to the student alone. Timing excludes a
warm-up (tracing) of --warmup_steps. Without --world_dir, synthetic rows shaped like --preset.
"""

import time
from typing import List

import models  # Sets TF_USE_LEGACY_KERAS before TensorFlow loads.

# isort: split

from absl import app
from absl import flags
import tensorflow as tf

import data
from data.world import schema as schema_lib
from models import testing

FLAGS = flags.FLAGS
STUDENT_ALONE = "student alone (DistillationModel, baseline)"


def load_arrays():
  """(schema, numpy column dict) restricted to the stage's teacher features and the label."""
  if FLAGS.world_dir:
    world = data.load(FLAGS.world_dir)
    schema, arrays = world.schema, world.log_arrays([int(d) for d in FLAGS.days])
  else:
    schema = schema_lib.build_schema(data.preset(FLAGS.preset))
    arrays = testing.synthetic_log_arrays(schema, FLAGS.synthetic_rows, seed=FLAGS.seed)
  columns = [f.name for f in schema.features_for(FLAGS.stage, schema_lib.TEACHER)]
  return schema, models.model_columns(schema, columns + [FLAGS.label], arrays)


def dataset(schema, arrays, steps):
  epochs = None if steps else 1
  ds = models.make_dataset(arrays, FLAGS.batch_size, schema=schema, seed=FLAGS.seed,
                           epochs=epochs, drop_remainder=True)
  return ds.take(steps) if steps else ds


def warm_up(model: tf.keras.Model, schema, arrays, as_pairs: bool = False) -> None:
  """Untimed steps: tracing, optimizer slots, first touches of the tables."""
  warm = dataset(schema, arrays, FLAGS.warmup_steps)
  model.fit(warm.map(_pairs) if as_pairs else warm, verbose=0)


def timed_fit(model: tf.keras.Model, schema, arrays, as_pairs: bool = False):
  """(wall seconds, process CPU seconds) of one fit over --steps steps (or one epoch).

  CPU seconds measure the work done, which other jobs on the machine barely change; wall
  seconds are what a user waits.
  """
  timed = dataset(schema, arrays, FLAGS.steps)
  wall, cpu = time.perf_counter(), time.process_time()
  model.fit(timed.map(_pairs) if as_pairs else timed, verbose=0)
  return time.perf_counter() - wall, time.process_time() - cpu


def _pairs(batch):
  return batch, batch[FLAGS.label]


def optimizer():
  return tf.keras.optimizers.Adagrad(FLAGS.learning_rate)


def distillation(schema, teacher_kind, **kwargs) -> models.DistillationModel:
  tf.keras.utils.set_random_seed(FLAGS.seed)
  spec = models.DistillationSpec(
      teacher_kind=teacher_kind, architecture=FLAGS.architecture, label=FLAGS.label,
      widths=tuple(int(w) for w in FLAGS.widths), embedding_dim=FLAGS.embedding_dim,
      **{k: v for k, v in kwargs.items() if k != "pretrained_teacher"})
  model = models.build_distillation(schema, FLAGS.stage, spec,
                                    pretrained_teacher=kwargs.get("pretrained_teacher"))
  model.compile(optimizer=optimizer())
  return model


def teacher_alone(schema) -> models.DistillationModel:
  """The teacher head trained on its own (the first half of 'teacher then student')."""
  tf.keras.utils.set_random_seed(FLAGS.seed)
  arch = FLAGS.architecture if FLAGS.teacher_kind == models.PFD else "dnn"
  teacher = models.build_teacher(FLAGS.teacher_kind, schema, FLAGS.stage, architecture=arch,
                                 student_widths=[int(w) for w in FLAGS.widths],
                                 embedding_dim=FLAGS.embedding_dim)
  model = models.DistillationModel(teacher, None, label=FLAGS.label)
  model.compile(optimizer=optimizer())
  return model


class PlainStudent(tf.keras.Model):
  """The same student head as a plain Keras model, for `compile(loss=...)` + `fit`."""

  def __init__(self, head):
    super().__init__()
    self.head = head

  def call(self, batch, training=False):
    return self.head(batch, training=training)


def plain_keras(schema, with_auc: bool) -> tf.keras.Model:
  tf.keras.utils.set_random_seed(FLAGS.seed)
  head = models.build_student(schema, FLAGS.stage, FLAGS.architecture,
                              widths=[int(w) for w in FLAGS.widths],
                              embedding_dim=FLAGS.embedding_dim)
  model = PlainStudent(head)
  metrics = [tf.keras.metrics.AUC(num_thresholds=500, from_logits=True)] if with_auc else []
  model.compile(optimizer=optimizer(), metrics=metrics,
                loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
  return model


def schemes(schema) -> List[tuple]:
  """(name, build, as_pairs) per scheme, in the paper's order."""
  kind = FLAGS.teacher_kind
  frozen = teacher_alone(schema).student
  return [
      (STUDENT_ALONE, lambda: distillation(schema, "baseline"), False),
      ("plain Keras student (compile+fit, loss only)", lambda: plain_keras(schema, False), True),
      ("plain Keras student (+ AUC metric)", lambda: plain_keras(schema, True), True),
      ("teacher alone", lambda: teacher_alone(schema), False),
      ("student with frozen teacher", lambda: distillation(
          schema, kind, mode="pretrained", pretrained_teacher=frozen), False),
      ("simultaneous, separate embeddings", lambda: distillation(
          schema, kind, share_embeddings=False), False),
      ("simultaneous, shared embeddings", lambda: distillation(schema, kind), False),
      ("simultaneous, shared except user_id", lambda: distillation(
          schema, kind, unshared=("user_id",)), False),
  ]


def measure(schema, arrays) -> List[tuple]:
  """(name, seconds, examples/second) per scheme: every model is built and warmed up first,
  then the schemes are timed round-robin --repeats times in a rotating order (so contention
  on shared CPUs hits them alike) and each scheme's fastest fit counts."""
  models_ = [(name, build(), as_pairs) for name, build, as_pairs in schemes(schema)]
  for _, model, as_pairs in models_:
    warm_up(model, schema, arrays, as_pairs)
  wall = {name: float("inf") for name, _, _ in models_}
  cpu = dict(wall)
  for round_ in range(FLAGS.repeats):
    shift = round_ % len(models_)  # Rotate the order: no scheme is always first or last.
    for name, model, as_pairs in models_[shift:] + models_[:shift]:
      w, c = timed_fit(model, schema, arrays, as_pairs)
      wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
  examples = (FLAGS.steps or len(arrays[FLAGS.label]) // FLAGS.batch_size) * FLAGS.batch_size
  print(f"  {'scheme':<44s} {'wall s':>8s} {'ex/s':>9s} {'CPU s':>8s}")
  for name in wall:
    print(f"  {name:<44s} {wall[name]:8.1f} {examples / wall[name]:9.0f} {cpu[name]:8.1f}")
  return [(name, wall[name], cpu[name]) for name in wall]


def report(runs) -> None:
  wall = {name: w for name, w, _ in runs}
  cpu = {name: c for name, _, c in runs}
  print("\nCost relative to the student alone, wall and CPU time "
        "(paper: +99.5%, +55%, +2.9%, +11.4%):")
  rows = [name for name in wall if name.startswith(("plain", "simultaneous"))]
  for label, times in (("wall", wall), ("CPU", cpu)):
    base = times[STUDENT_ALONE]
    independent = times["teacher alone"] + times["student with frozen teacher"]
    ratios = [("teacher then student, independently", independent)]
    ratios += [(name, times[name]) for name in rows]
    for name, t in ratios:
      print(f"  {label:<4s} {name:<44s} {t / base:6.3f}x  ({100 * (t / base - 1):+.1f}%)")


def main(argv):
  del argv
  tf.config.experimental.enable_op_determinism()
  schema, arrays = load_arrays()
  print(f"stage={FLAGS.stage} student={FLAGS.architecture} teacher={FLAGS.teacher_kind} "
        f"rows={len(arrays[FLAGS.label])} batch={FLAGS.batch_size} steps={FLAGS.steps or 'epoch'} "
        f"widths={','.join(FLAGS.widths)} threads(intra,inter)="
        f"{tf.config.threading.get_intra_op_parallelism_threads()},"
        f"{tf.config.threading.get_inter_op_parallelism_threads()}")
  report(measure(schema, arrays))


def define_flags() -> None:
  flags.DEFINE_string("world_dir", "", "World directory; empty means synthetic rows.")
  flags.DEFINE_string("preset", "small", "Preset whose schema shapes the synthetic rows.")
  flags.DEFINE_list("days", ["1"], "Training days read from the world.")
  flags.DEFINE_integer("synthetic_rows", 200_000, "Rows when no world is given.")
  flags.DEFINE_string("stage", "coarse", "Stage whose student and teacher are timed.")
  flags.DEFINE_string("architecture", "two_tower", "Student architecture: dnn or two_tower.")
  flags.DEFINE_string("teacher_kind", "pfd", "Teacher kind: pfd, md, pfd_md or lupi.")
  flags.DEFINE_string("label", "click", "Label column.")
  flags.DEFINE_integer("batch_size", 1024, "Examples per step.")
  flags.DEFINE_integer("steps", 200, "Timed steps per scheme; 0 means one full epoch.")
  flags.DEFINE_integer("warmup_steps", 20, "Untimed steps first (tracing, optimizer state).")
  flags.DEFINE_integer("repeats", 3, "Round-robin timed fits per scheme; the fastest counts.")
  flags.DEFINE_list("widths", ["512", "256", "128"], "Student widths.")
  flags.DEFINE_integer("embedding_dim", 16, "Embedding width.")
  flags.DEFINE_float("learning_rate", 0.01, "Adagrad learning rate.")
  flags.DEFINE_integer("seed", 0, "Seed.")


def run() -> None:
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()

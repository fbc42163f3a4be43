r"""Training throughput, paired in one process: the project's stage models against plain Keras.

    python -m benchmarks.train_throughput --world_dir=/tmp/worlds/small

Every figure is the median of --repeats rounds; in each round every variant runs --steps
steps, in an order that rotates from round to round, so load from other processes on a shared
machine hits the variants alike. Ratios are taken within a round, then their median is shown.
It prints:
  1. fine CTR examples/s: the stage model (`models.build_distillation` + `models.optimizers`)
     trained by Keras fit on cached batches and on the project's input pipeline, against a
     plain-Keras anchor written below (same 18 features, same tables, mean pooling and MLP,
     `from_tensor_slices().batch().prefetch()` + `fit`, Keras Adam);
  2. where a stage step goes, by timing variants of it on cached batches: forward only,
     forward + gradients, the full step (row-wise Adam), and the full step with Keras's dense
     Adam; the input pipeline's share is fit on the pipeline minus fit on cached batches;
  3. the simultaneous PFD step over the student-alone step for coarse (two-tower) and CVR with
     the stage defaults (embeddings shared except user_id), and the same PFD model with the
     teacher's dense towers cut to width 4: what the teacher costs besides its own towers
     (its private user_id table, its privileged inputs, its loss and metrics).
--clock=cpu times in CPU seconds of the whole process (every thread) instead of wall seconds:
work done rather than time waited, steadier when other processes load the machine.
The world is generated (--preset) if --world_dir holds none. Figures, not assertions.
"""

import dataclasses
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence

import models  # Sets TF_USE_LEGACY_KERAS before TensorFlow loads.

# isort: split
import tensorflow as tf

import data
from data.plumbing import command
from data.world import schema as schema_lib
from models import optimizers
from models import pipeline


@dataclasses.dataclass
class ThroughputConfig:
  """What the benchmark measures, on which world."""
  world_dir: str = dataclasses.field(default="/tmp/worlds/small", metadata={
      "help": "World to read; generated with --preset if it holds no world."})
  preset: str = dataclasses.field(default="small", metadata={
      "help": "Preset of the world generated when --world_dir holds none."})
  days: Sequence[int] = dataclasses.field(default=(1,), metadata={
      "help": "Days whose impressions the batches are drawn from."})
  batch_size: int = dataclasses.field(default=1024, metadata={"help": "Examples per step."})
  hidden_units: Sequence[int] = dataclasses.field(default=(256, 128, 64), metadata={
      "help": "Student MLP widths (the stages' default)."})
  embedding_dim: int = dataclasses.field(default=16, metadata={"help": "Embedding width."})
  learning_rate: float = dataclasses.field(default=0.003, metadata={"help": "Adam's rate."})
  cached_batches: int = dataclasses.field(default=12, metadata={
      "help": "Distinct batches held in memory and cycled through."})
  steps: int = dataclasses.field(default=40, metadata={
      "help": "Timed steps per variant and round."})
  repeats: int = dataclasses.field(default=5, metadata={"help": "Rounds (A/B alternations)."})
  seed: int = dataclasses.field(default=0, metadata={"help": "Seed of models and batches."})
  clock: str = dataclasses.field(default="wall", metadata={
      "help": "wall: wall seconds; cpu: CPU seconds of the process (all threads)."})


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


# ----------------------------------------------------------------------------- world and batches


def world_of(config: ThroughputConfig):
  """The world at --world_dir, generated first if there is none."""
  if not os.path.exists(os.path.join(config.world_dir, "manifest.json")):
    print(f"no world at {config.world_dir}: generating the {config.preset!r} preset")
    subprocess.run([sys.executable, "-m", "data.generate", f"--world_dir={config.world_dir}",
                    f"--preset={config.preset}"], check=True)
  return data.open_world(config.world_dir)


def cached_batches(schema, arrays, columns: Sequence[str], config: ThroughputConfig):
  """`config.cached_batches` shuffled batches of `columns`, as tensors in memory."""
  dataset = pipeline.make_dataset(arrays, config.batch_size, columns, schema, seed=config.seed,
                                  epochs=None, drop_remainder=True, prefetch=0)
  return list(dataset.take(config.cached_batches))


def stacked(batches: List[Dict[str, tf.Tensor]]) -> tf.data.Dataset:
  """An endless dataset cycling through in-memory batches (no input work left per step)."""
  stack = {k: tf.stack([b[k] for b in batches]) for k in batches[0]}
  return tf.data.Dataset.from_tensor_slices(stack).repeat().prefetch(2)


# ----------------------------------------------------------------------------- the anchor


class PlainKerasRanker(tf.keras.Model):
  """The fine CTR model as a plain-Keras user writes it: one `Embedding` layer per vocabulary
  (histories share the candidate's), ids outside the vocabulary to one extra row, numerics
  bucketised by `Discretization`, padded histories embedded whole and mask-averaged, then
  Dense -> BatchNorm -> LeakyReLU blocks and a logit.
  """

  def __init__(self, features: Sequence[schema_lib.Feature], widths: Sequence[int], dim: int):
    super().__init__()
    self.features = list(features)
    self.tables, self.buckets = {}, {}
    for f in self.features:
      group = models.vocabulary_group(f)
      if f.kind == schema_lib.NUMERIC:
        self.buckets[f.name] = tf.keras.layers.Discretization(bin_boundaries=list(f.buckets))
        self.tables[group] = tf.keras.layers.Embedding(len(f.buckets) + 1, dim)
      elif group not in self.tables:
        self.tables[group] = tf.keras.layers.Embedding(f.vocab_size + 1, dim)
    self.mlp = tf.keras.Sequential()
    for width in widths:
      self.mlp.add(tf.keras.layers.Dense(width, use_bias=False))
      self.mlp.add(tf.keras.layers.BatchNormalization())
      self.mlp.add(tf.keras.layers.LeakyReLU(0.2))
    self.mlp.add(tf.keras.layers.Dense(1))

  def call(self, batch, training=False):
    parts = []
    for f in self.features:
      table = self.tables[models.vocabulary_group(f)]
      if f.kind == schema_lib.NUMERIC:
        parts.append(table(self.buckets[f.name](batch[f.name])))
        continue
      ids = batch[f.name]
      rows = tf.where((ids >= 0) & (ids < f.vocab_size), ids, f.vocab_size)
      if f.kind == schema_lib.CATEGORICAL:
        parts.append(table(rows))
        continue
      mask = tf.cast(ids != schema_lib.PAD_ID, tf.float32)[..., None]
      total = tf.reduce_sum(table(rows) * mask, axis=1)
      parts.append(tf.math.divide_no_nan(total, tf.reduce_sum(mask, axis=1)))
    return tf.squeeze(self.mlp(tf.concat(parts, axis=-1), training=training), axis=-1)


def plain_keras_anchor(schema, batches, config: ThroughputConfig):
  """(model, dataset) of the anchor: the cached rows through from_tensor_slices + batch."""
  tf.keras.utils.set_random_seed(config.seed)
  features = schema.features_for("fine_ctr", schema_lib.STUDENT)
  model = PlainKerasRanker(features, config.hidden_units, config.embedding_dim)
  model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate),
                loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                metrics=[tf.keras.metrics.AUC(num_thresholds=500, from_logits=True)])
  rows = {k: tf.concat([b[k] for b in batches], axis=0) for k in batches[0]}
  labels = rows.pop("click")
  dataset = (tf.data.Dataset.from_tensor_slices((rows, labels)).repeat()
             .batch(config.batch_size).prefetch(tf.data.AUTOTUNE))
  return model, dataset


# ----------------------------------------------------------------------------- stage models


def stage_model(schema, stage: str, variant: str, config: ThroughputConfig,
                rowwise_tables: bool = True,
                teacher_widths=None) -> models.DistillationModel:
  """A stage's model as the stage commands build it (defaults: user_id unshared);
  `teacher_widths` overrides the teacher's tower widths."""
  tf.keras.utils.set_random_seed(config.seed)
  architecture = "two_tower" if stage == "coarse" else "dnn"
  label = "conversion" if stage == "fine_cvr" else "click"
  spec = models.DistillationSpec(teacher_kind=variant, architecture=architecture, label=label,
                                 unshared=("user_id",), widths=tuple(config.hidden_units),
                                 embedding_dim=config.embedding_dim,
                                 teacher_widths=teacher_widths)
  model = models.build_distillation(schema, stage, spec)
  model.compile(optimizer=optimizers.make_optimizer("adam", config.learning_rate,
                                                    rowwise_tables=rowwise_tables))
  return model


def model_columns(schema, stage: str, label: str) -> List[str]:
  return [f.name for f in schema.features_for(stage, schema_lib.TEACHER)] + [label]


def forward_fn(model) -> Callable:
  return tf.function(lambda batch: model.compute_loss(batch, training=True))


def gradient_fn(model) -> Callable:
  """Forward and backward, no update; the gradients are summed so none is pruned away."""

  @tf.function
  def step(batch):
    with tf.GradientTape() as tape:
      loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]
    return tf.add_n([tf.reduce_sum(v) for v in values])

  return step


def step_fn(model) -> Callable:
  return tf.function(model.train_step)


# ----------------------------------------------------------------------------- timing


def loop_timer(fn: Callable, batches, steps: int,
               clock: Callable[[], float] = time.perf_counter) -> Callable[[], float]:
  """A timer of `steps` calls of `fn` cycling over `batches`; seconds of `clock` per step."""
  for batch in batches[:3]:  # Trace, build and warm up before any timing.
    fn(batch)

  def run() -> float:
    start = clock()
    for i in range(steps):
      out = fn(batches[i % len(batches)])
    tf.nest.map_structure(lambda t: t.numpy(), out)  # Wait for the last step.
    return (clock() - start) / steps

  return run


def fit_timer(model, dataset: tf.data.Dataset, steps: int,
              clock: Callable[[], float] = time.perf_counter) -> Callable[[], float]:
  """A timer of one Keras `fit` of `steps` steps; seconds of `clock` per step (fit's own cost
  included)."""
  model.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)  # Trace, build and warm up.

  def run() -> float:
    start = clock()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return (clock() - start) / steps

  return run


def paired(timers: Dict[str, Callable[[], float]], repeats: int) -> Dict[str, List[float]]:
  """Seconds per step of every timer, round by round, in an order rotating each round."""
  names = list(timers)
  seconds: Dict[str, List[float]] = {name: [] for name in names}
  for round_ in range(repeats):
    shift = round_ % len(names)
    for name in names[shift:] + names[:shift]:
      seconds[name].append(timers[name]())
  return seconds


def median_ratio(seconds: Dict[str, List[float]], numerator: str, denominator: str) -> float:
  return statistics.median(a / b for a, b in zip(seconds[numerator], seconds[denominator]))


# ----------------------------------------------------------------------------- the reports


def fine_ctr_throughput(schema, arrays, config: ThroughputConfig) -> None:
  """Sections 1 and 2: stage vs anchor examples/s, and where a stage step goes."""
  columns = model_columns(schema, "fine_ctr", "click")
  batches = cached_batches(schema, arrays, columns, config)
  stage = stage_model(schema, "fine_ctr", "baseline", config)
  dense_adam = stage_model(schema, "fine_ctr", "baseline", config, rowwise_tables=False)
  anchor, anchor_data = plain_keras_anchor(schema, batches, config)
  clock = CLOCKS[config.clock]
  project_pipeline = pipeline.make_dataset(arrays, config.batch_size, columns, schema,
                                           seed=config.seed, epochs=None, drop_remainder=True)
  steps = config.steps
  timers = {
      "stage fit, cached batches": fit_timer(stage, stacked(batches), steps, clock),
      "stage fit, project input pipeline": fit_timer(stage, project_pipeline, steps, clock),
      "plain-Keras anchor fit": fit_timer(anchor, anchor_data, steps, clock),
      "forward only": loop_timer(forward_fn(stage), batches, steps, clock),
      "forward + gradients": loop_timer(gradient_fn(stage), batches, steps, clock),
      "full step, row-wise Adam": loop_timer(step_fn(stage), batches, steps, clock),
      "full step, Keras dense Adam": loop_timer(step_fn(dense_adam), batches, steps, clock),
  }
  seconds = paired(timers, config.repeats)
  median = {name: statistics.median(s) for name, s in seconds.items()}
  print(f"\n1. fine CTR training, batch {config.batch_size}, widths "
        f"{list(config.hidden_units)} (median of {config.repeats} paired rounds)")
  for name in ("stage fit, cached batches", "stage fit, project input pipeline",
               "plain-Keras anchor fit"):
    print(f"  {name:<36s} {config.batch_size / median[name]:>9,.0f} examples/s "
          f"({1000 * median[name]:6.2f} ms/step)")
  for name in ("stage fit, cached batches", "stage fit, project input pipeline"):
    speedup = 1 / median_ratio(seconds, name, "plain-Keras anchor fit")
    print(f"  {name + ' / anchor':<45s} {speedup:5.2f}x the anchor's examples/s")
  print_breakdown(seconds, median)


def print_breakdown(seconds, median) -> None:
  full = median["full step, row-wise Adam"]
  forward = median["forward only"]
  gradients = median["forward + gradients"]
  pipeline_ms = median["stage fit, project input pipeline"] - median["stage fit, cached batches"]
  rows = [("forward (loss and metrics)", forward),
          ("backward (gradients)", gradients - forward),
          ("optimizer (row-wise Adam update)", full - gradients),
          ("full step (tf.function train_step)", full),
          ("Keras fit loop on top of the step", median["stage fit, cached batches"] - full),
          ("input pipeline (fit on pipeline - cached)", pipeline_ms)]
  print("\n2. where a fine CTR step goes (cached batch; medians, differences of variants)")
  for name, value in rows:
    print(f"  {name:<44s} {1000 * value:7.2f} ms  {100 * value / full:5.1f}% of the step")
  dense = median["full step, Keras dense Adam"]
  print(f"  {'full step with Keras dense Adam instead':<44s} {1000 * dense:7.2f} ms  "
        f"(row-wise step / dense step: "
        f"{median_ratio(seconds, 'full step, row-wise Adam', 'full step, Keras dense Adam'):.2f})")


TOWERLESS = "pfd, teacher towers of width 4"


def pfd_ratios(world, config: ThroughputConfig) -> None:
  """Section 3: simultaneous PFD step / student-alone step, coarse and CVR."""
  schema = world.schema
  print("\n3. simultaneous PFD step / student-alone step (shared embeddings except user_id; "
        "paper: +11.4%)")
  for stage, label in (("coarse", "click"), ("fine_cvr", "conversion")):
    columns = model_columns(schema, stage, label)
    arrays = world.log_arrays(list(config.days), columns)
    if stage == "fine_cvr":
      arrays = pipeline.take_rows(arrays, world.log_arrays(list(config.days), ["click"])
                                  ["click"] > 0)
    batches = cached_batches(schema, arrays, columns, config)
    models_ = {"baseline": stage_model(schema, stage, "baseline", config),
               "pfd": stage_model(schema, stage, "pfd", config),
               TOWERLESS: stage_model(schema, stage, "pfd", config, teacher_widths=(4,))}
    timers = {name: loop_timer(step_fn(model), batches, config.steps, CLOCKS[config.clock])
              for name, model in models_.items()}
    seconds = paired(timers, config.repeats)
    ratio = median_ratio(seconds, "pfd", "baseline")
    towerless = median_ratio(seconds, TOWERLESS, "baseline")
    student = statistics.median(seconds["baseline"])
    print(f"  {stage:<9s} student {1000 * student:6.2f} ms/step, PFD "
          f"{1000 * statistics.median(seconds['pfd']):6.2f} ms/step: {ratio:.3f}x "
          f"({100 * (ratio - 1):+.1f}%); teacher towers cut to width 4: {towerless:.3f}x "
          f"({100 * (towerless - 1):+.1f}%)")


def main() -> None:
  config = command.config_from_flags(ThroughputConfig)
  if config.clock not in CLOCKS:
    raise command.UserError(f"--clock={config.clock}: expected one of {sorted(CLOCKS)}")
  tf.config.experimental.enable_op_determinism()
  world = world_of(config)
  columns = model_columns(world.schema, "fine_ctr", "click")
  arrays = world.log_arrays(list(config.days), columns)
  print(f"world {config.world_dir}: days {list(config.days)}, {len(arrays['click']):,} "
        f"impressions; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
        f"{config.clock} clock")
  fine_ctr_throughput(world.schema, arrays, config)
  del arrays
  pfd_ratios(world, config)
  print(f"\nload average {os.getloadavg()[0]:.2f} at the end (other processes share the CPUs; "
        "ratios are paired within rounds)")


def run() -> None:
  command.define_config_flags(ThroughputConfig)
  command.start(command.run_command(main, "benchmarks.train_throughput"))


if __name__ == "__main__":
  run()

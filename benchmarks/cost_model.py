r"""A cost model of the funnel at Taobao scale, from per-unit costs measured on our own models.

    python -m benchmarks.cost_model --world_dir=/tmp/worlds/small --output=cost.json

Every stage's serving model and teacher is built the way its stage command builds it (the
stage's `StageTask` and config, `stages.teachers`), on a world (generated from --preset into a
temp dir when --world_dir holds none). Then, per model (retrieval, coarse student, coarse pfd
teacher, fine CTR, fine CVR student, fine CVR pfd teacher):
  * counted from the model: its embedding tables (rows x dim from the variables), the dense
    FLOPs per scored candidate (2 * in * out per Dense kernel, plus the mean pooling of the
    behaviour sequences at the world's mean history length) and the bytes of embedding rows
    gathered per candidate (rows x dim x 4), split into what a request pays once and what each
    candidate pays;
  * timed (CPU seconds of the process, all threads; medians of --repeats rounds in rotating
    order): each student's serving path as the replay calls it (the exported retrieval index,
    the coarse user-vector signature plus dot products with the precomputed item vectors, the
    fine `candidates` signature) at two candidate counts, whose difference gives the cost per
    candidate; every head's forward pass on a flat batch; and the training step of the student
    alone against simultaneous PFD (`benchmarks.train_throughput`'s timing).
Then it extrapolates those per-unit figures linearly to --users, --items, --requests_per_second
and the funnel --retrieved -> --coarse_kept -> --page, each figure marked `measured` (on this
machine and world) or `extrapolated`, with its formula. Prints Markdown tables; --output also
writes them as JSON. Figures, not assertions.
"""

import dataclasses
import functools
import math
import os
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import models  # Sets TF_USE_LEGACY_KERAS before TensorFlow loads.

# isort: split
import numpy as np
import tensorflow as tf

from benchmarks import train_throughput as throughput
from benchmarks.cost_counting import ADAM_SLOTS
from benchmarks.cost_counting import EXTRAPOLATED
from benchmarks.cost_counting import FLOAT_BYTES
from benchmarks.cost_counting import MEASURED
from benchmarks.cost_counting import SCALES_WITH
from benchmarks.cost_counting import HeadCost
from benchmarks.cost_counting import Table
from benchmarks.cost_counting import embedding_tables
from benchmarks.cost_counting import figure
from benchmarks.cost_counting import head_cost
from benchmarks.cost_counting import scaled_rows
from benchmarks.cost_counting import table_bytes
from benchmarks.cost_counting import world_counts
import data
from data import generate
from data.plumbing import command
from data.plumbing import files
from stages import catalogue
from stages import config as config_lib
from stages import distribute as distribute_lib
from stages import driver
from stages import retrieval
from stages import serving
from stages import training


@dataclasses.dataclass
class CostConfig:
  """The world to measure on, how long to measure, and the scale to extrapolate to."""
  world_dir: str = dataclasses.field(default="", metadata={
      "help": "World to measure on; empty: generate --preset into a temp dir."})
  preset: str = dataclasses.field(default="small", metadata={
      "help": "Preset generated when --world_dir is empty or holds no world."})
  days: Sequence[int] = dataclasses.field(default=(1,), metadata={
      "help": "Training days whose rows the models are built and timed on."})
  output: str = dataclasses.field(default="", metadata={"help": "Write the figures as JSON."})
  users: int = dataclasses.field(default=10 ** 8, metadata={"help": "Users at scale."})
  items: int = dataclasses.field(default=10 ** 7, metadata={"help": "Items at scale."})
  requests_per_second: int = dataclasses.field(default=10 ** 5, metadata={
      "help": "Requests per second at scale."})
  retrieved: int = dataclasses.field(default=10 ** 5, metadata={
      "help": "Candidates retrieval returns (the coarse ranker scores them)."})
  coarse_kept: int = dataclasses.field(default=10 ** 3, metadata={
      "help": "Candidates the coarse ranker keeps (the fine rankers score them)."})
  page: int = dataclasses.field(default=10 ** 2, metadata={
      "help": "Candidates the fine rankers keep."})
  impressions_per_request: int = dataclasses.field(default=0, metadata={
      "help": "Logged impressions per request at scale (training rows); 0: the world's page."})
  ann_fraction: float = dataclasses.field(default=0.01, metadata={
      "help": "Share of the corpus an ANN index scores per query (an assumption, not measured)."})
  ps_memory_gb: float = dataclasses.field(default=64.0, metadata={
      "help": "Memory of one parameter server for embedding tables and their slots, GB."})
  requests: int = dataclasses.field(default=32, metadata={"help": "Requests per timed call."})
  coarse_candidates: Sequence[int] = dataclasses.field(default=(1000, 10000), metadata={
      "help": "Two candidate counts per request for the coarse scorer; the difference of their "
      "costs gives the per-candidate cost, the rest is per request."})
  fine_candidates: Sequence[int] = dataclasses.field(default=(100, 1000), metadata={
      "help": "The same for the fine rankers."})
  forward_rows: int = dataclasses.field(default=1024, metadata={
      "help": "Rows of the flat forward-pass batches."})
  train_steps: int = dataclasses.field(default=20, metadata={
      "help": "Timed training steps per model and round."})
  repeats: int = dataclasses.field(default=5, metadata={"help": "Rounds of every timing."})
  seed: int = dataclasses.field(default=0, metadata={"help": "Seed of models and batches."})


# ----------------------------------------------------------------------------- the models


@dataclasses.dataclass
class StageBuild:
  """One stage's task (config, world rows) and the model its command would train."""
  name: str
  task: driver.StageTask
  inputs: driver.Inputs
  model: Any
  label: str

  @property
  def stage(self) -> str:
    return self.task.config.stage


CLOCK = throughput.CLOCKS["cpu"]  # CPU seconds of every thread: steadier on a shared machine
BUILDS: Tuple[Tuple[str, catalogue.Stage, str], ...] = (  # what each stage command would run
    ("retrieval", catalogue.RETRIEVAL, "baseline"),
    ("coarse baseline", catalogue.COARSE, "baseline"),
    ("coarse pfd", catalogue.COARSE, "pfd"),
    ("fine CTR", catalogue.FINE_CTR, "baseline"),
    ("fine CVR baseline", catalogue.FINE_CVR, "baseline"),
    ("fine CVR pfd", catalogue.FINE_CVR, "pfd"),
)
# (row name, build, head): the six models of the report.
HEADS = (("retrieval", "retrieval", "scorer"),
         ("coarse student", "coarse pfd", "student"),
         ("coarse teacher (pfd)", "coarse pfd", "teacher"),
         ("fine CTR", "fine CTR", "student"),
         ("fine CVR student", "fine CVR pfd", "student"),
         ("fine CVR teacher (pfd)", "fine CVR pfd", "teacher"))
SERVED = {"retrieval": "retrieval", "coarse student": "coarse", "fine CTR": "fine",
          "fine CVR student": "fine"}


def build_stage(world, base: config_lib.TrainConfig, name: str, stage: catalogue.Stage,
                variant: str) -> StageBuild:
  """The stage's resolved config, its task, its training rows and its built model."""
  task_class = stage.task_class()
  config = driver.resolve(stage.make_config(base, variant=variant), world)
  task = task_class(world, config, task_class.output_dir(config))
  inputs = task.build_inputs()
  training.seed_everything(config.seed)
  model = task.build_model(inputs)
  distribute_lib.build_variables(model, inputs.train)
  model.compile(optimizer=training.make_optimizer(config))
  return StageBuild(name, task, inputs, model, task.label)


def build_all(world, config: CostConfig, model_dir: str) -> Dict[str, StageBuild]:
  base = config_lib.TrainConfig(world_dir=config.world_dir, model_dir=model_dir,
                                train_days=tuple(config.days), seed=config.seed,
                                validation_fraction=0.0)
  return {name: build_stage(world, base, name, stage, variant)
          for name, stage, variant in BUILDS}


def head_of(builds: Dict[str, StageBuild], build: str, attribute: str):
  return getattr(builds[build].model, attribute)


def mean_history(world) -> float:
  """Valid entries per behaviour sequence, averaged over every request of the world (the
  first days' histories are short: the world starts with none)."""
  return float(np.mean(world.request_arrays(list(world.days), ["hist_len"])["hist_len"]))


# ----------------------------------------------------------------------------- timing


def call_timer(fn: Callable[[], Any]) -> Callable[[], float]:
  """A timer of one call of `fn` (after an untimed warm-up call), in CPU seconds (CLOCK)."""
  fn()

  def run() -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start

  return run


def medians(timers: Dict[str, Callable[[], float]], repeats: int) -> Dict[str, float]:
  return {name: statistics.median(s) for name, s in throughput.paired(timers, repeats).items()}


def serving_timers(world, builds: Dict[str, StageBuild], config: CostConfig
                   ) -> Dict[str, Callable[[], float]]:
  """Each student exported as its stage exports it and called as the replay calls it, for
  --requests requests at each of the two --coarse_candidates / --fine_candidates counts."""
  day = builds["fine CTR"].task.config.eval_day
  assert day is not None  # resolved by the driver
  request_ids = world.request_arrays([day], ["request_id"])["request_id"][:config.requests]
  queries = serving.request_rows(world, [day], request_ids)
  index = export_retrieval(world, builds["retrieval"])
  coarse_scorer = serving.CoarseScorer(export_stage(builds["coarse pfd"]))
  served_fine = (("fine CTR", "fine CTR"), ("fine CVR student", "fine CVR pfd"))
  fine_models = {name: models.load_serving(export_stage(builds[build]))
                 for name, build in served_fine}
  k = min(1000, index.k)
  timers = {"retrieval": call_timer(lambda: index.top_items(queries, k=k))}
  rng = np.random.default_rng(config.seed)  # candidates drawn with replacement
  for m in config.coarse_candidates:
    items = rng.integers(0, len(world.items), (len(request_ids), m))
    timers[f"coarse student@{m}"] = call_timer(functools.partial(coarse_scorer.score, queries,
                                                                 items))
  for m in config.fine_candidates:
    features = world.features.compute(
        request_ids, rng.integers(0, len(world.items), (len(request_ids), m)))
    for name, model in fine_models.items():
      timers[f"{name}@{m}"] = call_timer(functools.partial(model.predict_candidates, features))
  return timers


def export_stage(build: StageBuild) -> str:
  """The stage's own export of the (untrained) model; the path of its SavedModel."""
  build.task.export(build.model, {})
  return os.path.join(build.task.out_dir, "saved_model")


def export_retrieval(world, build: StageBuild) -> serving.RetrievalIndex:
  """The retrieval export (a TFRS BruteForce index over the corpus), loaded for serving."""
  task: Any = build.task  # a retrieval.RetrievalTask
  task.index = retrieval.build_index(world, build.model, min(task.config.export_k,
                                                              len(world.items)))
  task.export(build.model, {})
  return serving.RetrievalIndex(os.path.join(task.out_dir, "saved_model"))


def serving_costs(timed: Dict[str, float], n_requests: int, n_items: int,
                  config: CostConfig) -> Dict[str, Dict[str, float]]:
  """CPU seconds per request and per candidate of each served model. Retrieval scores the
  whole corpus, so its cost per scored item is the call's over requests x items; the others'
  per-candidate cost is the slope between their two candidate counts, the rest per request."""
  costs = {"retrieval": {"request": 0.0, "candidate": timed["retrieval"] / n_requests / n_items}}
  for name, counts in (("coarse student", config.coarse_candidates),
                       ("fine CTR", config.fine_candidates),
                       ("fine CVR student", config.fine_candidates)):
    low, high = sorted(counts)
    slope = (timed[f"{name}@{high}"] - timed[f"{name}@{low}"]) / n_requests / (high - low)
    costs[name] = {"candidate": slope,
                   "request": max(0.0, timed[f"{name}@{low}"] / n_requests - low * slope)}
  return costs


def training_batches(schema, build: StageBuild, config: CostConfig, batch_size: int):
  """Cached batches of the build's training rows (batches are whole: at most every row)."""
  batch_size = min(batch_size, len(build.inputs.train[build.label]))
  settings = throughput.ThroughputConfig(batch_size=batch_size, seed=config.seed)
  columns = throughput.model_columns(schema, build.stage, build.label)
  return throughput.cached_batches(schema, build.inputs.train, columns, settings)


def forward_seconds(schema, builds: Dict[str, StageBuild], config: CostConfig
                    ) -> Dict[str, float]:
  """CPU seconds per row of each head's forward pass on flat batches of --forward_rows."""
  timers, rows = {}, {}
  for name, build, attribute in HEADS:
    head = head_of(builds, build, attribute)
    batches = training_batches(schema, builds[build], config, config.forward_rows)
    rows[name] = int(batches[0][builds[build].label].shape[0])
    forward = tf.function(lambda batch, head=head: head(batch, training=False))
    timers[name] = throughput.loop_timer(forward, batches, config.train_steps, CLOCK)
  return {name: s / rows[name] for name, s in medians(timers, config.repeats).items()}


def training_seconds(schema, builds: Dict[str, StageBuild], config: CostConfig
                     ) -> Dict[str, Dict[str, float]]:
  """CPU seconds per training step and per example of every build, at its stage's batch."""
  timers, batch_sizes = {}, {}
  for name, build in builds.items():
    batches = training_batches(schema, build, config, build.task.config.batch_size)
    batch_sizes[name] = int(batches[0][build.label].shape[0])
    timers[name] = throughput.loop_timer(throughput.step_fn(build.model), batches,
                                         config.train_steps, CLOCK)
  seconds = throughput.paired(timers, config.repeats)
  result = {name: {"step": statistics.median(s), "batch": batch_sizes[name],
                   "example": statistics.median(s) / batch_sizes[name]}
            for name, s in seconds.items()}
  for stage in ("coarse", "fine CVR"):
    result[f"{stage} pfd"]["ratio"] = throughput.median_ratio(seconds, f"{stage} pfd",
                                                              f"{stage} baseline")
  return result


# ----------------------------------------------------------------------------- the report


def memory_rows(builds, costs, world_sizes, target) -> List[Dict[str, Any]]:
  """Embedding tables per model at our world and at scale (serving: float32 rows; training:
  plus Adam's two slots), and the precomputed item vectors of the two-tower stages."""
  rows = []
  pairs = {"coarse teacher (pfd)": "coarse pfd", "fine CVR teacher (pfd)": "fine CVR pfd"}
  for name, build, attribute in HEADS:
    tables = embedding_tables(head_of(builds, build, attribute))
    trained = (embedding_tables(builds[pairs[name]].model.student,
                                builds[pairs[name]].model.teacher)
               if name in pairs else tables)
    vectors = target["items"] * costs[name].vector_dim * FLOAT_BYTES if name in SERVED else 0
    rows.append({
        "model": name,
        "tables": [dataclasses.asdict(t) for t in tables],
        "world_bytes": figure(sum(t.bytes for t in tables), MEASURED, "sum rows x dim x 4", "B"),
        "serving_bytes": figure(table_bytes(tables, world_sizes, target), EXTRAPOLATED,
                                "sum rows x (N_scale / N_world) x dim x 4", "B"),
        "training_bytes": figure(table_bytes(trained, world_sizes, target, ADAM_SLOTS),
                                 EXTRAPOLATED, "x 3 (weights, Adam m, v); a teacher row: the "
                                 "student's and teacher's tables, shared ones once", "B"),
        "item_vectors_bytes": figure(vectors, EXTRAPOLATED, "items x d x 4", "B"),
    })
  return rows


def table_rows(builds, world_sizes, target) -> List[Dict[str, Any]]:
  """Every table of the four training runs by group, at our world and at scale."""
  heads = [builds["retrieval"].model.scorer]
  heads += [getattr(builds[b].model, h) for b in ("coarse pfd", "fine CTR", "fine CVR pfd")
            for h in ("student", "teacher") if getattr(builds[b].model, h, None) is not None]
  seen: Dict[tuple, int] = {}
  for table in embedding_tables(*heads):
    seen[(table.group, table.rows, table.dim)] = seen.get((table.group, table.rows, table.dim),
                                                          0) + 1
  rows = []
  for (group, n, dim), copies in sorted(seen.items(), key=lambda kv: -kv[0][1]):
    table = Table(group, n, dim)
    rows.append({"table": group, "copies": copies,
                 "rows_world": figure(n, MEASURED, "from the variable", ""),
                 "dim": dim,
                 "rows_at_scale": figure(scaled_rows(table, world_sizes, target), EXTRAPOLATED,
                                         f"x {SCALES_WITH.get(group, 'fixed')}", ""),
                 "bytes_at_scale": figure(table_bytes([table], world_sizes, target),
                                          EXTRAPOLATED, "rows x dim x 4", "B"),
                 "with_adam_at_scale": figure(table_bytes([table], world_sizes, target,
                                                          ADAM_SLOTS), EXTRAPOLATED,
                                              "x 3", "B")})
  return rows


def serving_rows(costs: Dict[str, HeadCost], timed: Dict[str, Dict[str, float]],
                 config: CostConfig) -> List[Dict[str, Any]]:
  """Per request at scale, per served stage: candidates, FLOPs, bytes, CPU, cores."""
  stages = [("retrieval, brute force", "retrieval", config.items),
            ("retrieval, ANN (assumed share)", "retrieval", config.items * config.ann_fraction),
            ("coarse student", "coarse student", config.retrieved),
            ("fine CTR", "fine CTR", config.coarse_kept),
            ("fine CVR student", "fine CVR student", config.coarse_kept)]
  rows = []
  for label, name, n in stages:
    cost, cpu = costs[name], timed[name]
    seconds = cpu["request"] + n * cpu["candidate"]
    rows.append({
        "stage": label, "candidates": figure(n, EXTRAPOLATED, "funnel flags", ""),
        "flops_per_candidate": figure(cost.candidate_flops, MEASURED, "counted", "FLOP"),
        "flops_per_request": figure(cost.request_flops + n * cost.candidate_flops, EXTRAPOLATED,
                                    "request + n x candidate", "FLOP"),
        "bytes_per_candidate": figure(cost.candidate_bytes, MEASURED, "counted", "B"),
        "bytes_per_request": figure(cost.request_bytes + n * cost.candidate_bytes, EXTRAPOLATED,
                                    "request + n x candidate", "B"),
        "cpu_per_candidate": figure(cpu["candidate"], MEASURED, "timed", "s"),
        "cpu_per_request": figure(seconds, EXTRAPOLATED, "request + n x candidate", "s"),
        "cores": figure(seconds * config.requests_per_second, EXTRAPOLATED,
                        "CPU s per request x requests/s", "cores")})
  return rows


def training_rows(trained: Dict[str, Dict[str, float]], world, config: CostConfig
                  ) -> List[Dict[str, Any]]:
  """CPU per training example (measured) and the cores that keep up with the log stream at
  scale (extrapolated): impressions for retrieval's clicks, coarse and fine CTR; clicks for CVR."""
  impressions = config.requests_per_second * (config.impressions_per_request
                                              or world.config.page_size)
  click_rate = float(np.mean(world.log_arrays(list(config.days), ["click"])["click"]))
  rows = []
  for name, t in trained.items():
    per_second = impressions * (click_rate if "CVR" in name or name == "retrieval" else 1.0)
    rows.append({"model": name, "batch": int(t["batch"]),
                 "cpu_per_step": figure(t["step"], MEASURED, "timed", "s"),
                 "cpu_per_example": figure(t["example"], MEASURED, "step / batch", "s"),
                 "pfd_over_student": figure(t.get("ratio", float("nan")), MEASURED,
                                            "median of paired rounds", "x"),
                 "examples_per_second": figure(per_second, EXTRAPOLATED,
                                               "requests/s x impressions (x CTR)", "1/s"),
                 "cores": figure(per_second * t["example"], EXTRAPOLATED,
                                 "examples/s x CPU s per example", "cores")})
  return rows


def cluster_rows(memory: List[Dict[str, Any]], config: CostConfig) -> Dict[str, Any]:
  """Parameter servers for the tables of the training runs (one per stage, PFD where it has a
  teacher), at --ps_memory_gb each."""
  runs = ("retrieval", "coarse teacher (pfd)", "fine CTR", "fine CVR teacher (pfd)")
  by_model = {row["model"]: row for row in memory}
  total = sum(by_model[name]["training_bytes"]["value"] for name in runs)
  return {"training_table_bytes": figure(total, EXTRAPOLATED, "sum over the four training runs",
                                         "B"),
          "parameter_servers": figure(math.ceil(total / (config.ps_memory_gb * 1e9)),
                                      EXTRAPOLATED, f"ceil(bytes / {config.ps_memory_gb:g} GB)",
                                      "")}


def human(value: float, unit: str) -> str:
  if unit == "B":
    for scale, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
      if abs(value) >= scale:
        return f"{value / scale:.3g} {name}"
    return f"{value:.3g} B"
  if unit == "s":
    return f"{value * 1e6:.3g} µs"
  if unit == "FLOP":
    return f"{value:.3g}"
  return f"{value:,.3g}" if unit else f"{value:,.0f}"


def cell(f: Dict[str, Any]) -> str:
  if math.isnan(f["value"]):
    return "-"
  mark = "" if f["kind"] == MEASURED else " *"
  return human(f["value"], f["unit"]) + mark


def markdown(title: str, rows: List[Dict[str, Any]], columns: Sequence[str]) -> str:
  lines = [f"\n{title}", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for row in rows:
    lines.append("| " + " | ".join(cell(row[c]) if isinstance(row[c], dict) else str(row[c])
                                   for c in columns) + " |")
  return "\n".join(lines)


def count_rows(costs: Dict[str, HeadCost], forward: Dict[str, float]) -> List[Dict[str, Any]]:
  rows = []
  for name, cost in costs.items():
    rows.append({"model": name,
                 "flops_per_request": figure(cost.request_flops, MEASURED, "counted", "FLOP"),
                 "flops_per_candidate": figure(cost.candidate_flops, MEASURED, "counted", "FLOP"),
                 "flops_per_example": figure(cost.example_flops, MEASURED, "counted", "FLOP"),
                 "bytes_per_request": figure(cost.request_bytes, MEASURED, "counted", "B"),
                 "bytes_per_candidate": figure(cost.candidate_bytes, MEASURED, "counted", "B"),
                 "item_tower_flops": figure(cost.item_flops, MEASURED, "counted", "FLOP"),
                 "forward_cpu_per_row": figure(forward[name], MEASURED, "timed", "s")})
  return rows


def report(world, config: CostConfig, builds, history: float) -> Dict[str, Any]:
  schema = world.schema
  sizes = world_counts(world.config)
  target = {"users": config.users, "items": config.items}
  costs = {name: head_cost(head_of(builds, build, attribute), history)
           for name, build, attribute in HEADS}
  load = os.getloadavg()[0]
  timed = serving_costs(medians(serving_timers(world, builds, config), config.repeats),
                        config.requests, len(world.items), config)
  forward = forward_seconds(schema, builds, config)
  trained = training_seconds(schema, builds, config)
  memory = memory_rows(builds, costs, sizes, target)
  result = {
      "world": {"dir": config.world_dir, **sizes, "mean_history": history,
                "page_size": world.config.page_size},
      "scale": dataclasses.asdict(config),
      "load_average": {"start": load, "end": os.getloadavg()[0], "cpus": os.cpu_count()},
      "counts": count_rows(costs, forward), "memory": memory,
      "tables": table_rows(builds, sizes, target),
      "serving": serving_rows(costs, timed, config),
      "training": training_rows(trained, world, config),
      "cluster": cluster_rows(memory, config)}
  return result


def print_report(result: Dict[str, Any]) -> None:
  w = result["world"]
  print(f"world {w['dir']}: {w['users']:,} users, {w['items']:,} items, mean history "
        f"{w['mean_history']:.2f} valid entries; load average {result['load_average']['start']:.2f}"
        f" -> {result['load_average']['end']:.2f} on {result['load_average']['cpus']} CPUs; "
        "CPU seconds of the process; * = extrapolated")
  print(markdown("Per model, counted and timed on this world", result["counts"],
                 ("model", "flops_per_request", "flops_per_candidate", "flops_per_example",
                  "bytes_per_request", "bytes_per_candidate", "item_tower_flops",
                  "forward_cpu_per_row")))
  print(markdown("Embedding tables", result["memory"],
                 ("model", "world_bytes", "serving_bytes", "training_bytes",
                  "item_vectors_bytes")))
  print(markdown("Tables (copies: distinct variables of that group across the training runs)",
                 result["tables"], ("table", "copies", "rows_world", "dim", "rows_at_scale",
                                    "bytes_at_scale", "with_adam_at_scale")))
  print(markdown("Serving at scale, per request", result["serving"],
                 ("stage", "candidates", "flops_per_candidate", "flops_per_request",
                  "bytes_per_candidate", "bytes_per_request", "cpu_per_candidate",
                  "cpu_per_request", "cores")))
  print(markdown("Training", result["training"],
                 ("model", "batch", "cpu_per_step", "cpu_per_example", "pfd_over_student",
                  "examples_per_second", "cores")))
  c = result["cluster"]
  print(f"\nparameter servers: {cell(c['parameter_servers'])} for "
        f"{cell(c['training_table_bytes'])} of tables and Adam slots "
        f"({c['parameter_servers']['formula']})")


def world_of(config: CostConfig):
  """The world at --world_dir, or --preset generated into it (into a temp dir if unset)."""
  if not config.world_dir:
    config.world_dir = os.path.join(tempfile.mkdtemp(prefix="pfd-cost-"), "world")
  if not os.path.exists(os.path.join(config.world_dir, "manifest.json")):
    print(f"no world at {config.world_dir}: generating the {config.preset!r} preset")
    generate.generate(config.world_dir, data.preset(config.preset, seed=config.seed))
  return data.open_world(config.world_dir)


def measure(config: CostConfig, model_dir: Optional[str] = None) -> Dict[str, Any]:
  """Builds every stage on the world, times it and extrapolates; the report as a dict."""
  tf.config.experimental.enable_op_determinism()
  world = world_of(config)
  with tempfile.TemporaryDirectory(prefix="pfd-cost-models-") as scratch:
    builds = build_all(world, config, model_dir or scratch)
    return report(world, config, builds, mean_history(world))


def main() -> None:
  config = command.config_from_flags(CostConfig)
  for name in ("coarse_candidates", "fine_candidates"):
    if len(set(getattr(config, name))) != 2 or len(getattr(config, name)) != 2:
      raise command.UserError(f"--{name}: give two different counts, e.g. 100,1000")
  started = time.perf_counter()
  result = measure(config)
  print_report(result)
  print(f"\n{time.perf_counter() - started:.0f} s")
  if config.output:
    files.write_json(config.output, result, indent=1)


def run() -> None:
  command.define_config_flags(CostConfig)
  command.start(command.run_command(main, "benchmarks.cost_model"))


if __name__ == "__main__":
  run()

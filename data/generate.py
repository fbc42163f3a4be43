r"""Generates a simulated world: python -m data.generate --world_dir=DIR --preset=small --seed=0

Every WorldConfig field has a flag that overrides the preset (e.g. --n_days=10
--post_click_noise=2); --flagfile works. The world is written as described in data/world/io.py;
the manifest is written last, so a killed run never leaves something that loads as a world.

If DIR already holds a world with the same config, the command does nothing. A DIR holding a
different world, or anything that is not (part of) a world, is refused unless --overwrite,
which deletes the world's own entries (manifest, entity tables, truth/, logs/, requests/,
_shards/) and leaves other files alone.

Sharded generation. With --n_user_shards=S users are split into S contiguous id ranges, each
simulated with its own random streams (items and users come from the global seed), so shards
can run in parallel processes:

  for i in 0 1 2 3; do
    python -m data.generate --world_dir=DIR --preset=medium --n_user_shards=4 --shard=$i &
  done; wait
  python -m data.generate --world_dir=DIR --preset=medium --n_user_shards=4   # --shard=-1

Each `--shard=i` run writes only shard i's part files, under DIR/_shards/shard=i/, and a
shard.json last. The final `--shard=-1` run (the default) generates any shard that is still
missing in-process, then links the parts into DIR/{logs,requests,truth/requests}/day=NN/
(each day directory assembled under a temporary name and renamed when complete), hashes every
file and writes manifest.json. Request ids encode the shard in their high bits
(simulation.request_ids), so they are globally unique and do not depend on how shards were run.
Use the same flags for every shard run and the final run; do not pass --overwrite to
parallel shard runs.

With --runner=ray (data.plumbing.engine) the final run makes each missing shard a Ray task instead,
on this machine's cores or a cluster's (DIR on storage every node mounts), then merges them
here: the world is byte-identical to one generated in a single process.
"""

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional, cast

from absl import flags
from absl import logging
import numpy as np

from data.plumbing import command
from data.plumbing import engine as engine_lib
from data.plumbing import files
from data.plumbing import progress
from data.world import io
from data.world import schema as S
from data.world import simulation
from data.world.config import PRESETS
from data.world.config import WorldConfig
from data.world.config import preset

SHARDS_DIR = "_shards"
SHARD_MANIFEST = "shard.json"
DAY_KINDS = ("logs", "requests", "truth/requests")
WORLD_ENTRIES = (io.MANIFEST, "users.parquet", "items.parquet", "truth", "logs", "requests",
                 SHARDS_DIR)

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags: where, --preset, --shard, --overwrite, and one override per
  WorldConfig field (--seed included; default: the preset's)."""
  flags.DEFINE_string("world_dir", None, "The world's directory.")
  flags.DEFINE_enum("preset", "small", sorted(PRESETS), "Starting configuration.")
  flags.DEFINE_integer("shard", -1, "Generate only this user shard's part files; -1 = every "
                       "missing shard in-process, then merge and write the manifest.")
  flags.DEFINE_bool("overwrite", False, "Replace a world with another config, or generate into "
                    "a directory that holds other files, instead of refusing.")
  for field in dataclasses.fields(WorldConfig):
    define = flags.DEFINE_integer if field.type in (int, "int") else flags.DEFINE_float
    define(field.name, None, f"Override the preset's {field.name} (WorldConfig).")


def config_from_flags() -> WorldConfig:
  """The preset with every WorldConfig flag that was given applied, validated."""
  overrides = {f.name: FLAGS[f.name].value for f in dataclasses.fields(WorldConfig)
               if FLAGS[f.name].value is not None}
  return preset(FLAGS.preset, **overrides)


def generate(world_dir: str, config: WorldConfig, shard: int = -1, overwrite: bool = False,
             engine: Optional[engine_lib.Engine] = None) -> Optional[Dict[str, Any]]:
  """Generates `config` into `world_dir`; returns the manifest (None for a single shard).
  `engine` runs the missing shards (default: one after another in this process); the merge
  and the manifest are always this process's."""
  config.validate()
  if not -1 <= shard < config.n_user_shards:
    raise ValueError(f"--shard must be -1 or in [0, {config.n_user_shards}), got {shard}")
  existing = _prepare_dir(world_dir, config, overwrite)
  if existing is not None:
    logging.info("%s already holds this world (world_hash %s); nothing to do", world_dir,
                 existing["world_hash"])
    return existing
  entities = simulation.make_entities(config)
  missing = []
  for s in ([shard] if shard >= 0 else range(config.n_user_shards)):
    if _shard_done(world_dir, config, s):
      logging.info("shard %d already generated; reusing it", s)
    else:
      missing.append(s)
  (engine or engine_lib.Engine()).map(generate_shard, missing, label=lambda s: f"shard {s}",
                                      common=(world_dir, config, entities))
  if shard >= 0:
    return None
  return finalize(world_dir, config, entities)


def _prepare_dir(world_dir: str, config: WorldConfig, overwrite: bool) -> Optional[Dict[str, Any]]:
  """Refuses a directory that is not ours; returns the manifest if the world is already there."""
  manifest_path = os.path.join(world_dir, io.MANIFEST)
  if os.path.isfile(manifest_path) and not overwrite:
    manifest = files.read_json(manifest_path)
    if _same_config(manifest.get("config"), config):
      _check_existing(world_dir, manifest)
      # A run killed between the manifest and the cleanup leaves the shards' parts behind.
      files.remove_tree(os.path.join(world_dir, SHARDS_DIR))
      return cast(Dict[str, Any], manifest)
    raise FileExistsError(f"{world_dir} holds a world with a different config; pass "
                          "--overwrite to replace it")
  if os.path.isdir(world_dir):
    foreign = sorted(set(os.listdir(world_dir)) - set(WORLD_ENTRIES))
    if foreign and not overwrite:
      raise FileExistsError(f"{world_dir} exists and is not a world (contains {foreign[:5]}); "
                            "pass --overwrite to generate into it anyway")
    if overwrite:
      for entry in WORLD_ENTRIES:  # the manifest first: from then on it is not a world
        files.remove_tree(os.path.join(world_dir, entry))
  elif os.path.exists(world_dir):
    raise FileExistsError(f"--world_dir={world_dir} exists and is not a directory")
  os.makedirs(world_dir, exist_ok=True)
  return None


def _check_existing(world_dir: str, manifest: Dict[str, Any]) -> None:
  """The cheap load check of a world already there (sizes, entity hashes, world_hash)."""
  try:
    io.verify_files(world_dir, manifest, hashes=False)
  except (ValueError, FileNotFoundError) as error:
    raise ValueError(f"{world_dir} holds this world's manifest but its files are damaged: "
                     f"{error}; pass --overwrite to regenerate it") from None


def _shard_dir(world_dir: str, shard: int) -> str:
  return os.path.join(world_dir, SHARDS_DIR, f"shard={shard:05d}")


def _shard_done(world_dir: str, config: WorldConfig, shard: int) -> bool:
  """True if shard.json exists for this config and every file it lists is present."""
  path = os.path.join(_shard_dir(world_dir, shard), SHARD_MANIFEST)
  if not os.path.isfile(path):
    return False
  with open(path) as f:
    done = json.load(f)
  parts = [os.path.join(_shard_dir(world_dir, shard), p) for p in done["files"]]
  return _same_config(done["config"], config) and all(os.path.isfile(p) for p in parts)


def _same_config(recorded: Optional[Dict[str, Any]], config: WorldConfig) -> bool:
  """True if a manifest's config dict (of any format, knobs left out included) is `config`."""
  try:
    return recorded is not None and WorldConfig.from_dict(recorded) == config
  except (TypeError, ValueError):
    return False


def generate_shard(world_dir: str, config: WorldConfig, entities: simulation.Entities,
                   shard: int) -> Dict[str, Any]:
  """Simulates one user shard day by day into its staging directory; shard.json last."""
  staging = _shard_dir(world_dir, shard)
  files.remove_tree(staging)
  schema = S.build_schema(config)
  simulator = simulation.ShardSimulator(config, entities, simulation.ItemSampler(entities), shard)
  row_counts, parts = {}, []
  line = progress.Line("generate")
  try:
    for day in range(1, config.n_days + 1):
      start = time.time()
      log = simulator.simulate_day(day)
      parts += _write_day(staging, schema, shard, day, log)
      row_counts[str(day)] = day_counts(log)
      line.update("shard %d day %d/%d: %d requests, %d impressions, %d clicks, %.1fs", shard,
                  day, config.n_days, row_counts[str(day)]["requests"],
                  row_counts[str(day)]["impressions"], row_counts[str(day)]["clicks"],
                  time.time() - start, force=day == config.n_days)
    done = {"config": config.to_dict(), "shard": shard, "row_counts": row_counts,
            "files": parts}
    files.write_json(os.path.join(staging, SHARD_MANIFEST), done, indent=1)
    line.done("shard %d: %d days simulated", shard, config.n_days)
  except BaseException:
    files.remove_tree(staging)  # a crashed shard leaves nothing (a SIGKILL leaves staging only)
    raise
  return done


def day_counts(log: simulation.DayLog) -> Dict[str, int]:
  imp = log.impressions
  return {"requests": int(len(log.requests[S.REQUEST_ID])),
          "impressions": int(len(imp[S.REQUEST_ID])),
          "clicks": int(imp[S.CLICK].sum()), "conversions": int(imp[S.CONVERSION].sum())}


def _write_day(staging: str, schema: S.Schema, shard: int, day: int,
               log: simulation.DayLog) -> List[str]:
  """Writes one day of one shard (logs, requests, truth/requests); returns relative paths."""
  tables = {"logs": io.to_table(log.impressions, io.log_columns(schema)),
            "requests": io.to_table(log.requests, io.REQUEST_COLUMNS),
            "truth/requests": io.to_table(log.request_truth, io.REQUEST_TRUTH_COLUMNS)}
  written = []
  for kind, table in tables.items():
    relative = os.path.join(io.day_dir(kind, day), io.part_name(shard))
    io.write_table(table, os.path.join(staging, relative))
    written.append(relative)
  return written


def write_entities(world_dir: str, entities: simulation.Entities) -> None:
  """Observable entity tables and the hidden truth tables."""
  users, items = entities.users_table(), entities.items_table()
  io.write_table(io.to_table(users, io.USER_COLUMNS), os.path.join(world_dir, "users.parquet"))
  io.write_table(io.to_table(items, io.ITEM_COLUMNS), os.path.join(world_dir, "items.parquet"))
  hidden = {name: getattr(entities, name) for name in
            io.USER_TRUTH_COLUMNS[1:] + io.ITEM_TRUTH_COLUMNS[1:]}
  io.write_table(io.to_table({**users, **hidden}, io.USER_TRUTH_COLUMNS),
                 os.path.join(world_dir, "truth", "users.parquet"))
  io.write_table(io.to_table({**items, **hidden}, io.ITEM_TRUTH_COLUMNS),
                 os.path.join(world_dir, "truth", "items.parquet"))
  popularity = entities.category_popularity
  categories = {"category_id": np.arange(len(popularity), dtype=np.int64),
                "category_popularity": popularity}
  io.write_table(io.to_table(categories, io.CATEGORY_TRUTH_COLUMNS),
                 os.path.join(world_dir, "truth", "categories.parquet"))


def finalize(world_dir: str, config: WorldConfig, entities: simulation.Entities) -> Dict[str, Any]:
  """Merges the shards into day directories, hashes every file, writes the manifest last."""
  start = time.time()
  write_entities(world_dir, entities)
  shards = []
  for s in range(config.n_user_shards):
    with open(os.path.join(_shard_dir(world_dir, s), SHARD_MANIFEST)) as f:
      shards.append(json.load(f))
  days = list(range(1, config.n_days + 1))
  for kind in DAY_KINDS:
    _remove_stale_days(os.path.join(world_dir, kind), days)
    for day in days:
      _assemble_day(world_dir, kind, day, config.n_user_shards)
  row_counts = {str(d): {k: sum(s["row_counts"][str(d)][k] for s in shards)
                         for k in shards[0]["row_counts"][str(d)]} for d in days}
  hashes = {}
  for relative in _world_files(config):
    path = os.path.join(world_dir, relative)
    hashes[relative] = {"sha256": io.sha256_file(path), "bytes": os.path.getsize(path)}
  manifest = {"format_version": io.FORMAT_VERSION, "config": config.to_dict(),
              "seed": config.seed, "schema": S.build_schema(config).to_json(), "days": days,
              "row_counts": row_counts, "files": hashes,
              "world_hash": io.world_hash(config.to_dict(), hashes)}
  files.write_json(os.path.join(world_dir, io.MANIFEST), manifest, indent=1)
  files.remove_tree(os.path.join(world_dir, SHARDS_DIR))
  logging.info("merged %d shard(s) and wrote %s in %.1fs (world_hash %s)",
               config.n_user_shards, io.MANIFEST, time.time() - start, manifest["world_hash"])
  return manifest


def _world_files(config: WorldConfig) -> List[str]:
  names = ["users.parquet", "items.parquet", "truth/users.parquet", "truth/items.parquet",
           "truth/categories.parquet"]
  for kind in DAY_KINDS:
    for day in range(1, config.n_days + 1):
      names += [os.path.join(io.day_dir(kind, day), io.part_name(s))
                for s in range(config.n_user_shards)]
  return names


def _assemble_day(world_dir: str, kind: str, day: int, n_shards: int) -> None:
  """Links every shard's part into a temporary day directory, then renames it into place."""
  final = os.path.join(world_dir, io.day_dir(kind, day))
  tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.tmp")
  files.remove_tree(tmp)
  os.makedirs(tmp)
  for s in range(n_shards):
    source = os.path.join(_shard_dir(world_dir, s), io.day_dir(kind, day), io.part_name(s))
    target = os.path.join(tmp, io.part_name(s))
    try:
      os.link(source, target)
    except OSError:
      shutil.copyfile(source, target)
  files.replace_directory(tmp, final)


def _remove_stale_days(kind_dir: str, days: List[int]) -> None:
  """Removes day directories (and temporary ones) left by an earlier, different run."""
  if not os.path.isdir(kind_dir):
    return
  wanted = {os.path.basename(io.day_dir("", d)) for d in days}
  for entry in os.listdir(kind_dir):
    if entry.startswith(".") or (entry.startswith("day=") and entry not in wanted):
      files.remove_tree(os.path.join(kind_dir, entry))


def main() -> None:
  if not FLAGS.world_dir:
    raise command.UserError("--world_dir is required")
  config = config_from_flags()
  start = time.time()
  with engine_lib.Engine(command.config_from_flags(engine_lib.EngineConfig)) as engine:
    manifest = generate(FLAGS.world_dir, config, FLAGS.shard, FLAGS.overwrite, engine)
  if manifest is not None:
    total = sum(c["impressions"] for c in manifest["row_counts"].values())
    logging.info("world ready in %s: %d impressions, %.1fs", FLAGS.world_dir, total,
                 time.time() - start)


def run() -> None:
  """The command (also the pfd-generate console script): flags, then generate."""
  define_flags()
  command.define_config_flags(engine_lib.EngineConfig)
  command.start(command.run_command(main, "data.generate"))


if __name__ == "__main__":
  run()

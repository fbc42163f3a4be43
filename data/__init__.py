"""The simulated Taobao-style world: config, feature schema, generation, loading, oracle.

Plain numpy / pandas / pyarrow; nothing here imports TensorFlow.

  world = data.load(world_dir)        # a data.World: config, schema, users, items, logs,
                                      # log_arrays, requests, oracle, features
"""

from data.world.config import PRESETS, WorldConfig, preset
from data.world.io import World, load, open_world
from data.world.schema import Feature, Schema, build_schema

__all__ = ["PRESETS", "WorldConfig", "preset", "World", "load", "open_world", "Feature",
           "Schema", "build_schema"]

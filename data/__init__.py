"""The simulated Taobao-style world: config, feature schema, generation, loading, oracle.

Plain numpy / pandas / pyarrow; nothing here imports TensorFlow.
"""

from data.config import PRESETS, WorldConfig, preset
from data.schema import Feature, Schema, build_schema

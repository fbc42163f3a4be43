"""The worlds of the paper study: their names, their knobs, and where they live.

A study trains on several worlds: the main one, the noise sweep's and the regime map's, each
under several world seeds (seeds pair trials: world seed w, training seed s). A world is named
by the knobs that set it apart, "main" or "k=v,k=v" (WorldConfig fields; "noise" is short for
post_click_noise), so a trial's row says which world it read. The knobs every world of a kind
shares come from a `data.generate` flagfile (e.g. experiments/configs/world_taobao.cfg); the
study generates the worlds itself and reuses them when already there.
"""

import dataclasses
import os
from typing import Any, Dict, Iterable, Optional, Tuple

from data import generate
from data.plumbing import command
from data.world import config as world_config

MAIN = "main"
ALIASES = {"noise": "post_click_noise"}
_FIELDS = {f.name: f for f in dataclasses.fields(world_config.WorldConfig)}


def world_name(knobs: Iterable[Tuple[str, Any]]) -> str:
  """"k=v,k=v" in the given order, or "main" without knobs."""
  return ",".join(f"{k}={v}" for k, v in knobs) or MAIN


def name_knobs(name: str) -> Dict[str, str]:
  """The knobs a world's name sets ({} for main), aliases resolved."""
  if name == MAIN:
    return {}
  pairs = (part.split("=", 1) for part in name.split(","))
  return {ALIASES.get(k, k): v for k, v in pairs}


def world_key(name: str, world_seed: int) -> str:
  """The directory name of (world, world seed); world seed 0 keeps the bare name, so work
  dirs made before world seeds existed are reused."""
  return name if world_seed == 0 else f"{name}@seed{world_seed}"


def world_path(work_dir: str, name: str, world_seed: int = 0) -> str:
  return os.path.join(work_dir, "worlds", world_key(name, world_seed))


def read_flagfile(path: Optional[str]) -> Dict[str, str]:
  """The `--name=value` lines of a data.generate flagfile (comments and blanks skipped)."""
  if not path:
    return {}
  if not os.path.exists(path):
    raise command.UserError(f"world flagfile {path} does not exist")
  knobs = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      if not line.startswith("--") or "=" not in line:
        raise command.UserError(f"{path}: expected --name=value lines, got {line!r}")
      name, value = line[2:].split("=", 1)
      knobs[name] = value
  return knobs


def world_settings(preset: str, knobs: Dict[str, str], seed: int) -> world_config.WorldConfig:
  """The preset with `knobs` (strings, cast to each field's type) and the world seed."""
  base = world_config.PRESETS[preset]
  overrides: Dict[str, Any] = {"seed": seed}
  for name, value in knobs.items():
    if name not in _FIELDS or name == "seed":
      raise command.UserError(f"unknown world knob {name!r} (expected a WorldConfig field)")
    try:
      overrides[name] = type(getattr(base, name))(value)
    except ValueError:
      raise command.UserError(f"world knob {name}={value!r} is not a number") from None
  try:
    return world_config.preset(preset, **overrides)
  except ValueError as error:
    raise command.UserError(str(error)) from None


def ensure_world(preset: str, work_dir: str, name: str, world_seed: int,
                 base_knobs: Dict[str, str]) -> str:
  """Generates (or finds) the world `name` at `world_seed`: base knobs, then the name's."""
  path = world_path(work_dir, name, world_seed)
  knobs = {**base_knobs, **name_knobs(name)}
  generate.generate(path, world_settings(preset, knobs, world_seed))
  return path

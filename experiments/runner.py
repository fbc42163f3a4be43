"""Run a stage command in a fresh process, the way a user would, and return its metrics.

Drivers that train many models (the demo, the paper study) run each stage as its own
`python -m stages.<stage>` process: TensorFlow and tf.data keep memory across trainings in one
process (a 54-run study grew past 20 GB in-process), and a separate process per run also keeps
one run's failure from taking the study down with it.

A run the runner has already made is reused without starting a process: beside the stage's
metrics.json it leaves runner.json, the digest of the exact command line and world that made it.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

from data import files
from stages import coarse
from stages import common
from stages import fine
from stages import retrieval

MODULES = {"retrieval": "stages.retrieval", "fine_ctr": "stages.fine",
           "fine_cvr": "stages.fine", "coarse": "stages.coarse"}
# The stage-specific settings each command takes as flags (its DEFAULTS); others are dropped.
STAGE_SETTINGS = {"retrieval": set(retrieval.DEFAULTS), "fine_ctr": set(fine.DEFAULTS),
                  "fine_cvr": set(fine.DEFAULTS), "coarse": set(coarse.DEFAULTS)}
OUTPUT_STAGE = {"retrieval": "retrieval", "fine_ctr": "fine/ctr", "fine_cvr": "fine/cvr",
                "coarse": "coarse"}
_NOT_FLAGS = ("callbacks", "extra")
RECEIPT = "runner.json"


def _flag(name: str, value: Any) -> List[str]:
  if value is None:
    return []
  if isinstance(value, bool):
    return [f"--{name}" if value else f"--no{name}"]
  if isinstance(value, (list, tuple)):
    return [f"--{name}=" + ",".join(str(v) for v in value)]
  return [f"--{name}={value}"]


def command_line(stage: str, config: common.StageConfig) -> List[str]:
  """The `python -m stages.X ...` argv that trains `config` at `stage`."""
  argv = [sys.executable, "-m", MODULES[stage]]
  for field in dataclasses.fields(config):
    if field.name not in _NOT_FLAGS:
      argv += _flag(field.name, getattr(config, field.name))
  extra = dict(config.extra)
  if stage in ("fine_ctr", "fine_cvr"):
    extra["task"] = stage.split("_")[1]
  for name, value in extra.items():
    if name in STAGE_SETTINGS[stage]:
      argv += _flag(name, value)
  return argv


def command_digest(argv: List[str], world_dir: str) -> Optional[str]:
  """Names one run: the stage command (not the interpreter) and the world it read; None
  without a world (the child then says what is missing)."""
  manifest = os.path.join(world_dir, "manifest.json")
  if not os.path.exists(manifest):
    return None
  world_hash = files.read_json(manifest)["world_hash"]
  blob = json.dumps({"argv": argv[1:], "world_hash": world_hash})
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_stage(stage: str, config: common.StageConfig) -> Dict[str, Any]:
  """Trains (or, with config.reuse, reuses) one stage in a child process; its metrics.json."""
  argv = command_line(stage, config)
  out_dir = common.stage_dir(config.model_dir, OUTPUT_STAGE[stage], config.variant)
  metrics_path = os.path.join(out_dir, "metrics.json")
  receipt_path = os.path.join(out_dir, RECEIPT)
  digest = command_digest(argv, config.world_dir)
  if config.reuse and digest and os.path.exists(receipt_path) and os.path.exists(metrics_path):
    receipt, metrics = files.read_json(receipt_path), files.read_json(metrics_path)
    # The receipt must be of this command and of the metrics.json now there.
    if receipt == {"command": digest, "config_key": metrics.get("config_key")}:
      return metrics
  result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  if result.returncode != 0:
    tail = "\n".join(result.stderr.strip().splitlines()[-15:])
    raise common.StageError(f"{' '.join(argv[1:4])} ... failed (exit {result.returncode}):\n"
                            f"{tail}")
  metrics = files.read_json(metrics_path)
  if digest:
    files.write_json(receipt_path, {"command": digest, "config_key": metrics.get("config_key")})
  return metrics

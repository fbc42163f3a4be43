"""Audit every exported serving model for privileged-feature leakage.

    python -m experiments.audit --model_dir=M [--world_dir=W]

A serving model must never read a privileged feature of its stage: not the post-click signals
(which do not exist at serving time) nor, at the coarse stage, the user x item cross features.
The export already refuses such a model; this command proves it after the fact, for every
`saved_model/` under MODEL_DIR, in two independent ways:
  1. **signatures**: every input of every signature of the SavedModel (read from the
     SavedModel itself, not from our meta file) is a serving feature of the model's stage,
     according to the world's schema;
  2. **invariance**: on real evaluation rows of the world, permuting the stage's privileged
     columns leaves every output bitwise unchanged.
It prints one line per model and exits with status 1 on any violation, naming the model and
the feature.
"""

import dataclasses
import glob
import os
import sys
from typing import Dict, List, Optional, Set, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

import data
from data.plumbing import command
from data.plumbing import files
from models import export
from stages import catalogue
from stages import layout

STAGE_OF_META = {"retrieval": "retrieval", "coarse": "coarse", "fine_ctr": "fine_ctr",
                 "fine_cvr": "fine_cvr"}


@dataclasses.dataclass(frozen=True)
class AuditConfig:
  model_dir: Optional[str] = dataclasses.field(
      default=None, metadata={"help": "Root of trained models (every saved_model/ below it is "
                              "audited)."})
  world_dir: Optional[str] = dataclasses.field(
      default=None, metadata={"help": "The world the models were trained on. Default: the one "
                              "MODEL_DIR/world.json names."})
  audit_rows: int = dataclasses.field(
      default=2048, metadata={"help": "Evaluation rows (of the world's last day) used for the "
                              "invariance check."})
  audit_seed: int = dataclasses.field(
      default=0, metadata={"help": "Seed of the row sample and the permutations."})


@dataclasses.dataclass
class Finding:
  model: str
  stage: str
  violations: List[str]  # leaks: signatures or outputs that read privileged features
  identity: List[str] = dataclasses.field(default_factory=list)  # not the export it should be

  @property
  def ok(self) -> bool:
    return not self.violations and not self.identity

  def verdict(self) -> str:
    parts = [f"LEAK: {'; '.join(self.violations)}"] if self.violations else []
    if self.identity:
      parts.append(f"IDENTITY: {'; '.join(self.identity)}")
    return " | ".join(parts) or "ok"


def find_exports(model_dir: str) -> List[str]:
  """Every SavedModel below `model_dir`: directories holding the project's meta file or a
  saved_model.pb (an export without its meta is audited too, never skipped)."""
  found: Set[str] = set()
  for name in (export.META_FILE, "saved_model.pb"):
    paths = glob.glob(os.path.join(model_dir, "**", name), recursive=True)
    found.update(os.path.dirname(p) for p in paths if "/." not in p)
  return sorted(found)


def place_of(model_dir: str, path: str) -> Tuple[str, str]:
  """(stage, variant) an export's place in the model dir says it is (MODEL_DIR/<stage dir>/
  <variant>/saved_model), or ('', '') elsewhere."""
  parts = os.path.relpath(path, model_dir).split(os.sep)
  if len(parts) < 3 or parts[-1] != "saved_model":
    return "", ""
  stage_dir, variant = "/".join(parts[:-2]), parts[-2]
  stage = next((s.name for s in catalogue.STAGES.values() if s.output == stage_dir), "")
  return stage, variant


def signature_inputs(path: str) -> Dict[str, List[str]]:
  """signature name -> its input names, read from the SavedModel itself."""
  loaded = export.load_saved_model(path)
  inputs = {}
  for name, function in loaded.signatures.items():
    _, keywords = function.structured_input_signature
    inputs[name] = sorted(keywords)
  return inputs


def check_signatures(schema, stage: str, inputs: Dict[str, List[str]]) -> List[str]:
  allowed = {f.name for f in schema.serving_features(stage)}
  problems = []
  for signature, names in sorted(inputs.items()):
    for name in names:
      if name not in allowed:
        availability = schema[name].availability if name in schema.names else "not in schema"
        problems.append(f"signature {signature!r} reads {name!r} ({availability})")
  return problems


def _outputs(path: str, rows: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Every output of every signature on `rows`; each signature picks its own inputs.

  A `candidates` input ([requests, candidates]) gets each row as a request of one candidate.
  """
  loaded = export.load_saved_model(path)
  outputs = {}
  for name, function in loaded.signatures.items():
    batch = {}
    for key, spec in function.structured_input_signature[1].items():
      values = rows[key]
      if spec.shape.rank == 2 and spec.shape[1] is None:
        values = values[:, None]
      batch[key] = tf.constant(values, spec.dtype)
    for key, value in function(**batch).items():
      outputs[f"{name}/{key}"] = value.numpy()
  return outputs


def check_invariance(path: str, schema, stage: str, rows: Dict[str, np.ndarray],
                     seed: int) -> List[str]:
  """Outputs that move when the stage's privileged columns are permuted (should be none)."""
  privileged = [f.name for f in schema.privileged_features(stage) if f.name in rows]
  if not privileged:
    return []
  rng = np.random.default_rng(seed)
  permuted = dict(rows)
  for name in privileged:
    permuted[name] = rows[name][rng.permutation(len(rows[name]))]
  before, after = _outputs(path, rows), _outputs(path, permuted)
  return [f"output {key!r} changed when the privileged columns {privileged} were permuted"
          for key in sorted(before) if not np.array_equal(before[key], after[key])]


def audit_export(path: str, world, rows: Dict[str, np.ndarray], seed: int,
                 model_dir: str = "") -> Finding:
  """Signatures, then invariance; an export without its meta file, or whose meta says it is
  another stage, variant or world than its place and the audited world, is a violation too
  (its signatures are still audited against the stage its place names)."""
  placed_stage, placed_variant = place_of(model_dir, path) if model_dir else ("", "")
  meta_path = os.path.join(path, export.META_FILE)
  identity: List[str] = []
  if not os.path.exists(meta_path):
    stage = placed_stage
    identity.append(f"no {export.META_FILE}: not an export this project wrote, or its meta "
                    "was removed; what trained it cannot be checked")
  else:
    meta = files.read_json(meta_path)
    stage = STAGE_OF_META.get(meta.get("stage", ""), "")
    if not stage:
      return Finding(path, "?", [], [f"unknown stage {meta.get('stage')!r} in "
                                     f"{export.META_FILE}"])
    identity += layout.identity_problems(meta, placed_stage or stage, placed_variant or None,
                                         world.world_hash)
  if not stage:
    return Finding(path, "?", [], identity + ["its stage is unknown: not under "
                                              "MODEL_DIR/<stage>/<variant>/saved_model"])
  inputs = signature_inputs(path)
  violations = check_signatures(world.schema, stage, inputs)
  if not violations:
    violations = check_invariance(path, world.schema, stage, rows, seed)
  return Finding(path, stage, violations, identity)


def eval_rows(world, n_rows: int, seed: int) -> Dict[str, np.ndarray]:
  """A seeded sample of the last day's impressions, every column, users joined."""
  arrays = world.log_arrays([list(world.days)[-1]])
  n = len(arrays["item_id"])
  pick = np.sort(np.random.default_rng(seed).choice(n, min(n, n_rows), replace=False))
  rows = {k: v[pick] for k, v in arrays.items()}
  for name in world.users.columns:
    if name not in rows:
      rows[name] = world.users[name].to_numpy()[rows["user_id"]]
  return rows


def audit(config: AuditConfig) -> List[Finding]:
  if not config.model_dir or not os.path.isdir(config.model_dir):
    raise command.UserError(f"--model_dir={config.model_dir} is not a directory of models")
  world_dir = config.world_dir
  if world_dir is None:
    pinned = os.path.join(config.model_dir, "world.json")
    if not os.path.exists(pinned):
      raise command.UserError(f"--world_dir is required ({pinned} does not name the world)")
    world_dir = files.read_json(pinned).get("world_dir")
    if not world_dir:
      raise command.UserError(f"{pinned} does not name the world's directory; pass --world_dir")
  world = data.load(world_dir)
  exports = find_exports(config.model_dir)
  if not exports:
    raise command.UserError(f"no serving export under --model_dir={config.model_dir}")
  rows = eval_rows(world, config.audit_rows, config.audit_seed)
  return [audit_export(path, world, rows, config.audit_seed, config.model_dir)
          for path in exports]


def main() -> None:
  findings = audit(command.config_from_flags(AuditConfig))
  for finding in findings:
    print(f"{finding.stage:9s} {finding.model}: {finding.verdict()}")
  failed = [f for f in findings if not f.ok]
  logging.info("audited %d exports, %d with violations", len(findings), len(failed))
  if failed:
    sys.stderr.write(f"experiments.audit: {len(failed)} of {len(findings)} exports failed: "
                     f"{', '.join(f.model for f in failed)}\n")
  if failed:
    raise SystemExit(1)


def run() -> None:
  command.define_config_flags(AuditConfig)
  command.start(command.run_command(main, "experiments.audit"))


if __name__ == "__main__":
  run()

"""Serving export: a SavedModel whose signatures accept only what the stage may read online.

`export_serving` audits the student's declared inputs against the schema (the same
`check_serving` that guards student construction) and refuses a model that reads a privileged
feature. The signature's named inputs are exactly the student's features, so a request never
needs (and cannot pass) a privileged column. Two-tower students also get `user_vectors` and
`item_vectors` signatures, so a stage can precompute the corpus item matrix and serve with one
user pass and a matrix product. `load_serving` gives back a callable batch -> scores.
"""

import collections
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from data.plumbing import files
from data.world import schema as schema_lib
from models import inputs as inputs_lib
from models import rankers

# A serving head: a DNNRanker or LinearRanker (EmbeddedHead) or a TwoTowerScorer.
Head = Union[rankers.EmbeddedHead, rankers.TwoTowerScorer]

META_FILE = "pfd_serving.json"


def _spec(feature: schema_lib.Feature) -> tf.TensorSpec:
  if feature.kind == schema_lib.SEQUENCE:
    return tf.TensorSpec([None, feature.length or None], tf.int64, name=feature.name)
  return tf.TensorSpec([None], tf.as_dtype(feature.dtype), name=feature.name)


def signature_specs(features: Sequence[schema_lib.Feature]) -> Dict[str, tf.TensorSpec]:
  """Named TensorSpecs for `features`: the inputs of a serving signature."""
  return {f.name: _spec(f) for f in features}


def candidate_input_names(student: Head) -> List[str]:
  """A DNN student's item and pair inputs: [n, m] in the `candidates` signature."""
  return [f.name for f in student.input_features
          if f.entity not in (schema_lib.USER, schema_lib.CONTEXT)]


def candidate_specs(student: Head) -> Dict[str, tf.TensorSpec]:
  """Inputs of the `candidates` signature: per-request features [n] (sequences [n, L]) and
  every candidate feature [n, m]."""
  specs = signature_specs(student.input_features)
  for name in candidate_input_names(student):
    specs[name] = tf.TensorSpec([None, None], specs[name].dtype, name=name)
  return specs


class _ServingModule(tf.Module):
  """The exported object: the student plus one tf.function per signature."""

  def __init__(self, student: Head) -> None:
    super().__init__(name="serving")
    self.student = student
    self.serve = tf.function(self._serve,
                             input_signature=[signature_specs(student.input_features)])
    if student.architecture == rankers.TWO_TOWER:
      self.user_vectors = tf.function(
          self._user_vectors, input_signature=[signature_specs(student.user_embedding.features)])
      self.item_vectors = tf.function(
          self._item_vectors, input_signature=[signature_specs(student.item_embedding.features)])
    elif candidate_input_names(student):
      self.candidates = tf.function(self._candidates, input_signature=[candidate_specs(student)])

  def _serve(self, inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    logits = self.student(inputs, training=False)
    return {"logits": logits, "probabilities": tf.sigmoid(logits)}

  def _candidates(self, inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    logits = self.student.candidate_logits(inputs, training=False)
    return {"logits": logits, "probabilities": tf.sigmoid(logits)}

  def _user_vectors(self, inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {"vectors": self.student.user_vectors(inputs, training=False)}

  def _item_vectors(self, inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {"vectors": self.student.item_vectors(inputs, training=False)}

  def signatures(self) -> Dict[str, Any]:  # name -> concrete function
    sigs = {"serving_default": self.serve.get_concrete_function()}
    if hasattr(self, "user_vectors"):
      sigs["user_vectors"] = self.user_vectors.get_concrete_function()
      sigs["item_vectors"] = self.item_vectors.get_concrete_function()
    elif hasattr(self, "candidates"):
      sigs["candidates"] = self.candidates.get_concrete_function()
    return sigs


def export_serving(student: Any, stage: str, schema: schema_lib.Schema, path: str,
                   extra_meta: Optional[Dict[str, Any]] = None) -> str:
  """Writes the student's serving SavedModel to `path` (atomically) and returns `path`.

  Args:
    student: a head (`DNNRanker`, `TwoTowerScorer`) or a `DistillationModel` (its student is
      exported; the teacher never is).
    stage: the stage whose serving availability the inputs are audited against.
    schema: the world's schema.
    path: target directory; an existing export there is replaced.
    extra_meta: JSON-serialisable facts stored next to the model (variant, metrics ...).
  Raises ValueError naming any declared input that `stage` may not read online.
  """
  student = getattr(student, "student", student)
  names = list(student.input_names)
  schema.check_serving(stage, names)
  module = _ServingModule(student)
  return save_module(module, path, module.signatures(), _meta(student, stage, extra_meta))


def save_module(module: tf.Module, path: str, signatures: Dict[str, Any],
                meta: Dict[str, Any]) -> str:
  """Writes a SavedModel and its meta file to a temp dir, then swaps it into `path`.

  A reader never sees a half-written export; an existing export at `path` is replaced.
  """
  with files.atomic_directory(path) as tmp:
    tf.saved_model.save(module, tmp, signatures=signatures)
    files.write_json(os.path.join(tmp, META_FILE), meta, indent=1)
  return os.path.abspath(path)


def _meta(student: Head, stage: str,
          extra_meta: Optional[Dict[str, Any]]) -> Dict[str, Any]:
  meta = {"stage": stage, "architecture": student.architecture,
          "inputs": {f.name: f.dtype for f in student.input_features},
          "extra": extra_meta or {}}
  if student.architecture == rankers.TWO_TOWER:
    meta["user_inputs"] = student.user_input_names
    meta["item_inputs"] = student.item_input_names
  elif candidate_input_names(student):
    meta["candidate_inputs"] = candidate_input_names(student)
  return meta


class ServingModel:
  """A loaded serving export: `model(batch)` -> probabilities [B], `model.logits(batch)`.

  `batch` is a dict of arrays or tensors keyed by feature name; extra columns (labels,
  privileged features) are ignored, missing ones raise MissingFeatureError naming them.
  Two-tower exports also offer `user_vectors(batch)` and `item_vectors(batch)`; DNN exports
  `predict_candidates(features)`, m candidates per request scored as [n, m].
  Usable as a frozen teacher: `DistillationModel(student, served.logits, mode='pretrained')`.
  """

  def __init__(self, path: str) -> None:
    self.path = path
    self.meta = files.read_json(os.path.join(path, META_FILE))
    self._loaded = load_saved_model(path)
    self.stage = self.meta["stage"]
    self.architecture = self.meta["architecture"]
    self._dtypes = dict(self.meta["inputs"])
    self.input_names: List[str] = list(self._dtypes)

  def _select(self, batch: Dict[str, Any], names: Sequence[str]) -> Dict[str, tf.Tensor]:
    inputs_lib.check_batch(batch, names, f"serving model {self.path}")
    return {n: tf.cast(batch[n], self._dtypes[n]) for n in names}

  def outputs(self, batch: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    outputs: Dict[str, tf.Tensor] = self._loaded.serve(self._select(batch, self.input_names))
    return outputs

  def logits(self, batch: Dict[str, Any]) -> tf.Tensor:
    return self.outputs(batch)["logits"]

  def __call__(self, batch: Dict[str, Any]) -> tf.Tensor:
    return self.outputs(batch)["probabilities"]

  def user_vectors(self, batch: Dict[str, Any]) -> tf.Tensor:
    self._need_two_tower()
    return self._loaded.user_vectors(self._select(batch, self.meta["user_inputs"]))["vectors"]

  def item_vectors(self, batch: Dict[str, Any]) -> tf.Tensor:
    self._need_two_tower()
    return self._loaded.item_vectors(self._select(batch, self.meta["item_inputs"]))["vectors"]

  def _need_two_tower(self) -> None:
    if self.architecture != rankers.TWO_TOWER:
      raise ValueError(f"{self.path} is a {self.architecture!r} export; no vector signatures")

  def predict(self, arrays: Dict[str, np.ndarray], batch_size: int = 8192,
              output: str = "probabilities") -> np.ndarray:
    """Scores (or 'logits') for every row of a numpy column dict, in chunks."""
    n = len(next(iter(arrays.values())))
    chunks = []
    for start in range(0, n, batch_size):
      chunk = {k: arrays[k][start:start + batch_size] for k in self.input_names if k in arrays}
      chunks.append(self.outputs(chunk)[output].numpy())
    return np.concatenate(chunks) if chunks else np.zeros([0], np.float32)

  def predict_candidates(self, features: Dict[str, np.ndarray], max_rows: int = 1 << 16,
                         output: str = "probabilities") -> np.ndarray:
    """Scores [n, m] of m candidates per request, from per-request features ([n], sequences
    [n, L]) and candidate features ([n, m]), e.g. a feature-service result; in chunks of
    requests of at most `max_rows` candidates."""
    if "candidate_inputs" not in self.meta:
      raise ValueError(f"{self.path} has no 'candidates' signature (a two-tower export, or one "
                       "written before it existed: retrain the stage with --noreuse)")
    inputs_lib.check_batch(features, self.input_names, f"serving model {self.path}")
    n, m = np.shape(features[self.meta["candidate_inputs"][0]])[:2]
    step = max(1, max_rows // max(m, 1))
    chunks = [self._loaded.candidates(self._select(
        {k: features[k][s:s + step] for k in self.input_names}, self.input_names))[output]
        .numpy() for s in range(0, n, step)]
    return np.concatenate(chunks) if chunks else np.zeros([0, m], np.float32)


# SavedModels this process has loaded, newest last: a replay, the online study and a
# long-lived trial worker read the same exports many times, and loading one costs seconds.
_LOADED: "collections.OrderedDict[Tuple[str, Tuple[int, ...]], Any]" = collections.OrderedDict()
LOADED_CACHE_SIZE = 8


def _export_stamp(path: str) -> Tuple[int, ...]:
  """Changes whenever the export at `path` is rewritten (its graph or its variables)."""
  stamp: List[int] = []
  for name in ("saved_model.pb", os.path.join("variables", "variables.index")):
    try:
      info = os.stat(os.path.join(path, name))
      stamp += [info.st_size, info.st_mtime_ns, info.st_ino]
    except OSError:
      stamp += [-1, -1, -1]
  return tuple(stamp)


def load_saved_model(path: str) -> Any:  # the loaded SavedModel object
  """tf.saved_model.load with errors that name the export: unreadable, or permission denied.

  A SavedModel already loaded by this process is reused while its files are unchanged (at
  most LOADED_CACHE_SIZE of them are kept)."""
  if not os.access(path, os.R_OK | os.X_OK):
    raise PermissionError(13, "permission denied", path)
  key = (os.path.realpath(path), _export_stamp(path))
  if key in _LOADED:
    _LOADED.move_to_end(key)
    return _LOADED[key]
  try:
    loaded = tf.saved_model.load(path)
  except tf.errors.PermissionDeniedError:
    raise PermissionError(13, "permission denied", path) from None
  except Exception as error:  # protobuf DecodeError, OSError, tf.errors.*: damaged bytes
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    raise ValueError(f"{path}: not a readable SavedModel ({type(error).__name__}: "
                     f"{first_line}); it is damaged: train the model again") from None
  _LOADED[key] = loaded
  while len(_LOADED) > LOADED_CACHE_SIZE:
    _LOADED.popitem(last=False)
  return loaded


def load_serving(path: str) -> ServingModel:
  """Loads an `export_serving` directory as a callable batch -> probabilities."""
  if not os.path.exists(os.path.join(path, META_FILE)):
    raise FileNotFoundError(f"{path} is not a serving export (no {META_FILE}); "
                            "export one with models.export_serving")
  return ServingModel(path)

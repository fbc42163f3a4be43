"""The catalogue of the funnel's stages: each stage declared once.

A stage is a name (`fine_cvr`), the config class and fixed settings its runs are made of
(`FineConfig` with `task=cvr`), the task that trains it and so its command
(`python -m stages.fine --task=cvr`), where it writes under MODEL_DIR (`fine/cvr`), its label,
its default batch size, the variants it accepts (from the teacher-kind registry,
`models.teacher_kinds`) and the stages whose exports its runs read. The runner, the study, the
linear reference, the demo and the benchmarks all derive what they need from here.

Config and task classes are named by "module:Class" and resolved on first use, so that
`stages.config` can read the catalogue without an import cycle (as setup.cfg names its entry
points); `tests/test_catalogue.py` resolves every entry.
"""

import dataclasses
import importlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

from data.world import schema as schema_lib
from models import teacher_kinds

IMPRESSION_BATCH_SIZE = 1024
# Fine CVR trains on clicks, about 25x fewer rows than the impressions of the other stages: at
# 1024 an epoch of the small world's 7 days is 56 steps and the model stops far from converged,
# while a second epoch overfits (BUILD_NOTES.md, "Training regime"); 128 gives 8x the steps.
CLICK_BATCH_SIZE = 128
# An upper bound on the epochs of coarse and fine CTR runs: validation stopping ends them early
# in their second epoch, when one-epoch overfitting sets in (measured: BUILD_NOTES.md).
STOPPED_EPOCHS = 4


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of the funnel.

  Attributes:
    name: the stage's name in metrics, exports, reports and the schema ('fine_cvr').
    title: its name for people ('fine CVR').
    config: "module:Class" of its config (a `stages.config.TrainConfig` subclass).
    settings: the config fields that make a run of that class this stage ({'task': 'cvr'}).
    task: "module:Class" of the `stages.driver.StageTask` that trains it; the module is its
      command (`python -m <module>`).
    output: its directory under MODEL_DIR ('fine/cvr').
    label: the label column it learns ('click' or 'conversion').
    batch_size: its default batch size (`--batch_size=0`).
    reads: the stages whose exports its runs may read (a coarse pfd_md student's fine CTR
      teacher, a CVR run's CTCVR figure), so they train first.
    distils: whether the stage has distillation variants at all (retrieval does not).
    epochs: its default bound on epochs (`--epochs=0`): where validation stopping ends the
      run, enough epochs that it, not the end of the data, does (coarse and fine CTR stop
      early in their second epoch, when one-epoch overfitting sets in); one where nothing
      stops it (retrieval; fine CVR, whose held-out rows rarely hold enough conversions).
  """
  name: str
  title: str
  config: str
  settings: Mapping[str, Any]
  task: str
  output: str
  label: str
  batch_size: int
  reads: Tuple[str, ...] = ()
  distils: bool = True
  epochs: int = 1

  @property
  def module(self) -> str:
    """The module of its command, `python -m <module>`."""
    return self.task.split(":")[0]

  @property
  def command(self) -> str:
    """Its command line, without the flags every run sets ('python -m stages.fine --task=cvr')."""
    flags = "".join(f" --{k}={v}" for k, v in self.settings.items())
    return f"python -m {self.module}{flags}"

  def config_class(self) -> Any:
    return _resolve(self.config)

  def task_class(self) -> Any:
    return _resolve(self.task)

  def variants(self, schema: Optional[schema_lib.Schema] = None) -> Tuple[str, ...]:
    """The variants its runs accept: baseline, and the registered teacher kinds the stage can
    use (those reading privileged features need the stage to have some)."""
    if not self.distils:
      return (teacher_kinds.BASELINE,)
    return teacher_kinds.usable_at(schema or schema_lib.DECLARED, self.name)

  def make_config(self, base: Any, **settings: Any) -> Any:
    """A run of this stage: `base`'s common settings (a TrainConfig), then `settings`.

    Raises ValueError naming a setting the stage's config has no field for (a misspelled knob
    must not run unnoticed) or one that contradicts the stage's own settings."""
    config_class = self.config_class()
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(settings) - names)
    if unknown:
      raise ValueError(f"the {self.name} stage's config ({config_class.__name__}) has no "
                       f"setting(s) {unknown}")
    clash = {k: v for k, v in settings.items() if k in self.settings and self.settings[k] != v}
    if clash:
      raise ValueError(f"{clash} contradicts the {self.name} stage's own {dict(self.settings)}")
    common = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name in names}
    return config_class(**{**common, **self.settings, **settings})


def _resolve(path: str) -> Any:
  module, _, name = path.partition(":")
  return getattr(importlib.import_module(module), name)


RETRIEVAL = Stage("retrieval", "retrieval", "stages.config:RetrievalConfig", {},
                  "stages.retrieval:RetrievalTask", "retrieval", schema_lib.CLICK,
                  IMPRESSION_BATCH_SIZE, distils=False)
COARSE = Stage("coarse", "coarse two-tower", "stages.config:CoarseConfig", {},
               "stages.coarse:CoarseTask", "coarse", schema_lib.CLICK, IMPRESSION_BATCH_SIZE,
               reads=("retrieval", "fine_ctr"), epochs=STOPPED_EPOCHS)
FINE_CTR = Stage("fine_ctr", "fine CTR", "stages.config:FineConfig", {"task": "ctr"},
                 "stages.fine:FineTask", "fine/ctr", schema_lib.CLICK, IMPRESSION_BATCH_SIZE,
                 epochs=STOPPED_EPOCHS)
FINE_CVR = Stage("fine_cvr", "fine CVR", "stages.config:FineConfig", {"task": "cvr"},
                 "stages.fine:FineTask", "fine/cvr", schema_lib.CONVERSION, CLICK_BATCH_SIZE,
                 reads=("fine_ctr",))

# In the order a request meets them (the replay's, the reports').
FUNNEL_ORDER: Tuple[Stage, ...] = (RETRIEVAL, COARSE, FINE_CTR, FINE_CVR)
STAGES: Dict[str, Stage] = {s.name: s for s in FUNNEL_ORDER}
# The stages with a ranking student and a linear reference (experiments.reference).
RANKING = tuple(s.name for s in FUNNEL_ORDER if s.distils)


def stage(name: str) -> Stage:
  """The stage `name`, or a ValueError listing the stages there are."""
  if name not in STAGES:
    raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
  return STAGES[name]


def of(config: Any) -> Stage:
  """The stage a config is a run of (by its `stage` property)."""
  return stage(config.stage)


def rank(name: str) -> int:
  """How deep the stage sits in the chain of exports read: 0 for a stage reading none."""
  reads = stage(name).reads
  return 1 + max(rank(r) for r in reads) if reads else 0


def training_order() -> List[Stage]:
  """Every stage after the ones it reads (a study's or the demo's order)."""
  return sorted(FUNNEL_ORDER, key=lambda s: rank(s.name))

"""The studies of `experiments.paper`, each one object holding its trials and its report part.

The registry below is the one list: its order is the report's, its names are --studies'. A
new study is a `base.Study` subclass and one line here.
"""

from typing import Dict, List, Tuple

from experiments.studies.base import LINEAR
from experiments.studies.base import Plan
from experiments.studies.base import Report
from experiments.studies.base import Study
from experiments.studies.base import Trial
from experiments.studies.cost import CostStudy
from experiments.studies.extras import TeacherStudy
from experiments.studies.extras import UnlabelledStudy
from experiments.studies.online import OnlineStudy
from experiments.studies.regime import RegimeStudy
from experiments.studies.sweeps import LambdaSweep
from experiments.studies.sweeps import NoiseSweep
from experiments.studies.tables import CoarseTable
from experiments.studies.tables import CvrTable

REGISTRY: Dict[str, Study] = {study.name: study for study in (
    CoarseTable(), CvrTable(), RegimeStudy(), LambdaSweep(), CostStudy(), OnlineStudy(),
    NoiseSweep(), UnlabelledStudy(), TeacherStudy())}


def names() -> Tuple[str, ...]:
  return tuple(REGISTRY)


def default_names() -> Tuple[str, ...]:
  """The studies run when --studies is not given: all but those run only when named."""
  return tuple(name for name, study in REGISTRY.items() if not study.only_when_named)


def get(name: str) -> Study:
  if name not in REGISTRY:
    raise ValueError(f"unknown study {name!r}; expected one of {', '.join(REGISTRY)}")
  return REGISTRY[name]


def selected(names_: List[str]) -> List[Study]:
  """The named studies, in the registry's (the report's) order."""
  return [study for name, study in REGISTRY.items() if name in names_]


__all__ = ["LINEAR", "Plan", "Report", "Study", "Trial", "REGISTRY", "names", "default_names",
           "get", "selected"]

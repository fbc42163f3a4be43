"""What a study of `experiments.paper` is: its trials and its report section, in one object.

A `Trial` is one stage run a study asks for: a catalogue stage, a variant (a teacher kind, or
the stage's linear reference), a training seed and days, a world (named by its knobs) and world
seed, and typed settings: `settings` holds stage-config fields, checked against the stage's
config class when the trial is made (a misspelled setting is an error, not a run that silently
ignores it); `scheme` and `teacher_days` are the two study-level facts some trials carry.

A `Study` declares its trials (`trials`) and renders its part of the report (`sections`);
`experiments.studies` holds the registry of every study, in report order, so a new study is
one class and one registry line.
"""

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pandas as pd

from experiments import paper_worlds
from experiments.paper_stats import Section
from stages import catalogue

if TYPE_CHECKING:
  from experiments.paper_config import PaperConfig

LINEAR = "reference"  # a trial of the stage's linear reference (experiments.reference)
Settings = Tuple[Tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Trial:
  """One stage run of the study: what to train, on which world and days, with which settings.

  Attributes:
    study: the study that declared it (a row's `study` in tables.csv).
    stage: a catalogue stage name ('coarse', 'fine_cvr' ...).
    variant: a teacher kind, or LINEAR for the stage's linear reference.
    seed: the training seed.
    train_days: the training days.
    world: the world's name ('main', or 'k=v,...' of its knobs; `paper_worlds`).
    world_seed: the world's seed; (world_seed, seed) is the unit of every interval.
    settings: (field, value) pairs of the stage's config that differ from the study's base.
    scheme: the training-cost scheme a cost-study trial measures (a label).
    teacher_days: for a coarse pfd_md trial, its fine CTR teacher trained on this many days
      from the first, in a model dir of its own (0: the student's days, its own dir).
    model_group: the model dir's name when the trial must share one with trials of other
      settings (the unlabelled study's retrieval and teacher); default: from the settings.
  """
  study: str
  stage: str
  variant: str
  seed: int
  train_days: Tuple[int, ...]
  world: str = paper_worlds.MAIN
  world_seed: int = 0
  settings: Settings = ()
  scheme: str = ""
  teacher_days: int = 0
  model_group: str = ""

  def __post_init__(self) -> None:
    stage = catalogue.stage(self.stage)
    fields = {f.name for f in dataclasses.fields(stage.config_class())}
    unknown = [name for name, _ in self.settings if name not in fields]
    if unknown:
      raise ValueError(f"a {self.study} trial of the {self.stage} stage sets {unknown}, which "
                       f"its config ({stage.config_class().__name__}) does not have")
    if self.variant != LINEAR and self.variant not in stage.variants():
      raise ValueError(f"a {self.study} trial asks for variant {self.variant!r} of the "
                       f"{self.stage} stage; it takes {', '.join(stage.variants())}")

  @property
  def tag(self) -> str:
    """The settings that set the trial's model dir apart ('default' for none)."""
    if self.model_group:
      return self.model_group
    parts = [(k, v) for k, v in self.settings]
    parts += [("scheme", self.scheme)] if self.scheme else []
    parts += [("teacher_days", self.teacher_days)] if self.teacher_days else []
    return "_".join(f"{k}={_short(v)}" for k, v in parts) or "default"

  def model_dir(self, work_dir: str) -> str:
    """Trials that can share models (a pfd_md student and its fine CTR teacher) share a dir."""
    days = f"days{self.train_days[0]}-{self.train_days[-1]}"
    return os.path.join(work_dir, "models", paper_worlds.world_key(self.world, self.world_seed),
                        days, f"seed{self.seed}", self.tag)

  def run_key(self) -> Tuple[str, str, str]:
    """Trials with one key are one run (studies may declare the same run)."""
    return (self.model_dir(""), self.stage, self.variant)

  def teacher_trial(self) -> Optional["Trial"]:
    """The fine CTR run whose export teaches a trial with `teacher_days` (None without)."""
    if not self.teacher_days:
      return None
    first = self.train_days[0]
    return Trial(self.study, catalogue.FINE_CTR.name, "baseline", self.seed,
                 tuple(range(first, first + self.teacher_days)), world=self.world,
                 world_seed=self.world_seed)

  def row(self) -> Dict[str, Any]:
    """The trial's own columns in tables.csv."""
    row: Dict[str, Any] = {"study": self.study, "stage": self.stage, "variant": self.variant,
                           "seed": self.seed, "train_days": self.train_days,
                           "world": self.world, "world_seed": self.world_seed}
    row.update(dict(self.settings))
    if self.scheme:
      row["scheme"] = self.scheme
    if self.teacher_days:
      row["teacher_days"] = self.teacher_days
    return row


def _short(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return "+".join(map(str, value)) or "none"
  return str(value)


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a study's trials are declared from: the study's settings, the world's days (the
  last is the eval day), the training seeds and one world seed."""
  paper: "PaperConfig"
  days: Sequence[int]
  seeds: Sequence[int]
  world_seed: int = 0

  @property
  def long_days(self) -> Tuple[int, ...]:
    """Every day before the eval day."""
    return tuple(self.days[:-1])

  @property
  def short_days(self) -> Tuple[int, ...]:
    """The first --short_days days."""
    return tuple(self.days[:self.paper.short_days])


@dataclasses.dataclass
class Report:
  """What a study's sections are drawn from: the trials' frame, the plots' directory, and what
  studies computed after their trials (the online study's comparisons)."""
  frame: pd.DataFrame
  plots_dir: str
  extras: Dict[str, Any] = dataclasses.field(default_factory=dict)


class Study:
  """One study of the paper: its trials and its section of the report.

  Subclasses set `name` (its --studies name), `title` (its section's heading) and, for a study
  that runs only when named, `only_when_named`; they implement `declare` and `section`.
  """
  name: str = ""
  title: str = ""
  only_when_named: bool = False
  # True for Tables A and B: the report's learning section follows them.
  table: bool = False

  def declare(self, plan: Plan) -> List[Trial]:
    """The study's trials for one world seed, in an order that respects dependencies."""
    raise NotImplementedError

  def trials(self, plan: Plan) -> List[Trial]:
    return [dataclasses.replace(t, world_seed=plan.world_seed) for t in self.declare(plan)]

  def world_knobs(self, paper: "PaperConfig") -> Optional[str]:
    """The data.generate flagfile of the worlds it generates (None: the main worlds')."""
    return None

  def follow_up(self, paper: "PaperConfig", days: Sequence[int], seeds: Sequence[int],
                work_dir: str, engine: Any) -> Dict[str, Any]:
    """Work after the trials (the online study's replays); goes into `Report.extras`."""
    return {}

  def sections(self, report: Report) -> Iterable[Tuple[str, Optional[Section]]]:
    """(heading, section) pairs of the report; a None section is left out."""
    yield self.title, self.section(report)

  def section(self, report: Report) -> Optional[Section]:
    raise NotImplementedError

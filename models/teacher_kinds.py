"""The registry of teacher kinds: every kind of teacher a student can distil from, declared once.

A kind says what its teacher reads beyond the student (which availability classes of the
stage's privileged features it adds, and whether it reads the student's own features at all),
how wide and of which architecture it is, and where it comes from by default (trained with the
student, or another stage's export). Everything that names kinds derives from this table: the
variants a stage accepts (`stages.catalogue`), the teacher's features and widths
(`models.distillation`), the teacher policy (`stages.teachers`), the study's trials, tables and
plot colours (`experiments.paper*`). A new kind is one `TeacherKind` here plus, if it needs
one, its feature rule: nothing else to edit.

The paper's kinds (Xu et al., KDD 2020) and one control:
  baseline  no teacher;
  pfd       the student's features + the stage's privileged ones (X + X*), as wide as the
            student and of its architecture (at coarse rank, the inner-product teacher);
  md        model distillation: X only, a DNN twice as wide;
  pfd_md    X + X*, a DNN twice as wide; at coarse rank it is the fine CTR model's export
            (the paper's unified distillation), pre-trained;
  lupi      learning using privileged information: X* only;
  self      self-distillation, the control: X only, the student's own width and architecture,
            so a gain of `pfd` over `self` is the privileged information's, not distillation's.
"""

import contextlib
import dataclasses
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from data.world import schema as schema_lib

SAME_AS_STUDENT = "student"  # a kind whose teacher has the student's architecture
DNN = "dnn"
PRIVILEGED = (schema_lib.PRIVILEGED_CROSS, schema_lib.PRIVILEGED_POST_CLICK)


@dataclasses.dataclass(frozen=True)
class TeacherKind:
  """One kind of teacher.

  Attributes:
    name: the variant's name on the command line, in model dirs and in tables ('pfd').
    display: its name in reports ('PFD').
    adds: availability classes of the stage's privileged features the teacher reads besides
      the student's features (empty: the student's features only).
    reads_student_features: False for a teacher of the privileged features alone (LUPI).
    width_multiplier: the teacher's MLP widths are the student's times this.
    architecture: SAME_AS_STUDENT, or DNN whatever the student is.
    exported_from: stage -> the stage whose serving export is this kind's teacher there,
      pre-trained and frozen by default (coarse pfd_md: the fine CTR model).
    colour: its colour in plots (a matplotlib name).
    description: one line for help texts and reports.
  """
  name: str
  display: str
  adds: Tuple[str, ...] = ()
  reads_student_features: bool = True
  width_multiplier: int = 1
  architecture: str = DNN
  exported_from: Mapping[str, str] = dataclasses.field(default_factory=dict)
  colour: str = "tab:grey"
  description: str = ""

  def __post_init__(self) -> None:
    unknown = [a for a in self.adds if a not in PRIVILEGED]
    if unknown:
      raise ValueError(f"teacher kind {self.name!r} adds unknown availability classes "
                       f"{unknown}; expected some of {PRIVILEGED}")
    if not self.reads_student_features and not self.adds:
      raise ValueError(f"teacher kind {self.name!r} would read no feature at all")
    if self.width_multiplier < 1:
      raise ValueError(f"teacher kind {self.name!r}: width_multiplier must be >= 1")
    if self.architecture not in (SAME_AS_STUDENT, DNN):
      raise ValueError(f"teacher kind {self.name!r}: architecture must be "
                       f"{SAME_AS_STUDENT!r} or {DNN!r}")

  @property
  def has_teacher(self) -> bool:
    return self.name != BASELINE

  @property
  def needs_privileged(self) -> bool:
    """Whether the teacher reads privileged features (so a stage without any cannot use it)."""
    return bool(self.adds)

  def teacher_architecture(self, student_architecture: str) -> str:
    """The one rule for the teacher's architecture ('dnn' or 'two_tower')."""
    return student_architecture if self.architecture == SAME_AS_STUDENT else DNN

  def teacher_widths(self, student_widths: Sequence[int]) -> Tuple[int, ...]:
    """The one rule for the teacher's MLP widths."""
    return tuple(int(w) * self.width_multiplier for w in student_widths)

  def teacher_features(self, schema: schema_lib.Schema, stage: str,
                       student: Sequence[schema_lib.Feature]) -> List[schema_lib.Feature]:
    """What the teacher reads at `stage`, in schema order: the student's features (unless it
    reads the privileged ones alone) and the stage's privileged features of `adds`."""
    privileged = [f for f in schema.privileged_features(stage) if f.availability in self.adds]
    if self.needs_privileged and not privileged:
      raise ValueError(f"stage {stage!r} has no privileged features of {list(self.adds)}, so a "
                       f"{self.name!r} teacher would see nothing the student does not")
    names = {f.name for f in privileged}
    if self.reads_student_features:
      names |= {f.name for f in student}
    return [f for f in schema.features if f.name in names]

  def export_stage(self, stage: str) -> Optional[str]:
    """The stage whose export teaches at `stage` by default, or None."""
    return self.exported_from.get(stage)


BASELINE, PFD, MD, PFD_MD, LUPI, SELF = "baseline", "pfd", "md", "pfd_md", "lupi", "self"

_REGISTRY: Dict[str, TeacherKind] = {}


def register(kind: TeacherKind) -> TeacherKind:
  """Adds `kind` to the registry (a name may be registered once)."""
  if kind.name in _REGISTRY:
    raise ValueError(f"teacher kind {kind.name!r} is already registered")
  _REGISTRY[kind.name] = kind
  return kind


def unregister(name: str) -> None:
  """Removes a registered kind (tests that register a throwaway one)."""
  if name in _BUILT_IN:
    raise ValueError(f"{name!r} is a built-in teacher kind")
  _REGISTRY.pop(name, None)


@contextlib.contextmanager
def registered(kind: TeacherKind) -> Iterator[TeacherKind]:
  """`kind` registered for the duration of a `with` block."""
  register(kind)
  try:
    yield kind
  finally:
    unregister(kind.name)


def names() -> Tuple[str, ...]:
  """Every registered kind's name, baseline first, in registration order."""
  return tuple(_REGISTRY)


def get(name: str) -> TeacherKind:
  """The registered kind `name`, or a ValueError listing the kinds there are."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown teacher kind {name!r}; expected one of {', '.join(_REGISTRY)}")
  return _REGISTRY[name]


def all_kinds() -> List[TeacherKind]:
  return list(_REGISTRY.values())


def usable_at(schema: schema_lib.Schema, stage: str) -> Tuple[str, ...]:
  """The kinds a student at `stage` can distil from: baseline, the kinds that read no
  privileged feature, and those whose added classes the stage has."""
  present = {f.availability for f in schema.privileged_features(stage)}
  return tuple(k.name for k in _REGISTRY.values()
               if not k.needs_privileged or present & set(k.adds))


for _kind in (
    TeacherKind(BASELINE, "baseline", colour="tab:blue",
                description="no teacher: the student alone"),
    TeacherKind(LUPI, "LUPI", adds=PRIVILEGED, reads_student_features=False, colour="tab:purple",
                description="a DNN over the privileged features only"),
    TeacherKind(MD, "MD", width_multiplier=2, colour="tab:red",
                description="model distillation: a DNN twice as wide on the student's features"),
    TeacherKind(PFD, "PFD", adds=PRIVILEGED, architecture=SAME_AS_STUDENT, colour="tab:orange",
                description="the student's features and the privileged ones, the student's "
                "shape"),
    TeacherKind(PFD_MD, "PFD+MD", adds=PRIVILEGED, width_multiplier=2,
                exported_from={"coarse": "fine_ctr"}, colour="tab:green",
                description="a DNN twice as wide with the privileged features; at coarse rank "
                "the fine CTR model"),
    TeacherKind(SELF, "self-distillation", architecture=SAME_AS_STUDENT, colour="tab:brown",
                description="the control: the student's own features, width and architecture"),
):
  register(_kind)
_BUILT_IN = frozenset(_REGISTRY)

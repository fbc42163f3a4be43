"""The paper study's own settings (`experiments.paper`'s flags besides the training ones)."""

import dataclasses
from typing import Optional, Tuple

from data.plumbing import command
from data.plumbing.command import field as _field
from data.world import config as world_config
from experiments import paper_worlds
from experiments import studies as studies_lib
from models import teacher_kinds


@dataclasses.dataclass(frozen=True)
class PaperConfig:
  """The study's own settings (the training ones are `stages.config.TrainConfig`'s)."""
  report_dir: Optional[str] = _field(None, "Where report.md, tables.csv and plots/ go.")
  preset: str = _field("small", "The worlds' preset.", choices=sorted(world_config.PRESETS))
  seeds: int = _field(6, "Training seeds per configuration and world (0 .. seeds-1).")
  first_world_seed: int = _field(0, "The first world seed: the study's worlds are seeds "
                                 "first_world_seed .. first_world_seed + world_seeds - 1 (e.g. "
                                 "tune on 100-101, report on 0-7: worlds never looked at).")
  world_seeds: int = _field(2, "World seeds (from --first_world_seed): every trial runs on each; "
                            "pairs (world seed, training seed) are the units of every CI.")
  studies: Tuple[str, ...] = _field(studies_lib.default_names(),
                                    f"Which studies to run, of {', '.join(studies_lib.names())} "
                                    "(default: all but "
                                    + ", ".join(n for n in studies_lib.names()
                                                if n not in studies_lib.default_names())
                                    + ", which run only when named).")
  workers: int = _field(1, "Trials run at once, each in its own process (--runner=local; "
                        "with --runner=ray, Ray runs one per CPU it has).")
  max_worker_gb: float = _field(4.0, "Memory one trial may need: fewer workers than --workers "
                                "when the machine has less available, and none started while "
                                "less than this is available (0: no check).")
  world_flagfile: str = _field("", "data.generate flagfile of the main and noise worlds' knobs "
                               "(e.g. experiments/configs/world_taobao.cfg; empty: the preset).")
  work_dir: Optional[str] = _field(None, "Worlds, models and replays (default "
                                   "REPORT_DIR/work).")
  variants: Tuple[str, ...] = _field(teacher_kinds.names(), "Distillation variants (teacher "
                                     "kinds) of Tables A and B (baseline is always run: every "
                                     "delta is against it).")
  coarse_columns: Tuple[str, ...] = _field(("short", "long"), "Table A's training-days "
                                           "columns: short (--short_days) and/or long (every "
                                           "day before the eval day).")
  cvr_world: str = _field("", "The world of Table B, named by the knobs it adds to the main "
                           "world's (e.g. 'n_users=80000,n_days=15': more clicks, the same "
                           "rates); empty: the main world.")
  ctcvr: bool = _field(True, "Table B also trains the fine CTR model of its days, whose pCTR "
                       "makes the CVR runs' CTCVR AUC; off: no CTCVR figure (the CVR figures "
                       "do not need it, and on a large world the fine CTR run is the costly "
                       "one).")
  linear_reference: bool = _field(True, "Also train the linear reference (experiments."
                                  "reference) beside each baseline of Tables A and B, so the "
                                  "report shows ceiling, linear model and DNN side by side.")
  short_days: int = _field(1, "Training days of the short-data column of Table A.")
  lambdas: Tuple[str, ...] = _field(("0.1", "0.3", "0.5", "0.7", "0.9"),
                                    "λ values of the sweep.")
  noise_levels: Tuple[str, ...] = _field(("0.25", "0.5", "1", "2", "4"), "post_click_noise "
                                         "values of the noise sweep (one world each).")
  paper_funnel: str = _field("retrieval:1000,coarse:100,fine:10",
                             "Funnel of the online study's replays.")
  online_max_requests: int = _field(0, "Replay at most this many requests per run in the "
                                    "online study (0: the whole day).")
  regime_days: Tuple[str, ...] = _field(("1", "3", "7"), "Training days of the regime map "
                                        "(the first N; capped at the days before the eval day).")
  regime_conversion_biases: Tuple[str, ...] = _field(
      ("-4.5", "-6.5", "-8.8"), "conversion_bias of the regime map's worlds (sparsity).")
  regime_strength_knob: str = _field("purchase_intent_sd", "World knob of the privileged "
                                     "signal's strength in the regime map.")
  regime_strengths: Tuple[str, ...] = _field(("0", "1", "2"), "Values of "
                                             "--regime_strength_knob in the regime map.")
  regime_world_flagfile: str = _field("experiments/configs/world_taobao.cfg", "data.generate "
                                      "flagfile of the regime worlds' other knobs.")

  def __post_init__(self):
    if not self.coarse_columns or set(self.coarse_columns) - {"short", "long"}:
      raise command.UserError(f"--coarse_columns must be short and/or long; got "
                              f"{list(self.coarse_columns)}")
    kinds = teacher_kinds.names()
    unknown_variants = [v for v in self.variants if v not in kinds]
    if unknown_variants:
      raise command.UserError(f"--variants must be of {', '.join(kinds)}; got unknown "
                              f"{unknown_variants}")
    unknown = [s for s in self.studies if s not in studies_lib.names()]
    if unknown:
      raise command.UserError(f"--studies must be of {', '.join(studies_lib.names())}; got "
                              f"unknown {unknown}")
    if not self.report_dir:
      raise command.UserError("--report_dir is required")
    if self.seeds < 1 or self.world_seeds < 1 or self.workers < 1:
      raise command.UserError("--seeds, --world_seeds and --workers must be at least 1")
    if self.cvr_world:
      try:
        paper_worlds.world_settings(self.preset, paper_worlds.name_knobs(self.cvr_world), 0)
      except (ValueError, command.UserError) as error:
        raise command.UserError(f"--cvr_world={self.cvr_world!r}: {error}") from None
    if self.first_world_seed < 0:
      raise command.UserError(f"--first_world_seed must be >= 0, got {self.first_world_seed}")
    for name in ("lambdas", "noise_levels", "regime_days", "regime_conversion_biases",
                 "regime_strengths"):
      for value in getattr(self, name):
        try:
          float(value)
        except ValueError:
          raise command.UserError(f"--{name}: {value!r} is not a number") from None

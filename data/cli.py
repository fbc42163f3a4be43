"""Flags that several commands share, declared once.

absl flags live in one global registry, so a name may be defined only once per process. The
commands are also libraries (tests and `experiments.paper` import `data.generate`,
`stages.fine`, `experiments.replay` ... together), so the names they share are defined here and
each command imports this module.
"""

from absl import flags

flags.DEFINE_string("world_dir", None, "The world's directory: written by "
                    "`python -m data.generate`, read by every other command.")
flags.DEFINE_integer("seed", None, "Seed. data.generate: the world's seed (default: the "
                     "preset's); training and replay: initialisation and shuffling (default 0).")
flags.DEFINE_bool("overwrite", False, "Replace existing output (a world, a replay run) instead "
                  "of refusing.")

"""What every command stands on, whatever it computes.

Flags from typed configs and known errors as one line (command), where independent tasks run
(engine: this process or Ray), bounded waits (waits), one-line progress (progress) and atomic
writes of every output (files). Nothing here knows about the world or the models.
"""

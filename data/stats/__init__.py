"""Ranking statistics: one definition of every score (metrics), their intervals over seeds,
users or requests (intervals), and the oracle's view of an evaluation (headroom).

Plain numpy / scipy, read by the stages, the replay and the studies alike.
"""

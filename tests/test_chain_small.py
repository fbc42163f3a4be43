"""The whole training chain on the small world (the demo's world): slow, run in CI."""

import os

import pytest

from experiments import audit
from stages import coarse
from stages import config as config_lib
from stages import fine
from stages import layout
from stages import retrieval

pytestmark = pytest.mark.slow

# Two training days keep the chain to a few minutes on 2 cores; the eval day is the last.
SMALL = dict(hidden_units=(64, 32), embedding_dim=8, batch_size=2048, epochs=1,
             train_days=[6, 7], eval_day=8, checkpoint_every=200)


CONFIGS = {retrieval.train: config_lib.RetrievalConfig, fine.train: config_lib.FineConfig,
           coarse.train: config_lib.CoarseConfig}


def _train(train_fn, world_dir, model_dir, variant="baseline", **settings):
  config = CONFIGS[train_fn](world_dir=world_dir, model_dir=model_dir, variant=variant,
                             **{**SMALL, **settings})
  return train_fn(config)


def test_chain_trains_every_stage_and_variant_on_the_small_world(small_world_dir, tmp_path):
  model_dir = str(tmp_path / "models")
  recall = _train(retrieval.train, small_world_dir, model_dir)
  ctr = _train(fine.train, small_world_dir, model_dir, task="ctr")
  # CVR trains on clicks (2 days: ~16k rows, ~230 conversions): its own default batch.
  cvr = {v: _train(fine.train, small_world_dir, model_dir, v, task="cvr", batch_size=0)
         for v in ("baseline", "pfd")}
  coarse_runs = {v: _train(coarse.train, small_world_dir, model_dir, v)
                 for v in ("baseline", "pfd", "pfd_md")}

  # Well above chance (K / n_items): the two-tower learns who clicks what.
  chance = 1.0 / recall["n_items"]
  assert recall["recall@1000"] > recall["recall@100"] > recall["recall@50"] > 3 * 50 * chance
  assert ctr["auc"] > 0.65
  # The post-click signals make the CVR teacher clearly better than its student.
  assert cvr["pfd"]["teacher_auc"] > cvr["baseline"]["auc"] + 0.03
  assert cvr["baseline"]["auc"] > 0.6 and "ctcvr_auc" in cvr["baseline"]
  # The coarse two-tower learns, and its PFD+MD teacher is the fine CTR model.
  assert coarse_runs["baseline"]["auc"] > 0.6
  assert coarse_runs["pfd_md"]["teacher_auc"] == pytest.approx(ctr["auc"])
  # Both teachers learn and stay below the oracle's ceiling. On two training days the cross
  # features add little over the behaviour sequence (issue 11's measurement), so neither is
  # asserted to beat the coarse student: whether they do is the study's question, not a test's.
  for variant in ("pfd", "pfd_md"):
    assert 0.6 < coarse_runs[variant]["teacher_auc"] < coarse_runs[variant]["ceiling_auc"]
  for stage, variant in [("retrieval", "baseline"), ("fine/ctr", "baseline"),
                         ("fine/cvr", "pfd"), ("coarse", "pfd_md")]:
    export = os.path.join(layout.stage_dir(model_dir, stage, variant), "saved_model")
    assert os.path.exists(os.path.join(export, "saved_model.pb"))
  # The leak audit over every export the chain made: no privileged input, and outputs
  # invariant to permuting the privileged columns of real eval rows.
  findings = audit.audit(audit.AuditConfig(model_dir=model_dir, world_dir=small_world_dir))
  assert len(findings) >= 7 and [f.violations for f in findings if not f.ok] == []

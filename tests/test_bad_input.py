"""A hostile but fair user: every command refuses bad input in one line and writes nothing.

The rows here need only the tiny world (no trained model), so they run in the fast tier: a
damaged world, bad flags, a model dir or teacher of another world, a damaged teacher, clusters
that cannot start. Rows that need trained exports (identity, forged signatures, the audit) are
in test_bad_input_exports.py. tests/bad_input.py holds the harness: each row runs in-process
and must end with its exit status and message, print no traceback, and leave its case
directory exactly as it was (same files, same bytes). docs/reliability.md's table is written
from these rows (`python -m tests.reliability_table`).
"""

import json
import os
import sys
from typing import List

import numpy as np
import pytest

from data.plumbing import files
from experiments import run_dir as run_dir_lib
from stages import layout
from tests import bad_input as bad
from tests.bad_input import Case
from tests.bad_input import run_in_process

# ----------------------------------------------------------------------------- the table

FINE = "stages.fine"
COARSE = "stages.coarse"
RETRIEVAL = "stages.retrieval"
REPLAY = "experiments.replay"
STAGE = ["--world_dir={world}", "--model_dir={models}"]
REPLAY_ARGS = ["--world_dir={world}", "--model_dir={models}", "--run_dir={run}"]
CLUSTER = "experiments.cluster"
NAN_PRICE = bad.set_column("items.parquet", "item_price", bad.nan_first)

CASES: List[Case] = [
    # data.generate
    Case("generate: no --world_dir", "data.generate", ["--preset=tiny"], 2,
         "--world_dir is required", world=False),
    Case("generate: world_dir is a file", "data.generate",
         ["--world_dir={case}/file", "--preset=tiny"], 2, "is not a directory",
         bad.write("file", "x"), world=False),
    Case("generate: a directory of other files", "data.generate",
         ["--world_dir={case}/notes", "--preset=tiny"], 2, "is not a world",
         bad.write("notes/todo.txt", "x"), world=False),
    Case("generate: a world of another config", "data.generate",
         ["--world_dir={world}", "--preset=tiny", "--seed=1"], 2, "--overwrite"),
    Case("generate: a same-size bit flip in items", "data.generate",
         ["--world_dir={world}", "--preset=tiny", "--seed=0"], 2, "items.parquet",
         bad.flip_bit("items.parquet")),
    Case("generate: manifest not JSON", "data.generate",
         ["--world_dir={world}", "--preset=tiny"], 2, "manifest.json",
         bad.write("world/manifest.json", "{")),
    Case("generate: unknown preset", "data.generate", ["--world_dir={case}/w", "--preset=huge"],
         1, "preset", world=False),
    Case("generate: zero users", "data.generate",
         ["--world_dir={case}/w", "--preset=tiny", "--n_users=0"], 2, "n_users", world=False),
    Case("generate: shard out of range", "data.generate",
         ["--world_dir={case}/w", "--preset=tiny", "--shard=7"], 2, "--shard", world=False),
    Case("generate: stray argument", "data.generate", ["--world_dir={case}/w", "tiny"], 2,
         "unexpected arguments", world=False),
    # data.verify
    Case("verify: no --world_dir", "data.verify", [], 2, "--world_dir is required"),
    Case("verify: no world", "data.verify", ["--world_dir={case}/none"], 2, "no manifest",
         world=False),
    Case("verify: bit flip in items", "data.verify", ["--world_dir={world}"], 1,
         "items.parquet", bad.flip_bit("items.parquet")),
    Case("verify: schema edited", "data.verify", ["--world_dir={world}"], 1, "dwell_seconds",
         bad.edit_manifest(bad.relabel_dwell_as_serving)),
    Case("verify: NaN price, hashes redone", "data.verify", ["--world_dir={world}"], 1,
         "item_price", NAN_PRICE),
    Case("verify: manifest not JSON", "data.verify", ["--world_dir={world}"], 2,
         "manifest.json", bad.write("world/manifest.json", "nope")),
    # stages: flags
    Case("fine: --batch_size=-1", FINE, STAGE + ["--batch_size=-1"], 2, "--batch_size"),
    Case("fine: --seed=-1", FINE, STAGE + ["--seed=-1"], 2, "--seed"),
    Case("fine: --distill_lambda=1.5", FINE,
         STAGE + ["--task=cvr", "--variant=pfd", "--distill_lambda=1.5"], 2, "--distill_lambda"),
    Case("fine: --variant=pfd for ctr", FINE, STAGE + ["--variant=pfd"], 2, "--variant"),
    Case("fine: --task=ranking", FINE, STAGE + ["--task=ranking"], 1, "task"),
    Case("fine: --eval_day=99", FINE, STAGE + ["--eval_day=99"], 2, "--eval_day"),
    Case("fine: --train_days=1-x", FINE, STAGE + ["--train_days=1-x"], 2, "--train_days"),
    Case("fine: --hidden_units=8,x", FINE, STAGE + ["--hidden_units=8,x"], 2, "--hidden_units"),
    Case("fine: stray argument", FINE, STAGE + ["ctr"], 2, "unexpected arguments"),
    Case("coarse: --unlabelled_per_request=0", COARSE,
         STAGE + ["--variant=pfd", "--unlabelled_per_request=0"], 2, "--unlabelled_per_request"),
    Case("coarse: --distill_unlabelled without teacher", COARSE,
         STAGE + ["--distill_unlabelled"], 2, "--distill_unlabelled"),
    Case("retrieval: --temperature=0", RETRIEVAL, STAGE + ["--temperature=0"], 2,
         "--temperature"),
    Case("retrieval: --variant=pfd", RETRIEVAL, STAGE + ["--variant=pfd"], 2, "--variant"),
    # stages: the world and the model dir
    Case("fine: no world", FINE, ["--world_dir={case}/none", "--model_dir={models}"], 2,
         "no world at", world=False),
    Case("fine: world_dir is a file", FINE, ["--world_dir={case}/file", "--model_dir={models}"],
         2, "is a file", bad.write("file", "x"), world=False),
    Case("fine: schema relabels dwell as serving", FINE, STAGE + ["--task=cvr"], 2,
         "dwell_seconds", bad.edit_manifest(bad.relabel_dwell_as_serving)),
    Case("fine: a same-size bit flip in items", FINE, STAGE, 2, "items.parquet",
         bad.flip_bit("items.parquet")),
    Case("fine: NaN price, hashes redone", FINE, STAGE, 2, "item_price", NAN_PRICE),
    Case("fine: negative dwell, hashes redone", FINE, STAGE + ["--task=cvr"], 2,
         "dwell_seconds", bad.set_column(None, "dwell_seconds", bad.negate_last)),
    Case("fine: float column made string, hashes redone", FINE, STAGE, 2, "item_price",
         bad.set_column(None, "item_price", lambda v: v.astype(str))),
    Case("fine: manifest days edited", FINE, STAGE, 2, "'days'",
         bad.edit_manifest(lambda m: m.update(days=m["days"][:-1]))),
    Case("fine: manifest not JSON", FINE, STAGE, 2, "manifest.json",
         bad.write("world/manifest.json", "[1, 2")),
    Case("fine: model_dir is a file", FINE, STAGE, 2, "--model_dir",
         bad.write("models", "x")),
    Case("fine: model_dir of another world", FINE, STAGE, 2, "another world",
         bad.write("models/world.json", '{"world_hash": "0"}')),
    Case("fine: world.json not JSON", FINE, STAGE, 2, "world.json",
         bad.write("models/world.json", "{")),
    Case("coarse: pfd_md without a fine CTR model", COARSE, STAGE + ["--variant=pfd_md"], 2,
         "stages.fine", bad.pin_models_to_world, finding="22.22"),
    Case("coarse: pfd_md teacher export is garbage", COARSE, STAGE + ["--variant=pfd_md"], 2,
         "not a readable SavedModel", bad.garbage_export("fine/ctr", "baseline"),
         finding="22.28"),
    # experiments.replay
    Case("replay: no --run_dir", REPLAY, ["--world_dir={world}", "--model_dir={models}"], 2,
         "--run_dir"),
    Case("replay: --cvr_variant=nonsense", REPLAY, REPLAY_ARGS + ["--cvr_variant=nonsense"], 1,
         "pfd_md"),
    Case("replay: no models", REPLAY, REPLAY_ARGS, 2, "train it first"),
    Case("replay: world_dir is a file", REPLAY,
         ["--world_dir={case}/file", "--model_dir={models}", "--run_dir={run}"], 2, "is a file",
         bad.write("file", "x"), world=False),
    Case("replay: garbage retrieval export", REPLAY, REPLAY_ARGS, 2,
         "not a readable SavedModel", bad.garbage_export("retrieval", "baseline")),
    Case("replay: bad --funnel", REPLAY, REPLAY_ARGS + ["--funnel=retrieval:x"], 2, "funnel"),
    Case("replay: schema edited", REPLAY, REPLAY_ARGS, 2, "dwell_seconds",
         bad.edit_manifest(bad.relabel_dwell_as_serving)),
    # experiments.compare
    Case("compare: --report_dir is a file", "experiments.compare",
         ["--run_dirs={run}", "--report_dir={case}/file"], 2, "--report_dir",
         bad.write("file", "x"), world=False),
    Case("compare: run dir missing", "experiments.compare",
         ["--run_dirs={case}/none", "--report_dir={report}"], 2, "no such directory",
         world=False),
    Case("compare: summary.json not JSON", "experiments.compare",
         ["--run_dirs={run}", "--report_dir={report}"], 2, "summary.json", bad.finished_run,
         world=False),
    Case("compare: a glob that matches nothing", "experiments.compare",
         ["--run_dirs={case}/runs-*", "--report_dir={report}"], 2, "matches no directory",
         world=False),
    # experiments.audit and experiments.paper
    Case("audit: no model dir", "experiments.audit", ["--model_dir={models}"], 2,
         "--model_dir", world=False),
    Case("audit: no exports", "experiments.audit",
         ["--model_dir={models}", "--world_dir={world}"], 2, "no serving export",
         bad.pin_models_to_world),
    Case("audit: schema edited", "experiments.audit",
         ["--model_dir={models}", "--world_dir={world}"], 2, "dwell_seconds",
         lambda case: (bad.pin_models_to_world(case),
                       bad.edit_manifest(bad.relabel_dwell_as_serving)(case))),
    Case("paper: no --report_dir", "experiments.paper", ["--preset=tiny"], 2, "--report_dir",
         world=False),
    Case("paper: unknown study", "experiments.paper",
         ["--report_dir={report}", "--studies=nonsense"], 2, "--studies", world=False),
    Case("paper: a lambda that is not a number", "experiments.paper",
         ["--report_dir={report}", "--lambdas=0.1,x"], 2, "--lambdas", world=False),
    Case("paper: unknown preset", "experiments.paper",
         ["--report_dir={report}", "--preset=huge"], 1, "preset", world=False),
    # issue 22: the oracle's inputs, teachers, replay flags, clusters, Ray
    Case("verify: NaN in the oracle's truth/items, hashes redone", "data.verify",
         ["--world_dir={world}"], 1, "item_quality",
         bad.set_column("truth/items.parquet", "item_quality", bad.nan_first), finding="22.8"),
    Case("fine: NaN in the oracle's truth/items, hashes redone", FINE, STAGE, 2,
         "truth/items.parquet: column 'item_quality'",
         bad.set_column("truth/items.parquet", "item_quality", bad.nan_first), finding="22.24"),
    Case("verify: an intent shop out of range in truth/requests, hashes redone", "data.verify",
         ["--world_dir={world}"], 1, "intent_shop",
         bad.set_column("truth/requests/day=01/part-00000.parquet", "intent_shop",
                        lambda v: v + 10 ** 6), finding="22.8"),
    Case("coarse: --teacher_model_dir holds another world's models", COARSE,
         STAGE + ["--variant=pfd_md", "--teacher_model_dir={case}/teacher"], 2,
         "--teacher_model_dir={case}/teacher holds models of another world",
         bad.write("teacher/world.json", '{"world_hash": "0"}'), finding="22.22"),
    Case("coarse: --teacher_model_dir is a file", COARSE,
         STAGE + ["--variant=pfd_md", "--teacher_model_dir={case}/file"], 2,
         "--teacher_model_dir={case}/file is a file", bad.write("file", "x"), finding="22.22"),
    Case("coarse: --teacher_model_dir without a fine CTR export", COARSE,
         STAGE + ["--variant=pfd_md", "--teacher_model_dir={case}/none"], 2, "stages.fine",
         finding="22.22"),
    Case("coarse: a damaged teacher keeps the previous finished run's checkpoints", COARSE,
         STAGE + ["--variant=pfd_md"], 2, "not a readable SavedModel",
         lambda case: (bad.garbage_export("fine/ctr", "baseline")(case),
                       bad.finished_stage_run("coarse", "pfd_md")(case)), finding="22.28"),
    Case("coarse: a teacher whose recorded world is another", COARSE,
         STAGE + ["--variant=pfd_md"], 2, "trained on another world",
         lambda case: (bad.garbage_export("fine/ctr", "baseline")(case),
                       bad.edit_meta("fine/ctr", "baseline", world_hash="f" * 64)(case)),
         finding="22.4"),
    Case("coarse: a teacher trained on the student's eval day", COARSE,
         STAGE + ["--variant=pfd_md"], 2, "do not end before this run's --eval_day=4",
         lambda case: (bad.garbage_export("fine/ctr", "baseline")(case),
                       bad.edit_meta("fine/ctr", "baseline", train_days=[2, 3, 4])(case)),
         finding="22.5"),
    Case("coarse: a teacher recording another variant (renamed dir)", COARSE,
         STAGE + ["--variant=pfd_md"], 2, "records variant 'md'",
         lambda case: (bad.garbage_export("fine/ctr", "baseline")(case),
                       bad.edit_meta("fine/ctr", "baseline", variant="md")(case)),
         finding="22.7"),
    Case("fine: --cluster_timeout=-1", FINE, STAGE + ["--cluster_timeout=-1"], 2,
         "--cluster_timeout", finding="22.10"),
    Case("fine: TF_CONFIG port 'notaport'", FINE, STAGE + ["--strategy=multi_worker"], 2,
         "'127.0.0.1:notaport' is not host:port",
         env={"TF_CONFIG": json.dumps({"cluster": {"worker": ["127.0.0.1:notaport"]},
                                       "task": {"type": "worker", "index": 0}})},
         finding="22.13"),
    Case("replay: --max_requests=-5", REPLAY, REPLAY_ARGS + ["--max_requests=-5"], 2,
         "--max_requests must be >= 0", finding="22.32"),
    Case("replay: --batch_requests=0", REPLAY, REPLAY_ARGS + ["--batch_requests=0"], 2,
         "--batch_requests must be positive", finding="22.32"),
    Case("generate: --ray_timeout=-1", "data.generate",
         ["--world_dir={case}/w", "--preset=tiny", "--runner=ray", "--ray_timeout=-1"], 2,
         "--ray_timeout", world=False, finding="22.11"),
    Case("compare: a replay whose --cvr_variant contradicts its model's record",
         "experiments.compare", ["--run_dirs={run}", "--report_dir={report}"], 2,
         "records variant 'pfd'", bad.mislabelled_run, world=False, finding="22.7"),
    Case("cluster: the command after -- does not exist", CLUSTER,
         ["--workers=1", "--task_logs={case}/logs", "--", "no-such-program-pfd"], 2,
         "is not found on PATH", world=False, finding="22.14"),
    Case("cluster: --task_logs is a file", CLUSTER,
         ["--workers=1", "--task_logs={case}/file", "--", sys.executable, "-c", "pass"], 2,
         "--task_logs={case}/file is a file", bad.write("file", "x"), world=False,
         finding="22.14"),
    Case("cluster: --timeout reached", CLUSTER,
         ["--workers=1", "--timeout=1", "--", "sleep", "60"], 2,
         "still running after --timeout=1s", world=False, finding="22.26"),
]



# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(case, tiny_world_dir, tmp_path):
  bad.check_case(case, tiny_world_dir, str(tmp_path / "case"))


def test_the_table_covers_every_command_with_at_least_40_cases():
  commands = {case.command for case in CASES}
  assert len(CASES) >= 40
  assert commands >= {"data.generate", "data.verify", FINE, COARSE, RETRIEVAL, REPLAY,
                      "experiments.compare", "experiments.audit", "experiments.paper", CLUSTER}


def test_a_second_run_into_a_locked_stage_dir_is_refused(tiny_world_dir, tmp_path):
  models = str(tmp_path / "models")
  out_dir = layout.stage_dir(models, "fine/ctr", "baseline")
  with layout.stage_lock(out_dir):
    code, _, stderr = run_in_process(FINE, [f"--world_dir={tiny_world_dir}",
                                            f"--model_dir={models}"])
  assert code == 2 and "is in use by another run" in stderr, stderr
  assert f"pid {os.getpid()}" in stderr
  assert not os.path.exists(os.path.join(out_dir, "metrics.json"))


def test_the_json_a_command_writes_is_strict(tmp_path):
  """Finding 11: a NaN metric is written as null, never as a bare NaN."""
  path = str(tmp_path / "metrics.json")
  files.write_json(path, {"auc": float("nan"), "nested": [np.float32("inf"), 1.0]})
  text = open(path).read()
  assert "NaN" not in text and "Infinity" not in text
  assert json.loads(text) == {"auc": None, "nested": [None, 1.0]}


def test_a_replay_failing_before_its_first_chunk_leaves_no_run_dir(tmp_path):
  """Finding 22.29: no .partial/config.json behind a replay that failed before any chunk."""
  path = str(tmp_path / "run")
  run_dir = run_dir_lib.RunDir(path)
  assert run_dir.start({"day": 4}, overwrite=False) is None
  with pytest.raises(RuntimeError):
    with run_dir.abandoned_on_error():
      raise RuntimeError("the first batch failed")
  assert not os.path.exists(path)


def test_a_replay_failing_after_a_chunk_keeps_it_to_resume(tmp_path):
  path = str(tmp_path / "run")
  run_dir = run_dir_lib.RunDir(path)
  run_dir.start({"day": 4}, overwrite=False)
  with pytest.raises(RuntimeError):
    with run_dir.abandoned_on_error():
      run_dir.write_chunk(0, bad.one_row_table(), {"total": 1.0})
      raise RuntimeError("the second batch failed")
  assert run_dir.chunk_done(0)
  assert files.read_json(os.path.join(path, run_dir_lib.PARTIAL, "config.json")) == {"day": 4}


def test_docs_reliability_tables_are_written_from_these_tests():
  """docs/reliability.md's tables equal what `python -m tests.reliability_table` writes."""
  from tests import reliability_table
  assert reliability_table.main(["--check"]) == 0

"""The cost model's counting against hand computations, and its extrapolation's linearity."""

import pytest

from benchmarks import cost_counting
from benchmarks import cost_model
import data
from stages import catalogue
from stages import config as config_lib

WIDTHS, DIM = (8, 4), 4


@pytest.fixture(scope="module")
def world(tiny_world_dir):
  return data.load(tiny_world_dir)


def build(world, tmp_path, stage, variant="baseline"):
  """The stage's model as its command builds it, with small widths to count by hand."""
  base = config_lib.TrainConfig(world_dir=str(tmp_path / "unused"),
                                model_dir=str(tmp_path), train_days=(1,),
                                validation_fraction=0.0, hidden_units=WIDTHS,
                                embedding_dim=DIM)
  return cost_model.build_stage(world, base, "probe", stage, variant)


def test_fine_ctr_counts_match_a_hand_computation(world, tmp_path):
  head = build(world, tmp_path, catalogue.FINE_CTR).model.student
  history = 2.5
  cost = cost_counting.dnn_cost(head, history)
  # 18 serving features at fine rank, each DIM wide: 9 per request (user, sequences, hour),
  # 9 per candidate (5 item, 4 cross). MLP 72 -> 8 -> 4 -> 1.
  request_rows, candidate_rows = 9 * DIM, 9 * DIM
  assert cost.request_flops == 2 * request_rows * 8 + 3 * history * DIM
  assert cost.candidate_flops == 2 * candidate_rows * 8 + 2 * 8 * 4 + 2 * 4 * 1
  assert cost.example_flops == 2 * 72 * 8 + 2 * 8 * 4 + 2 * 4 + 3 * history * DIM
  assert cost.request_bytes == (6 + 3 * history) * DIM * 4
  assert cost.candidate_bytes == 9 * DIM * 4
  c = world.config
  tables = {t.group: t for t in cost_counting.embedding_tables(head)}
  assert (tables["user_id"].rows, tables["user_id"].dim) == (c.n_users + 1, DIM)
  assert "hist_item_ids" not in tables  # the history shares item_id's table
  expected_rows = ((c.n_users + 1) + 8 + 3 + 6 + 9 + 25  # user_id, age, gender, power,
                   # hist_len buckets, hour; item_id, category, shop, brand, price buckets
                   + (c.n_items + 1) + (c.n_categories + 1) + (c.n_shops + 1)
                   + (c.n_brands + 1) + 29 + 4 * 9)  # and the four cross-count buckets
  assert sum(t.rows for t in tables.values()) == expected_rows
  assert sum(t.bytes for t in tables.values()) == expected_rows * DIM * 4


def test_coarse_teacher_pays_its_user_tower_per_candidate_the_student_per_request(world,
                                                                                   tmp_path):
  model = build(world, tmp_path, catalogue.COARSE, "pfd").model
  student = cost_counting.two_tower_cost(model.student, 1.0)
  teacher = cost_counting.two_tower_cost(model.teacher, 1.0)
  user_tower = 2 * (9 * DIM) * 8 + 2 * 8 * 4  # 9 user-side features -> 8 -> projection 4
  assert student.request_flops == user_tower + 3 * DIM
  assert student.candidate_flops == 2 * 4  # a dot product with the precomputed item vector
  assert student.candidate_bytes == 4 * 4
  assert teacher.request_flops == 0  # the cross features are per (user, item) pair
  assert teacher.candidate_flops == 2 * (13 * DIM) * 8 + 2 * 8 * 4 + 3 * DIM + 2 * 4
  assert student.item_flops == teacher.item_flops == 2 * (5 * DIM) * 8 + 2 * 8 * 4
  # The teacher's own user_id table (unshared) is a second copy; the rest are shared.
  both = cost_counting.embedding_tables(model.student, model.teacher)
  assert [t.group for t in both].count("user_id") == 2
  assert len(both) == len(cost_counting.embedding_tables(model.student)) + 1 + 4


def test_table_bytes_scale_linearly_with_users_and_items_only():
  world = {"users": 1000, "items": 500}
  users = cost_counting.Table("user_id", 1000, 16)
  items = cost_counting.Table("item_shop", 50, 16)
  fixed = cost_counting.Table("user_age_bucket", 8, 16)
  one = cost_counting.table_bytes([users, items, fixed], world,
                                  {"users": 10 ** 8, "items": 10 ** 7})
  two = cost_counting.table_bytes([users, items, fixed], world, {"users": 2 * 10 ** 8,
                                                               "items": 10 ** 7})
  assert two - one == pytest.approx(10 ** 8 * 16 * 4 * 1000 / 1000)
  assert cost_counting.table_bytes([fixed], world, {"users": 1, "items": 1}) == 8 * 16 * 4
  assert cost_counting.table_bytes([items], world, {"users": 1, "items": 1000}) == 100 * 16 * 4
  with_adam = cost_counting.table_bytes([users], world, world, slots=cost_counting.ADAM_SLOTS)
  assert with_adam == 3 * users.bytes


def test_serving_figures_scale_with_candidates_and_requests_per_second():
  cost = cost_counting.HeadCost(request_flops=1000.0, candidate_flops=10.0, request_bytes=64.0,
                             candidate_bytes=8.0)
  costs = {name: cost for name in ("retrieval", "coarse student", "fine CTR",
                                   "fine CVR student")}
  timed = {name: {"request": 1e-4, "candidate": 1e-7} for name in costs}
  config = cost_model.CostConfig(items=10 ** 6, retrieved=10 ** 4, coarse_kept=100,
                                 requests_per_second=1000, ann_fraction=0.1)
  rows = {r["stage"]: r for r in cost_model.serving_rows(costs, timed, config)}
  coarse_row = rows["coarse student"]
  assert coarse_row["flops_per_request"]["value"] == 1000 + 10 ** 4 * 10
  assert coarse_row["bytes_per_request"]["value"] == 64 + 10 ** 4 * 8
  assert coarse_row["cores"]["value"] == pytest.approx((1e-4 + 10 ** 4 * 1e-7) * 1000)
  assert coarse_row["cores"]["kind"] == cost_counting.EXTRAPOLATED
  assert coarse_row["flops_per_candidate"]["kind"] == cost_counting.MEASURED
  assert rows["retrieval, ANN (assumed share)"]["candidates"]["value"] == 10 ** 5
  faster = cost_model.serving_rows(costs, timed, cost_model.CostConfig(
      items=10 ** 6, retrieved=10 ** 4, coarse_kept=100, requests_per_second=2000))
  assert faster[2]["cores"]["value"] == pytest.approx(2 * coarse_row["cores"]["value"])

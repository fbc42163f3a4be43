"""models.ann: FAISS indexes behind TFRS's TopK call give the exact top k when they search
every cell, come close with fewer, always return k distinct items, and survive a save/load."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from models import ann

K = 50


@pytest.fixture(scope="module")
def vectors():
  rng = np.random.default_rng(0)
  items = rng.normal(size=(2000, 16)).astype(np.float32)
  items /= np.linalg.norm(items, axis=1, keepdims=True)
  queries = rng.normal(size=(64, 16)).astype(np.float32)
  ids = np.arange(2000, dtype=np.int64) * 7 + 3  # item ids are not row numbers
  return items, queries, ids


def _exact(items, queries, ids, k=K):
  brute = tfrs.layers.factorized_top_k.BruteForce(k=k)
  brute.index(tf.constant(items), tf.constant(ids))
  return brute(tf.constant(queries))[1].numpy()


def _overlap(a, b):
  return np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)])


def test_an_ivf_index_searching_every_cell_is_the_exact_top_k(vectors):
  items, queries, ids = vectors
  spec = ann.IndexSpec(ann.FAISS_IVF, nlist=16, nprobe=16)
  index = ann.make_index(spec, None, K).index(items, ids)
  scores, found = index(tf.constant(queries))
  assert found.shape == (64, K) and not index.is_exact()
  np.testing.assert_array_equal(np.sort(found.numpy(), 1), np.sort(_exact(items, queries, ids),
                                                                   1))
  assert (np.diff(scores.numpy(), axis=1) <= 1e-6).all()  # best first


def test_fewer_cells_and_hnsw_come_close_and_every_row_has_k_distinct_items(vectors):
  items, queries, ids = vectors
  exact = _exact(items, queries, ids)
  for spec in (ann.IndexSpec(ann.FAISS_IVF, nlist=16, nprobe=8),
               ann.IndexSpec(ann.FAISS_HNSW, ef_search=200)):
    found = ann.make_index(spec, None, K).index(items, ids)(tf.constant(queries))[1].numpy()
    assert _overlap(found, exact) > 0.9, spec
  # One cell of ~125 items cannot hold k = 200: the rest is filled, no -1 and no repeats.
  short = ann.FaissTopK(ann.IndexSpec(ann.FAISS_IVF, nlist=16, nprobe=1), k=200).index(items,
                                                                                      ids)
  found = short(tf.constant(queries[:4]))[1].numpy()
  assert all(len(set(row)) == 200 for row in found) and set(found.ravel()) <= set(ids)


def test_a_saved_index_loads_to_the_same_answers_and_a_query_model_runs_first(vectors, tmp_path):
  items, queries, ids = vectors
  spec = ann.IndexSpec(ann.FAISS_IVF, nlist=16, nprobe=4)
  built = ann.FaissTopK(spec, k=K).index(items, ids)
  built.save(str(tmp_path))
  double = lambda batch: batch["q"] * 2.0  # noqa: E731 (a query model on feature dicts)
  loaded = ann.FaissTopK(spec, query_model=double, k=K).load(str(tmp_path), ids)
  np.testing.assert_array_equal(built(tf.constant(queries))[1].numpy(),
                                loaded({"q": tf.constant(queries)})[1].numpy())
  with pytest.raises(ValueError, match="holds 2000 items"):
    ann.FaissTopK(spec, k=K).load(str(tmp_path), ids[:10])


def test_the_cell_count_leaves_k_means_enough_points_per_cell():
  assert ann.ivf_cells(50_000) == 894
  assert ann.ivf_cells(2_000) == 51
  assert ann.ivf_cells(20) == 1
  with pytest.raises(ValueError, match="unknown index"):
    ann.IndexSpec("annoy")

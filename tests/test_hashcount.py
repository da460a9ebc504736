"""Tests for hsd3_learn.hashcount.HashingCounter."""

import pytest
import torch

from hsd3_learn.hashcount import DEFAULT_BUCKET_SIZES, HashingCounter

SMALL_BUCKETS = (1009, 1013, 1019)


def random_states(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_defaults_and_properties():
    counter = HashingCounter(obs_dim=5)
    assert counter.obs_dim == 5 and counter.key_dim == 32
    assert counter.bucket_sizes == DEFAULT_BUCKET_SIZES == (999931, 999953, 999959, 999961, 999979, 999983)
    assert counter.unique_states() == 0
    counts = counter.count(random_states(3, 5, 0))
    assert counts.dtype == torch.int64 and counts.shape == (3,) and bool((counts == 0).all())


def test_identical_states_share_a_count():
    counter = HashingCounter(obs_dim=4, bucket_sizes=SMALL_BUCKETS)
    state = random_states(1, 4, 0)
    counter.inc(state.repeat(3, 1))
    counter.inc(state.clone())
    assert counter.count(state).tolist() == [4]
    assert counter.unique_states() == 1


def test_nearby_states_with_the_same_code_share_a_count():
    counter = HashingCounter(obs_dim=4, bucket_sizes=SMALL_BUCKETS)
    state = random_states(1, 4, 0)
    counter.inc(state)
    assert counter.count(state * 1.5).tolist() == [1]  # sign(A x) is scale invariant


def test_distinct_states_are_counted_separately():
    counter = HashingCounter(obs_dim=6)
    states = random_states(50, 6, 1)
    counter.inc(states)
    counter.inc(states[:10])
    assert counter.count(-states[:10]).tolist() == [0] * 10  # opposite codes: never seen
    counts = counter.count(states)
    assert counts[:10].tolist() == [2] * 10 and counts[10:].tolist() == [1] * 40
    assert counter.unique_states() == 50


def test_counts_accumulate():
    counter = HashingCounter(obs_dim=3, bucket_sizes=SMALL_BUCKETS)
    state = random_states(1, 3, 2)
    for expected in range(1, 6):
        counter.inc(state)
        assert counter.count(state).item() == expected


def test_batched_inc_equals_one_at_a_time():
    states = random_states(20, 5, 3)
    states = torch.cat([states, states[:7], states[:2]])  # repeats within one batch
    batched = HashingCounter(obs_dim=5, bucket_sizes=SMALL_BUCKETS)
    batched.inc(states)
    single = HashingCounter(obs_dim=5, bucket_sizes=SMALL_BUCKETS)
    for row in states:
        single.inc(row.unsqueeze(0))
    assert torch.equal(batched.state_dict()["counts"], single.state_dict()["counts"])
    assert torch.equal(batched.count(states), single.count(states))
    assert batched.count(states[:2]).tolist() == [3, 3]


def test_same_seed_same_hash_different_seed_different_projection():
    states = random_states(30, 8, 4)
    a = HashingCounter(obs_dim=8, seed=7, bucket_sizes=SMALL_BUCKETS)
    b = HashingCounter(obs_dim=8, seed=7, bucket_sizes=SMALL_BUCKETS)
    c = HashingCounter(obs_dim=8, seed=8, bucket_sizes=SMALL_BUCKETS)
    for counter in (a, b, c):
        counter.inc(states)
    assert torch.equal(a.state_dict()["counts"], b.state_dict()["counts"])
    assert torch.equal(a.state_dict()["projection"], b.state_dict()["projection"])
    assert not torch.equal(a.state_dict()["projection"], c.state_dict()["projection"])
    assert not torch.equal(a.state_dict()["counts"], c.state_dict()["counts"])


def test_state_round_trip(tmp_path):
    states = random_states(25, 4, 5)
    original = HashingCounter(obs_dim=4, seed=3, bucket_sizes=SMALL_BUCKETS)
    original.inc(states)
    path = tmp_path / "counter.pt"
    torch.save(original.state_dict(), path)
    restored = HashingCounter(obs_dim=4, seed=99, bucket_sizes=SMALL_BUCKETS)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(restored.count(states), original.count(states))
    assert restored.unique_states() == original.unique_states()
    restored.inc(states[:1])  # the restored counter owns its tables
    assert original.count(states[:1]).item() + 1 == restored.count(states[:1]).item()


def test_load_state_dict_rejects_a_different_configuration():
    state = HashingCounter(obs_dim=4, bucket_sizes=SMALL_BUCKETS).state_dict()
    with pytest.raises(ValueError, match="projection shape"):
        HashingCounter(obs_dim=5, bucket_sizes=SMALL_BUCKETS).load_state_dict(state)
    with pytest.raises(ValueError, match="bucket_sizes"):
        HashingCounter(obs_dim=4, bucket_sizes=(1009, 1013)).load_state_dict(state)


def test_bad_shapes_and_arguments_error():
    counter = HashingCounter(obs_dim=4, bucket_sizes=SMALL_BUCKETS)
    with pytest.raises(ValueError, match=r"shape \[B, 4\]"):
        counter.inc(torch.zeros(4))
    with pytest.raises(ValueError, match=r"shape \[B, 4\]"):
        counter.count(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"shape \[B, 4\]"):
        counter.inc([[0.0] * 4])
    with pytest.raises(ValueError, match="obs_dim"):
        HashingCounter(obs_dim=0)
    with pytest.raises(ValueError, match="key_dim"):
        HashingCounter(obs_dim=2, key_dim=0)
    with pytest.raises(ValueError, match="bucket_sizes"):
        HashingCounter(obs_dim=2, bucket_sizes=[])

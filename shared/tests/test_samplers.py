import pytest

from cvlab_shared.data.samplers import ShuffledShardSampler


def test_even_shards_cover_the_single_process_shuffle():
    one = list(ShuffledShardSampler(range(8), seed=3))
    ranks = [list(ShuffledShardSampler(range(8), num_replicas=2, rank=r, seed=3)) for r in range(2)]
    assert [i for pair in zip(*ranks) for i in pair] == one


def test_uneven_dataset_drops_the_tail_with_a_warning():
    with pytest.warns(UserWarning, match="do not split evenly"):
        r0 = list(ShuffledShardSampler(range(7), num_replicas=2, rank=0, seed=1))
    r1 = list(ShuffledShardSampler(range(7), num_replicas=2, rank=1, seed=1))
    assert len(r0) == len(r1) == 3
    assert len(set(r0) | set(r1)) == 6

"""The episode sampler against its documented contract, checked independently of its code.

Every synthetic image says what it is: channel 0 holds a unique anchor (255) at (0, 0) and the
source class and image index next to it; the other pixels are random below 255. An image's
rotation is where the anchor went, so every sampled image decodes to (class, index, rotation)
and is compared pixel by pixel with the stored image. Frequencies are then tested by chi-square.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from metarl.core import TaskBatch
from metarl.supervised.data.episodes import ClassImages, fixed_episodes, sample_episodes

ALPHA = 1e-4  # a correct sampler fails one test in 10,000 runs; a biased one is far below this


def _store(counts: list[int], max_per_class: int) -> Tensor:
    """``(len(counts), max_per_class, 2, 4, 4)`` uint8 images; slots past a count stay zero."""
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 255, (len(counts), max_per_class, 2, 4, 4), generator=g)
    images[:, :, 0, 0, 0] = 255  # the anchor: no other pixel is 255
    images[:, :, 0, 0, 1] = torch.arange(len(counts)).view(-1, 1)
    images[:, :, 0, 0, 2] = torch.arange(max_per_class).view(1, -1) // 128
    images[:, :, 0, 0, 3] = torch.arange(max_per_class).view(1, -1) % 128
    images[torch.arange(max_per_class) >= torch.tensor(counts).view(-1, 1)] = 0
    return images.to(torch.uint8)


def _decode(split: ClassImages, x: Tensor) -> Tensor:
    """Float images ``(T, M, C, H, W)`` -> ``(T, M, 3)`` long (source class, index, rotation),
    after checking that each is a stored image, rotated by k·90° (``torch.rot90``), / 255."""
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1  # float32: what models take
    v = (x * 255).round().long()
    unrotated = torch.stack([v.rot90(-k, dims=(-2, -1)) for k in range(4)])
    hits = unrotated[..., 0, 0, 0] == 255  # (4, T, M): the anchor is back at (0, 0)
    assert hits.sum(0).eq(1).all(), "an image is not a (rotated) stored image, e.g. padding"
    rot = hits.long().argmax(0)
    u = unrotated.gather(0, rot.view(1, *rot.shape, 1, 1, 1).expand(1, *v.shape))[0]
    cls, idx = u[..., 0, 0, 1], u[..., 0, 0, 2] * 128 + u[..., 0, 0, 3]
    stored = split.images[cls, idx]  # every pixel of both channels, not just the tags
    expected = torch.stack([stored.rot90(k, dims=(-2, -1)) for k in range(4)])
    expected = expected.gather(0, rot.view(1, *rot.shape, 1, 1, 1).expand(1, *v.shape))[0]
    torch.testing.assert_close(x, expected.float() / 255, rtol=0, atol=1e-7)
    return torch.stack([cls, idx, rot], dim=-1)


def _by_label(split: ClassImages, x: Tensor, y: Tensor, n_way: int, per_label: int) -> Tensor:
    """Decoded images grouped by their label, whatever the layout: ``(T, N, per_label, 3)``."""
    assert y.dtype == torch.long
    y_sorted, order = y.sort(dim=1, stable=True)
    assert y_sorted.eq(torch.arange(n_way).repeat_interleave(per_label)).all()
    ids = _decode(split, x).gather(1, order.unsqueeze(-1).expand(-1, -1, 3))
    return ids.view(y.shape[0], n_way, per_label, 3)


def _check(
    split: ClassImages, batch: TaskBatch, n_way: int, k_shot: int, k_query: int
) -> tuple[Tensor, Tensor]:
    """Check the per-episode contract; return the split entry (index into ``split.classes``)
    of each label ``(T, N)`` and the decoded images ``(T, N, K+Q, 3)``."""
    ids = torch.cat(
        [
            _by_label(split, batch.support_x, batch.support_y, n_way, k_shot),
            _by_label(split, batch.query_x, batch.query_y, n_way, k_query),
        ],
        dim=2,
    )
    # Support and query of a label: one class, one rotation (fixed, random or none).
    assert ids[..., 0].eq(ids[..., :1, 0]).all() and ids[..., 2].eq(ids[..., :1, 2]).all()
    # Distinct, real images of that class: sorted indices strictly increase, below its count.
    assert (ids[..., 1].sort(dim=-1).values.diff(dim=-1) > 0).all()
    n_source, max_per_class = split.images.shape[:2]
    counts = split.counts if split.counts is not None else torch.full((n_source,), max_per_class)
    assert (ids[..., 1] < counts[ids[..., 0]]).all()
    # The split entry of each label: its (class, fixed rotation), a class of the split.
    cls, rot = ids[:, :, 0, 0], ids[:, :, 0, 2]
    entry_rot = split.rotations if split.rotations is not None else torch.zeros_like(split.classes)
    if split.random_rotation:
        rot = torch.zeros_like(rot)
    match = (cls.unsqueeze(-1) == split.classes) & (rot.unsqueeze(-1) == entry_rot)
    assert match.sum(-1).eq(1).all(), "a class that is not in the split, or the wrong rotation"
    entry = match.long().argmax(-1)
    assert (entry.sort(dim=1).values.diff(dim=1) > 0).all()  # N distinct classes per episode
    return entry, ids


def _uniform_p(tables: list[Tensor], variance: float = 1.0) -> float:
    """P-value of "every table's counts are uniform": Pearson chi-square, summed over tables.

    ``variance``: of the counts, relative to multinomial counts. N distinct of n classes per
    episode give (n - N) / (n - 1) exactly; where it is not known (distinct images), 1 errs
    on the safe side: sampling without replacement only makes counts less variable."""
    stat, df = 0.0, 0
    for t in tables:
        t = t.flatten().double()
        e = t.sum() / t.numel()
        stat, df = stat + float(((t - e) ** 2 / e).sum()), df + t.numel() - 1
    # the chi-square survival function: the regularised upper incomplete gamma Q(df/2, x/2)
    x = torch.tensor(stat / variance / 2, dtype=torch.float64)
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), x))


def _sample(split: ClassImages, t: int, n: int, k: int, q: int, seed: int = 0) -> TaskBatch:
    return sample_episodes(split, t, n, k, q, torch.Generator().manual_seed(seed))


def test_classes_and_labels_are_uniform_over_a_subset_split():
    """Split = 6 of 12 source classes, with padded classes: each episode has N distinct split
    classes; over 6,000 episodes each class is as frequent, and gets each label as often."""
    counts = [10, 10, 6, 6, 10, 4, 10, 10, 5, 10, 10, 10]  # classes 2, 5 and 8 have padding
    classes = torch.tensor([1, 2, 5, 7, 8, 11])
    split = ClassImages(_store(counts, 10), classes, counts=torch.tensor(counts))
    entry, _ = _check(split, _sample(split, 6000, 4, 1, 3), 4, 1, 3)
    assert _uniform_p([torch.bincount(entry.flatten(), minlength=6)], (6 - 4) / 5) > ALPHA
    by_class = torch.zeros(6, 4).index_put_(
        (entry.flatten(), torch.arange(4).repeat(6000)), torch.ones(24000), accumulate=True
    )
    assert _uniform_p(list(by_class)) > ALPHA  # label order is random, not sorted


@pytest.mark.parametrize(
    "counts, max_per_class, k_shot, k_query",
    [
        # The two documented ways of drawing images: top-k of one key per image (few per
        # class), and rejection sampling (> 64 per class and 2·(K+Q)² <= the fewest, 2·5² <= 60).
        ([20, 20, 17, 13, 9, 6], 20, 1, 4),
        ([100, 100, 83, 60], 100, 2, 3),
    ],
)
def test_images_are_uniform_per_class_and_slot(counts, max_per_class, k_shot, k_query):
    """Within every class, each (slot, real image) pair is as frequent: images are uniform,
    unequal counts are respected, and support does not favour some images over query."""
    images = _store(counts, max_per_class)
    split = ClassImages(images, torch.arange(len(counts)), counts=torch.tensor(counts))
    per_class = k_shot + k_query
    _, ids = _check(split, _sample(split, 8000, 3, k_shot, k_query), 3, k_shot, k_query)
    cls, idx = ids[..., 0].flatten(), ids[..., 1].flatten()
    slot = torch.arange(per_class).repeat(len(cls) // per_class)
    tables = [
        torch.bincount(slot[cls == c] * c_n + idx[cls == c], minlength=per_class * c_n)
        for c, c_n in enumerate(counts)
    ]
    assert _uniform_p(tables) > ALPHA


def test_fixed_rotations_are_classes_of_their_own():
    """Vinyals' split: a character under a rotation is a class of its own; each comes out with
    exactly its rotation (``torch.rot90``'s direction, as in test_fewshot_data), the (class,
    rotation) pairs of an episode are distinct, and every pair is as frequent."""
    # Not every character has all four rotations: a wrong rotation then matches no class.
    classes = torch.tensor([0, 0, 0, 0, 1, 2, 2, 3, 4, 4, 5])
    rotations = torch.tensor([0, 1, 2, 3, 1, 0, 2, 3, 1, 2, 2])
    split = ClassImages(_store([8] * 6, 8), classes, rotations=rotations)
    entry, _ = _check(split, _sample(split, 3000, 5, 2, 1), 5, 2, 1)
    assert _uniform_p([torch.bincount(entry.flatten(), minlength=11)], (11 - 5) / 10) > ALPHA


def test_random_rotation_is_per_class_and_uniform():
    """With ``random_rotation``, all images of a class in an episode share one rotation (checked
    by ``_check``) and the four rotations are equally frequent, for every label."""
    split = ClassImages(_store([8] * 6, 8), torch.arange(6), random_rotation=True)
    _, ids = _check(split, _sample(split, 4000, 5, 2, 2), 5, 2, 2)
    rot = ids[:, :, 0, 2]  # (T, N)
    assert _uniform_p([torch.bincount(rot[:, n], minlength=4) for n in range(5)]) > ALPHA


def test_fixed_episodes_depend_only_on_the_seed():
    """``fixed_episodes(seed)`` = ``sample_episodes`` with a generator seeded so, whatever the
    global RNG state or what was sampled before; another seed gives other episodes."""
    split = ClassImages(_store([12] * 10, 12), torch.arange(10), random_rotation=True)
    reference = _sample(split, 20, 5, 1, 2, seed=7)
    with torch.random.fork_rng():  # the global RNG of the other tests is left alone
        torch.manual_seed(1)
        first = fixed_episodes(split, 20, 5, 1, 2, seed=7)
        torch.manual_seed(2)
        torch.rand(1000)
        fixed_episodes(split, 50, 3, 2, 2, seed=8)  # sampled in between: must not matter
        second = fixed_episodes(split, 20, 5, 1, 2, seed=7)
    for a, b, c in zip(reference, first, second):
        assert torch.equal(a, b) and torch.equal(a, c)
    _check(split, first, 5, 1, 2)
    other = fixed_episodes(split, 20, 5, 1, 2, seed=8)
    assert not torch.equal(_decode(split, other.query_x), _decode(split, first.query_x))

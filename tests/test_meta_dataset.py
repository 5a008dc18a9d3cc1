"""Meta-Dataset's episode sampler against the paper's rules, and training on its episodes."""

from __future__ import annotations

import pytest
import torch

from metarl.algorithms import Problem, make_algorithm
from metarl.experiments import load_config
from metarl.supervised.conv4 import Conv4
from metarl.supervised.data.episodes import ClassImages
from metarl.supervised.data.meta_dataset import (
    EpisodeSpec,
    describe_episode,
    fit_images,
    sample_meta_dataset_episode,
)
from metarl.supervised.tasks import (
    cross_entropy_per_task,
    variable_way_accuracy_per_task,
    variable_way_cross_entropy_per_task,
)


def _labelled_source(counts: list[int], side: int = 4, channels: int = 1) -> ClassImages:
    """Classes whose images carry their class (pixel 0) and index (pixel 1) as values."""
    per_class = max(counts)
    images = torch.zeros(len(counts), per_class, channels, side, side, dtype=torch.uint8)
    for c in range(len(counts)):
        images[c, :, :, 0, 0] = c
        images[c, :, :, 0, 1] = torch.arange(per_class).unsqueeze(-1)
    classes = torch.arange(len(counts))
    return ClassImages(images, classes, counts=torch.tensor(counts))


def test_every_description_keeps_the_papers_bounds():
    spec, gen = EpisodeSpec(), torch.Generator().manual_seed(0)
    counts = torch.randint(4, 700, (80,), generator=gen)
    seen_ways = set()
    for _ in range(2000):
        classes, shots, query = describe_episode(counts, spec, gen)
        n_way = classes.numel()
        seen_ways.add(n_way)
        n = counts[classes]
        assert 5 <= n_way <= 50 and classes.unique().numel() == n_way
        assert query == min(10, int(n.min()) // 2)
        assert (shots >= 1).all() and (shots <= n - query).all()
        assert n_way <= int(shots.sum()) <= 500
    assert seen_ways == set(range(5, 51))  # N ~ U{5, ..., 50}


def test_support_size_follows_the_beta_formula():
    """Five classes of 20 images: q = 10, so |S| = 5(⌊10β⌋ + 1) is uniform on {5, 10, ..., 50}
    (mean 27.5), and the shots sum to between |S| − 4 and |S| (one floor per class)."""
    spec = EpisodeSpec(min_ways=5, max_ways=5)
    gen = torch.Generator().manual_seed(1)
    totals = torch.tensor(
        [int(describe_episode(torch.full((5,), 20), spec, gen).shots.sum()) for _ in range(4000)],
        dtype=torch.float64,
    )
    assert totals.min() >= 5 - 4 + 4 and totals.max() <= 50  # at least one shot per class
    assert 27.5 - 4 - 0.5 < totals.mean() < 27.5 + 0.5  # sd/√n ≈ 0.23


def test_support_size_is_uniform_where_no_class_runs_out():
    """Five classes of 1010 images: q = 10 and each class contributes min(1000, 100), so
    |S| = 5(⌊100β⌋ + 1), uniform on {5, 10, ..., 500}. No class holds fewer images than its
    share of |S|, so the shots fall short of |S| only by the five floors (at most 4 in all)
    and |S| is the multiple of 5 at or above their sum: each value 40 times of 4000, up to
    chance (χ² with 99 degrees of freedom; 181 is its 1e-6 tail)."""
    spec = EpisodeSpec(min_ways=5, max_ways=5)
    gen = torch.Generator().manual_seed(4)
    totals = torch.tensor(
        [int(describe_episode(torch.full((5,), 1010), spec, gen).shots.sum()) for _ in range(4000)]
    )
    sizes = 5 * torch.div(totals + 4, 5, rounding_mode="floor")
    counts = torch.bincount(sizes // 5 - 1, minlength=100).double()
    assert counts.numel() == 100 and ((counts - 40) ** 2 / 40).sum() < 181


def test_shots_follow_the_class_sizes():
    """R_c ∝ n_c exp(a_c): a class with 10x the images gets far more shots, on average."""
    spec = EpisodeSpec(min_ways=5, max_ways=5)
    gen = torch.Generator().manual_seed(2)
    counts = torch.tensor([40, 40, 40, 40, 400])
    shots = torch.zeros(5)
    for _ in range(500):
        classes, k, _ = describe_episode(counts, spec, gen)
        shots[classes] += k.float()
    assert shots[4] > 4 * shots[:4].mean()


def test_an_episode_holds_the_described_images_and_no_image_twice():
    sources = {"a": _labelled_source([6, 30, 12, 9, 40, 7, 20]), "b": _labelled_source([8] * 9)}
    gen = torch.Generator().manual_seed(3)
    names = set()
    for _ in range(40):
        episode = sample_meta_dataset_episode(sources, EpisodeSpec(), gen, (1, 4, 4))
        batch, (classes, shots, query) = episode.batch, episode.description
        names.add(episode.source)
        n_way = classes.numel()
        assert batch.n_tasks == 1 and batch.support_x.shape[1] == int(shots.sum())
        assert batch.query_x.shape[1] == n_way * query
        assert torch.equal(batch.support_y[0], torch.arange(n_way).repeat_interleave(shots))
        assert torch.equal(batch.query_y[0], torch.arange(n_way).repeat_interleave(query))
        for x, y in (
            (batch.support_x[0], batch.support_y[0]),
            (batch.query_x[0], batch.query_y[0]),
        ):
            origin = (x[:, 0, 0, 0] * 255).round().long()
            assert torch.equal(origin, classes[y])  # each image from its label's class
        pairs = [
            (int(c), int(i))
            for x in (batch.support_x[0], batch.query_x[0])
            for c, i in (x[:, 0, 0, :2] * 255).round().long().tolist()
        ]
        assert len(set(pairs)) == len(pairs)  # distinct images; none in support and query
        counts = sources[episode.source].counts
        assert all(i < counts[c] for c, i in pairs)  # no padding slot
    assert names == {"a", "b"}


def test_the_same_seed_gives_the_same_episode():
    sources = {"a": _labelled_source([12] * 20)}
    one, two = (
        sample_meta_dataset_episode(
            sources, EpisodeSpec(), torch.Generator().manual_seed(5), (1, 4, 4)
        )  # fmt: skip
        for _ in range(2)
    )
    assert all(torch.equal(a, b) for a, b in zip(one.batch, two.batch))


def test_fit_images_maps_channels_and_size():
    grey = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    colour = fit_images(grey, (3, 8, 8))
    assert colour.shape == (3, 3, 8, 8) and torch.equal(colour[:, 0], colour[:, 2])
    torch.testing.assert_close(colour[:, 1:2], grey.float() / 255)
    rgb = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(fit_images(rgb, (1, 8, 8)), rgb.float().mean(1, keepdim=True) / 255)
    flat = torch.full((1, 1, 28, 28), 51, dtype=torch.uint8)
    torch.testing.assert_close(fit_images(flat, (1, 12, 12)), torch.full((1, 1, 12, 12), 0.2))


def test_variable_way_losses_score_only_the_episodes_classes():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 6, 10, generator=gen)
    labels = torch.tensor([[0, 1, 2, 2, 1, 0], [0, 1, 2, 3, 4, 4]])  # 3 and 5 ways
    losses = variable_way_cross_entropy_per_task(logits, labels)
    for t, n_way in enumerate((3, 5)):
        expected = cross_entropy_per_task(logits[t : t + 1, :, :n_way], labels[t : t + 1])
        torch.testing.assert_close(losses[t : t + 1], expected)
        predicted = logits[t, :, :n_way].argmax(-1)
        accuracy = (predicted == labels[t]).float().mean()
        torch.testing.assert_close(variable_way_accuracy_per_task(logits, labels)[t], accuracy)


@pytest.mark.parametrize("mode", ["second_order", "first_order"])
@pytest.mark.parametrize("algorithm", ["maml", "proto_maml"])
def test_a_wide_head_on_an_episode_equals_the_head_cut_to_its_classes(algorithm, mode):
    """A 12-output Conv-4 on a 5-way episode, absent classes masked, gives the meta-gradient of
    the same network cut to 5 outputs (the absent rows get no gradient and change nothing;
    ProtoMAML's absent prototypes are masked)."""
    torch.set_default_dtype(torch.float64)
    try:
        sources = {"a": _labelled_source([9] * 12, side=12)}
        spec = EpisodeSpec(min_ways=5, max_ways=5, max_query=2)
        gen = torch.Generator().manual_seed(6)
        batch = sample_meta_dataset_episode(sources, spec, gen, (1, 12, 12)).batch
        batch = batch._replace(
            support_x=batch.support_x + 0.1 * torch.rand(batch.support_x.shape, generator=gen),
            query_x=batch.query_x + 0.1 * torch.rand(batch.query_x.shape, generator=gen),
        )
        torch.manual_seed(0)
        wide = Conv4(12, 1, 12, filters=4)
        narrow = Conv4(5, 1, 12, filters=4)
        narrow.load_state_dict(
            {k: v[:5] if k.startswith("head") else v for k, v in wide.state_dict().items()}
        )
        config = load_config(
            "omniglot-5w1s", [f"algorithm={algorithm}", "inner_steps=2", f"meta_gradient={mode}"]
        )
        problems = (
            Problem(variable_way_cross_entropy_per_task, variable_way_accuracy_per_task, "acc"),
            Problem(cross_entropy_per_task),
        )
        grads = []
        for model, problem in zip((wide, narrow), problems):
            loss = make_algorithm(config, model).meta_loss(model, batch, problem, 0).loss
            params = dict(model.named_parameters())
            # ProtoMAML replaces θ's head by prototypes: θ's own head is unused
            found = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            grads.append({n: torch.zeros_like(p) if g is None else g
                          for (n, p), g in zip(params.items(), found)})  # fmt: skip
        for name, grad in grads[1].items():
            wide_grad = grads[0][name][:5] if name.startswith("head") else grads[0][name]
            torch.testing.assert_close(wide_grad, grad)
        assert grads[0]["head.weight"][5:].abs().max() == 0
        assert grads[0]["blocks.0.conv.weight"].abs().max() > 0
    finally:
        torch.set_default_dtype(torch.float32)

"""The measurements ``metarl analyze`` takes of a network: its last hidden layer, 2-D
embeddings, class scores after adaptation, saliency, activation maximisation, how far
adaptation moves each layer, and the episodes of a gradient-alignment measurement."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from metarl.algorithms import Problem
from metarl.algorithms.maml import last
from metarl.analysis.data import episodes, trained_classes
from metarl.analysis.models import Subject, layer_outputs
from metarl.analysis.numbers import relative_change
from metarl.analysis.writeup import ACTIVATION_MAX_STEPS, L2_WEIGHT, TV_WEIGHT
from metarl.core import TaskBatch, get_params
from metarl.core.functional import single_forward
from metarl.supervised.tasks import accuracy_per_task, cross_entropy_per_task

ACTIVATION_MAX_LR = 0.05  # Adam on the input; the objective: metarl.analysis.writeup


def depth(name: str) -> int:
    return int("".join(ch for ch in name if ch.isdigit()))


def last_hidden(model: nn.Sequential, images: Tensor) -> Tensor:
    outputs = layer_outputs(model, images)
    return outputs[max((k for k in outputs if k.startswith("hidden")), key=depth)]


def embed(features: Tensor, seed: int) -> dict[str, Tensor]:
    """PCA and t-SNE (scikit-learn; perplexity 30, PCA initialisation) of ``features``."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = features.double().numpy()
    return {
        "PCA": torch.from_numpy(PCA(2, random_state=seed).fit_transform(x)),
        "t-SNE": torch.from_numpy(
            TSNE(2, init="pca", perplexity=30, random_state=seed).fit_transform(x)
        ),
    }


def class_scores(
    s: Subject, images: Tensor, labels: Tensor, classes: list[int]
) -> Callable[[Tensor], Tensor] | None:
    """``x (n, 1, 28, 28) -> (n, len(classes))``: each held-out class's score. A meta-learned
    model is first adapted to an episode of those classes (the next 5 test images of each, its
    own steps and step size); ordinary training scores with its own logits of those classes
    (None if it has none)."""
    if s.meta_learned:
        support_x = torch.cat([images[labels == c][1:6] for c in classes])
        support_y = torch.arange(len(classes)).repeat_interleave(5)
        adapted = s.frozen_params(s.run.adapt(support_x, support_y))
        return lambda x: single_forward(s.frozen, adapted, x)
    if getattr(s.config, "classes", "all") != "all":
        return None
    return lambda x: s.frozen(x)[:, classes]


def saliency(score: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    """``|∂ score_c(x_c) / ∂ x_c|`` for the c-th input and class (Simonyan et al. 2014)."""
    x = inputs.clone().requires_grad_(True)
    chosen = score(x).diagonal().sum()
    (grad,) = torch.autograd.grad(chosen, x)
    return grad.abs()[:, 0]


def maximise(model: nn.Sequential, layer: str, unit: int, seed: int) -> Tensor:
    """An input in [0, 1] that excites ``unit`` of ``layer`` (see :data:`L2_WEIGHT`)."""
    cut = layer_index(model, layer)
    head = model[: cut + 1]
    x = 0.5 + 0.01 * torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    x.requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=ACTIVATION_MAX_LR)
    for _ in range(ACTIVATION_MAX_STEPS):
        activation = head(x)[0, unit].mean()  # a channel: its mean over space
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., 1:] - x[..., :-1]).abs().sum()
        objective = activation - L2_WEIGHT * (x - 0.5).square().sum() - TV_WEIGHT * tv
        optimiser.zero_grad()
        (-objective).backward()
        optimiser.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
    return x.detach()[0, 0]


def layer_index(model: nn.Sequential, layer: str) -> int:
    """Index in ``model`` of ``norm3`` (the third FrozenNorm) and the like."""
    from metarl.analysis.models import FrozenNorm

    kind = FrozenNorm if layer.startswith("norm") else nn.ReLU
    seen = 0
    for i, module in enumerate(model):
        if isinstance(module, kind):
            seen += 1
            if seen == depth(layer):
                return i
    raise ValueError(f"no layer {layer}")


def adaptation_change(
    s: Subject, images: Tensor, labels: Tensor, classes: list[int], seed: int
) -> dict[str, float]:
    """Mean relative change of each parameter tensor after the run's own inner loop (its
    training steps and step size) on 100 episodes of the held-out classes."""
    config = s.config
    generator = torch.Generator().manual_seed(seed)
    batch = episodes(images, labels, classes, 100, config.n_way, config.k_shot, config.k_query,
                      generator, lambda c, position: position)  # fmt: skip
    problem = Problem(cross_entropy_per_task, accuracy_per_task, "accuracy")
    adapted = last(s.run.algorithm.adapt_steps(s.run.model, batch, problem, config.inner_steps))
    change = relative_change({n: p.detach() for n, p in get_params(s.run.model).items()},
                             {n: p.detach() for n, p in adapted.items()})  # fmt: skip
    return {readable(s.run.model, name): value for name, value in change.items()}


def readable(model: nn.Module, name: str) -> str:
    """``"4.weight"`` → ``"linear2.weight"``: Sequential indices as the layers' kinds; Conv4's
    ``blocks.1.conv.weight`` → ``conv2.weight``, ``blocks.1.bn.bias`` → ``norm2.bias``."""
    if name.startswith("blocks."):
        _, block, kind, leaf = name.split(".")
        return f"{'conv' if kind == 'conv' else 'norm'}{int(block) + 1}.{leaf}"
    if name.startswith("head."):
        return name
    index, _, leaf = name.partition(".")
    kind = type(model[int(index)])
    count = sum(isinstance(m, kind) for m in list(model)[: int(index) + 1])
    prefix = "linear" if kind is nn.Linear else "norm"
    return f"{prefix}{count}.{leaf}"


def alignment_tasks(
    s: Subject, images: Tensor, labels: Tensor, held_out: list[int], n_tasks: int, seed: int,
    trained: bool,
) -> tuple[TaskBatch, nn.Module]:  # fmt: skip
    """Episodes for a model's gradient alignment, labelled as the model labels them, and the
    model as it is used: a meta-learned one normalises each batch by itself (its protocol), an
    ordinary one with its frozen statistics."""
    generator = torch.Generator().manual_seed(seed)
    n_way = getattr(s.config, "n_way", 5)
    if s.meta_learned:
        from metarl.experiments import get_experiment

        model = (
            s.run.model if trained else get_experiment(s.config.experiment).build_model(s.config)
        )
        return episodes(images, labels, held_out, n_tasks, n_way, 1, 5, generator,
                         lambda c, position: position), model  # fmt: skip
    model = s.frozen if trained else s.initial
    if getattr(s.config, "classes", "all") == "all":
        return episodes(images, labels, held_out, n_tasks, n_way, 1, 5, generator,
                         lambda c, position: c), model  # fmt: skip
    own = trained_classes(s.config)
    return episodes(images, labels, own, n_tasks, min(n_way, len(own)), 1, 5, generator,
                     lambda c, position: own.index(c)), model  # fmt: skip

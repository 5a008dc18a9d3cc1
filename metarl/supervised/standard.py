"""Ordinary supervised training: the reference that meta-learned features are compared with.

``metarl train standard-mnist`` trains the fully connected classifier of the feature-analysis
study (784-256-128-64-64-10, BatchNorm then ReLU) on MNIST's training images with Adam and L2
regularisation; ``metarl evaluate`` measures its accuracy on the 10,000 test images. The loop is
short and plain on purpose: it is the control of an experiment, not a method.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarl.config import to_dict
from metarl.core import all_finite
from metarl.loop import CheckpointSchedule, deadline_passed
from metarl.reports import ERROR_BAR_SCALE, Curve, EvalReport, Headline, ModelChoice, write_report
from metarl.run import CHECKPOINT, MetricsLog, atomic_torch_save, load_checkpoint, load_weights
from metarl.runtime import set_num_threads
from metarl.seeding import seeded
from metarl.supervised.config import StandardConfig
from metarl.supervised.models import bn_mlp, conv4_sequential

TRAIN_IMAGES = 60_000
"""MNIST and Fashion-MNIST: the first 60,000 images are the training file's, the rest the test
file's."""

REFERENCE_ACCURACY = 0.9671
"""The study's reported test accuracy of the standard-trained network on MNIST."""


def load_images(config: StandardConfig, subset: str) -> tuple[Tensor, Tensor]:
    """``(images (M, 1, 28, 28) float in [0, 1], labels (M,))`` of the training or test file,
    restricted to ``train_classes`` (relabelled 0..n-1 in their order) if ``classes=train``.

    Raises:
        DataError: the data is missing or corrupt.
    """
    if config.dataset == "omniglot":
        return _omniglot_images(config, subset)
    from metarl.supervised.data.mnist import load_idx_dataset

    images, labels = load_idx_dataset(config.dataset, config.data_dir)
    part = slice(0, TRAIN_IMAGES) if subset == "train" else slice(TRAIN_IMAGES, None)
    images, labels = images[part], labels[part]
    if config.classes == "train":
        keep = torch.isin(labels, torch.tensor(config.train_classes))
        relabel = torch.full((10,), -1, dtype=torch.long)
        relabel[torch.tensor(config.train_classes)] = torch.arange(len(config.train_classes))
        images, labels = images[keep], relabel[labels[keep]]
    return images.unsqueeze(1).float() / 255.0, labels


OMNIGLOT_TRAIN_DRAWERS = 15
"""Omniglot: the first 15 of each character's 20 drawings train, the last 5 test."""


def _omniglot_images(config: StandardConfig, subset: str) -> tuple[Tensor, Tensor]:
    """The maml split's training characters (labels 0..1099 in the split's order): drawers
    1-15 for ``train``, 16-20 for ``test``; strokes 1, background 0, as MAML sees them."""
    from metarl.supervised.data.omniglot import load_omniglot, omniglot_split

    data = load_omniglot(config.data_dir)
    characters = omniglot_split(data, "maml", "train", config.data_dir).classes
    drawers = (
        slice(0, OMNIGLOT_TRAIN_DRAWERS)
        if subset == "train"
        else slice(OMNIGLOT_TRAIN_DRAWERS, None)
    )
    images = data["images"][characters][:, drawers]  # (1100, drawers, 28, 28)
    labels = torch.arange(len(characters)).repeat_interleave(images.shape[1])
    return images.reshape(-1, 1, *images.shape[-2:]).float() / 255.0, labels


IMAGE_SHAPE = (1, 28, 28)
"""Every dataset of ordinary training is 28×28 grey images (Omniglot resized as the paper's)."""


def io_shapes(config: StandardConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """One image :data:`IMAGE_SHAPE` and its integer label ``()``."""
    return IMAGE_SHAPE, ()


def build_model(config: StandardConfig) -> nn.Sequential:
    """The classifier, with BatchNorm's running statistics, initial weights from the seed."""
    with seeded(config.seed):
        if config.network == "conv4":
            return conv4_sequential(config.n_classes, running_statistics=True)
        return bn_mlp(
            math.prod(IMAGE_SHAPE), config.mlp_hidden, config.n_classes, running_statistics=True
        )


def l2_penalty(model: nn.Module) -> Tensor:
    """``Σ‖W‖²`` over the Linear and convolution weights (not biases, not BatchNorm)."""
    return sum(
        (m.weight.square().sum() for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)),
        torch.zeros(()),
    )


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch: int = 1000) -> float:
    """Share of ``images`` classified as ``labels``, in evaluation mode."""
    model.eval()
    correct = sum(
        int((model(images[i : i + batch]).argmax(-1) == labels[i : i + batch]).sum())
        for i in range(0, len(images), batch)
    )
    return correct / len(images)


def train(
    config: StandardConfig,
    run_dir: Path,
    resume_state: dict[str, Any] | None = None,
    progress: bool = True,
    stop_at: float | None = None,
) -> nn.Module:
    """Train for ``config.epochs`` epochs; a checkpoint at the end of every
    ``checkpoint_every``-th epoch, and of the first logged epoch ``checkpoint_minutes`` after
    the last checkpoint (a resume continues from there exactly). With ``stop_at`` (a
    ``time.time()``) training also stops, with a checkpoint, at the first logged epoch's end
    after it.

    Every epoch adds ``train/loss`` (cross-entropy, mean over the epoch's batches),
    ``train/accuracy`` and ``test/accuracy`` (after the epoch) to ``metrics.jsonl``.
    """
    from metarl.loop import progress_bar

    set_num_threads(config.num_threads)
    images, labels = load_images(config, "train")
    test_images, test_labels = load_images(config, "test")
    model = build_model(config).to(config.device)
    decay = config.l2 if config.l2_style == "adam" else 0.0
    penalty = config.l2 if config.l2_style == "loss" else 0.0
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=decay
    )
    order = torch.Generator().manual_seed(config.seed)
    start, elapsed_before = 0, 0.0
    if resume_state is not None:
        load_weights(model, resume_state["model"], run_dir / CHECKPOINT)
        optimizer.load_state_dict(resume_state["optimizer"])
        order.set_state(resume_state["order"])
        start, elapsed_before = resume_state["iteration"], resume_state["elapsed"]
    log = MetricsLog(run_dir, config.tensorboard, start if resume_state else None)
    steps = math.ceil(len(images) / config.batch_size)
    bar = progress_bar(total=config.epochs * steps, initial=start * steps, unit="batch",
                       desc=config.experiment, disable=not progress)  # fmt: skip
    started = time.perf_counter()
    saves = CheckpointSchedule(config.checkpoint_every, config.checkpoint_minutes)
    try:
        for epoch in range(start, config.epochs):
            model.train()
            permutation = torch.randperm(len(images), generator=order)
            loss_sum, correct = 0.0, 0
            for i in range(0, len(images), config.batch_size):
                index = permutation[i : i + config.batch_size]
                x, y = images[index].to(config.device), labels[index].to(config.device)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                (loss + penalty * l2_penalty(model) if penalty else loss).backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(index)
                correct += int((logits.argmax(-1) == y).sum())
                bar.update()
            done = epoch + 1
            test = accuracy(model, test_images.to(config.device), test_labels.to(config.device))
            bar.set_postfix(test_accuracy=f"{test:.4f}")
            window_ends = done % config.log_every == 0
            session_over = window_ends and deadline_passed(stop_at)
            last = done == config.epochs or session_over
            if window_ends or last:
                log.write(done, {"train/loss": loss_sum / len(images),
                                 "train/accuracy": correct / len(images),
                                 "test/accuracy": test})  # fmt: skip
            if saves.due(done, window_ends) or last:
                moments = [t for st in optimizer.state.values() for t in st.values()
                           if t.is_floating_point()]  # fmt: skip
                if not (all_finite(list(model.parameters())) and all_finite(moments)):
                    kept = (
                        "the last checkpoint is intact. " if (run_dir / CHECKPOINT).exists() else ""
                    )
                    raise FloatingPointError(
                        f"the parameters are not finite after epoch {done}; {kept}Try a smaller lr."
                    )
                state = {
                    "config": to_dict(config),
                    "iteration": done,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "order": order.get_state(),
                    "elapsed": elapsed_before + time.perf_counter() - started,
                }
                atomic_torch_save(state, run_dir / CHECKPOINT)
                saves.saved()
            if session_over:
                break
    finally:
        bar.close()
        log.close()
    return model


def evaluate(
    config: StandardConfig, run_dir: Path, retrain_baselines: bool = False, progress: bool = True
) -> EvalReport:
    """Accuracy on the test file's images (of ``train_classes`` if ``classes=train``), with a
    95% binomial interval ``1.96 √(p(1 − p) / n)``; writes ``eval.json``."""
    started = time.perf_counter()
    state = load_checkpoint(run_dir, experiment=config.experiment)
    model = build_model(config)
    load_weights(model, state["model"], Path(run_dir) / CHECKPOINT)
    images, labels = load_images(config, "test")
    p = accuracy(model, images, labels)
    curve = Curve("standard_training", "standard training", [0], [p],
                  [ERROR_BAR_SCALE["ci95"] * math.sqrt(p * (1 - p) / len(images))])  # fmt: skip
    references = []
    if (
        config.dataset == "mnist"
        and config.classes == "all"
        and config.mlp_hidden == [256, 128, 64, 64]
    ):
        references.append(Curve("standard_training", "standard training (the study)", [0],
                                [REFERENCE_ACCURACY]))  # fmt: skip
    report = EvalReport(
        experiment=config.experiment,
        family="standard",
        metric="test accuracy",
        higher_is_better=True,
        error_bar="ci95",
        curves=[curve],
        headline=Headline("test accuracy", "standard_training", 0),
        model=ModelChoice("last", state["iteration"], state["iteration"]),
        protocol={"test_images": len(images), "classes": config.classes},
        seconds=time.perf_counter() - started,
        config=to_dict(config),
        display_scale=100.0,
        table_steps=[0],
        references=references,
    )
    write_report(report, run_dir)
    return report


def preflight(config: StandardConfig) -> None:
    """The dataset is where it is looked for.

    Raises:
        DataError: it is not.
    """
    from metarl.supervised.data.files import dataset_dir
    from metarl.supervised.data.mnist import FALLBACK_DIRS

    if config.dataset == "omniglot":
        from metarl.supervised.data.omniglot import load_omniglot

        load_omniglot(config.data_dir)  # checks the archives (and caches the decoded images)
        return

    dataset_dir(config.data_dir, config.dataset, FALLBACK_DIRS.get(config.dataset, ()))

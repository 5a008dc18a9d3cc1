"""The config of N-way K-shot classification: data, episodes, Conv-4 or MLP, evaluation;
defaults are the MAML paper's Omniglot 5-way 1-shot protocol (Finn et al. 2017, Sec. 5.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from metarl.config import ConfigError, option, override
from metarl.supervised.config import SupervisedConfig
from metarl.supervised.models import BN_MLP_HIDDEN
from metarl.supervised.networks import network_names

DATASETS = ("omniglot", "mnist", "fashion-mnist", "cifar10", "image_folder")
TEN_CLASS = ("mnist", "fashion-mnist", "cifar10")
"""Datasets split by label into meta-training and meta-test classes, with no validation classes."""
BN_POLICIES = ("transductive", "support_statistics")
EPISODES = ("fixed", "meta_dataset")


@dataclass
class ClassificationConfig(SupervisedConfig):
    """N-way K-shot classification. Defaults are the paper's Omniglot 5-way 1-shot.

    ``bn_policy`` defaults to ``transductive``, the paper's (and its code's) BatchNorm: the
    support set and the query set are each normalised with their own batch statistics, so a
    query prediction depends on the other query images of the episode. That is the protocol
    behind the published numbers, hence the default; ``support_statistics`` normalises the
    query images with the support set's statistics instead (no information flows between query
    images), at the price of one extra forward of the support set in the query pass (Conv-4
    only; such a run's ``LoadedRun.predict`` takes the support set too, ``support_x``).
    """

    RENAMED: ClassVar[dict[str, str]] = {
        "eval_episodes": "eval_tasks",
        "eval_inner_steps": "eval_steps",
    }

    # --- data --------------------------------------------------------------------------------
    dataset: str = option(
        "omniglot", "omniglot, mnist, fashion-mnist, cifar10 or image_folder", choices=DATASETS
    )
    data_dir: str | None = option(
        None,
        "data root holding <dataset>/ (image_folder: the folder itself); null: $METARL_DATA, "
        "else ../shared/data next to the repository",
    )
    split: str = option(
        "maml",
        "Omniglot split: maml (1100/100/423 characters, random 90° rotations per episode) or "
        "vinyals (the split lists, rotations as extra classes)",
        choices=("maml", "vinyals"),
    )
    omniglot_resize: str = option(
        "lanczos",
        "Omniglot's 105×105 1-bit images to 28×28: lanczos (antialiased greyscale, as the paper "
        "says 'downsampled') or nearest (binary: the MAML script asked Pillow for Lanczos on the "
        "1-bit PNGs, which Pillow does with nearest neighbour)",
        choices=("lanczos", "nearest"),
    )
    train_classes: list[int] = option(
        [0, 1, 2, 3, 4],
        "(Fashion-)MNIST, CIFAR-10: labels used for meta-training; the other labels are meta-test",
        low=0,
        high=9,
    )
    image_size: int = option(84, "image_folder: images are resized to this square side", low=16)
    # --- episodes ----------------------------------------------------------------------------
    episodes: str = option(
        "fixed",
        "fixed: N-way K-shot episodes of `dataset` (n_way, k_shot, k_query; the paper), or "
        "meta_dataset: Meta-Dataset's variable ways and class-imbalanced shots drawn from "
        "`sources` (one episode per meta-iteration; docs/algorithms.md)",
        choices=EPISODES,
    )
    sources: list[str] = option(
        [],
        "meta_dataset: the datasets episodes are drawn from, each its training classes (e.g. "
        "[omniglot, mnist]); empty: [dataset]",
    )
    eval_sources: list[str] = option(
        [],
        "meta_dataset: the datasets whose eval_subset classes are evaluated, reported one by "
        "one; a dataset not in `sources` is unseen in training; empty: the sources",
    )
    max_ways: int = option(
        50, "meta_dataset: most classes of an episode, the classifier's width (the paper's 50)",
        low=5,
    )  # fmt: skip
    n_way: int = option(5, "classes per episode (N)", low=2)
    k_shot: int = option(1, "support images per class (K)", low=1)
    k_query: int = option(
        1, "query images per class during meta-training (the original code: K, as here)", low=1
    )
    # --- model -------------------------------------------------------------------------------
    network: str = option(
        "conv4",
        "conv4 (the paper's), mlp (fully connected, Linear-BatchNorm-ReLU per hidden layer: "
        "the feature-analysis study's 784-256-128-64-64-N), or one added with "
        "metarl.supervised.networks.register_network",
        listed=network_names,
    )
    mlp_hidden: list[int] = option(list(BN_MLP_HIDDEN), "mlp: hidden widths", low=1)
    filters: int = option(64, "channels of each of the 4 conv blocks", low=1)
    downsample: str = option(
        "stride",
        "stride (stride-2 convs, the paper's Omniglot net) or maxpool (its MiniImageNet net)",
        choices=("stride", "maxpool"),
    )
    bn_policy: str = option(
        "transductive",
        "BatchNorm statistics: transductive (support and query each their own batch, as the "
        "paper) or support_statistics (query normalised by the support set: no query leakage; "
        "Conv-4 only)",
        choices=BN_POLICIES,
    )
    # --- meta-training -----------------------------------------------------------------------
    iterations: int = override(60_000)
    meta_batch_size: int = override(32)
    inner_lr: float = override(0.4)
    # --- evaluation (metarl evaluate) --------------------------------------------------------
    eval_tasks: int = override(600)
    eval_steps: int = override(10)
    eval_subset: str = option("test", "classes evaluated: test or val", choices=("test", "val"))
    eval_k_query: int | None = option(
        None, "query images per class of a test episode; null: the same as k_query", low=1
    )
    eval_chunk: int = option(25, "test episodes adapted together (bounds memory)", low=1)
    val_every: int = option(
        0,
        "iterations between validations during training: accuracy after eval_steps steps on "
        "val_tasks fixed episodes of the validation classes, logged as val/accuracy (a multiple "
        "of log_every; 0: never; ignored without validation classes: (Fashion-)MNIST, CIFAR-10 "
        "and Meta-Dataset episodes)",
        low=0,
    )
    val_tasks: int = option(100, "episodes of each validation during training", low=1)
    eval_model: str = option(
        "last",
        "the trained model that `metarl evaluate` tests: last = the final iteration's (the "
        "paper's protocol), best = the one with the highest val/accuracy among training's "
        "validations (a deviation: the validation classes choose the model; needs val_every)",
        choices=("last", "best"),
    )
    eval_nil: bool = option(
        False,
        "also report NIL (Raghu et al. 2020): no head, each query labelled by the softmax of its "
        "cosine similarities to the support features (conv4)",
    )
    eval_prototypes: bool = option(
        False,
        "also report a probe of the meta-learned features: a prototypical network's accuracy "
        "on them (the head replaced by the class prototypes, no step; conv4)",
    )

    def validate(self) -> None:
        super().validate()
        if self.network not in network_names():
            raise ConfigError(
                f"network: {self.network!r} is not one of {network_names()} (a network of your "
                "own: register it with metarl.supervised.networks.register_network, and on the "
                "command line import that code first: metarl --import MODULE_OR_FILE ...)"
            )
        if self.episodes == "meta_dataset":
            self._validate_meta_dataset()
        elif self.dataset in TEN_CLASS:
            train = set(self.train_classes)
            if len(train) != len(self.train_classes):
                raise ConfigError(f"train_classes: repeated labels in {self.train_classes}")
            if self.n_way > min(len(train), 10 - len(train)):
                raise ConfigError(
                    f"n_way={self.n_way}: train_classes {sorted(train)} leave "
                    f"{len(train)} meta-train and {10 - len(train)} meta-test labels; "
                    "each side needs at least n_way"
                )
            if self.eval_subset == "val":
                raise ConfigError(f"eval_subset: {self.dataset} has no validation classes")
        if self.val_every % self.log_every:
            raise ConfigError(
                f"val_every ({self.val_every}) must be a multiple of log_every "
                f"({self.log_every}): the validation is logged with a window's means"
            )
        if self.eval_model == "best" and not self.validates:
            raise ConfigError(
                "eval_model: best is chosen by validations during training, and this config "
                "has none (val_every 0, or no validation classes); use eval_model=last"
            )
        if self.dataset == "image_folder" and not self.data_dir:
            raise ConfigError("data_dir: image_folder needs the folder (with train.csv, ...)")
        if self.episodes == "meta_dataset":
            read, named = {*self.training_sources, *self.evaluated_sources}, "sources"
        else:
            read, named = {self.dataset}, "dataset"
        if self.omniglot_resize != "lanczos" and "omniglot" not in read:
            raise ConfigError(f"omniglot_resize={self.omniglot_resize}: this run reads no "
                              f"Omniglot ({named}: {', '.join(sorted(read))})")  # fmt: skip
        if self.bn_policy == "support_statistics" and self.network != "conv4":
            raise ConfigError("bn_policy=support_statistics normalises a query by the support set "
                              f"inside Conv-4; network={self.network} has no BatchNorm that can: "
                              "set network=conv4 or bn_policy=transductive")  # fmt: skip
        for probe in ("eval_nil", "eval_prototypes"):
            if getattr(self, probe) and self.network != "conv4":
                raise ConfigError(f"{probe}: the probe reads Conv-4's features; set "
                                  f"network=conv4 or {probe}=false")  # fmt: skip

    def _validate_meta_dataset(self) -> None:
        for key in ("sources", "eval_sources"):
            unknown = [name for name in getattr(self, key) if name not in DATASETS]
            if unknown:
                raise ConfigError(f"{key}: {unknown} not among {list(DATASETS)}")
        if "image_folder" in self.training_sources + self.evaluated_sources and not self.data_dir:
            raise ConfigError("data_dir: an image_folder source needs the folder")
        no_val = [n for n in self.evaluated_sources if n in TEN_CLASS]
        if self.eval_subset == "val" and no_val:
            raise ConfigError(f"eval_subset: {no_val} have no validation classes")
        if self.meta_batch_size != 1:
            raise ConfigError(
                f"meta_batch_size={self.meta_batch_size}: episodes=meta_dataset trains on one "
                "episode per meta-iteration (episodes differ in size); set meta_batch_size=1"
            )

    @property
    def validates(self) -> bool:
        """Whether training validates every ``val_every`` iterations: set, and the episodes have
        validation classes to come from."""
        no_val = self.episodes == "meta_dataset" or self.dataset in TEN_CLASS
        return self.val_every > 0 and not no_val

    @property
    def training_sources(self) -> list[str]:
        """The datasets meta-training episodes come from (``sources``, else ``[dataset]``)."""
        return list(self.sources) or [self.dataset]

    @property
    def evaluated_sources(self) -> list[str]:
        """The datasets evaluated (``eval_sources``, else the training sources)."""
        return list(self.eval_sources) or self.training_sources

    @property
    def test_k_query(self) -> int:
        """Query images per class of a test episode (``eval_k_query``, else ``k_query``)."""
        return self.k_query if self.eval_k_query is None else self.eval_k_query

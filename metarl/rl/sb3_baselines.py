"""The paper's meta-RL baselines, trained with Stable-Baselines3 PPO (Finn et al. 2017, Sec. 5.3).

- **pretrained**: one policy trained on the whole task distribution (a new task at every
  reset), with the MAML policy's network, then adapted at test time with exactly the same
  REINFORCE steps as MAML (:func:`metarl.rl.evaluate.adaptation_curve`);
- **oracle**: a policy that sees the task's parameters (goal, target velocity or direction)
  appended to its observation; evaluated without adaptation, sampling its actions like every
  other method (and, for reference, with its mean action).

Both train on the batched simulator through :class:`~metarl.rl.sb3_env.TaskVecEnv`, with
observations and rewards normalised by SB3's ``VecNormalize``. The trained network is then
converted into a :class:`~metarl.rl.policy.GaussianMLPPolicy`: the observation normalisation
is folded into the first layer (``W' = W / σ``, ``b' = b − W' μ``; its clipping is set wide
enough never to act), so the metarl policy computes exactly SB3's action distribution.

Stored as ``<dir>/<kind>.pt`` (default ``dir``: ``runs/baselines/<experiment>``), which
``metarl evaluate`` picks up when the environment, horizon and network match.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from metarl.config import ConfigError
from metarl.rl.config import RLConfig
from metarl.rl.policy import GaussianMLPPolicy
from metarl.rl.sampler import ActFn, sample_gaussian
from metarl.rl.task_envs import make_batched_env
from metarl.rl.task_stream import ACTION_BOUND
from metarl.run import RunError, atomic_torch_save, load_tensors, load_weights
from metarl.runtime import missing_extra, set_num_threads

KINDS = ("pretrained", "oracle")

PPO_HYPERPARAMETERS: dict[str, Any] = {
    # SB3's PPO defaults for continuous control, but for the rollout shape: 20 environments
    # x 200 steps = 4,000 samples per update, 20 minibatches of 200, 10 epochs.
    "learning_rate": 3e-4,
    "n_steps": 200,
    "batch_size": 200,
    "n_epochs": 10,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}
NUM_ENVS = 20
OBS_CLIP = 1e6  # VecNormalize's clip, wide enough never to act (the folding stays exact)

DEFAULT_TIMESTEPS: dict[str, int] = {"navigation2d": 300_000}
"""Training budget per environment; everything else gets :data:`LOCOMOTION_TIMESTEPS`."""
LOCOMOTION_TIMESTEPS = 1_000_000


def default_timesteps(env: str) -> int:
    """The documented default budget of ``metarl baseline`` for an environment."""
    return DEFAULT_TIMESTEPS.get(env, LOCOMOTION_TIMESTEPS)


class StoredBaseline(NamedTuple):
    """A trained baseline, as ``metarl evaluate`` uses it.

    Attributes:
        kind: ``pretrained`` or ``oracle``.
        policy: the converted policy (the oracle's input is ``obs ++ task``).
        info: how it was trained (timesteps, seconds, hyperparameters, final training return).
    """

    kind: str
    policy: GaussianMLPPolicy
    info: dict[str, Any]


def _activation(name: str) -> type[nn.Module]:
    return {"relu": nn.ReLU, "tanh": nn.Tanh}[name]


def train_baseline(
    config: RLConfig, kind: str, out_dir: Path, timesteps: int | None = None, progress: bool = True
) -> Path:
    """Train the ``kind`` baseline of ``config``'s environment and store it in ``out_dir``.

    Writes ``<kind>.pt`` (the converted policy: tensors only, what ``metarl evaluate`` reads),
    ``<kind>.zip`` and ``<kind>-vecnormalize.pkl`` (Stable-Baselines3's own files:
    ``PPO.load`` opens them and training can continue there; they are pickles, so metarl never
    reads them) and TensorBoard logs in ``<kind>-tensorboard/``. An interrupted training leaves
    ``<kind>.partial.pt`` (tensors only), from which the same command continues.

    Args:
        config: the experiment's config (environment, horizon, network shape, seed).
        kind: ``pretrained`` or ``oracle``.
        out_dir: the directory of the files.
        timesteps: environment steps of PPO; default :func:`default_timesteps`.
        progress: show SB3's progress bar.

    Returns:
        The path of the stored baseline.
    """
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import VecMonitor, VecNormalize
    except ImportError:
        raise missing_extra("Stable-Baselines3", "rl", "the PPO baselines") from None

    from metarl.rl.sb3_env import TaskVecEnv

    if kind not in KINDS:
        raise ConfigError(f"unknown baseline {kind!r}; one of {', '.join(KINDS)}")
    timesteps = default_timesteps(config.env) if timesteps is None else timesteps
    if timesteps < 1:
        raise ConfigError(f"timesteps must be >= 1, got {timesteps}")
    set_num_threads(config.num_threads)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    batched = make_batched_env(config.env, NUM_ENVS, config.horizon)
    task_env = TaskVecEnv(batched, seed=config.seed, task_in_observation=kind == "oracle")
    env = VecNormalize(VecMonitor(task_env), clip_obs=OBS_CLIP, gamma=config.gamma)
    policy_kwargs = {
        "net_arch": {"pi": list(config.hidden_sizes), "vf": list(config.hidden_sizes)},
        "activation_fn": _activation(config.activation),
        "log_std_init": float(np.log(config.init_std)),
    }
    model = PPO(
        "MlpPolicy", env, policy_kwargs=policy_kwargs, seed=config.seed, device="cpu",
        verbose=0, tensorboard_log=str(out_dir / f"{kind}-tensorboard"), **PPO_HYPERPARAMETERS,
    )  # fmt: skip
    partial = out_dir / f"{kind}.partial.pt"
    key = _baseline_key(config, kind, timesteps)
    done = _resume_partial(model, env, partial, key)
    try:
        model.learn(
            total_timesteps=timesteps - done, progress_bar=progress, reset_num_timesteps=done == 0,
            tb_log_name="ppo",
        )  # fmt: skip
    except KeyboardInterrupt:  # keep what was learnt: the same command continues from it
        _save_partial(model, env, partial, key)
        env.close()
        raise
    policy = sb3_to_policy(model, env, config)
    recent = [float(e["r"]) for e in model.ep_info_buffer]
    info = {
        "kind": kind,
        "algorithm": "PPO (stable-baselines3)",
        "timesteps": int(model.num_timesteps),
        "seconds": time.perf_counter() - started,
        "hyperparameters": {**PPO_HYPERPARAMETERS, "num_envs": NUM_ENVS},
        "train_return_last_100": float(np.mean(recent)) if recent else float("nan"),
        "resumed_from": done,
    }
    path = out_dir / f"{kind}.pt"
    atomic_torch_save(
        {
            "info": info,
            "env": config.env,
            "horizon": config.horizon,
            "hidden_sizes": list(config.hidden_sizes),
            "activation": config.activation,
            "obs_dim": policy.obs_dim,
            "model": policy.state_dict(),
        },
        path,
    )
    model.save(out_dir / f"{kind}.zip")
    env.save(str(out_dir / f"{kind}-vecnormalize.pkl"))
    partial.unlink(missing_ok=True)
    env.close()
    return path


def _baseline_key(config: RLConfig, kind: str, timesteps: int) -> dict[str, Any]:
    """What a partial baseline must share with the command that continues it."""
    return {"kind": kind, "env": config.env, "horizon": config.horizon, "seed": config.seed,
            "hidden_sizes": list(config.hidden_sizes), "activation": config.activation,
            "timesteps": timesteps}  # fmt: skip


def _rms_state(rms: Any) -> dict[str, Any]:
    return {"mean": torch.as_tensor(rms.mean), "var": torch.as_tensor(rms.var),
            "count": float(rms.count)}  # fmt: skip


def _save_partial(model: Any, env: Any, path: Path, key: dict[str, Any]) -> None:
    """PPO's networks, optimiser and normalisation statistics, as tensors (no pickle)."""
    state = {
        "key": key,
        "num_timesteps": int(model.num_timesteps),
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "obs_rms": _rms_state(env.obs_rms),
        "ret_rms": _rms_state(env.ret_rms),
    }
    atomic_torch_save(state, path)


def _resume_partial(model: Any, env: Any, path: Path, key: dict[str, Any]) -> int:
    """Load a partial baseline into ``model`` and ``env`` if one fits; its timesteps, else 0."""
    if not path.is_file():
        return 0
    state = load_tensors(path, "partial baseline")
    if not isinstance(state, dict) or state.get("key") != key:
        return 0  # another setting's: start afresh (it is replaced at the next interruption)
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    for name in ("obs_rms", "ret_rms"):
        rms = getattr(env, name)
        rms.mean = state[name]["mean"].numpy().astype(np.float64)
        rms.var = state[name]["var"].numpy().astype(np.float64)
        rms.count = state[name]["count"]
    model.num_timesteps = int(state["num_timesteps"])
    print(f"continuing the {key['kind']} baseline from {model.num_timesteps:,} steps")
    return model.num_timesteps


def sb3_to_policy(model: Any, normalizer: Any, config: RLConfig) -> GaussianMLPPolicy:
    """SB3 PPO's Gaussian MLP policy (behind ``VecNormalize``) as a ``GaussianMLPPolicy``.

    The mean network ``mlp_extractor.policy_net`` + ``action_net`` becomes ``policy.mean``
    (same layers, same activation), ``log_std`` is copied, and the observation normalisation
    ``(obs − μ) / sqrt(var + ε)`` is folded into the first layer.
    """
    sb3 = model.policy
    linears = [m for m in sb3.mlp_extractor.policy_net if isinstance(m, nn.Linear)]
    linears.append(sb3.action_net)
    obs_dim = linears[0].in_features
    policy = GaussianMLPPolicy(
        obs_dim, sb3.action_net.out_features, config.hidden_sizes, config.activation,
        config.init_std, config.min_std,
    )  # fmt: skip
    targets = [m for m in policy.mean if isinstance(m, nn.Linear)]
    if len(targets) != len(linears):
        raise ValueError("the SB3 policy's network does not have the config's hidden layers")
    mean = torch.as_tensor(normalizer.obs_rms.mean, dtype=torch.float32)
    std = np.sqrt(normalizer.obs_rms.var + normalizer.epsilon)
    scale = torch.as_tensor(std, dtype=torch.float32)
    with torch.no_grad():
        for i, (target, source) in enumerate(zip(targets, linears)):
            weight, bias = source.weight.detach().cpu(), source.bias.detach().cpu()
            if i == 0:
                weight = weight / scale
                bias = bias - weight @ mean
            target.weight.copy_(weight)
            target.bias.copy_(bias)
        policy.log_std.copy_(sb3.log_std.detach().cpu())
    return policy


MATCHED_KEYS: tuple[str, ...] = ("env", "horizon", "hidden_sizes", "activation")
"""The config keys a stored baseline must share with a run (:func:`load_baseline`)."""


def baseline_command(config: RLConfig, kind: str, out: Path) -> str:
    """The ``metarl baseline`` command that trains a ``kind`` baseline fitting ``config`` into
    ``out``: the experiment, with every key a baseline must share spelled out (a run may have
    changed any of them from its experiment's file). An environment of the user's own needs the
    code that registers it, which the command names as a placeholder to fill in."""
    from metarl.rl.task_envs import ENVIRONMENTS

    sets = " ".join(f"{key}={_yaml(getattr(config, key))}" for key in MATCHED_KEYS)
    plugin = "" if config.env in ENVIRONMENTS else "--import MODULE_OR_FILE "
    return f"metarl {plugin}baseline {kind} {config.experiment} --set {sets} --out {out}"


def _yaml(value: object) -> str:
    """A value as ``--set`` reads it back (YAML): lists without spaces."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def load_baseline(path: Path, config: RLConfig) -> StoredBaseline | None:
    """The baseline stored at ``path`` if it exists and fits ``config`` (else ``None``).

    A pretrained baseline is adapted with MAML's inner step, so it must have the config's
    network. The oracle is never adapted (it is only the gap's upper end), so any network
    trained on the same environment and horizon fits, and it is built with its own layers.
    """
    if not path.exists():
        return None
    state = load_tensors(path, "baseline")
    keys = ("env", "horizon", "hidden_sizes", "activation", "obs_dim", "model", "info")
    if not isinstance(state, dict) or not all(k in state for k in keys):
        raise RunError(f"{path} is not a metarl baseline (see `metarl baseline --help`)")
    kind = state["info"]["kind"]
    same_network = (
        state["hidden_sizes"] == list(config.hidden_sizes)
        and state["activation"] == config.activation
    )
    fits = (
        state["env"] == config.env
        and state["horizon"] == config.horizon
        and (same_network or kind == "oracle")
    )
    if not fits:
        return None
    probe = make_batched_env(config.env, 1, config.horizon)
    policy = GaussianMLPPolicy(
        state["obs_dim"], probe.action_dim, tuple(state["hidden_sizes"]), state["activation"],
        config.init_std, config.min_std,
    )  # fmt: skip
    load_weights(policy, state["model"], path)
    policy.eval()
    return StoredBaseline(kind, policy, state["info"])


def oracle_actions(
    policy: GaussianMLPPolicy, task_features: np.ndarray, generator: torch.Generator | None = None
) -> ActFn:
    """The oracle's controller on ``obs ++ task``, within the action bounds.

    Without ``generator`` it acts with its mean action. With one it samples ``a ~ N(μ, σ²)``,
    as every adapted policy in the protocol does (and as the paper's TRPO oracle was scored).
    Either is clipped to the bounds, as SB3 clipped the oracle's actions while it trained, so it
    is scored on the objective it was trained for. MAML's own actions are not clipped (nor
    charged less: the control cost is on the raw action); clipping favours the oracle (on
    HalfCheetah-dir about +30 return over the unclipped samples), which only makes the gap that
    MAML is measured by larger.

    Args:
        policy: the oracle (input size ``obs_dim + task_dim``).
        task_features: ``(n_tasks, task_dim)`` the tasks' parameters (``env.task_array``).
        generator: the source of the action noise; None for the mean action.
    """
    task = torch.as_tensor(task_features, dtype=torch.float32)

    def act(obs: Tensor) -> Tensor:  # (n_tasks, E, obs_dim)
        features = task.unsqueeze(1).expand(*obs.shape[:2], task.shape[1])
        with torch.no_grad():
            mean, log_std = policy(torch.cat([obs, features], dim=-1))
            action = mean if generator is None else sample_gaussian(mean, log_std, generator)
        return action.clamp(-ACTION_BOUND, ACTION_BOUND)

    return act

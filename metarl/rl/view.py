"""``metarl view``: watch a meta-RL policy adapt, before adaptation and after 1, 2, 3 steps.

For each chosen test task (the evaluation's tasks, drawn from ``eval_seed``), the policy is
adapted exactly as ``metarl evaluate`` does (``eval_episodes_per_task`` episodes and one
REINFORCE step per stage); then one episode per stage is rolled out on the batched simulator,
recording the physics state at every step, and

- MuJoCo tasks: the stages are rendered offscreen side by side into ``videos/task<i>.mp4``
  (and ``.gif`` on request), with the task and each rollout's return in the caption.
  Rendering needs an offscreen OpenGL: ``MUJOCO_GL=egl`` (the default set here) or
  ``osmesa``; shadows and reflections are off, which makes it about 10x faster;
- 2D navigation: ``plots/view_trajectories.png`` (the paths per stage, goal marked) and an
  animation ``videos/task<i>.mp4``.

The rollouts sample actions like the evaluation does (same seeded noise stream per call), so
a video shows a typical episode, not the mean action.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.config import ConfigError
from metarl.loop import progress_bar
from metarl.rl.config import RLConfig
from metarl.rl.evaluate import adaptation_curve, plot_trajectories
from metarl.rl.policy import GaussianMLPPolicy
from metarl.rl.sampler import policy_actions, rollout
from metarl.rl.task_envs import make_batched_env

DEFAULT_TASKS = (0, 1)
CAPTION_HEIGHT = 28


def stage_label(step: int) -> str:
    return "pre-update" if step == 0 else f"{step} step" + ("s" if step > 1 else "")


def task_label(task: dict[str, Any]) -> str:
    """``velocity 1.23`` / ``direction -1`` / ``goal (0.31, -2.05)``."""
    (key, value), *_ = task.items()
    value = np.asarray(value, dtype=float)
    if value.size == 1:
        return f"{key} {float(value):+.2f}"
    return f"{key} (" + ", ".join(f"{v:+.2f}" for v in value.ravel()) + ")"


def record_stages(
    policy: GaussianMLPPolicy, config: RLConfig, task_indices: Sequence[int]
) -> dict[str, Any]:
    """Adapt to each chosen test task and roll one episode out per stage, recording states.

    Returns:
        ``tasks`` (the chosen task dicts), ``returns`` ``(n_tasks, stages)``, ``curve`` (the
        :class:`~metarl.rl.evaluate.AdaptationCurve`), ``observations`` ``(T, n_tasks,
        stages, obs_dim)``, ``masks`` ``(T, n_tasks, stages)`` and, for MuJoCo tasks,
        ``qpos``/``qvel`` ``(T + 1, n_tasks, stages, nq|nv)`` (state before every step and
        after the last).
    """
    probe = make_batched_env(config.env, 1, config.horizon)
    all_tasks = probe.sample_tasks(config.eval_tasks, np.random.default_rng(config.eval_seed))
    for i in task_indices:
        if not 0 <= i < len(all_tasks):
            raise ConfigError(f"--tasks: {i} is not a test task index (0..{len(all_tasks) - 1})")
    tasks = [all_tasks[i] for i in task_indices]
    n, stages = len(tasks), config.eval_steps + 1

    env = make_batched_env(config.env, n * config.eval_episodes_per_task, config.horizon)
    env.seed(config.eval_seed)
    generator = torch.Generator().manual_seed(config.eval_seed)
    curve = adaptation_curve(policy, env, tasks, config, generator)

    # One episode per (task, stage): "tasks" of the rollout are the pairs, task-major.
    pairs = [task for task in tasks for _ in range(stages)]
    params = {
        name: torch.stack([curve.params[s][name][i] for i in range(n) for s in range(stages)])
        for name in curve.params[0]
    }
    viewer_env = make_batched_env(config.env, n * stages, config.horizon)
    viewer_env.seed(config.eval_seed)
    states: list[tuple[np.ndarray, np.ndarray]] = []
    sample = policy_actions(policy, params, torch.Generator().manual_seed(config.eval_seed))
    mujoco_env = hasattr(viewer_env, "qpos")

    def act(obs: torch.Tensor) -> torch.Tensor:  # record the state each action is taken in
        if mujoco_env:
            states.append((viewer_env.qpos.copy(), viewer_env.qvel.copy()))  # type: ignore[attr-defined]
        return sample(obs)

    episodes = rollout(viewer_env, pairs, 1, act)
    record: dict[str, Any] = {
        "tasks": tasks,
        "returns": episodes.task_returns().reshape(n, stages).numpy(),
        "curve": curve,
        "observations": episodes.observations[:, :, 0].reshape(-1, n, stages, env.observation_dim),
        "masks": episodes.masks[:, :, 0].reshape(-1, n, stages).numpy(),
    }
    if mujoco_env:
        states.append((viewer_env.qpos.copy(), viewer_env.qvel.copy()))  # type: ignore[attr-defined]
        record["qpos"] = np.stack([q for q, _ in states]).reshape(len(states), n, stages, -1)
        record["qvel"] = np.stack([v for _, v in states]).reshape(len(states), n, stages, -1)
        record["model"] = viewer_env.model  # type: ignore[attr-defined]
        record["dt"] = viewer_env.dt  # type: ignore[attr-defined]
    return record


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with a white band of text on top."""
    from PIL import Image, ImageDraw

    height, width = image.shape[:2]
    canvas = Image.new("RGB", (width, height + CAPTION_HEIGHT), "white")
    canvas.paste(Image.fromarray(image), (0, CAPTION_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 2), text, fill="black")
    return np.asarray(canvas)


def render_mujoco(
    record: dict[str, Any], task: int, width: int, height: int, progress: bool = True
) -> list[np.ndarray]:
    """Frames ``(height + caption, stages x width, 3)`` of task ``task``'s stages side by side."""
    import mujoco

    model = record["model"]
    qpos, qvel, masks = record["qpos"][:, task], record["qvel"][:, task], record["masks"][:, task]
    stages = qpos.shape[1]
    data = mujoco.MjData(model)
    # The offscreen buffer must hold one panel (the model's own is 640 x 480).
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    try:
        renderer = mujoco.Renderer(model, height, width)
    except Exception as e:  # no OpenGL context: the backend was chosen when mujoco was imported
        raise ConfigError(
            f"offscreen rendering failed ({e}); MuJoCo's OpenGL backend is MUJOCO_GL="
            f"{os.environ.get('MUJOCO_GL', '(unset: glfw, needs a display)')}: set MUJOCO_GL=egl "
            "or osmesa (apt-get install libosmesa6) before Python starts"
        ) from e
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
        renderer.scene.flags[flag] = False
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    camera.trackbodyid = 1  # the torso
    camera.distance, camera.elevation, camera.azimuth = 4.0, -15.0, 90.0
    labels = [f"{stage_label(s)}: return {record['returns'][task, s]:.1f}" for s in range(stages)]
    header = task_label(record["tasks"][task])
    # The step a finished episode stopped at: later frames repeat its last state.
    lengths = masks.sum(axis=0).astype(int)
    frames = []
    for t in progress_bar(range(len(qpos)), desc=f"rendering task {task}", disable=not progress):
        panels = []
        for s in range(stages):
            k = min(t, lengths[s])
            data.qpos[:], data.qvel[:] = qpos[k, s], qvel[k, s]
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera)
            panels.append(_caption(renderer.render(), labels[s]))
        frames.append(_caption(np.concatenate(panels, axis=1), f"{header}   t = {t}"))
    renderer.close()
    return frames


def render_navigation(
    record: dict[str, Any], task: int, size: int, progress: bool = False
) -> list[np.ndarray]:
    """Animation frames of the 2D paths of every stage, growing one step per frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    obs, masks = record["observations"][:, task].numpy(), record["masks"][:, task]
    goal = np.asarray(record["tasks"][task]["goal"])
    stages = obs.shape[1]
    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas, ax = FigureCanvasAgg(fig), fig.subplots()
    frames = []
    for t in progress_bar(range(len(obs) + 1), desc=f"task {task} frames", disable=not progress):
        ax.clear()
        for s in range(stages):
            valid = obs[: min(t, int(masks[:, s].sum())), s]
            path = np.concatenate([np.zeros((1, 2)), valid])
            label = f"{stage_label(s)} ({record['returns'][task, s]:.1f})"
            ax.plot(path[:, 0], path[:, 1], marker=".", ms=3, lw=1, label=label)
        ax.scatter([goal[0]], [goal[1]], marker="*", s=160, color="red", zorder=5)
        ax.set_xlim(-0.6, 0.6)
        ax.set_ylim(-0.6, 0.6)
        ax.set_aspect("equal")
        ax.set_title(f"{task_label(record['tasks'][task])}, t = {t}", fontsize=8)
        ax.legend(fontsize=6, loc="lower left")
        canvas.draw()
        frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return frames


def write_video(frames: Sequence[np.ndarray], path: Path, fps: float) -> Path:
    """MP4 (H.264 through imageio's ffmpeg) or GIF, by ``path``'s suffix."""
    try:
        import imageio.v2 as imageio
    except ImportError:
        from metarl.runtime import missing_extra

        raise missing_extra("imageio", "video", "the videos of `metarl view`") from None

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        imageio.mimsave(path, list(frames), duration=1000.0 / fps, loop=0)
    else:
        # Even sizes for the H.264 encoder's 4:2:0 chroma; macro_block_size 1 keeps ours.
        frames = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]
        imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
    return path


def interactive(record: dict[str, Any], task: int, stage: int) -> None:
    """Replay one recorded rollout in MuJoCo's own viewer (needs a display)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise ConfigError(
            "--interactive needs a display (DISPLAY is not set); without one, the videos "
            "are rendered offscreen: drop --interactive"
        )
    if "model" not in record:
        raise ConfigError("--interactive replays MuJoCo tasks; 2D navigation has no 3D scene")

    import mujoco
    import mujoco.viewer

    model = record["model"]
    data = mujoco.MjData(model)
    with mujoco.viewer.launch_passive(model, data) as viewer:
        for k in range(len(record["qpos"])):
            if not viewer.is_running():
                break
            data.qpos[:], data.qvel[:] = (
                record["qpos"][k, task, stage],
                record["qvel"][k, task, stage],
            )
            mujoco.mj_forward(model, data)
            viewer.sync()
            time.sleep(record["dt"])


def view(
    policy: GaussianMLPPolicy,
    config: RLConfig,
    out_dir: Path,
    task_indices: Sequence[int] | None = None,
    gif: bool = False,
    width: int = 320,
    height: int = 240,
    interactive_stage: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Render ``policy`` adapting to test tasks of ``config``; returns the written files.

    Args:
        policy: the meta-trained policy (the CLI passes the one ``metarl evaluate`` tests).
        config: its run's config; ``eval_steps`` gradient steps are shown.
        out_dir: where ``videos/`` and ``plots/`` go.
        task_indices: test tasks to show (default 0 and 1).
        gif: also write a GIF of each video.
        width, height: size of one stage's panel (pixels).
        interactive_stage: instead of files, replay this stage of the first task in MuJoCo's
            viewer.
        progress: progress bars.
    """
    indices = list(DEFAULT_TASKS if task_indices is None else task_indices)
    record = record_stages(policy, config, indices)
    if interactive_stage is not None:
        interactive(record, 0, interactive_stage)
        return []
    out = Path(out_dir)
    written = []
    if "model" in record:
        fps = 1.0 / record["dt"]
        for row, index in enumerate(indices):
            started = time.perf_counter()
            frames = render_mujoco(record, row, width, height, progress)
            seconds = time.perf_counter() - started
            print(
                f"task {index}: {len(frames)} frames of {config.eval_steps + 1} panels "
                f"{width}x{height} in {seconds:.1f} s ({len(frames) / seconds:.1f} frames/s)"
            )
            written.append(write_video(frames, out / "videos" / f"task{index}.mp4", fps))
            if gif:
                written.append(
                    write_video(frames[::2], out / "videos" / f"task{index}.gif", fps / 2)
                )
    else:
        curve = record["curve"]
        written.append(
            plot_trajectories(
                curve, record["tasks"], len(indices), out / "plots" / "view_trajectories.png",
                steps=range(config.eval_steps + 1),
            )
        )  # fmt: skip
        for row, index in enumerate(indices):
            frames = render_navigation(record, row, height * 2, progress)
            written.append(write_video(frames, out / "videos" / f"task{index}.mp4", 10.0))
            if gif:
                written.append(write_video(frames, out / "videos" / f"task{index}.gif", 10.0))
    return written

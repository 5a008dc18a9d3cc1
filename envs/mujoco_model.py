"""Loading gymnasium's MuJoCo robot models (imported by :mod:`metarl.envs.locomotion` once it has
checked that MuJoCo is installed)."""

from __future__ import annotations

import re
from pathlib import Path

import mujoco

_TOTAL_MASS = re.compile(r'\s+settotalmass="([^"]+)"')


def load_model(path: str) -> mujoco.MjModel:
    """The robot's ``MjModel``, without MuJoCo's deprecation warning for ``settotalmass``.

    Gymnasium's HalfCheetah asks the compiler to rescale its masses (``settotalmass="14"``),
    which MuJoCo ≥ 3.3 warns about on every load (to stderr and ``MUJOCO_LOG.TXT`` in the
    working directory). The attribute is removed and the same rescaling applied by the calls the
    warning recommends, ``mj_setTotalmass`` then ``mj_setConst``: the compiled model is
    identical (masses, inertias and inverse weights, checked).
    """
    xml = Path(path).read_text()
    match = _TOTAL_MASS.search(xml)
    if match is None:
        return mujoco.MjModel.from_xml_path(path)
    spec_dir = str(Path(path).parent)  # relative includes and meshes resolve from there
    model = mujoco.MjModel.from_xml_string(xml.replace(match.group(0), ""), _assets(spec_dir))
    mujoco.mj_setTotalmass(model, float(match.group(1)))
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


def _assets(folder: str) -> dict[str, bytes]:
    """Files beside a model XML that it may reference (meshes, textures, includes)."""
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}

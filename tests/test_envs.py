"""ipd.envs: env construction without MuJoCo's known compiler deprecation noise."""

import warnings

import mujoco
import numpy as np
import pytest

from ipd.envs import known_mujoco_deprecations_dropped, make_task_env
from ipd.tasks import get_task


def test_halfcheetah_env_builds_without_the_settotalmass_line(capfd: pytest.CaptureFixture[str]) -> None:
    env = make_task_env(get_task("halfcheetah-medium"), max_episode_steps=7)
    env.close()
    captured = capfd.readouterr()
    assert "settotalmass" not in captured.err + captured.out
    assert env.spec is not None and env.spec.max_episode_steps == 7
    assert mujoco.get_mju_user_warning() is None  # the previous (default) handler is back


def test_other_mujoco_warnings_reach_python() -> None:
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><body><freejoint/><geom size=".1"/></body></worldbody></mujoco>'
    )
    data = mujoco.MjData(model)
    data.qvel[:] = np.nan
    with warnings.catch_warnings(record=True) as caught, known_mujoco_deprecations_dropped():
        warnings.simplefilter("always")
        mujoco.mj_step(model, data)
    assert any("MuJoCo: Nan, Inf or huge value in QVEL" in str(w.message) for w in caught)

"""End to end through the real Hydra configs and scripts, on tiny data (preset=smoke)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from ipd.artifacts import ArtifactStore, config_hash, without_neutral
from ipd.config import (
    CONFIG_DIR,
    SECTIONS,
    ConfigError,
    canonical,
    load_config,
    resolve_target,
    section,
    to_plain,
    validate_config,
)
from ipd.pipeline import policy_stage_config
from tests.helpers import last_json, run_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_args(data_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return [f"data.dir={data_dir}", f"paths.runs={runs}", "preset=smoke", "data.download=false"], runs


def test_ipd_smoke_pipeline_then_reuse_and_evaluate(smoke_args):
    args, runs = smoke_args
    first = run_script("train.py", "task=hopper-medium", *args)
    out = last_json(first.stdout)
    assert set(out) >= {"task", "algo", "normalized_score", "normalized_score_std", "episodes", "run_dir"}
    assert out["task"] == "hopper-medium" and out["algo"] == "ipd"
    assert np.isfinite(out["normalized_score"])
    for stage in ("world_model", "value", "augment", "policy"):
        dirs = list((runs / "hopper-medium" / stage).iterdir())
        assert len(dirs) == 1 and (dirs[0] / "DONE").is_file() and (dirs[0] / "config.yaml").is_file()
    stats = json.loads(
        next((runs / "hopper-medium" / "augment").iterdir()).joinpath("stats.json").read_text()
    )
    assert stats["selected"] > 0
    metrics = json.loads((Path(out["run_dir"]) / "metrics.json").read_text())
    assert metrics["normalized_score"] == out["normalized_score"]
    # The software behind the score: the dataset build depends on the MuJoCo version.
    assert {"python", "torch", "numpy", "gymnasium", "mujoco", "ipd"} <= metrics["versions"].keys()
    assert metrics["versions"]["mujoco"] != "absent" and metrics["versions"]["cpu"]  # and the CPU model
    # The Q-term's gate ran on the world model and its outcome decided alpha.
    policy_metrics = json.loads(
        next((runs / "hopper-medium" / "policy").iterdir()).joinpath("metrics.json").read_text()
    )
    check = policy_metrics["teacher_check"]
    assert check["starts"] == 8 and check["horizon"] == 50
    assert policy_metrics["alpha"] == (3.0 if check["passed"] else 0.0)
    assert check["passed"] == (check["teacher_return"] > check["data_return"])
    assert metrics["q_term"] == {"alpha": policy_metrics["alpha"], "teacher_check": check}  # in the run's too

    # Second call with the same config reuses every stage and says so.
    second = run_script("train.py", "task=hopper-medium", *args)
    for stage in ("world_model", "value", "augment", "policy"):
        assert f"{stage}: reusing finished artifact" in second.stdout
    assert last_json(second.stdout)["normalized_score"] == pytest.approx(out["normalized_score"])

    # A stage-3 change reuses stages 1 and 2 but trains a new policy.
    third = run_script("train.py", "task=hopper-medium", "policy.train.alpha=0.5", *args)
    assert "augment: reusing" in third.stdout and "policy: reusing" not in third.stdout

    # The trusted gate: the same check, judged on the steps the model can vouch for.
    trust = run_script("train.py", "task=hopper-medium", "policy.teacher_check_trust_quantile=0.95", *args)
    trusted = json.loads((Path(last_json(trust.stdout)["run_dir"]) / "metrics.json").read_text())["q_term"]
    gate = trusted["teacher_check"]
    wm_metrics = json.loads(
        next((runs / "hopper-medium" / "world_model").iterdir()).joinpath("metrics.json").read_text()
    )
    assert gate["trust_threshold"] == pytest.approx(wm_metrics["uncertainty_quantiles"]["0.95"])
    assert gate["teacher_return"] == pytest.approx(check["teacher_return"])  # the same rollouts
    assert 0.0 <= gate["untrusted_share"] <= 1.0
    assert gate["passed"] == (gate["trusted_return"] > gate["data_return"])
    assert trusted["alpha"] == (3.0 if gate["passed"] else 0.0)

    # The policy checkpoint evaluates alone.
    ckpt = metrics["checkpoint"]
    ev = run_script("evaluate.py", f"checkpoint={ckpt}", "episodes=2", "preset=smoke", f"paths.runs={runs}")
    res = last_json(ev.stdout)
    assert res["task"] == "hopper-medium" and res["episodes"] == 2


def test_simulator_check_arm_reuses_the_model_artifact_and_replays_in_the_env(smoke_args):
    from ipd.data import read_hdf5
    from ipd.evaluation import make_eval_env
    from ipd.simulator import replay_from_observation
    from ipd.tasks import get_task

    args, runs = smoke_args
    model = last_json(run_script("augment.py", "task=hopper-medium", *args).stdout)
    checked = run_script("augment.py", "task=hopper-medium", "augment.simulator_check=true", *args)
    assert "augment: reusing finished artifact" in checked.stdout  # the model-only stage 2 is shared
    out = last_json(checked.stdout)
    art = Path(out["augment"])
    stats = json.loads((art / "stats.json").read_text())
    assert stats["simulator_check"] and stats["checked"] == model["accepted"]
    assert stats["model_artifact"] == model["augment"] and art != Path(model["augment"])
    model_conf = OmegaConf.load(Path(model["augment"]) / "config.yaml")
    assert "simulator_check" not in model_conf.augment  # pre-existing stage-2 hashes stay valid
    data = read_hdf5(art / "augmented.hdf5")
    imagined = np.flatnonzero(data.extras["imagined"])
    assert len(imagined) == stats["imagined_rows"]
    assert len(imagined), "the smoke stage 2 should keep at least one real improvement"
    # The first kept tail is exactly what the env does with its actions.
    ends = np.flatnonzero(data.terminals | data.timeouts)
    tail = np.arange(imagined[0], ends[ends >= imagined[0]][0] + 1)
    env = make_eval_env(get_task("hopper-medium"))
    _, rewards, _, _ = replay_from_observation(env, data.observations[tail[0]], data.actions[tail])
    np.testing.assert_allclose(data.rewards[tail], rewards, rtol=1e-5, atol=1e-5)


def test_simulator_dynamics_arm_plans_in_the_env(smoke_args):
    from ipd.data import read_hdf5
    from ipd.evaluation import make_eval_env
    from ipd.simulator import replay_from_observation
    from ipd.tasks import get_task

    args, _ = smoke_args
    model = last_json(run_script("augment.py", "task=hopper-medium", *args).stdout)
    out = last_json(
        run_script("augment.py", "task=hopper-medium", "augment.dynamics=simulator", *args).stdout
    )
    assert out["augment"] != model["augment"] and out["accepted"] > 0
    data = read_hdf5(Path(out["augment"]) / "augmented.hdf5")
    imagined = np.flatnonzero(data.extras["imagined"])
    unclipped = imagined[(np.abs(data.observations[imagined, 5:]) < 9.999).all(1)]
    first = unclipped[:1]  # an imagined step is a real env step (exact where no velocity is clipped)
    env = make_eval_env(get_task("hopper-medium"))
    states, rewards, _, exact = replay_from_observation(env, data.observations[first[0]], data.actions[first])
    assert exact
    np.testing.assert_allclose(data.rewards[first], rewards, atol=1e-4)
    np.testing.assert_allclose(data.next_observations[first[0]], states[1], atol=1e-4)


@pytest.mark.parametrize("algo", ["dt", "iql", "bc", "bc10"])
def test_baselines_through_the_same_script(smoke_args, algo):
    args, runs = smoke_args
    label = f"logging.label={algo}-arm"
    out = last_json(run_script("train.py", "task=hopper-medium", f"algo={algo}", label, *args).stdout)
    assert out["algo"] == algo and np.isfinite(out["normalized_score"])
    metrics = json.loads((Path(out["run_dir"]) / "metrics.json").read_text())
    assert metrics["label"] == f"{algo}-arm"
    if algo.startswith("bc"):  # bc10 clones the top 10% of episodes, bc all of them
        bc_metrics = json.loads((Path(metrics["artifacts"]["bc"]) / "metrics.json").read_text())
        kept = bc_metrics["episodes_kept"] / bc_metrics["episodes_total"]
        assert kept == pytest.approx(0.1, abs=0.02) if algo == "bc10" else kept == 1.0
        ev = run_script(
            "evaluate.py", f"checkpoint={metrics['checkpoint']}", "episodes=2", f"paths.runs={runs}"
        )
        res = last_json(ev.stdout)
        assert res["task"] == "hopper-medium" and res["episodes"] == 2
    check_target_return_override(metrics["checkpoint"], runs, return_conditioned=algo == "dt")


def check_target_return_override(checkpoint: str, runs, return_conditioned: bool) -> None:
    """evaluate.py target_return=: a DT policy starts from it; any other policy names the fix."""
    from ipd.cli import set_target_return
    from ipd.config import ConfigError
    from ipd.models.policies import load_policy

    loaded = load_policy(checkpoint)
    if not return_conditioned:
        with pytest.raises(ConfigError, match="Drop target_return"):
            set_target_return(loaded, 1234.5, checkpoint)
        return
    trained_with = loaded.policy.cond.target_return
    set_target_return(loaded, 1234.5, checkpoint)
    loaded.policy.reset(3)
    assert trained_with != 1234.5 and loaded.policy.rtg.tolist() == [1234.5] * 3
    ev = run_script(
        "evaluate.py", f"checkpoint={checkpoint}", "episodes=2", "target_return=1234.5", f"paths.runs={runs}"
    )
    assert last_json(ev.stdout)["target_return"] == 1234.5


def test_dt_vs_ipd_switch_by_config_alone():
    from ipd.tasks import TASKS

    ipd = load_config(["algo=ipd"])
    dt = load_config(["algo=dt"])
    assert ipd.policy.condition == "value" and ipd.policy.token_gamma == 1.0 and ipd.policy.use_augmented
    # one recipe: every task composes the same IPD method settings; a task yaml holds facts only
    method_keys = ("train", "token_scale", "imagined_share", "token_head_time", "condition", "token_gamma")
    recipes = {
        name: {
            k: OmegaConf.to_container(load_config(["algo=ipd", f"task={name}"]).policy)[k]
            for k in method_keys
        }
        for name in TASKS
    }
    assert all(r == recipes["hopper-medium"] for r in recipes.values())
    assert ipd.policy.train.alpha == 3.0 and ipd.policy.token_head_time is False
    assert (ipd.policy.token_scale, ipd.policy.imagined_share) == ("standardise", 0.2)
    for name in TASKS:  # no method hyper-parameter hides in a task file
        assert not {"alpha", "token_scale", "imagined_share", "token_head_time"} & set(
            load_config([f"task={name}"]).task
        )
    assert load_config(["algo=ipd", "policy.token_head_time=true"]).policy.token_head_time is True
    assert load_config(["algo=ipd", "policy.imagined_share=0.3"]).policy.imagined_share == 0.3
    assert dt.policy.condition == "rtg" and not dt.policy.use_augmented and dt.policy.train.alpha == 0


def test_every_task_and_group_option_composes():
    from ipd.models.sequence_trainer import SequenceTrainConfig
    from ipd.models.transformer import DTConfig
    from ipd.tasks import TASKS

    for task in TASKS:
        cfg = load_config([f"task={task}", "preset=paper"])
        assert cfg.task.name == task
    for planner in ("mppi", "cem"):
        assert load_config([f"planner={planner}"]).planner.method == planner
    cfg = load_config(["preset=smoke"])
    assert isinstance(section(cfg, "policy.model"), DTConfig)
    assert isinstance(section(cfg, "policy.train"), SequenceTrainConfig)


def test_every_section_builds_the_dataclass_its_target_names():
    cfg = load_config(["planner=cem"])
    for key in SECTIONS:
        obj = section(cfg, key)
        target = OmegaConf.select(cfg, key)._target_
        assert type(obj) is resolve_target(target)
    assert section(cfg, "planner").method == "cem"  # cem.yaml = mppi.yaml + method: cem
    assert section(cfg, "planner").horizon == section(load_config([]), "planner").horizon
    cfg.value._target_ = "ipd.models.value.NoSuchConfig"
    with pytest.raises(ConfigError, match="value._target_"):
        validate_config(cfg)


def test_unknown_config_key_gets_hydra_error():
    proc = run_script("train.py", "policy.train.not_a_key=1", check=False)
    assert proc.returncode != 0
    assert "not_a_key" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_task_and_missing_dataset_get_clean_errors(tmp_path):
    proc = run_script("train.py", "task=hoper-medium", check=False)
    assert proc.returncode != 0 and "hopper-medium" in proc.stderr
    proc = run_script(
        "train.py", "task.name=hoper-medium", f"paths.runs={tmp_path}", "data.download=false", check=False
    )
    assert (
        proc.returncode == 2
        and "Did you mean 'hopper-medium'" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    proc = run_script(
        "train.py",
        "task=walker2d-medium",
        f"data.dir={tmp_path}",
        f"paths.runs={tmp_path}",
        "data.download=false",
        check=False,
    )
    # Nothing found, so the default tries to generate it: ipd ships no walker2d medium policy.
    assert proc.returncode == 2 and "Cannot generate walker2d-medium" in proc.stderr
    assert "policy=/path/to/weights.npz" in proc.stderr and "Traceback" not in proc.stderr


def test_section_names_unknown_keys():
    from ipd.models.sequence_trainer import SequenceTrainConfig

    cfg = load_config([])
    cfg.policy.train._set_flag("struct", False)
    cfg.policy.train.bogus = 1
    with pytest.raises(ConfigError, match="bogus"):
        section(cfg.policy, "train", SequenceTrainConfig)


def test_multirun_with_joblib_launcher(smoke_args):
    args, runs = smoke_args
    proc = run_script(
        "train.py",
        "-m",
        "hydra/launcher=local",
        "algo=dt",
        "seed=0,1",
        "task=hopper-medium",
        *args,
        timeout=500,
    )
    scores = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"task"')]
    assert sorted(s["algo"] for s in scores) == ["dt", "dt"]
    assert len({s["run_dir"] for s in scores}) == 2


def test_artifact_hash_and_lock(tmp_path):
    store = ArtifactStore(tmp_path)
    a = store.artifact("hopper-medium", "value", {"x": 1, "y": [1, 2]})
    b = store.artifact("hopper-medium", "value", {"y": [1, 2], "x": 1})
    assert a.path == b.path and a.hash == config_hash({"x": 1, "y": [1, 2]})
    assert not a.done
    with store.lock(a):
        a.finish({"ok": 1})
    assert a.done and a.metrics() == {"ok": 1}
    assert store.artifact("hopper-medium", "value", {"x": 2}).path != a.path


def test_teacher_check_keys_enter_the_policy_hash_only_with_a_gated_q_term():
    """DT and alpha = 0 artifacts stored before the teacher check existed stay valid."""

    def policy_hash(*overrides: str, gated: bool) -> str:
        cfg = load_config(["algo=ipd", *overrides])
        plain = lambda key: without_neutral(key, canonical(to_plain(cfg[key])))  # noqa: E731 (Context.plain)
        ctx = SimpleNamespace(stage_config=lambda key, **p: {key: plain(key), **p})
        return config_hash(policy_stage_config(ctx, {"value_hash": "v"}, gated))

    assert policy_hash("policy.teacher_check_horizon=50", gated=False) == policy_hash(gated=False)
    assert policy_hash("policy.q_term_rule=always", gated=False) == policy_hash(gated=False)
    assert policy_hash("policy.teacher_check_horizon=50", gated=True) != policy_hash(gated=True)
    # a key added later hashes only away from its neutral value (stored IPD artifacts stay valid)
    default = without_neutral("policy", canonical(to_plain(load_config(["algo=ipd"])["policy"])))
    assert "teacher_check_trust_quantile" not in default
    assert policy_hash("policy.teacher_check_trust_quantile=0.95", gated=True) != policy_hash(gated=True)
    assert policy_hash("policy.teacher_check_trust_quantile=0.95", gated=False) == policy_hash(gated=False)


def test_int_and_float_spellings_of_a_float_field_hash_alike():
    """alpha=0 and alpha=0.0 are one config: the artifact hash must not train the stage twice."""
    as_int, as_float, other = (
        config_hash(canonical(to_plain(load_config(["algo=ipd", f"policy.train.alpha={a}"]).policy)))
        for a in ("3", "3.0", "3.5")
    )
    assert as_int == as_float != other
    # Int fields stay ints, bools stay bools, and a section without a known _target_ is left alone.
    node = {"_target_": "ipd.models.sequence_trainer.SequenceTrainConfig", "num_updates": 5, "amp_bf16": True}
    assert canonical(node) == node and type(canonical(node)["num_updates"]) is int
    assert canonical({"_target_": "nowhere.Config", "alpha": 0}) == {"_target_": "nowhere.Config", "alpha": 0}


@pytest.mark.parametrize(
    "override, message",
    [
        ("policy.model.n_heads=3", "policy.model"),
        ("eval.episodes=0", "eval.episodes"),
        ("planner.method=foo", "method"),
        ("policy.condition=bad", "policy.* condition must be one of"),
        ("policy.q_term_rule=sometimes", "q_term_rule must be one of"),
        ("augment.quantile=2", "augment"),
        ("world_model.uncertainty=nope", "world_model"),
        ("value.expectile=1.5", "value"),
    ],
)
def test_bad_values_fail_before_training(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(load_config([override]))


def test_launcher_configs_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        slurm = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        local = compose("train", overrides=["hydra/launcher=local"], return_hydra_config=True)
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.gpus_per_node == 1
    assert local.hydra.launcher._target_.endswith("JoblibLauncher")


def test_critic_finetuning_changes_the_critic_in_process(data_dir, tmp_path):
    """policy.finetune_critic=true: stage 3 keeps training the stage-1 critic; false keeps it frozen."""
    import torch

    from ipd.pipeline import distill, learn_value, make_context

    base = ["preset=smoke", f"data.dir={data_dir}", f"paths.runs={tmp_path}", "data.download=false"]
    # the critic is fine-tuned for the Q-term, which needs alpha > 0 (always: no teacher check here)
    base += ["policy.train.alpha=1", "policy.q_term_rule=always"]
    ctx = make_context(load_config(base + ["policy.finetune_critic=true"]))
    iql, art = learn_value(ctx)
    probe = (ctx.data.observations[:64], ctx.data.actions[:64])
    q0 = iql.q(*probe).copy()
    distill(ctx, ctx.data, iql, {"value_hash": art.hash})
    assert not np.allclose(iql.q(*probe), q0)
    frozen_ctx = make_context(load_config(base + ["policy.finetune_critic=false"]))
    iql2, art2 = learn_value(frozen_ctx)
    q1 = iql2.q(*probe).copy()
    distill(frozen_ctx, frozen_ctx.data, iql2, {"value_hash": art2.hash})
    assert np.allclose(iql2.q(*probe), q1)
    assert torch.is_tensor(iql2.q_torch(torch.zeros(2, ctx.data.obs_dim), torch.zeros(2, ctx.data.act_dim)))


def test_fresh_machine_without_data_or_network_generates_and_runs(tmp_path):
    """The README's main job on a machine with no dataset and no download: the data is generated
    (small here), the three stages run, and the result carries the data's origin and build."""
    data, runs = tmp_path / "empty-data-dir", tmp_path / "runs"
    # no D4RL cache and no Minari store either (the Minari tests record one for the session)
    nothing = {
        "MINARI_DATASETS_PATH": str(tmp_path / "no-minari"),
        "D4RL_DATASET_DIR": str(tmp_path / "no-d4rl"),
    }
    proc = run_script(
        "train.py",
        "task=hopper-medium",
        "preset=smoke",
        f"data.dir={data}",
        f"paths.runs={runs}",
        "data.download=false",
        "data.generate_size=3000",
        env=nothing,
    )
    out = last_json(proc.stdout)
    assert out["data_origin"] == "generated" and len(out["data"]) == 16
    assert (data / "hopper-medium-3000.hdf5").is_file() and "not the D4RL release" in proc.stderr
    metrics = json.loads((Path(out["run_dir"]) / "metrics.json").read_text())
    assert metrics["data_origin"] == "generated" and metrics["data"] == out["data"]
    from ipd.ledger import finished_runs, ledger_row

    row = ledger_row(finished_runs(runs)[0])
    assert row["data_origin"] == "generated" and row["data"] == out["data"]
    # data.generate=false restores the clear "no dataset" error.
    proc = run_script(
        "train.py",
        "task=hopper-expert",
        "preset=smoke",
        f"data.dir={data}",
        f"paths.runs={runs}",
        "data.download=false",
        "data.generate=false",
        check=False,
        env=nothing,
    )
    assert proc.returncode == 2 and "No dataset for task 'hopper-expert'" in proc.stderr

"""The three IPD stages as functions, with artifacts content-addressed by config.

The script entry points (``run_train`` ...) are in :mod:`ipd.cli`; each stage is callable alone
(``learn_world_model``, ``learn_value``, ``augment``, ``distill``, ``evaluate``), and
``train_policy`` runs what an algorithm (:data:`ALGORITHMS`) needs. ``cfg`` is
the composed Hydra config (``configs/train.yaml``); any mapping with the same keys works,
e.g. ``load_config(["task=hopper-medium", "preset=smoke"])`` from a notebook.

Artifacts (see :mod:`ipd.artifacts`): ``<paths.runs>/<task>/<stage>/<hash>/`` for the stages
``world_model``, ``value``, ``augment`` and ``policy``. A stage's hash covers its own config
section, the seed, the dataset fingerprint and the hashes of the artifacts it consumes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ipd.artifacts import (
    Artifact,
    ArtifactStore,
    augment_hash_config,
    dataset_fingerprint,
    without_neutral,
)
from ipd.config import (  # noqa: F401 (API)
    ConfigError,
    canonical,
    load_config,
    section,
    to_plain,
    validate_config,
)
from ipd.data import Normalizer, Transitions, read_hdf5, write_hdf5
from ipd.distill import TEACHER_CHECK_KEYS, distill_policy
from ipd.evaluation import EvalResult, evaluate_with_config, make_eval_env
from ipd.generate.fallback import open_or_generate
from ipd.io import atomic_write_json
from ipd.logging import RunLogger
from ipd.models.base import Policy
from ipd.models.bc import BCLearner
from ipd.models.policies import load_policy
from ipd.models.uncertainty import dataset_quantiles
from ipd.models.value import IQLLearner
from ipd.models.world_model import EnsembleWorldModel
from ipd.models.world_model_training import train_world_model
from ipd.planning.augment import augment_dataset
from ipd.planning.planner import Planner
from ipd.planning.simulator_check import check_in_simulator
from ipd.planning.teacher_check import teacher_check
from ipd.simulator import SimulatorDynamics, replay_from_observation
from ipd.tasks import TaskSpec, get_task
from ipd.utils import resolve_device, set_seed


@dataclass
class Context:
    """What every stage needs: config, task, dataset, store, device and logger."""

    cfg: DictConfig
    task: TaskSpec
    data: Transitions
    fingerprint: str
    store: ArtifactStore
    device: torch.device
    logger: RunLogger | None = None
    progress: bool = True
    origin: str = "file"  # where the data came from: d4rl | minari | generated | file

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    def plain(self, key: str) -> dict:
        """Section ``key`` as hashed: canonical, so alpha=0 and alpha=0.0 hash alike, and without
        keys at their hash-neutral value (``ipd.artifacts.HASH_NEUTRAL``)."""
        return without_neutral(key, canonical(to_plain(self.cfg[key])))

    def stage_config(self, key: str, **parents: str) -> dict:
        return {key: self.plain(key), "seed": self.seed, "data": self.fingerprint, **parents}

    def log(self, metrics: dict, step: int, prefix: str) -> None:
        if self.logger is not None:
            self.logger.log(metrics, step, prefix)


def make_context(cfg: DictConfig, logger: RunLogger | None = None) -> Context:
    validate_config(cfg, algorithms=tuple(ALGORITHMS))
    task = get_task(str(cfg.task.name), env_version=cfg.task.get("env_version"))
    set_seed(int(cfg.seed))
    loaded = open_or_generate(
        task,
        data_dir=cfg.data.dir,
        download_missing=bool(cfg.data.download),
        url_base=cfg.data.url_base,
        minari_id=cfg.data.minari_id,
        source=cfg.data.get("source", "auto"),
        env_version=cfg.task.get("env_version"),
        generate=bool(cfg.data.get("generate", False)),
        generate_size=cfg.data.get("generate_size"),
        generate_seed=int(cfg.data.get("generate_seed", 0)),
        progress=bool(cfg.logging.progress),
    )
    task, data = loaded.task, loaded.transitions  # task: the env and reference scores of this data
    print(f"[ipd] data: {loaded.source} (origin: {loaded.origin})")
    if data.obs_dim != task.obs_dim or data.act_dim != task.act_dim:
        raise ConfigError(
            f"Dataset for '{task.name}' has obs/act dims {data.obs_dim}/{data.act_dim}, "
            f"but {task.gym_id} has {task.obs_dim}/{task.act_dim}: the file belongs to another task."
        )
    store = ArtifactStore(Path(cfg.paths.runs))
    progress = bool(cfg.logging.progress)
    fingerprint = dataset_fingerprint(data)
    return Context(
        cfg, task, data, fingerprint, store, resolve_device(cfg.device), logger, progress, loaded.origin
    )


def _reuse(ctx: Context, art: Artifact, stage: str) -> bool:
    return ctx.store.reusable(art, stage)


# ----------------------------------------------------------------------------- stage 1
def learn_world_model(ctx: Context) -> tuple[EnsembleWorldModel, Artifact]:
    art = ctx.store.artifact(ctx.task.name, "world_model", ctx.stage_config("world_model"))
    with ctx.store.lock(art):
        if not _reuse(ctx, art, "world_model"):
            t0 = time.perf_counter()
            wm_cfg = section(ctx.cfg, "world_model")
            terminal_fn = ctx.task.is_terminal_torch
            state = art.file("world_model_state.pt")
            model, metrics = train_world_model(
                ctx.data, wm_cfg, terminal_fn, ctx.device, ctx.progress, state_path=state
            )
            state.unlink(missing_ok=True)
            model.save(art.file("world_model.pt"), task=ctx.task.name)
            metrics["uncertainty_quantiles"] = dataset_quantiles(model, ctx.data)
            art.finish({**metrics, "wall_time_s": time.perf_counter() - t0})
    return EnsembleWorldModel.load(art.file("world_model.pt"), ctx.device, ctx.task.is_terminal_torch), art


def _fit_learner(ctx: Context, stage: str, learner, filename: str) -> Artifact:
    """Train an IQL/BC learner as the ``stage`` artifact; the training loop resumes an interrupted run."""
    art = ctx.store.artifact(ctx.task.name, stage, ctx.stage_config(stage))
    final, state = art.file(filename), art.file(filename.replace(".pt", "_state.pt"))
    with ctx.store.lock(art):
        if not _reuse(ctx, art, stage):
            t0 = time.perf_counter()
            metrics = learner.fit(
                ctx.data,
                progress=ctx.progress,
                callback=lambda step, m: ctx.log(m, step, f"{stage}/"),
                state_path=state,
            )
            learner.save(final, task=ctx.task.name, eval_task=ctx.task.eval_record())
            summary = {k: v for k, v in metrics.items() if k != "history"}
            state.unlink(missing_ok=True)  # before finish: the checksums cover what stays
            art.finish({**summary, "wall_time_s": time.perf_counter() - t0})
    return art


def learn_value(ctx: Context) -> tuple[IQLLearner, Artifact]:
    """Stage 1's IQL value learner (also the IQL baseline)."""
    learner = IQLLearner(ctx.data.obs_dim, ctx.data.act_dim, section(ctx.cfg, "value"), ctx.device)
    art = _fit_learner(ctx, "value", learner, "iql.pt")
    return IQLLearner.load(art.file("iql.pt"), ctx.device), art


def learn_bc(ctx: Context) -> tuple[BCLearner, Artifact]:
    """The BC / x%BC yardstick (``bc.top_fraction``)."""
    learner = BCLearner(ctx.data.obs_dim, ctx.data.act_dim, section(ctx.cfg, "bc"), ctx.device)
    art = _fit_learner(ctx, "bc", learner, "bc.pt")
    return BCLearner.load(art.file("bc.pt"), ctx.device), art


# ----------------------------------------------------------------------------- stage 2
def data_uncertainty_quantile(
    world_model: tuple[EnsembleWorldModel, Artifact], data: Transitions, quantile: float | None
) -> float | None:
    """The ``quantile`` of U over the dataset (from the world-model artifact's cached quantiles
    where it has it): stage 2's acceptance threshold and the teacher check's trust threshold.
    None without a quantile."""
    if quantile is None:
        return None
    cached = world_model[1].metrics().get("uncertainty_quantiles") or {}
    return dataset_quantiles(world_model[0], data, (quantile,), cached)[str(quantile)]


def augment(ctx: Context, world_model=None, wm_art: Artifact | None = None, iql=None, iql_art=None):
    """Stage 2. Trains (or reuses) stage 1 when its models are not passed in."""
    if world_model is None:
        world_model, wm_art = learn_world_model(ctx)
    if iql is None:
        iql, iql_art = learn_value(ctx)
    aug_cfg = section(ctx.cfg, "augment")
    parents = {"world_model_hash": wm_art.hash, "value_hash": iql_art.hash}
    aug_plain, simulator_check = augment_hash_config(ctx.plain("augment"))
    conf = {"augment": aug_plain, "seed": ctx.seed, "data": ctx.fingerprint, **parents}
    conf["planner"] = ctx.plain("planner")
    art = ctx.store.artifact(ctx.task.name, "augment", conf)
    with ctx.store.lock(art):
        if not _reuse(ctx, art, "augment"):
            if aug_cfg.dynamics == "simulator":  # oracle arm: exact dynamics, U = 0 everywhere
                dynamics, threshold = SimulatorDynamics(ctx.task), 0.0
            else:
                dynamics = world_model
                threshold = data_uncertainty_quantile(
                    (world_model, wm_art), ctx.data, aug_cfg.uncertainty_quantile
                )
            plan_cfg = dataclasses.replace(section(ctx.cfg, "planner"), uncertainty_threshold=threshold)
            planner = Planner(
                dynamics, plan_cfg, ctx.data.act_dim, value_fn=iql.value_fn(), prior=iql.actor_prior()
            )
            result = augment_dataset(
                ctx.data,
                planner,
                value_fn=iql.value,
                q_fn=iql.q,
                uncertainty_threshold=threshold,
                cfg=aug_cfg,
                gamma=float(ctx.cfg.value.gamma),
                device=ctx.device,
                work_dir=art.path,
                seed=ctx.seed,
                progress=ctx.progress,
            )
            write_hdf5(art.file("augmented.hdf5"), result.dataset, attrs={"task": ctx.task.name})
            atomic_write_json(art.file("stats.json"), result.stats)
            for f in art.path.glob("batch_*.npz"):
                f.unlink()
            art.finish(result.stats)
            print(f"[ipd] augment: {json.dumps({k: result.stats[k] for k in SUMMARY_KEYS})}")
    if simulator_check:
        return _simulator_checked(ctx, art, iql, aug_cfg)
    return read_hdf5(art.file("augmented.hdf5")), art


def _simulator_checked(ctx: Context, model_art: Artifact, iql, aug_cfg) -> tuple[Transitions, Artifact]:
    """Oracle arm (``augment.simulator_check``): the model artifact's rollouts replayed in the real env."""
    art = ctx.store.artifact(ctx.task.name, "augment", {**model_art.config, "simulator_check": True})
    with ctx.store.lock(art):
        if not _reuse(ctx, art, "augment (simulator check)"):
            env = make_eval_env(ctx.task)
            dataset, stats = check_in_simulator(
                read_hdf5(model_art.file("augmented.hdf5")),
                lambda obs, actions: replay_from_observation(env, obs, actions),
                iql.value,
                float(ctx.cfg.value.gamma),
                aug_cfg.min_improvement,
                min(aug_cfg.min_rollout_length, aug_cfg.rollout_length),
                progress=lambda it: tqdm(it, desc="augment: simulator check", disable=not ctx.progress),
            )
            env.close()
            stats["model_artifact"] = str(model_art.path)
            write_hdf5(art.file("augmented.hdf5"), dataset, attrs={"task": ctx.task.name})
            atomic_write_json(art.file("stats.json"), stats)
            art.finish(stats)
            print(f"[ipd] augment (simulator check): {json.dumps(stats)}")
    return read_hdf5(art.file("augmented.hdf5")), art


SUMMARY_KEYS = ("selected", "accepted", "acceptance_rate", "mean_improvement_accepted", "imagined_rows")


# ----------------------------------------------------------------------------- stage 3
def q_term_gated(ctx: Context) -> bool:
    """Whether stage 3 has a Q-term that the teacher check gates (it then needs the world model)."""
    return float(ctx.cfg.policy.train.alpha) > 0 and ctx.cfg.policy.q_term_rule == "teacher_check"


def policy_stage_config(ctx: Context, parents: dict, gated: bool) -> dict:
    """Stage 3's hashed config. Without a gated Q-term the teacher check's keys change nothing, so
    they stay out of the hash (DT and alpha = 0 artifacts stored before the check stay valid)."""
    conf = ctx.stage_config("policy", **parents)
    if not gated:
        conf["policy"] = {k: v for k, v in conf["policy"].items() if k not in TEACHER_CHECK_KEYS}
    return conf


def distill(
    ctx: Context,
    dataset: Transitions | None = None,
    iql=None,
    parents: dict | None = None,
    world_model: tuple[EnsembleWorldModel, Artifact] | None = None,
):
    """Stage 3 (and the plain DT baseline) as an artifact; returns (checkpoint path, artifact).

    With a Q-term (``policy.train.alpha > 0``) under ``policy.q_term_rule=teacher_check`` the
    teacher check runs before training on the stage-1 world model (``world_model``, else trained or
    reused here), and a failed check turns the Q-term off. The artifact's metrics record the α used
    and the check.
    """
    dcfg = section(ctx.cfg, "policy")
    train_cfg = section(ctx.cfg, "policy.train")
    gated = q_term_gated(ctx)
    if gated:  # the Q-term's gate depends on the world model too
        if iql is None:
            raise ValueError("policy.train.alpha > 0 needs the stage-1 critic: pass iql (learn_value(ctx)).")
        world_model = world_model or learn_world_model(ctx)
        parents = {**(parents or {}), "world_model_hash": world_model[1].hash}
    art = ctx.store.artifact(ctx.task.name, "policy", policy_stage_config(ctx, parents or {}, gated))
    final = art.file("policy.pt")
    with ctx.store.lock(art):
        if _reuse(ctx, art, "policy"):
            return final, art
        t0 = time.perf_counter()
        gate_metrics = {}
        if gated:
            check = teacher_check(
                world_model[0],
                iql.actor_prior(),
                ctx.data,
                dcfg.teacher_check_horizon,
                dcfg.teacher_check_starts,
                ctx.seed,
                data_uncertainty_quantile(world_model, ctx.data, dcfg.teacher_check_trust_quantile),
            )
            if not check.passed:
                train_cfg = dataclasses.replace(train_cfg, alpha=0.0)
            gate_metrics = {"teacher_check": check.to_dict()}
            print(f"[ipd] teacher check: {json.dumps(gate_metrics)} -> alpha {train_cfg.alpha:g}")
        gate_metrics["alpha"] = train_cfg.alpha
        result = distill_policy(
            dataset if dataset is not None else ctx.data,
            iql,
            section(ctx.cfg, "policy.model"),
            train_cfg,
            section(ctx.cfg, "policy"),
            return_scale=float(ctx.cfg.task.return_scale),
            target_return=float(ctx.cfg.task.target_return),
            gamma=float(ctx.cfg.value.gamma),
            state_normalizer=Normalizer.fit(ctx.data.observations),  # the real data's statistics
            eval_fn=lambda policy, episodes: eval_metrics(evaluate(ctx, policy, episodes)),
            checkpoint_dir=art.path,
            critic_batch_size=int(ctx.cfg.value.batch_size),
            seed=ctx.seed,
            device=ctx.device,
            progress=ctx.progress,
            log_fn=lambda m, s: ctx.log(m, s, "policy/"),
        )
        extra = {"task": ctx.task.name, "eval_task": ctx.task.eval_record(), "algo": str(ctx.cfg.algo)}
        result.save(final, extra=extra)
        art.file("train_state.pt").unlink(missing_ok=True)  # before finish: the checksums cover what stays
        art.finish({**result.metrics, **gate_metrics, "wall_time_s": time.perf_counter() - t0})
    return final, art


def eval_metrics(res: EvalResult) -> dict[str, float]:
    return {"normalized_score": res.normalized_mean, "return": res.return_mean}


# ----------------------------------------------------------------------------- evaluation
def evaluate(ctx: Context, policy: Policy, episodes: int | None = None) -> EvalResult:
    return evaluate_with_config(policy, ctx.task, ctx.cfg.eval, ctx.seed, episodes, ctx.progress)


# ----------------------------------------------------------------------------- entry points
def stage1(ctx: Context, need_world_model: bool = True):
    wm, wm_art = learn_world_model(ctx) if need_world_model else (None, None)
    iql, iql_art = learn_value(ctx)
    return wm, wm_art, iql, iql_art


def _train_iql(ctx: Context) -> tuple[Policy, Path, dict]:
    iql, iql_art = learn_value(ctx)
    return iql.policy(), iql_art.file("iql.pt"), {"value": str(iql_art.path)}


def _train_bc(ctx: Context) -> tuple[Policy, Path, dict]:
    bc, bc_art = learn_bc(ctx)
    return bc.policy(), bc_art.file("bc.pt"), {"bc": str(bc_art.path)}


def _train_sequence_policy(ctx: Context) -> tuple[Policy, Path, dict]:
    """IPD and DT: the stages the ``policy`` section needs (stage 1 for tokens / the Q-term,
    stage 2 for augmented data), then distillation."""
    dcfg = section(ctx.cfg, "policy")
    info: dict[str, str] = {}
    iql = parents = stage1_model = None
    dataset = ctx.data
    if dcfg.use_augmented or dcfg.needs_value or float(ctx.cfg.policy.train.alpha) > 0:
        wm, wm_art, iql, iql_art = stage1(ctx, need_world_model=dcfg.use_augmented or q_term_gated(ctx))
        parents = {"value_hash": iql_art.hash}
        info["value"] = str(iql_art.path)
        if wm is not None:
            stage1_model = (wm, wm_art)
            info["world_model"] = str(wm_art.path)
        if dcfg.use_augmented:
            dataset, aug_art = augment(ctx, wm, wm_art, iql, iql_art)
            parents["augment_hash"] = aug_art.hash
            info["augment"] = str(aug_art.path)
    ckpt, pol_art = distill(ctx, dataset, iql, parents, stage1_model)
    info["policy"] = str(pol_art.path)
    return load_policy(ckpt, ctx.device).policy, ckpt, info


# The algorithm registry: ``algo=<name>`` runs ALGORITHMS[name]; the name's settings are in
# ``configs/algo/<name>.yaml``. Adding an algorithm is one entry here plus its yaml.
ALGORITHMS: dict[str, Callable[[Context], tuple[Policy, Path, dict]]] = {
    "ipd": _train_sequence_policy,
    "dt": _train_sequence_policy,
    "iql": _train_iql,
    "bc": _train_bc,
    "bc10": _train_bc,
}


def train_policy(ctx: Context) -> tuple[Policy, Path, dict]:
    """Run the stages ``cfg.algo`` needs; returns (policy for evaluation, checkpoint, stage info)."""
    return ALGORITHMS[str(ctx.cfg.algo)](ctx)

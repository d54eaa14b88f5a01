"""The three IPD stages as functions, with artifacts content-addressed by config.

``run_train(cfg)`` is what ``scripts/train.py`` calls; each stage is also callable alone
(``learn_world_model``, ``learn_value``, ``augment``, ``distill``, ``evaluate``). ``cfg`` is
the composed Hydra config (``configs/train.yaml``); any mapping with the same keys works,
e.g. ``load_config(["task=hopper-medium", "preset=smoke"])`` from a notebook.

Artifacts (see :mod:`ipd.artifacts`): ``<paths.runs>/<task>/<stage>/<hash>/`` for the stages
``world_model``, ``value``, ``augment`` and ``policy``. A stage's hash covers its own config
section, the seed, the dataset fingerprint and the hashes of the artifacts it consumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ipd.artifacts import Artifact, ArtifactStore
from ipd.data import (
    Normalizer,
    SequenceSampler,
    Trajectories,
    Transitions,
    open_dataset,
    read_hdf5,
    resolve_task,
    write_hdf5,
)
from ipd.evaluation import EvalResult, evaluate_policy
from ipd.io import atomic_write, atomic_write_json, torch_load
from ipd.logging import RunLogger
from ipd.tasks import TaskSpec, get_task
from ipd.utils import resolve_device, set_seed

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key and the valid choices."""


def load_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides, outside of a Hydra app."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(config_name, overrides=overrides or [])


def section(cfg: DictConfig, key: str, cls: type) -> Any:
    """Build dataclass ``cls`` from ``cfg[key]`` (minus ``_target_``), naming bad keys."""
    node = OmegaConf.to_container(cfg[key], resolve=True)
    node.pop("_target_", None)
    key = cfg._get_full_key(key) if isinstance(cfg, DictConfig) else key  # e.g. "policy.model"
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(node) - names)
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in '{key}'. Valid keys: {sorted(names)}.")
    try:
        return cls(**node)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid '{key}' config: {exc}") from exc


def to_plain(cfg: DictConfig | dict) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def dataset_fingerprint(t: Transitions) -> str:
    """Cheap content hash: sizes plus a strided sample of the arrays."""
    h = hashlib.sha256()
    stride = max(1, len(t) // 4096)
    for arr in (t.observations[::stride], t.actions[::stride], t.rewards, t.terminals, t.timeouts):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(str((len(t), t.obs_dim, t.act_dim)).encode())
    return h.hexdigest()[:16]


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

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    def stage_config(self, key: str, **parents: str) -> dict:
        return {key: to_plain(self.cfg[key]), "seed": self.seed, "data": self.fingerprint, **parents}

    def log(self, metrics: dict, step: int, prefix: str) -> None:
        if self.logger is not None:
            self.logger.log(metrics, step, prefix)


def validate_config(cfg: DictConfig) -> None:
    """Fail fast on bad values, before any data is loaded or model trained."""
    from ipd.models.ensemble import WorldModelConfig
    from ipd.models.sequence_trainer import SequenceTrainConfig
    from ipd.models.transformer import DTConfig
    from ipd.models.value import IQLConfig
    from ipd.planning.augment import AugmentConfig
    from ipd.planning.planner import PlannerConfig

    get_task(str(cfg.task.name))
    if str(cfg.algo) not in ("ipd", "dt", "iql"):
        raise ConfigError(f"algo must be ipd|dt|iql, got '{cfg.algo}'")
    if str(cfg.policy.condition) not in ("rtg", "value", "relabel"):
        raise ConfigError(f"policy.condition must be rtg|value|relabel, got '{cfg.policy.condition}'")
    for key in ("episodes", "num_envs", "max_episode_steps"):
        if int(cfg.eval[key]) < 1:
            raise ConfigError(f"eval.{key} must be >= 1, got {cfg.eval[key]}")
    for key, cls in (("world_model", WorldModelConfig), ("value", IQLConfig), ("augment", AugmentConfig)):
        section(cfg, key, cls)
    section(cfg, "planner", PlannerConfig)
    section(cfg.policy, "model", DTConfig)
    section(cfg.policy, "train", SequenceTrainConfig)
    try:
        resolve_device(str(cfg.device))
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(str(exc)) from exc


def make_context(cfg: DictConfig, logger: RunLogger | None = None) -> Context:
    validate_config(cfg)
    task = get_task(str(cfg.task.name), env_version=cfg.task.get("env_version"))
    set_seed(int(cfg.seed))
    loaded = open_dataset(
        task,
        data_dir=cfg.data.dir,
        download_missing=bool(cfg.data.download),
        url_base=cfg.data.url_base,
        minari_id=cfg.data.minari_id,
        source=cfg.data.get("source", "auto"),
        env_version=cfg.task.get("env_version"),
    )
    task, data = loaded.task, loaded.transitions  # task: the env and reference scores of this data
    if data.obs_dim != task.obs_dim or data.act_dim != task.act_dim:
        raise ConfigError(
            f"Dataset for '{task.name}' has obs/act dims {data.obs_dim}/{data.act_dim}, "
            f"but {task.gym_id} has {task.obs_dim}/{task.act_dim}: the file belongs to another task."
        )
    store = ArtifactStore(Path(cfg.paths.runs))
    progress = bool(cfg.logging.progress)
    return Context(
        cfg, task, data, dataset_fingerprint(data), store, resolve_device(cfg.device), logger, progress
    )


def _reuse(art: Artifact, stage: str) -> bool:
    if art.done:
        print(f"[ipd] {stage}: reusing finished artifact {art.path}")
        return True
    return False


# ----------------------------------------------------------------------------- stage 1
def learn_world_model(ctx: Context):
    from ipd.models.ensemble import EnsembleWorldModel, WorldModelConfig, train_world_model

    wm_cfg = section(ctx.cfg, "world_model", WorldModelConfig)
    art = ctx.store.artifact(ctx.task.name, "world_model", ctx.stage_config("world_model"))
    with ctx.store.lock(art):
        if not _reuse(art, "world_model"):
            t0 = time.perf_counter()
            model, metrics = train_world_model(ctx.data, wm_cfg, ctx.task.name, ctx.device, ctx.progress)
            model.save(art.file("world_model.pt"))
            metrics["uncertainty_quantiles"] = _u_quantiles(model, ctx.data)
            art.finish({**metrics, "wall_time_s": time.perf_counter() - t0})
    return EnsembleWorldModel.load(art.file("world_model.pt"), ctx.device), art


def _u_quantiles(model, data: Transitions) -> dict[str, float]:
    from ipd.models.ensemble import uncertainty_quantiles

    qs = (0.5, 0.8, 0.9, 0.95, 0.99)
    u = uncertainty_quantiles(model, data, quantiles=qs, max_samples=U_QUANTILE_SAMPLES)
    return {str(q): float(v) for q, v in u.items()}


U_QUANTILE_SAMPLES = 100_000  # random dataset rows used for the U quantiles (exact enough, seconds on CPU)


def learn_value(ctx: Context):
    from ipd.models.value import IQLConfig, IQLLearner

    iql_cfg = section(ctx.cfg, "value", IQLConfig)
    art = ctx.store.artifact(ctx.task.name, "value", ctx.stage_config("value"))
    final, state = art.file("iql.pt"), art.file("iql_state.pt")
    with ctx.store.lock(art):
        if not _reuse(art, "value"):
            t0 = time.perf_counter()
            learner = IQLLearner(ctx.data.obs_dim, ctx.data.act_dim, iql_cfg, ctx.device)
            if state.is_file():  # resume an interrupted run
                learner.load_state_dict(torch_load(state, ctx.device))
                print(f"[ipd] value: resuming from {state}")

            def checkpoint(step: int, metrics: dict) -> None:
                ctx.log(metrics, step, "value/")
                atomic_write(state, lambda tmp: torch.save(learner.state_dict(), tmp))

            metrics = learner.fit(ctx.data, progress=ctx.progress, callback=checkpoint)
            learner.save(final, task=ctx.task.name)
            art.finish({**metrics, "wall_time_s": time.perf_counter() - t0})
            state.unlink(missing_ok=True)
    return IQLLearner.load(final, ctx.device), art


# ----------------------------------------------------------------------------- stage 2
def augment(ctx: Context, world_model=None, wm_art: Artifact | None = None, iql=None, iql_art=None):
    """Stage 2. Trains (or reuses) stage 1 when its models are not passed in."""
    from ipd.planning.augment import AugmentConfig, augment_dataset
    from ipd.planning.planner import Planner, PlannerConfig

    if world_model is None:
        world_model, wm_art = learn_world_model(ctx)
    if iql is None:
        iql, iql_art = learn_value(ctx)
    aug_cfg = section(ctx.cfg, "augment", AugmentConfig)
    plan_cfg = section(ctx.cfg, "planner", PlannerConfig)
    parents = {"world_model_hash": wm_art.hash, "value_hash": iql_art.hash}
    conf = {**ctx.stage_config("augment", **parents), "planner": to_plain(ctx.cfg.planner)}
    art = ctx.store.artifact(ctx.task.name, "augment", conf)
    with ctx.store.lock(art):
        if not _reuse(art, "augment"):
            q_u = wm_art.metrics().get("uncertainty_quantiles") or _u_quantiles(world_model, ctx.data)
            threshold = _threshold_from_quantiles(q_u, aug_cfg.uncertainty_quantile, world_model, ctx.data)
            plan_cfg = dataclasses.replace(plan_cfg, uncertainty_threshold=threshold)
            planner = Planner(
                world_model, plan_cfg, ctx.data.act_dim, value_fn=iql.value_fn(), prior=iql.actor_prior()
            )
            result = augment_dataset(
                ctx.data,
                planner,
                value_fn=lambda s: iql.value(s),
                q_fn=lambda s, a: iql.q(s, a),
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
            print(f"[ipd] augment: {json.dumps({k: result.stats[k] for k in _SUMMARY_KEYS})}")
    return read_hdf5(art.file("augmented.hdf5")), art


_SUMMARY_KEYS = ("selected", "accepted", "acceptance_rate", "mean_improvement_accepted", "imagined_rows")


def _threshold_from_quantiles(q_u: dict, q: float, model, data: Transitions) -> float:
    if str(q) in q_u:
        return float(q_u[str(q)])
    from ipd.models.ensemble import uncertainty_quantiles

    return float(uncertainty_quantiles(model, data, quantiles=(q,), max_samples=U_QUANTILE_SAMPLES)[q])


# ----------------------------------------------------------------------------- stage 3
def conditioning_values(cfg: DictConfig, traj: Trajectories, iql) -> np.ndarray:
    """Per-row conditioning token for ``policy.condition`` = rtg | value | relabel.

    relabel follows QDT: max(RTG^γ_t, V(s_t)) with the critic's discount, so both terms are
    on the same scale; inference then conditions on V(s_t).
    """
    mode = str(cfg.policy.condition)
    if mode == "rtg":
        return traj.returns_to_go
    if iql is None:
        raise ConfigError(f"policy.condition={mode} needs the stage-1 value function")
    t = traj.transitions
    values = t.extras.get("value")
    if values is None or t.extras.get("imagined") is None:
        values = _batched_numpy(iql.value, t.observations)
    if mode == "value":
        return values
    if mode == "relabel":
        return np.maximum(traj.discounted_returns_to_go(float(cfg.value.gamma)), values)
    raise ConfigError(f"policy.condition must be rtg|value|relabel, got '{mode}'")


def _batched_numpy(fn, x: np.ndarray, batch: int = 65536) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i : i + batch]), np.float32) for i in range(0, len(x), batch)])


def distill(ctx: Context, dataset: Transitions | None = None, iql=None, parents: dict | None = None):
    """Stage 3 (and the plain DT baseline): train the sequence policy; returns (checkpoint path, artifact)."""
    from ipd.models.sequence_trainer import SequenceTrainConfig, SequenceTrainer
    from ipd.models.transformer import DecisionTransformer, DTConfig

    pol = ctx.cfg.policy
    dt_cfg = section(pol, "model", DTConfig)
    train_cfg = section(pol, "train", SequenceTrainConfig)
    dataset = dataset if dataset is not None else ctx.data
    conf = {**ctx.stage_config("policy", **(parents or {}))}
    art = ctx.store.artifact(ctx.task.name, "policy", conf)
    final = art.file("policy.pt")
    with ctx.store.lock(art):
        if _reuse(art, "policy"):
            return final, art
        t0 = time.perf_counter()
        traj = Trajectories.from_transitions(dataset)
        cond = conditioning_values(ctx.cfg, traj, iql)
        scale = float(ctx.cfg.task.return_scale)
        norm = Normalizer.fit(ctx.data.observations)
        sampler = SequenceSampler(
            traj, dt_cfg.context, cond, scale, norm, None, dt_cfg.max_timestep, ctx.seed
        )
        model = DecisionTransformer(dataset.obs_dim, dataset.act_dim, dt_cfg)
        critic = iql.q_torch if (iql is not None and train_cfg.alpha > 0) else None
        trainer = SequenceTrainer(
            model,
            sampler,
            train_cfg,
            ctx.device,
            critic=critic,
            state_normalizer=norm,
            checkpoint_path=art.file("train_state.pt"),
            log_fn=lambda m, s: ctx.log(m, s, "policy/"),
            after_update=_critic_finetuner(ctx, dataset, iql, art, train_cfg) if critic is not None else None,
        )
        conditioning = _conditioning(ctx)
        metrics = trainer.train(progress=ctx.progress, eval_fn=_periodic_eval(ctx, norm, conditioning, iql))
        trainer.save_policy(final, conditioning, extra=_policy_extra(ctx, iql))
        summary = {k: v for k, v in metrics.items() if k != "history"}
        art.finish({**summary, "wall_time_s": time.perf_counter() - t0})
        art.file("train_state.pt").unlink(missing_ok=True)
        art.file("critic_state.pt").unlink(missing_ok=True)
    return final, art


def _critic_finetuner(ctx: Context, dataset: Transitions, iql, art: Artifact, train_cfg):
    """``policy.finetune_critic``: one IQL step on the (augmented) data per policy update.

    The critic state is checkpointed with the policy's training state (same period) so a
    resumed run continues with the fine-tuned critic, not the stage-1 one.
    """
    if not bool(ctx.cfg.policy.get("finetune_critic", False)):
        return None
    state = art.file("critic_state.pt")
    if state.is_file() and art.file("train_state.pt").is_file():
        iql.load_state_dict(torch_load(state, ctx.device))
    rng = np.random.default_rng(ctx.seed + 1)
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")
    batch_size = int(ctx.cfg.value.batch_size)

    def step(update: int) -> dict:
        idx = rng.integers(0, len(dataset), batch_size)
        metrics = iql.update({k: getattr(dataset, k)[idx] for k in keys})
        if train_cfg.checkpoint_every and update % train_cfg.checkpoint_every == 0:
            atomic_write(state, lambda tmp: torch.save(iql.state_dict(), tmp))
        return {k: metrics[k] for k in ("q_loss", "v_loss") if k in metrics}

    return step


def _conditioning(ctx: Context):
    from ipd.models.transformer import ConditioningConfig

    mode = "rtg" if str(ctx.cfg.policy.condition) == "rtg" else "value"
    return ConditioningConfig(mode, float(ctx.cfg.task.return_scale), float(ctx.cfg.task.target_return))


def _policy_extra(ctx: Context, iql) -> dict:
    """Task name, and for value conditioning the value network, so one file is enough to evaluate."""
    extra: dict[str, Any] = {"task": ctx.task.name, "algo": str(ctx.cfg.algo)}
    if str(ctx.cfg.policy.condition) != "rtg":
        extra["value_model"] = iql.value_state()
    return extra


def _periodic_eval(ctx: Context, norm: Normalizer, conditioning, iql):
    from ipd.models.transformer import DTPolicy

    episodes = int(ctx.cfg.policy.get("eval_episodes", 0))
    if episodes <= 0:
        return None
    value_fn = iql.value_fn() if conditioning.mode == "value" else None

    def eval_fn(model, step: int) -> dict:
        policy = DTPolicy(model, norm, conditioning, value_fn=value_fn, device=ctx.device)
        res = evaluate(ctx, policy, episodes=episodes)
        return {"normalized_score": res.normalized_mean, "return": res.return_mean}

    return eval_fn


# ----------------------------------------------------------------------------- evaluation
def evaluate(ctx: Context, policy, episodes: int | None = None) -> EvalResult:
    ev = ctx.cfg.eval
    episodes = int(episodes or ev.episodes)
    return evaluate_policy(
        policy,
        ctx.task,
        episodes=episodes,
        num_envs=min(int(ev.num_envs), episodes),
        seed=ctx.seed + 10_000,  # evaluation seeds never coincide with training seeds
        max_episode_steps=int(ev.max_episode_steps),
        progress=ctx.progress,
    )


# ----------------------------------------------------------------------------- entry points
def _run_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        from ipd.rundir import make_unique_dir

        return make_unique_dir(Path("runs") / "notebook")


def run_label(cfg: DictConfig) -> str:
    """The run's variant name: ``logging.label`` (e.g. an ablation arm), else the algo."""
    label = cfg.logging.get("label")
    return str(label) if label else str(cfg.algo)


def _logger(cfg: DictConfig, run_dir: Path) -> RunLogger:
    return RunLogger(
        run_dir,
        config=to_plain(cfg),
        project=str(cfg.logging.project),
        group=f"{cfg.task.name}/{run_label(cfg)}",
        name=f"{cfg.task.name}-{run_label(cfg)}-seed{cfg.seed}",
        wandb_mode=str(cfg.logging.wandb_mode),
    )


def stage1(ctx: Context, need_world_model: bool = True):
    wm, wm_art = learn_world_model(ctx) if need_world_model else (None, None)
    iql, iql_art = learn_value(ctx)
    return wm, wm_art, iql, iql_art


def train_policy(ctx: Context) -> tuple[Any, Path, dict]:
    """Run the stages ``cfg.algo`` needs; returns (policy for evaluation, checkpoint, stage info)."""
    algo = str(ctx.cfg.algo)
    if algo not in ("ipd", "dt", "iql"):
        raise ConfigError(f"algo must be ipd|dt|iql, got '{algo}'")
    if algo == "iql":
        iql, iql_art = learn_value(ctx)
        return iql.policy(), iql_art.file("iql.pt"), {"value": str(iql_art.path)}
    cond = str(ctx.cfg.policy.condition)
    use_aug = bool(ctx.cfg.policy.use_augmented)
    info: dict[str, str] = {}
    iql = parents = None
    dataset = ctx.data
    if use_aug or cond != "rtg" or float(ctx.cfg.policy.train.alpha) > 0:
        wm, wm_art, iql, iql_art = stage1(ctx, need_world_model=use_aug)
        parents = {"value_hash": iql_art.hash}
        info["value"] = str(iql_art.path)
        if use_aug:
            dataset, aug_art = augment(ctx, wm, wm_art, iql, iql_art)
            parents["augment_hash"] = aug_art.hash
            info["augment"] = str(aug_art.path)
    ckpt, pol_art = distill(ctx, dataset, iql, parents)
    info["policy"] = str(pol_art.path)
    return load_policy(ckpt, ctx.device), ckpt, info


def run_train(cfg: DictConfig) -> float:
    run_dir = _run_dir()
    logger = _logger(cfg, run_dir)
    try:
        ctx = make_context(cfg, logger)
        t0 = time.perf_counter()
        policy, ckpt, info = train_policy(ctx)
        train_time = time.perf_counter() - t0
        result = evaluate(ctx, policy)
        summary = {
            "task": ctx.task.name,
            "algo": str(cfg.algo),
            "seed": ctx.seed,
            "normalized_score": result.normalized_mean,
            "normalized_score_std": result.normalized_std,
            "episodes": result.episodes,
            "run_dir": str(run_dir),
            "env_id": result.env_id,
            "score_reference": result.score_reference,
        }
        logger.update_summary(
            **summary,
            label=run_label(cfg),
            checkpoint=str(ckpt),
            artifacts=info,
            eval=result.to_dict(),
            train_time_s=train_time,
        )
        logger.log({"normalized_score": result.normalized_mean, "return": result.return_mean}, 0, "final/")
    finally:
        logger.finish()
    print(json.dumps(summary))
    return result.normalized_mean


def run_learn_models(cfg: DictConfig) -> None:
    ctx = make_context(cfg)
    _, wm_art, _, iql_art = stage1(ctx)
    print(json.dumps({"task": ctx.task.name, "world_model": str(wm_art.path), "value": str(iql_art.path)}))


def run_augment(cfg: DictConfig) -> None:
    ctx = make_context(cfg)
    _, art = augment(ctx)
    stats = art.metrics()
    print(
        json.dumps(
            {"task": ctx.task.name, "augment": str(art.path), **{k: stats.get(k) for k in _SUMMARY_KEYS}}
        )
    )


def run_distill(cfg: DictConfig) -> None:
    ctx = make_context(cfg)
    _, ckpt, info = train_policy(ctx)
    print(json.dumps({"task": ctx.task.name, "algo": str(cfg.algo), "checkpoint": str(ckpt), **info}))


def load_policy(path: str | Path, device: torch.device | str = "cpu"):
    """A ready-to-run :class:`ipd.models.base.Policy` from any ipd policy checkpoint."""
    from ipd.io import peek_format

    kind = peek_format(path)["name"]
    if kind == "ipd.iql":
        from ipd.models.value import IQLLearner

        return IQLLearner.load(path, device).policy()
    if kind == "ipd.dt":
        from ipd.models.transformer import DTPolicy, load_dt
        from ipd.models.value import IQLValue

        b = load_dt(path, device)
        value_fn = None
        if b.conditioning.mode == "value":
            if "value_model" not in b.extra:
                raise ConfigError(f"{path} is value-conditioned but bundles no value model; re-run distill.")
            value_fn = IQLValue.from_state_dict(b.extra["value_model"], device)
        return DTPolicy(b.model, b.state_normalizer, b.conditioning, value_fn=value_fn, device=device)
    raise ConfigError(f"{path} is a '{kind}' checkpoint, not a policy (expected ipd.dt or ipd.iql).")


def run_evaluate(cfg: DictConfig) -> float:
    if not cfg.checkpoint:
        raise ConfigError("scripts/evaluate.py needs checkpoint=path/to/policy.pt")
    from ipd.io import peek_format

    header = peek_format(cfg.checkpoint)
    name = str(header.get("task") or cfg.task.name)
    task = resolve_task(name, cfg.task.get("env_version"), cfg.data.get("minari_id"), bool(cfg.data.download))
    device = resolve_device(cfg.device)
    policy = load_policy(cfg.checkpoint, device)
    episodes = int(cfg.episodes or cfg.eval.episodes)
    result = evaluate_policy(
        policy,
        task,
        episodes=episodes,
        num_envs=min(int(cfg.eval.num_envs), episodes),
        seed=int(cfg.seed) + 10_000,
        max_episode_steps=int(cfg.eval.max_episode_steps),
        progress=bool(cfg.logging.progress),
    )
    out = {"task": task.name, "checkpoint": str(cfg.checkpoint), **result.to_dict()}
    print(json.dumps(out))
    return result.normalized_mean


def cli(fn, cfg: DictConfig):
    """Run a script entry point; known input errors exit with their message, not a traceback."""
    import sys

    from ipd.data import DatasetError
    from ipd.io import CheckpointError
    from ipd.tasks import UnknownTaskError

    try:
        return fn(cfg)
    except (ConfigError, DatasetError, CheckpointError, UnknownTaskError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

"""The script entry points: ``scripts/<name>.py`` calls ``cli(run_<name>, cfg)``.

Each ``run_*`` takes the composed Hydra config, runs the stages it needs (:mod:`ipd.pipeline`)
and prints one JSON line; :func:`cli` turns known input errors into a one-paragraph message and
exit status 2 instead of a traceback.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from ipd.artifacts import Artifact
from ipd.config import ConfigError, register_schemas, validate_config
from ipd.data import DatasetError, resolve_task
from ipd.evaluation import evaluate_with_config
from ipd.generate import GenerateError
from ipd.io import CheckpointError
from ipd.logging import run_label, run_logger
from ipd.models.policies import DTPolicy, LoadedPolicy, load_policy
from ipd.pipeline import SUMMARY_KEYS, augment, eval_metrics, evaluate, make_context, stage1, train_policy
from ipd.rundir import current_run_dir
from ipd.tasks import TaskSpec, UnknownTaskError, get_task
from ipd.training import TrainingInterrupted
from ipd.utils import library_versions, resolve_device, unmet_requirements

register_schemas()  # before Hydra composes the scripts' config


def run_train(cfg: DictConfig) -> float:
    run_dir = current_run_dir()
    logger = run_logger(cfg, run_dir)
    try:
        ctx = make_context(cfg, logger)
        t0 = time.perf_counter()
        policy, ckpt, info = train_policy(ctx)
        train_time = time.perf_counter() - t0
        result = evaluate(ctx, policy)
        eval_time = time.perf_counter() - t0 - train_time
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
            "data_origin": ctx.origin,
            "data": ctx.fingerprint,
            "best_normalized_score": best_score(result.normalized_mean, info),
        }
        logger.update_summary(
            **summary,
            label=run_label(cfg),
            checkpoint=str(ckpt),
            artifacts=info,
            eval=result.to_dict(),
            train_time_s=train_time,
            eval_time_s=eval_time,
            versions=library_versions(),
            q_term=q_term_summary(info),
        )
        logger.log(eval_metrics(result), 0, "final/")
    finally:
        logger.finish()
    print(json.dumps(summary))
    return result.normalized_mean


def q_term_summary(artifacts: dict[str, str]) -> dict:
    """The Q-term weight stage 3 used and the teacher check behind it (empty without a stage 3)."""
    if "policy" not in artifacts:
        return {}
    metrics = Artifact(Path(artifacts["policy"]), {}).metrics()
    return {k: metrics[k] for k in ("alpha", "teacher_check") if k in metrics}


def best_score(final: float, artifacts: dict[str, str]) -> float:
    """CORL's "best" column: the highest of the periodic evaluations (``policy.eval_episodes``
    episodes each, recorded in the policy artifact) and the final one. Without periodic
    evaluations (IQL, BC, or ``policy.eval_episodes=0``) it is the final score."""
    policy = Artifact(Path(artifacts["policy"]), {}) if "policy" in artifacts else None
    evals = policy.metrics().get("evals", []) if policy else []
    periodic = [float(e["normalized_score"]) for e in evals if "normalized_score" in e]
    return max([final, *(x for x in periodic if math.isfinite(x))])


def run_learn_models(cfg: DictConfig) -> None:
    ctx = make_context(cfg)
    _, wm_art, _, iql_art = stage1(ctx)
    print(json.dumps({"task": ctx.task.name, "world_model": str(wm_art.path), "value": str(iql_art.path)}))


def run_augment(cfg: DictConfig) -> None:
    ctx = make_context(cfg)
    _, art = augment(ctx)
    stats = art.metrics()
    summary = {"task": ctx.task.name, "augment": str(art.path), **{k: stats.get(k) for k in SUMMARY_KEYS}}
    print(json.dumps(summary))


def run_distill(cfg: DictConfig) -> None:
    ctx = make_context(cfg)
    _, ckpt, info = train_policy(ctx)
    print(json.dumps({"task": ctx.task.name, "algo": str(cfg.algo), "checkpoint": str(ckpt), **info}))


def _evaluation_task(cfg: DictConfig, loaded: LoadedPolicy) -> TaskSpec:
    """The env and reference scores the checkpoint records, unless the command line names them
    (``task.env_version=`` or ``data.minari_id=``); old checkpoints fall back to the task name."""
    env_version, minari_id = cfg.task.get("env_version"), cfg.data.get("minari_id")
    if loaded.eval_task is not None and not env_version and not minari_id:
        try:
            return TaskSpec.from_eval_record(loaded.eval_task)
        except ValueError as exc:
            raise CheckpointError(f"{cfg.checkpoint}: {exc}") from exc
    return resolve_task(str(loaded.task or cfg.task.name), env_version, minari_id, bool(cfg.data.download))


def run_evaluate(cfg: DictConfig) -> float:
    validate_config(cfg)  # unknown keys and bad values fail here too
    if not cfg.checkpoint:
        raise ConfigError("scripts/evaluate.py needs checkpoint=path/to/policy.pt")
    loaded = load_policy(cfg.checkpoint, resolve_device(cfg.device))
    task = _evaluation_task(cfg, loaded)
    extra = {}
    if cfg.get("target_return") is not None:
        extra = {"target_return": float(cfg.target_return)}
        set_target_return(loaded, extra["target_return"], str(cfg.checkpoint))
    progress = bool(cfg.logging.progress)
    result = evaluate_with_config(loaded.policy, task, cfg.eval, int(cfg.seed), cfg.episodes, progress)
    print(json.dumps({"task": task.name, "checkpoint": str(cfg.checkpoint), **extra, **result.to_dict()}))
    return result.normalized_mean


def set_target_return(loaded: LoadedPolicy, target_return: float, where: str) -> None:
    """Evaluate a return-conditioned (DT) policy from another initial return-to-go, e.g. the DT
    paper's second target or the best return in a mixed dataset. Other policies have no such token:
    their checkpoint is named with the fix rather than the value being silently ignored."""
    policy = loaded.policy
    if not (isinstance(policy, DTPolicy) and policy.cond.mode == "rtg"):
        mode = policy.cond.mode if isinstance(policy, DTPolicy) else "none"
        raise ConfigError(
            f"target_return applies only to return-conditioned policies (algo=dt, policy.condition=rtg); "
            f"{where} is a '{loaded.kind}' checkpoint with conditioning '{mode}'. Drop target_return=."
        )
    if not math.isfinite(target_return):
        raise ConfigError(f"target_return must be a finite number, got {target_return}.")
    policy.set_target_return(target_return)


def cli(fn, cfg: DictConfig):
    """Run a script entry point; known input errors exit with their message (status 2) and Ctrl-C
    with one line saying how to resume (status 130), not a traceback."""
    try:
        return fn(cfg)
    except (ConfigError, DatasetError, CheckpointError, UnknownTaskError, GenerateError) as exc:
        fail(f"error: {exc}")
    except TrainingInterrupted as exc:
        fail(f"[ipd] {exc}", 130)
    except KeyboardInterrupt:  # outside a training loop (data, planning, evaluation)
        fail("[ipd] interrupted; run the same command to resume (finished stages are reused)", 130)


def fail(message: str, status: int = 2) -> None:
    """Print ``message`` to stderr and exit with ``status``: the one way the scripts stop on bad input."""
    print(message, file=sys.stderr)
    sys.exit(status)


def precheck(argv: list[str], runs: bool = True) -> None:
    """Checks Hydra would fail on with a traceback or without a hint, run before it composes:
    installed packages below ipd's requirements, a config-group choice that does not exist
    (``task=hoper-medium``: the closest match is named) and a ``paths.runs`` that cannot be
    created or written. Exits 2 with one paragraph."""
    from omegaconf import OmegaConf

    from ipd.config import CONFIG_DIR

    unmet = unmet_requirements()
    if unmet:
        fixes = " ".join(f"'{req.wanted}'" for req in unmet)
        fail(
            "error: the installed packages do not meet ipd's requirements:\n  "
            + "\n  ".join(map(str, unmet))
            + f"\nInstall them with: pip install {fixes}"
        )
    try:
        for arg in argv:
            key, sep, value = arg.partition("=")
            if not sep or key.startswith(("+", "~", "-", "hydra")):  # hydra/launcher: Hydra's own too
                continue
            if key == "paths.runs" and runs:
                _check_writable(value)
            elif (CONFIG_DIR / key).is_dir():
                for choice in value.split(","):  # a multirun sweep lists choices
                    _check_choice(CONFIG_DIR / key, key, choice.strip())
        if runs and not any(a.startswith("paths.runs=") for a in argv):
            _check_writable(OmegaConf.load(CONFIG_DIR / "train.yaml").paths.runs)  # its default
    except ConfigError as exc:
        fail(f"error: {exc}")


def _check_choice(group_dir, group: str, choice: str) -> None:
    options = sorted(p.stem for p in group_dir.glob("*.yaml"))
    if choice in options or not choice:
        return
    if group == "task":
        try:
            get_task(choice)  # a task without a yaml of its own is still an error below
        except UnknownTaskError as exc:
            raise ConfigError(f"{exc} (task={choice})") from None
    close = difflib.get_close_matches(choice, options, n=1)
    hint = f" Did you mean '{group}={close[0]}'?" if close else ""
    raise ConfigError(f"Unknown {group} '{choice}'.{hint} Choose one of: {', '.join(options)}.")


def _check_writable(folder: str) -> None:
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".ipd-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"paths.runs={folder} cannot be used for runs and artifacts ({exc.strerror or exc}). "
            "Choose a folder you can write, e.g. paths.runs=$HOME/ipd-runs."
        ) from None

"""Training curves in the user's logger: one Lightning logger run per trial (csv, tensorboard, mlflow).

Every `every_n_steps` optimizer steps a run gets the training loss (mean over the examples since
its last point), the learning rate, examples seen, examples/s and the optimizer step; at each
validation checkpoint, val_loss (and val_acc for a classifier). The hyperparameters are logged once.

The x axis (a logger's `step`) is **examples seen**, as in the Optuna reports: trials of different
batch sizes then line up at equal cost, and every curve ends at the study's budget. The optimizer
step is logged as a metric, for plots against steps. A LightningModule's own `self.log` values
go to the same run on the same axis (the loggers below translate Lightning's step); the service
then leaves val_loss and val_acc to the model, and train_loss too when the model logs one.

Nothing runs per training step but one integer comparison in `on_train_batch_end`: the loss
comes from the trial module's own running sum (read as a difference since the last point, one
device sync per point).
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger

from search.config.spec import LoggingSpec
from search.errors import UserError
from search.record import Hyperparams
from search.train.module import TrialModule

# The packages each logger needs, any one of them: (import name, pip name).
PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "tensorboard": (("tensorboard", "tensorboard"), ("tensorboardX", "tensorboardX")),
    "mlflow": (("mlflow", "mlflow"),),
}

# TensorBoard's HParams dashboard shows each run's last value of these, next to its hyperparameters.
HPARAMS_METRICS = ("val_loss", "val_acc", "train_loss")


def check_logger(logging: LoggingSpec, study: str) -> None:
    """One paragraph (a UserError) if the study's logger needs a package that is not installed."""
    needed = PACKAGES.get(logging.logger, ())
    if needed and not any(importlib.util.find_spec(module) for module, _ in needed):
        names = " or ".join(f"`pip install {package}`" for _, package in needed)
        raise UserError(
            f"Study '{study}' logs its training curves with logging.logger: {logging.logger}, but the "
            f"{' or '.join(package for _, package in needed)} package is not installed in this environment, so no trial "
            f"could log. Install it ({names}) and run again, or set logging.logger to csv (needs nothing extra) or none "
            "in the study file. Nothing was stored."
        )


def hyperparameters(hp: Hyperparams, optimizer: str, **more: Any) -> dict[str, Any]:
    """What a run logs once: the sampled point and what it became."""
    return {
        "batch_size": hp.batch_size, "lr": hp.lr, "effective_lr": hp.effective_lr, "momentum": hp.momentum,
        "optimizer": optimizer, "schedule": hp.schedule, **more,
    }


class _ExamplesSeenAxis:
    """Every point of the run on one axis, examples seen: the service's and Lightning's own (a
    LightningModule's `self.log` values, which Lightning logs at its batch count)."""

    examples_seen: Callable[[], int] | None = None  # bound by TrainingCurves when training starts

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step if self.examples_seen is None else self.examples_seen())  # type: ignore[misc]

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if params:  # Lightning's own call carries the trial module's hparams: none
            super().log_hyperparams(params, *args, **kwargs)  # type: ignore[misc]


class _Csv(_ExamplesSeenAxis, CSVLogger):
    pass


class _TensorBoard(_ExamplesSeenAxis, TensorBoardLogger):
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().log_hyperparams(params)  # hparams.yaml; no placeholder metric (default_hp_metric=False)
        if not params:
            return
        from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE

        if _TENSORBOARD_AVAILABLE:
            from torch.utils.tensorboard.summary import hparams
        else:
            from tensorboardX.summary import hparams  # type: ignore[no-redef]
        # Only the metrics' names: their values are the curves' own points.
        writer = self.experiment._get_file_writer()
        for summary in hparams(params, dict.fromkeys(HPARAMS_METRICS, 0.0)):
            writer.add_summary(summary)
        # Lightning writes hparams.yaml once, at the start of fit, before these: write it again.
        save_hparams_to_yaml(Path(self.log_dir) / self.NAME_HPARAMS_FILE, self.hparams)


class _MLFlow(_ExamplesSeenAxis, MLFlowLogger):
    pass


def _tracking_uri(folder: str | None, default: Path) -> str:
    if folder and ("://" in folder or folder.startswith("file:")):
        return folder
    return Path(folder or default).expanduser().resolve().as_uri()


def make_logger(logging: LoggingSpec, study: str, run: str, results: Path) -> Logger | None:
    """The run `run` (e.g. trial_3) of experiment `study`, under `logging.dir` or `results`
    (results/<study>: logs/ for csv and tensorboard, mlruns/ for mlflow); None for `none`."""
    if logging.logger == "none":
        return None
    check_logger(logging, study)
    if logging.logger == "mlflow":
        return _MLFlow(experiment_name=study, run_name=run, tracking_uri=_tracking_uri(logging.dir, results / "mlruns"))
    root = Path(logging.dir).expanduser() if logging.dir else results / "logs"
    if logging.logger == "csv":
        # Written at every point (an append): a killed worker leaves its curves up to then.
        return _Csv(root.resolve(), name=study, version=run, flush_logs_every_n_steps=1)
    return _TensorBoard(root.resolve(), name=study, version=run, default_hp_metric=False)


class TrainingCurves(pl.Callback):
    """Logs a trial's curves to `logger`; `train()` passes the logger to the Trainer and puts this
    callback after the others (the validation point reads the checkpoint the reporter has just made)."""

    def __init__(self, logger: Logger, every_n_steps: int, hyperparameters: dict[str, Any]) -> None:
        self.logger = logger
        self.every_n_steps = every_n_steps
        self.hyperparameters = hyperparameters
        self._next_step = every_n_steps
        self._last_step = 0
        self._since = 0.0  # when the current stretch of training began
        self._seconds = 0.0  # training seconds since the last point before that stretch
        self._checkpoints = 0  # checkpoints logged

    @classmethod
    def create(cls, logging: LoggingSpec, study: str, run: str, results: Path, hyperparameters: dict[str, Any]) -> TrainingCurves | None:
        logger = make_logger(logging, study, run, results)
        return None if logger is None else cls(logger, logging.every_n_steps, hyperparameters)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, TrialModule)
        plan = pl_module.plan
        if isinstance(self.logger, _ExamplesSeenAxis):
            self.logger.examples_seen = lambda: plan.examples_after(trainer.global_step)
        self.logger.log_hyperparams(self.hyperparameters)
        pl_module.start_curve_loss()
        self._next_step = self.every_n_steps
        self._since = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object, batch_idx: int) -> None:
        if trainer.global_step >= self._next_step:  # the only work per batch
            self._log_training(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step > self._last_step:  # the steps after the last point
            self._log_training(trainer, pl_module)

    def _log_training(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, TrialModule)
        plan, step = pl_module.plan, trainer.global_step
        seen = plan.examples_after(step)
        examples = seen - plan.examples_after(self._last_step)
        train_loss = float(pl_module.take_curve_loss()) / max(1, examples)  # float(): the one device sync
        now = time.perf_counter()
        seconds = self._seconds + now - self._since
        metrics: dict[str, float] = {}
        if not (pl_module.step.lightning and "train_loss" in trainer.callback_metrics):  # else the model logs its own
            metrics["train_loss"] = train_loss
        metrics.update(
            lr=trainer.optimizers[0].param_groups[0]["lr"],
            examples_seen=seen,
            examples_per_second=examples / max(seconds, 1e-9),
            optimizer_step=step,
        )
        if plan.growth:  # the batch size of the last step: it grows instead of the rate decaying
            metrics["batch_size"] = seen - plan.examples_after(step - 1)
        self.logger.log_metrics(metrics, step=seen)
        self._last_step, self._since, self._seconds = step, now, 0.0
        self._next_step = (step // self.every_n_steps + 1) * self.every_n_steps

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._seconds += time.perf_counter() - self._since  # validation is not training time

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since = time.perf_counter()
        assert isinstance(pl_module, TrialModule)
        checkpoints = pl_module.log_book.checkpoints
        if len(checkpoints) == self._checkpoints:
            return
        self._checkpoints = len(checkpoints)
        if pl_module.step.lightning:
            return  # Lightning logs the model's own val_loss (and whatever else it logs)
        checkpoint = checkpoints[-1]
        metrics = {"val_loss": checkpoint.val_loss}
        if checkpoint.val_acc is not None:
            metrics["val_acc"] = checkpoint.val_acc
        self.logger.log_metrics(metrics, step=checkpoint.examples_seen)

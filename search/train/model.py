"""The study's model: the one place it is built (a built-in image classifier, or the user's own
nn.Module or LightningModule), its training step, and the check that it trains on the data
before the study exists."""
from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

from search.config.classpath import exit_error, instantiate
from search.config.load import PROJECT_ROOT
from search.config.spec import BUILTIN_MODELS, CodeSpec, StudySpec
from search.data.slicing import Batch, batch_length, split_batch
from search.data.source import TrialData
from search.errors import UserError
from search.train.loss import build_loss
from search.train.step import TrainingStep


def model_code(spec: StudySpec, data: TrialData) -> tuple[CodeSpec, str | None]:
    """The model's class path and arguments, and the folder it resolves from: the user's, or for a built-in
    `model.name` the same route to the project's models/ folder, with the data's class count and channels."""
    if spec.model.class_path is not None:
        return CodeSpec(class_path=spec.model.class_path, init_args=spec.model.init_args), spec.code_dir
    name = spec.model.name
    if name not in BUILTIN_MODELS:
        raise UserError(
            f"unknown model '{name}': the built-in models are {', '.join(sorted(BUILTIN_MODELS))}; for your own, give model.class_path."
        )
    assert data.num_classes is not None, "the built-in models classify images"
    arguments = {"num_classes": data.num_classes, "in_channels": data.image_shape[0], **spec.model.args}  # type: ignore[attr-defined]
    return CodeSpec(class_path=BUILTIN_MODELS[name], init_args=arguments), str(PROJECT_ROOT)


def build_model(spec: StudySpec, data: TrialData) -> nn.Module:
    """A freshly initialized model (from torch's global seed: seed first for a reproducible start)."""
    code, code_dir = model_code(spec, data)
    model = instantiate(code, code_dir, role="model")
    if not isinstance(model, nn.Module):
        raise UserError(f"The model `{code.class_path}` built a {type(model).__name__}, not a torch.nn.Module or LightningModule.")
    return model


def training_step(spec: StudySpec, model: nn.Module, device: torch.device, autocast: bool | None = None) -> TrainingStep:
    """The model's training step: a LightningModule's own loss, or the study's `loss`."""
    loss = None if isinstance(model, pl.LightningModule) else build_loss(spec)
    return TrainingStep(model, loss, device, autocast)


def check_model(spec: StudySpec, data: TrialData) -> torch.nn.Module:
    """Build the model, backpropagate the loss of two training examples and measure two validation examples,
    so a model that cannot be built, or whose output does not fit the loss or the data (the validation data's
    too: labels out of range, another feature width, none at all), fails before the study exists; returns the
    model it built, for a caller that needs to look at one."""
    described = spec.model.describe()
    try:
        model = build_model(spec, data).to(data.device).train()
        step = training_step(spec, model, data.device)
        batch = data.fixed_subset(2, seed=0)
        step.accumulate(batch, None, 2)
        validation = _first_validation_examples(data)
        if step.lightning:
            _check_validation_logs(model, validation, described)
        else:
            step.evaluate(validation)
            model.train()
        if not step.lightning and spec.model.name is not None:
            with torch.no_grad():
                outputs = model.eval()(batch[0])
            if outputs.shape != (2, data.num_classes):
                raise UserError(f"Model '{spec.model.name}' returns shape {tuple(outputs.shape)}, expected (batch, {data.num_classes}).")
        return model
    except UserError:
        raise
    except SystemExit as exited:
        raise exit_error(f"Model '{described}' (its forward or loss on two examples)", exited) from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
        detail = str(error.args[0] if error.args else error).split("\n")[0][:300]
        arguments = f" with arguments {sorted(spec.model.args)}" if spec.model.args else ""
        raise UserError(
            f"Model '{described}'{arguments} cannot train on {data.describe()}: {detail}. Fix `model` (or `loss`) in the study file."
        ) from None


def _first_validation_examples(data: TrialData, examples: int = 2) -> Batch:
    """The first few validation examples; no validation data at all is the user's to fix, here."""
    try:
        batch = next(iter(data.val_batches()), None)
    except TypeError:  # a DataModule whose val_dataloader() returned None
        batch = None
    if batch is None or batch_length(batch) == 0:
        raise UserError(
            f"The validation data of {data.describe()} is empty (or val_dataloader() returned None): trials are compared and "
            "pruned on validation loss, so there must be some. Give the data a validation split (val_size, or 'val' / "
            "val_dataloader() for your own data)."
        )
    return split_batch(batch, examples)[0]


def _check_validation_logs(model: nn.Module, batch: object, described: str) -> None:
    """A LightningModule's validation_step must log `val_loss`: run it once and listen."""
    logged: list[str] = []
    model.log = lambda name, *args, **kwargs: logged.append(name)  # type: ignore[method-assign]
    model.log_dict = lambda values, *args, **kwargs: logged.extend(values)  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            model.eval().validation_step(batch, 0)  # type: ignore[operator]
    finally:
        del model.log, model.log_dict
        model.train()
    if "val_loss" not in logged:
        raise UserError(
            f"The model `{described}`: its validation_step logged no 'val_loss' (logged: {', '.join(map(str, logged[:10])) or 'nothing'}); "
            "the search compares trials on it. Add self.log('val_loss', loss) to validation_step."
        )

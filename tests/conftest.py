"""Shared fixtures: tiny real data sets in every accepted form, study files, storages."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import pytest
import sqlalchemy
import torch
import yaml
from PIL import Image

from search.config.spec import StudySpec
from search.data.source import load_data
from search.store.storage import create_or_resume, open_storage
from search.study.pruners import build_pruner
from search.study.space import build_sampler

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("SEARCH_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["SEARCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("SEARCH_STORAGE", None)


def _class_images(n: int, classes: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose colour says the class: real pixels, learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    base = (labels[:, None, None, None] * (200 // classes) + 20).astype(np.int16)
    images = base + rng.integers(-15, 16, size=(n, 3, size, size))
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.int64)


@pytest.fixture(scope="session")
def cifar_python_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small archive in the official `cifar-10-python.tar.gz` format."""
    root = tmp_path_factory.mktemp("cifar_python")
    archive = root / "cifar-10-python.tar.gz"
    names = [f"class{i}".encode() for i in range(10)]

    def add(tar: tarfile.TarFile, name: str, payload: dict[bytes, Any]) -> None:
        blob = pickle.dumps(payload)
        info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))

    with tarfile.open(archive, "w:gz") as tar:
        for batch in range(1, 6):
            images, labels = _class_images(60, 10, 32, seed=batch)
            add(tar, f"data_batch_{batch}", {b"data": images.reshape(60, -1), b"labels": labels.tolist()})
        images, labels = _class_images(50, 10, 32, seed=9)
        add(tar, "test_batch", {b"data": images.reshape(50, -1), b"labels": labels.tolist()})
        add(tar, "batches.meta", {b"label_names": names})
    return archive


def write_image_folder(root: Path, classes: int = 3, size: int = 24, per_class: int = 40, suffix: str = ".png") -> Path:
    for split, count, seed in (("train", per_class, 1), ("test", per_class // 4, 2)):
        images, labels = _class_images(count * classes, classes, size, seed)
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / f"kind_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index:04d}{suffix}")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes of 24x24 PNGs in train/<class>/ and test/<class>/ (not CIFAR's shape)."""
    return write_image_folder(tmp_path_factory.mktemp("folder") / "flowers")


@pytest.fixture(scope="session")
def image_folder_tar(image_folder: Path) -> Path:
    archive = image_folder.parent / "flowers.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_folder, arcname="flowers")
    return archive


SMALL_STUDY: dict[str, Any] = {
    "dataset": {"name": "synthetic", "image_size": 12, "num_classes": 3, "train_examples": 600, "test_examples": 120, "val_size": 120},
    "model": {"name": "tiny_cnn", "args": {"width": 4}},
    "budget_examples": 512,
    "min_steps": 4,
    "search_space": {"batch_size": [16, 32, 64], "lr": {"low": 0.01, "high": 0.5, "log": True}, "momentum": {"low": 0.5, "high": 0.9}},
    "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 2},
    "pruner": {"name": "median", "report_every_examples": 128, "args": {"n_startup_trials": 1}},
    "n_trials": 3,
    "logging": {"logger": "none"},  # tests/test_logging.py covers the loggers; the others leave no logs behind
}


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        nested = key != "args" and isinstance(value, dict) and isinstance(base.get(key), dict)  # args are replaced whole
        merged[key] = merge(base[key], value) if nested else value
    return merged


@pytest.fixture
def study_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a small study file (a unique name per test) with changes merged in."""

    def write(changes: dict[str, Any] | None = None, name: str | None = None) -> Path:
        spec = merge(SMALL_STUDY, changes or {})
        spec.setdefault("name", name or f"t_{uuid.uuid4().hex[:10]}")
        path = tmp_path / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return write


def run_cli(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )


PASSWORD_ROLE = ("search_pw", "search-pw-secret")


@pytest.fixture(scope="session")
def password_role() -> None:
    """A PostgreSQL role that must log in with a password (the server trusts everyone else)."""
    engine = sqlalchemy.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        user, password = PASSWORD_ROLE
        if not connection.execute(sqlalchemy.text("SELECT 1 FROM pg_roles WHERE rolname = :u"), {"u": user}).scalar():
            connection.execute(sqlalchemy.text(f"CREATE ROLE {user} LOGIN"))
        connection.execute(sqlalchemy.text(f"ALTER ROLE {user} PASSWORD '{password}'"))
        hba = Path(connection.execute(sqlalchemy.text("SHOW hba_file")).scalar())
        rule = f"host all {user} 127.0.0.1/32 scram-sha-256\n"
        if rule not in hba.read_text():
            hba.write_text(rule + hba.read_text())  # first match wins: before the trust rules
            connection.execute(sqlalchemy.text("SELECT pg_reload_conf()"))
        if not connection.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :u"), {"u": user}).scalar():
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {user} OWNER {user}"))


@pytest.fixture
def postgres_url() -> str:
    """The local PostgreSQL server over a real connection; CI starts it (.ci/run)."""
    return POSTGRES_URL


@pytest.fixture
def drop_studies() -> Any:
    """Delete the named studies from PostgreSQL after the test, so reruns start clean."""
    names: list[tuple[str, str]] = []
    yield lambda url, name: names.append((url, name))
    for url, name in names:
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass


class Background:
    """A CLI running as a real subprocess, its output collected by a thread as it comes."""

    def __init__(self, module: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=cwd, env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 120, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            if time.monotonic() > deadline or self.process.poll() is not None and self.output.count(text) < count:
                self._reader.join(timeout=5)
                if self.output.count(text) >= count:
                    return
                raise AssertionError(f"{text!r} did not appear {count}x; output so far:\n{self.output}")
            time.sleep(0.05)

    def wait(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


def pg_ctl(action: str) -> None:
    """Stop, start or restart the local PostgreSQL cluster (our machines, as root)."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True, capture_output=True)
    if action != "stop":
        for _ in range(60):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError("PostgreSQL did not come back")


def create_study(url: str, spec: StudySpec) -> optuna.Study:
    """Create the study as `search.run` would, with its data's fingerprint (so a later run resumes it)."""
    return create_or_resume(
        open_storage(url), spec, build_sampler(spec), build_pruner(spec), data_fingerprint=load_data(spec, torch.device("cpu")).fingerprint
    )


def build_model(name: str, num_classes: int, in_channels: int = 3, **args: Any) -> torch.nn.Module:
    """A built-in model by name, through the route a study takes (its class path in the project's models/ folder)."""
    from search.config.classpath import instantiate
    from search.config.load import PROJECT_ROOT
    from search.config.spec import BUILTIN_MODELS, CodeSpec

    code = CodeSpec(class_path=BUILTIN_MODELS[name], init_args={"num_classes": num_classes, "in_channels": in_channels, **args})
    return instantiate(code, str(PROJECT_ROOT), role="model")

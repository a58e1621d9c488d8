"""Malformed input, table-driven: exit code 2, a message naming the problem, no traceback,
and the storage left exactly as it was."""
from __future__ import annotations

import hashlib
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from search.config.load import validate_spec
from search.run import main
from search.store.storage import open_storage
from tests.conftest import SMALL_STUDY, create_study, merge, write_image_folder

INF = float("inf")
# 1 KB that a YAML parser with aliases expands into 9^9 strings.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
) + "model: {name: tiny_cnn, args: {width: *i}}\n"

# (case id, study changes or raw YAML text/bytes, extra command-line arguments, words the message must hold)
CASES: list[tuple[str, Any, list[str], str]] = [
    ("yaml syntax", "dataset: [unclosed", [], "not valid YAML"),
    ("yaml not a mapping", "- just\n- a list\n", [], "must hold a mapping"),
    ("missing dataset", {"dataset": None}, [], "dataset"),
    ("missing model", {"model": None}, [], "model"),
    ("missing budget", {"budget_examples": None}, [], "budget_examples"),
    ("missing search space", {"search_space": None}, [], "search_space"),
    ("budget wrong type", {"budget_examples": "lots"}, [], "budget_examples"),
    ("budget negative", {"budget_examples": -5}, [], "budget_examples"),
    ("batch sizes wrong type", {"search_space": {"batch_size": "big"}}, [], "search_space.batch_size"),
    ("lr wrong type", {"search_space": {"lr": {"low": "a", "high": 1}}}, [], "search_space.lr.low"),
    ("momentum out of range", {"search_space": {"momentum": {"low": 0.5, "high": 1.5}}}, [], "momentum must lie in [0, 1)"),
    ("lr inverted", {"search_space": {"lr": {"low": 0.5, "high": 0.01}}}, [], "inverted"),
    ("lr empty", {"search_space": {"lr": {"low": 0.1, "high": 0.1}}}, [], "empty or inverted"),
    ("batch range inverted", {"search_space": {"batch_size": {"min": 64, "max": 16}}}, [], "inverted"),
    ("batch range not powers of two", {"search_space": {"batch_size": {"min": 12, "max": 64}}}, [], "power of two"),
    ("batch list empty", {"search_space": {"batch_size": []}}, [], "batch_size"),
    ("batch list duplicates", {"search_space": {"batch_size": [16, 16]}}, [], "duplicates"),
    ("unknown model", {"model": {"name": "vit_huge"}}, [], "unknown model 'vit_huge'"),
    ("bad model argument", {"model": {"name": "tiny_cnn", "args": {"depth": 3}}}, [], "depth"),
    ("resnet depth", {"model": {"name": "resnet", "args": {"depth": 7}}}, [], "6n+2"),
    ("airbench widths", {"model": {"name": "airbench", "args": {"widths": [8, 8]}}}, [], "three group widths"),
    ("unknown dataset", {"dataset": {"name": "imagenet"}}, [], "dataset.name"),
    ("unknown pruner", {"pruner": {"name": "asha"}}, [], "pruner.name"),
    ("bad pruner argument", {"pruner": {"args": {"patience": 3}}}, [], "patience"),
    ("unknown sampler", {"sampler": {"name": "hyperopt"}}, [], "sampler.name"),
    ("unknown key", {"learning_rate": 0.1}, [], "learning_rate"),
    ("budget below the largest batch", {"budget_examples": 100}, [], "fewer than min_steps"),
    ("budget flag too small", None, ["--budget-examples", "32"], "fewer than min_steps"),
    ("report interval uneven", {"pruner": {"report_every_examples": 100}}, [], "not a multiple"),
    ("no trials", {"n_trials": 0}, [], "n_trials"),
    ("never ends", {"n_trials": None, "timeout_seconds": None}, [], "never ends"),
    ("validation too large", {"dataset": {"val_size": 5000}}, [], "val_size"),
    ("image folder without path", {"dataset": {"name": "image_folder"}}, [], "needs `path`"),
    ("data path missing", {"dataset": {"name": "image_folder", "path": "/nonexistent/data"}}, [], "not found"),
    ("corrupt archive", {"dataset": {"name": "image_folder", "path": "{tmp}/corrupt.tar.gz"}}, [], "corrupt"),
    ("not an archive", {"dataset": {"name": "image_folder", "path": "{tmp}/notes.txt"}}, [], "neither a folder nor"),
    ("folder without images", {"dataset": {"name": "image_folder", "path": "{tmp}/empty"}}, [], "no images"),
    ("folder with one class", {"dataset": {"name": "image_folder", "path": "{tmp}/one_class"}}, [], "at least two"),
    ("unknown study", None, ["--study", "no_such_study"], "No study file"),
    ("malformed storage URL", None, ["--storage", "not a url"], "malformed"),
    ("unsupported storage", None, ["--storage", "mongodb://localhost/x"], "not supported"),
    ("unreachable database", None, ["--storage", "postgresql+psycopg2://postgres@127.0.0.1:1/test"], "Cannot open the study storage"),
    ("unknown database", None, ["--storage", "postgresql+psycopg2://postgres@127.0.0.1:5432/no_such_db"], "does not exist"),
    ("wrong password", None, ["--storage", "postgresql+psycopg2://search_pw:wrong-guess@127.0.0.1:5432/test"], "password authentication failed"),
    ("bad worker count", None, ["--workers", "0"], "--workers"),
    ("several workers on SQLite", None, ["--workers", "3"], "supports one worker"),
    # Hardening: values that passed validation and crashed later, hostile files, odd storage URLs.
    ("budget seconds infinite", {"budget_seconds": INF}, [], "budget_seconds"),
    ("seed negative", None, ["--seed", "-1"], "sampler.seed"),
    ("seed beyond 32 bits", None, ["--seed", str(2**40)], "sampler.seed"),
    ("lr infinite", {"search_space": {"lr": {"low": 0.01, "high": INF}}}, [], "search_space.lr.high"),
    ("val_size infinite", {"dataset": {"val_size": INF}}, [], "dataset.val_size"),
    ("split seed huge", {"dataset": {"split_seed": 2**70}}, [], "dataset.split_seed"),
    ("train examples huge", {"dataset": {"train_examples": 1e10}}, [], "dataset.train_examples"),
    ("image size huge", {"dataset": {"image_size": 200000}}, [], "dataset.image_size"),
    ("study name too long", {"name": "x" * 600}, [], "name"),
    ("heartbeat huge", {"heartbeat_seconds": 1e11}, [], "heartbeat_seconds"),
    ("timeout infinite without n_trials", {"n_trials": None, "timeout_seconds": INF}, [], "timeout_seconds"),
    ("val_size leaves a class out", {"dataset": {"val_size": 1}}, [], "every class needs validation and training images"),
    ("study file not UTF-8", b"name: \xff\xfe\x00bad", [], "not UTF-8"),
    ("study file deeply nested", "x: " + "[" * 100 + "]" * 100, [], "nests deeper"),
    ("study file alias bomb", ALIAS_BOMB, [], "YAML alias"),
    ("study file too large", "# " + "x" * (1 << 20), [], "larger than"),
    ("workers not ascii digits", None, ["--workers", "\u00b2"], "--workers"),
    ("port not a number", None, ["--storage", "postgresql+psycopg2://postgres@127.0.0.1:abc/test"], "malformed"),
    ("sqlite in memory", None, ["--storage", "sqlite://"], "in-memory"),
    ("sqlite memory file", None, ["--storage", "sqlite:///:memory:"], "in-memory"),
    ("sqlite URI filename", None, ["--storage", "sqlite:///file:x.db?mode=rwc&uri=true"], "URI filename"),
    ("foreign sqlite database", None, ["--storage", "sqlite:///{tmp}/foreign.sqlite3"], "database of something else"),
    ("not an sqlite database", None, ["--storage", "sqlite:///{tmp}/notes.txt"], "not an SQLite database"),
    ("password in the query string", None, ["--storage", "postgresql+psycopg2://postgres@127.0.0.1:1/x?password=wrong-guess"], "Cannot open"),
    ("@ inside the password", None, ["--storage", "postgresql+psycopg2://u:wrong-guess@Pass@127.0.0.1:1/x"], "must be percent-encoded, '@' as %40"),
    ("decompression bomb image", {"dataset": {"name": "image_folder", "path": "{tmp}/bomb"}}, [], "too large to decode safely"),
    ("cifar without batches.meta", {"dataset": {"name": "cifar10", "path": "{tmp}/cifar_no_meta"}}, [], "no batches.meta"),
    ("cifar wrong shape", {"dataset": {"name": "cifar10", "path": "{tmp}/cifar_shape"}}, [], "does not hold CIFAR-10 images"),
    ("cifar labels out of range", {"dataset": {"name": "cifar10", "path": "{tmp}/cifar_labels"}}, [], "labels outside"),
    ("cifar pickle that runs code", {"dataset": {"name": "cifar10", "path": "{tmp}/cifar_evil"}}, [], "never holds"),
]


@pytest.fixture
def existing_storage(tmp_path: Path) -> str:
    """A storage that already holds a study; bad input must leave it byte for byte as it was."""
    url = f"sqlite:///{tmp_path / 'existing.sqlite3'}"
    spec = validate_spec({"name": "existing", **SMALL_STUDY})
    study = create_study(url, spec)
    study.enqueue_trial({"batch_size": 16, "lr": 0.1, "momentum": 0.9})
    open_storage(url).engine.dispose()
    return url


class _Touch:
    """A pickle that would create a file when loaded: a crafted archive's payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.path,))


def _cifar_folder(root: Path, meta: bool = True, data: Any = None, labels: Any = None) -> None:
    root.mkdir()
    images = np.zeros((4, 3072), dtype=np.uint8) if data is None else data
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(pickle.dumps({b"data": images, b"labels": [0, 1, 2, 3] if labels is None else labels}))
    if meta:
        (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))


def _fixtures(tmp: Path) -> None:
    (tmp / "corrupt.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    (tmp / "notes.txt").write_text("not images")
    (tmp / "empty" / "train" / "cats").mkdir(parents=True)
    write_image_folder(tmp / "one_class", classes=1, per_class=8)
    with sqlite3.connect(tmp / "foreign.sqlite3") as connection:
        connection.execute("CREATE TABLE studies (id INTEGER)")
    write_image_folder(tmp / "bomb", classes=2, per_class=4)
    Image.new("1", (20000, 20000)).save(tmp / "bomb" / "train" / "kind_0" / "huge.png")
    _cifar_folder(tmp / "cifar_no_meta", meta=False)
    _cifar_folder(tmp / "cifar_shape", data=np.zeros((4, 100), dtype=np.uint8))
    _cifar_folder(tmp / "cifar_labels", labels=[0, 1, 2, 99])
    _cifar_folder(tmp / "cifar_evil", data=_Touch(tmp / "pwned"))


def _digest(url: str) -> str:
    return hashlib.sha256(Path(url.removeprefix("sqlite:///")).read_bytes()).hexdigest()


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case, changes, args, message", CASES, ids=[case[0] for case in CASES])
def test_bad_input(case: str, changes: Any, args: list[str], message: str, tmp_path: Path, existing_storage: str,
                   password_role: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _fixtures(tmp_path)
    study = tmp_path / "study.yaml"
    if isinstance(changes, bytes):
        study.write_bytes(changes)
    elif isinstance(changes, str):
        study.write_text(changes)
    else:
        spec = merge({"name": "existing", **SMALL_STUDY}, changes or {})
        spec = {key: value for key, value in spec.items() if value is not None or key in ("n_trials", "timeout_seconds")}
        study.write_text(yaml.safe_dump(spec).replace("{tmp}", str(tmp_path)))
    before = _digest(existing_storage)
    foreign = f"sqlite:///{tmp_path / 'foreign.sqlite3'}"
    foreign_before = _digest(foreign)
    argv = ["--study", str(study), "--storage", existing_storage] + [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    assert message in " ".join(captured.err.split()), captured.err
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert "wrong-guess" not in captured.out + captured.err  # passwords are never printed
    assert _digest(existing_storage) == before
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "pwned").exists()  # no pickle in the data ran code
    assert not list(tmp_path.glob("file:*"))  # no stray folder from an SQLite URI
    assert _digest(foreign) == foreign_before  # a database of something else is left untouched

"""The device's speed profile: measured on the real training path, stored per device, read back."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import optuna
import pytest
import torch

from search.config.load import load_spec
from search.data.batches import device_data
from search.data.images import load_dataset
from search.data.source import load_data
from search.measure import profile as profiles
from search.measure import speed
from search.measure.profile import SizeSpeed, SpeedProfile, fastest_micro_batch
from search.store import measurements
from search.store.measurements import MEASUREMENTS_STUDY
from search.store.storage import open_storage
from tests.conftest import REPO, run_cli


def profile_of(rates: dict[int, float]) -> SpeedProfile:
    sizes = tuple(SizeSpeed(b, r, 0.9 * r, 1.1 * r, 5, 3, 1000 * b) for b, r in sorted(rates.items()))
    return SpeedProfile("test device", "tiny_cnn", sizes, "hand-made", "test", "now", 0.0)


def test_fastest_micro_batch_is_the_fastest_power_of_two_dividing_the_batch() -> None:
    profile = profile_of({8: 500.0, 16: 900.0, 32: 1000.0, 64: 700.0})
    assert fastest_micro_batch(profile, 256) == 32
    assert fastest_micro_batch(profile, 16) == 16  # 32 is faster but larger than the batch
    assert fastest_micro_batch(profile, 24) == 8  # 16 and 32 do not divide 24
    assert fastest_micro_batch(profile, 4) == 4  # nothing measured divides it: the batch itself


def test_rate_interpolates_on_log_log_axes_and_holds_the_ends() -> None:
    profile = profile_of({16: 1000.0, 64: 4000.0, 256: 3000.0})
    assert profile.rate(64) == 4000.0  # a measured size: exactly its median
    assert profile.rate(32) == pytest.approx(2000)  # rate proportional to B between 16 and 64
    assert profile.rate(128) == pytest.approx((4000 * 3000) ** 0.5)
    assert profile.rate(8) == 1000.0 and profile.rate(1024) == 3000.0  # no extrapolation
    assert profile_of({32: 700.0}).rate(512) == 700.0


def test_profile_survives_the_round_trip_through_the_study(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.sqlite3'}", study_name="s")
    profile = profile_of({16: 1000.0, 32: 1500.0})
    measurements.store_profile(study, profile)
    measurements.store_profile(study, profile_of({16: 50.0}).__class__(**{**profile_of({16: 50.0}).__dict__, "device": "other"}))
    reloaded = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.sqlite3'}")
    assert measurements.stored_profile(reloaded, "test device") == profile
    assert measurements.stored_profile(reloaded, "no such device") is None
    assert [p.device for p in measurements.profiles_in(reloaded.user_attrs)] == ["other", "test device"]


@pytest.mark.slow
def test_measure_runs_the_real_step_for_every_size(study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "TIMED_SECONDS", 0.1)
    monkeypatch.setattr(speed, "WARMUP_SECONDS", 0.05)
    spec = load_spec(str(study_file()))
    images = load_dataset(spec.dataset)
    data = device_data(spec, images, torch.device("cpu"))
    seen: list[int] = []
    profile = speed.measure(spec, data, "cpu (test)", on_size=lambda s: seen.append(s.batch_size))
    assert [s.batch_size for s in profile.sizes] == seen == [8, 16, 32, 64]  # from min(8, smallest) to the largest
    for size in profile.sizes:
        assert 0 < size.slowest <= size.examples_per_second <= size.fastest
        assert size.repeats == profiles.REPEATS and size.steps_per_repeat >= 1
    memory = [s.peak_memory_bytes for s in profile.sizes]
    assert memory == sorted(memory) and memory[-1] > 2 * memory[0]  # activations grow with the batch
    assert "reached the study's largest batch size (64)" in profile.stopped
    table = profiles.format_table(profile)
    rows = table.splitlines()[2 : 2 + len(profile.sizes)]
    assert [row.split()[0] for row in rows] == ["8", "16", "32", "64"] and "<- fastest" in table


@pytest.mark.slow
def test_speed_cli_prints_the_table_and_stores_the_profile(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file()
    url = f"sqlite:///{tmp_path / 'speed.sqlite3'}"
    result = run_cli("search.speed", "--study", str(path), "--storage", url, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "examples/s" in result.stdout and "<- fastest" in result.stdout
    # Saved beside the studies for this model and data; no study is created (search.run copies it onto its study).
    assert optuna.get_all_study_names(url) == [MEASUREMENTS_STUDY]
    spec = load_spec(str(path))
    saved = measurements.saved(open_storage(url), measurements.subject(spec, load_data(spec, torch.device("cpu")).fingerprint), "speed_profile:")
    (raw,) = saved.values()
    profile = SpeedProfile.from_dict(raw)
    assert profile.device.startswith("cpu") and profile.device in result.stdout
    assert all(math.isfinite(s.examples_per_second) for s in profile.sizes)

"""The frontier strategy end to end (real trainings, SQLite and PostgreSQL), and every gated sentence on both sides."""
from __future__ import annotations

import html
import json
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import jsonschema
import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search.analysis.frontier import (
    claims,
    compare,
    exponent_fit,
    frontier_rows,
    holm,
    paired_difference,
    recommend,
)
from search.analysis.per_batch_size import per_batch_size
from search.analysis.pruning import pruning_savings
from search.analysis.scaling import lr_fits
from search.analysis.study_report import SCHEMA_VERSION
from search.analysis.summary import summary_lines
from search.config.load import load_spec
from search.errors import UserError
from search.record import EFFICIENCY, REFERENCE, SEARCH, TrialRecord
from search.stats import mean_ci95, t975
from search.study.per_batch_size import PerBatchSizeSampler, WithinBatchSizePruner
from tests.conftest import REPO, run_cli

# A short efficiency curve and sweep (the defaults, 5 shares x 5 rates, are checked by the queue test below).
FRACTIONS, FACTORS = (0.25, 0.5), (0.5, 1.0, 2.0)
FRONTIER = {
    "strategy": "frontier",
    "frontier": {"trials_per_batch_size": 3, "seeds": 2, "efficiency_fractions": list(FRACTIONS), "reference_lr_factors": list(FACTORS)},
    "search_space": {"batch_size": [16, 64]},
    "n_trials": None,
    "diagnostics": {"enabled": False},
    "checkpoints": {"keep": "none"},
}
SIZES = [16, 32, 64, 128, 256]
DISTRIBUTIONS = {
    "batch_size": CategoricalDistribution(SIZES),
    "lr": FloatDistribution(0.001, 1.0, log=True),
    "momentum": FloatDistribution(0.0, 0.99),
}


def _frontier_file(study_file: Callable[..., Path], **changes: Any) -> Path:
    spec = {**FRONTIER, **changes}
    path = study_file({k: v for k, v in spec.items() if v is not None})
    text = path.read_text()
    path.write_text("\n".join(line for line in text.splitlines() if not line.startswith("n_trials:")) + "\n")  # derived
    return path


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _check_plan(trials: list[optuna.trial.FrozenTrial], sizes: list[int], per_size: int, seeds: int) -> None:
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    sweep = [t for t in finished if t.user_attrs["frontier_role"] == "reference"]
    assert len(finished) == len(sizes) * (per_size + seeds) + len(FRACTIONS) * seeds + len(sweep)
    roles = Counter((t.user_attrs["frontier_role"], t.params["batch_size"]) for t in finished)
    assert roles == {**{("search", b): per_size for b in sizes}, **{("seed", b): seeds for b in sizes},
                     ("efficiency", sizes[0]): len(FRACTIONS) * seeds, ("reference", sizes[0]): len(sweep)}
    full = {t.user_attrs["frontier_index"]: t for t in finished if t.user_attrs["frontier_role"] == "seed" and t.params["batch_size"] == sizes[0]}
    budget = full[0].user_attrs["budget_examples"]
    best = next(t for t in trials if t.number == full[0].user_attrs["frontier_of"])
    # The sweep: at each share of the budget, multiples of the smallest batch size's best lr (clipped to the searched
    # range, a repeat left out), its momentum, one seed of its own that none of the paired runs uses.
    rates = {min(0.5, max(0.01, best.params["lr"] * f)) for f in FACTORS}
    for fraction in FRACTIONS:
        at = [t for t in sweep if t.user_attrs["frontier_fraction"] == fraction]
        assert sorted(t.params["lr"] for t in at) == pytest.approx(sorted(rates))
        assert all(t.user_attrs["budget_examples"] == budget * fraction and t.params["momentum"] == best.params["momentum"] for t in at)
    paired = {t.user_attrs["seed"] for t in finished if t.user_attrs["frontier_role"] in ("seed", "efficiency")}
    assert len({t.user_attrs["seed"] for t in sweep}) == 1 and not {t.user_attrs["seed"] for t in sweep} & paired
    # The efficiency curve: the sweep's pick at each share, trained with the seed re-runs' seeds.
    curve = [t for t in finished if t.user_attrs["frontier_role"] == "efficiency"]
    assert sorted((t.user_attrs["frontier_index"], t.user_attrs["budget_examples"]) for t in curve) == sorted(
        (k, budget * f) for k in range(seeds) for f in FRACTIONS)
    for t in curve:
        seed_run = full[t.user_attrs["frontier_index"]]
        pick = min((s for s in sweep if s.user_attrs["frontier_fraction"] == t.user_attrs["frontier_fraction"]), key=lambda s: s.value)
        assert t.state == TrialState.COMPLETE and t.params == {**seed_run.params, "lr": pick.params["lr"]} and t.user_attrs["seed"] == seed_run.user_attrs["seed"]
        assert t.user_attrs["examples_seen"] == t.user_attrs["budget_examples"] and "sharpness" not in t.user_attrs
    seeds_of = [t for t in finished if t.user_attrs["frontier_role"] == "seed"]
    # Paired: seed k trains from the same seed (weights and example order) at every batch size.
    by_index: dict[int, set[int]] = {}
    for t in seeds_of:
        by_index.setdefault(t.user_attrs["frontier_index"], set()).add(t.user_attrs["seed"])
        assert t.state == TrialState.COMPLETE, "a seed re-run is never pruned"
        source = next(s for s in trials if s.number == t.user_attrs["frontier_of"])
        assert source.user_attrs["frontier_role"] == "search" and source.params == t.params
        best = min((s for s in finished if s.user_attrs["frontier_role"] == "search" and s.params["batch_size"] == t.params["batch_size"]
                    and s.state == TrialState.COMPLETE), key=lambda s: s.value)
        assert source.number == best.number
    assert all(len(values) == 1 for values in by_index.values()) and len(by_index) == seeds


@pytest.mark.slow
def test_a_frontier_study_searches_each_batch_size_then_reruns_its_best_with_paired_seeds(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = _frontier_file(study_file)
    assert load_spec(str(path)).n_trials == 2 * (3 + 2) + 2 * (3 + 2)
    result = run_cli("search.run", "--study", str(path), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    url = f"sqlite:///{tmp_path}/results/{path.stem}.sqlite3"
    trials = _trials(url, path.stem)
    _check_plan(trials, [16, 64], 3, 2)
    # Interleaved: search rounds visit every batch size before the next round, seeds come last.
    order = [(t.user_attrs["frontier_role"], t.params["batch_size"]) for t in sorted(trials, key=lambda t: t.number)]
    assert order[:6] == [("search", 16), ("search", 64)] * 3 and {r for r, _ in order[6:10]} == {"seed"}
    assert [r for r, _ in order[10:]] == ["reference"] * (len(order) - 14) + ["efficiency"] * 4  # the sweep, then its picks
    # The view and the analysis agree, and both agree with a hand computation.
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        view = {row.batch_size: row for row in connection.execute(sqlalchemy.text("SELECT * FROM search_frontier WHERE study_name = :n"), {"n": path.stem})}
    rows = {r.batch_size: r for r in frontier_rows(trials)}
    assert set(view) == set(rows) == {16, 64}
    for size, row in rows.items():
        losses = [t.value for t in trials if t.user_attrs.get("frontier_role") == "seed" and t.params["batch_size"] == size]
        half = 12.706 * statistics.stdev(losses) / math.sqrt(2)
        assert row.val_loss_mean == pytest.approx(statistics.fmean(losses)) and row.val_loss_ci95 == pytest.approx(half)
        assert view[size].val_loss_mean == pytest.approx(row.val_loss_mean) and view[size].val_loss_ci95 == pytest.approx(row.val_loss_ci95)
        assert view[size].n_seeds == 2 and view[size].effective_lr == pytest.approx(row.effective_lr)
    best = run_cli("search.best", "--study", str(path), "--frontier", "--format", "csv", cwd=tmp_path)
    assert best.returncode == 0 and best.stdout.splitlines()[0].startswith("batch_size,n_seeds,val_loss_mean,val_loss_ci95"), best.stderr
    table = run_cli("search.best", "--study", str(path), "--frontier", cwd=tmp_path)
    assert "Use batch size" in table.stdout, table.stdout
    # The probe trains the frontier's tuned smallest batch size for the whole budget; the report measures B_crit beside it.
    probed = run_cli("search.probe", "--study", str(path), "--small-batch", "16", "--big-batch", "64", "--measurements", "4", cwd=tmp_path)
    assert probed.returncode == 0, probed.stderr
    assert "tuned: the frontier's best at batch size 16" in probed.stdout and "after 512 examples (32 steps)" in probed.stdout
    reported = run_cli("search.report", "--study", str(path), "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    # summary.json is the StudyReport serialized: it validates against the committed schema, and its fields are the analysis's.
    jsonschema.validate(summary, json.loads((REPO / "docs" / "summary.schema.json").read_text()))
    assert summary["version"] == SCHEMA_VERSION and summary["strategy"] == "frontier" and summary["study"] == path.stem
    assert [r["batch_size"] for r in summary["frontier"]] == [16, 64]
    assert summary["frontier"][0]["val_loss_mean"] == pytest.approx(rows[16].val_loss_mean)
    assert summary["recommendation"]["batch_size"] in (16, 64) and summary["summary"][0] == summary["recommendation"]["reason"]
    critical = summary["critical_batch"]
    assert {"b_simple", "b_simple_loss", "b_crit_empirical", "b_crit_ci95"} <= set(critical)
    assert critical["smallest_batch"] == 16 and [c["examples"] for c in critical["curve"]] == [128, 256, 512]
    assert [w["fraction"] for w in critical["sweeps"]] == list(FRACTIONS) and all(w["chosen"] in w["rates"] for w in critical["sweeps"])
    assert len(critical["points"]) == 2 and len(critical["b_simple_trajectory"]) >= 1
    # Two seeds at one larger batch size give at most two points: measured or not, the reason is given when missing.
    assert critical["b_crit_empirical"] is not None or any(r.startswith("b_crit_empirical") for r in critical["reasons"])
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Why: the critical batch size" in page
    assert page.count(html.escape(summary["recommendation"]["reason"])) == 1  # in the frontier section, not again in the summary


@pytest.mark.slow
def test_a_stopped_frontier_study_resumes_to_exactly_the_derived_count(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = _frontier_file(study_file)
    first = run_cli("search.run", "--study", str(path), "--quiet", "--n-trials", "5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    url = f"sqlite:///{tmp_path}/results/{path.stem}.sqlite3"
    early = _trials(url, path.stem)
    assert len(early) == 5 and Counter(t.params["batch_size"] for t in early) == {16: 3, 64: 2}  # covered evenly
    again = run_cli("search.run", "--study", str(path), "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    _check_plan(_trials(url, path.stem), [16, 64], 3, 2)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_on_postgres_reach_exactly_the_derived_count(
    study_file: Callable[..., Path], tmp_path: Path, postgres_url: str, drop_studies: Any
) -> None:
    path = _frontier_file(study_file)
    drop_studies(postgres_url, path.stem)
    result = run_cli("search.run", "--study", str(path), "--quiet", "--workers", "2", "--storage", postgres_url, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    trials = _trials(postgres_url, path.stem)
    _check_plan(trials, [16, 64], 3, 2)
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as connection:
        view = {row.batch_size: row for row in connection.execute(sqlalchemy.text("SELECT * FROM search_frontier WHERE study_name = :n"), {"n": path.stem})}
    for row in frontier_rows(trials):
        assert view[row.batch_size].val_loss_mean == pytest.approx(row.val_loss_mean)
        assert view[row.batch_size].val_loss_ci95 == pytest.approx(row.val_loss_ci95)


def _trial(number: int, batch_size: int, value: float, role: str | None = None, index: int = 0, lr: float = 0.1,
           momentum: float = 0.9, intermediate: dict[int, float] | None = None, state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    attrs: dict[str, Any] = {"effective_lr": lr, "steps": 4096 // batch_size, "final_val_loss": value}
    if role:
        attrs.update(frontier_role=role, frontier_index=index)
    trial = create_trial(
        params={"batch_size": batch_size, "lr": lr, "momentum": momentum}, distributions=DISTRIBUTIONS,
        value=value if state == TrialState.COMPLETE else None, user_attrs=attrs, intermediate_values=intermediate, state=state,
    )
    trial.number = number
    return trial


def _seeds(losses: dict[int, list[float]], lrs: dict[int, float] | None = None) -> list[optuna.trial.FrozenTrial]:
    trials = []
    for size, values in losses.items():
        for k, value in enumerate(values):
            trials.append(_trial(len(trials), size, value, "seed", k, lr=(lrs or {}).get(size, 0.1)))
    return trials


def test_the_interval_arithmetic_matches_a_hand_computation() -> None:
    interval = mean_ci95([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.half_width == pytest.approx(4.303 / math.sqrt(3))
    assert mean_ci95([5.0]).half_width is None
    assert t975(40) == pytest.approx(2.021, abs=1e-3) and t975(120) == pytest.approx(1.980, abs=1e-3)
    trials = _seeds({16: [1.00, 1.10, 1.20], 32: [1.05, 1.16, 1.24]})
    difference = paired_difference(trials, 32, 16)
    assert difference is not None
    # Differences 0.05, 0.06, 0.04: mean 0.05, sd 0.01.
    assert difference.mean == pytest.approx(0.05) and difference.half_width == pytest.approx(4.303 * 0.01 / math.sqrt(3))


def test_better_is_stated_only_when_the_paired_interval_excludes_zero() -> None:
    consistent = _seeds({16: [1.00, 1.10, 1.20], 32: [1.05, 1.16, 1.24]})
    lines = claims(consistent, frontier_rows(consistent), None)
    assert any(line.startswith("Batch size 16 is better than 32") for line in lines), lines
    noisy = _seeds({16: [1.00, 1.10, 1.20], 32: [1.15, 1.02, 1.16]})
    lines = claims(noisy, frontier_rows(noisy), None)
    # A failed difference test is not equivalence: the batch size is neither worse nor non-inferior.
    assert not any("better than" in line or line.startswith("Non-inferior") for line in lines), lines
    assert any(line.startswith("Neither shown worse nor shown non-inferior") for line in lines), lines


def test_non_inferiority_on_both_sides_of_the_margin() -> None:
    # Differences 32 - 16 of 0.005, 0.002, 0.003: upper bound 0.00333 + 2.920 x 0.00153 / sqrt(3) = 0.0059 < 1% of 1.10.
    inside = _seeds({16: [1.00, 1.10, 1.20], 32: [1.005, 1.102, 1.203]})
    reference, margin_loss, comparisons = compare(inside, frontier_rows(inside))
    assert reference == 16 and margin_loss == pytest.approx(0.011)
    (c32,) = [c for c in comparisons if c.batch_size == 32]
    assert c32.upper_bound == pytest.approx(0.003333 + 2.919986 * 0.0015275 / math.sqrt(3), rel=1e-3) and c32.verdict == "non-inferior"
    # 0.02, 0.015, 0.012: the bound (0.0285) exceeds the margin, so 32 is not shown non-inferior, whatever a two-sided test says.
    outside = _seeds({16: [1.00, 1.10, 1.20], 32: [1.02, 1.115, 1.212]})
    (c32,) = [c for c in compare(outside, frontier_rows(outside))[2] if c.batch_size == 32]
    assert c32.verdict == "not shown non-inferior"
    # A wider margin admits it.
    assert [c.verdict for c in compare(outside, frontier_rows(outside), margin=0.05)[2] if c.batch_size == 32] == ["non-inferior"]


def test_holm_adjusts_for_the_number_of_comparisons() -> None:
    assert holm({1: 0.01, 2: 0.04, 3: 0.03}) == pytest.approx({1: 0.03, 3: 0.06, 2: 0.06})
    assert holm({1: 0.5}) == {1: 0.5} and holm({}) == {}


def test_the_reference_is_chosen_on_the_search_not_on_the_seeds_it_is_tested_on() -> None:
    trials = _seeds({16: [1.00, 1.10, 1.20], 32: [1.01, 1.11, 1.21]})
    trials += [_trial(len(trials), 32, 0.90, "search", 0), _trial(len(trials) + 1, 16, 0.95, "search", 0)]
    reference, _, _ = compare(trials, frontier_rows(trials))
    assert reference == 32  # best by the search, though 16's seed mean is lower


def test_the_exponent_interval_names_only_the_rules_inside_it() -> None:
    sizes = [16, 32, 64, 128, 256]
    tight = _seeds({b: [1.0, 1.1] for b in sizes}, lrs={b: 0.01 * b**0.5 * (1.01 if i % 2 else 0.99) for i, b in enumerate(sizes)})
    fit = exponent_fit(frontier_rows(tight))
    assert fit is not None and fit.rules_inside == ("square-root scaling (0.5)",), fit
    loose = _seeds({b: [1.0, 1.1] for b in sizes}, lrs={16: 0.01, 32: 0.05, 64: 0.012, 128: 0.08, 256: 0.03})
    fit = exponent_fit(frontier_rows(loose))
    assert fit is not None and len(fit.rules_inside) >= 2, fit
    two = exponent_fit(frontier_rows(_seeds({16: [1.0, 1.1], 32: [1.0, 1.1]})))
    assert two is not None and two.low is None and two.rules_inside == ()


def test_the_recommendation_is_the_largest_batch_size_non_inferior_to_the_best() -> None:
    trials = _seeds({16: [1.00, 1.10, 1.20], 32: [1.005, 1.102, 1.203], 64: [1.30, 1.42, 1.51], 128: [1.0, 1.1, 1.2]})
    advice = recommend(trials, frontier_rows(trials))
    assert advice is not None and advice.batch_size == 32, advice  # 128 would tie, but 64 breaks the contiguous run
    assert advice.reference_batch_size == 16 and advice.margin == 0.01 and "non-inferior" in advice.reason
    assert "2x larger batch costs +0.3" in advice.reason, advice.reason
    assert {c.batch_size: c.verdict for c in advice.comparisons}[128] == "non-inferior"
    noisy = _seeds({16: [1.00, 1.10, 1.20], 32: [1.01, 1.08, 1.22]})  # a failed difference test, but a wide bound
    advice = recommend(noisy, frontier_rows(noisy))
    assert advice is not None and advice.batch_size == 16 and "no larger batch size is shown non-inferior" in advice.reason
    clear = _seeds({16: [1.00, 1.10, 1.20], 32: [1.05, 1.16, 1.24]})
    advice = recommend(clear, frontier_rows(clear))
    assert advice is not None and advice.batch_size == 16 and "No larger batch size" not in advice.reason


def test_a_joint_study_ranks_batch_sizes_only_with_three_trials_near_each_best() -> None:
    thin = [_trial(0, 16, 1.0), _trial(1, 16, 1.01), _trial(2, 16, 1.02), _trial(3, 32, 1.1)]
    results = per_batch_size(thin)
    lines = summary_lines(thin, results, lr_fits(results), pruning_savings(thin, 4096), [])
    assert any("upper bounds" in line for line in lines) and any(line.startswith("Batch sizes are not ranked: 32 has") for line in lines), lines
    assert not any("within 1%" in line for line in lines)
    rich = thin + [_trial(4, 32, 1.11), _trial(5, 32, 1.12)]
    results = per_batch_size(rich)
    lines = summary_lines(rich, results, lr_fits(results), pruning_savings(rich, 4096), [])
    assert any("the lowest is at batch size 16" in line for line in lines), lines


def test_pruning_compares_a_trial_only_with_its_own_batch_size() -> None:
    study = optuna.create_study()
    for number, (size, loss) in enumerate([(16, 0.1), (16, 0.12), (16, 0.11), (64, 1.0), (64, 1.2), (64, 1.1)]):
        study.add_trial(_trial(number, size, loss, "search", intermediate={128: loss}))
    base = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study.enqueue_trial({"batch_size": 64, "lr": 0.1, "momentum": 0.9})
    trial = study.ask(DISTRIBUTIONS)
    trial.report(0.9, 128)
    frozen_64 = study._storage.get_trial(trial._trial_id)
    assert frozen_64.params["batch_size"] == 64
    assert base.prune(study, frozen_64), "against every batch size the trial is worse than the median"
    assert not WithinBatchSizePruner(base).prune(study, frozen_64), "against batch size 64 alone it is the best"
    trial.set_user_attr("frontier_role", "seed")
    assert not WithinBatchSizePruner(optuna.pruners.MedianPruner(n_startup_trials=0)).prune(study, study._storage.get_trial(trial._trial_id))


class _Recording(optuna.samplers.RandomSampler):
    """A random sampler that records which trials each of its calls could see."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.seen: list[set[int]] = []

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        self.seen.append({t.params["batch_size"] for t in study.get_trials(deepcopy=False) if "batch_size" in t.params})
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_the_frontier_sampler_models_each_batch_size_on_its_own_trials(tmp_path: Path) -> None:
    base = _Recording()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.sqlite3'}", sampler=PerBatchSizeSampler(base))
    for number, size in enumerate([16, 64, 16, 64]):
        study.add_trial(_trial(number, size, 1.0, "search"))
    study.enqueue_trial({"batch_size": 64})
    trial = study.ask()
    trial.suggest_categorical("batch_size", SIZES)
    trial.suggest_float("lr", 0.001, 1.0, log=True)
    assert base.seen and all(seen == {64} for seen in base.seen), base.seen


def _converging_study(tmp_path: Path) -> tuple[optuna.Study, Any, dict[int, int]]:
    """A frontier study with `until_converged` driven by `queue_next` on real SQLite storage, with a loss
    known in advance instead of training (the queue is what is tested): at batch size 16 every added search
    trial is better than all before it (under-tuned until the cap); at 64 the search is flat within the seeds' noise."""
    from search.config.load import validate_spec
    from search.study.frontier import queue_next
    from search.study.space import sample
    from tests.conftest import SMALL_STUDY, merge

    base = {k: v for k, v in SMALL_STUDY.items() if k != "n_trials"}  # derived from the plan
    spec = validate_spec(merge({"name": "t", **base}, {
        **{k: v for k, v in FRONTIER.items() if v is not None},
        "frontier": {"trials_per_batch_size": 4, "seeds": 3, "until_converged": True, "max_trials_per_batch_size": 7},
    }))
    # Every added trial a new best, re-run; the curve once: 5 shares, each a sweep of 5 rates and 3 seeds.
    assert spec.n_trials == 2 * (7 + (1 + 3) * 3) + 5 * (5 + 3)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'q.sqlite3'}", study_name="t", sampler=optuna.samplers.RandomSampler(seed=1))
    study.set_user_attr("comparability", {"test": True})  # what marks a search study for the SQL views
    counts: Counter[str] = Counter()
    while (state := queue_next(study, spec)) == "queued":
        trial = study.ask()
        hp = sample(trial, spec)
        record = TrialRecord.of(trial)
        if record.frontier_role == SEARCH:
            loss = 2.0 - 0.2 * record.frontier_index if hp.batch_size == 16 else 1.0 + 0.0001 * (record.frontier_index % 2)  # type: ignore[operator]
        else:  # a re-run: its search trial's loss, with seed noise
            loss = study.trials[record.frontier_of].value + 0.01 * (record.frontier_index or 0)  # type: ignore[index, operator]
        study.tell(trial, loss)
        counts[f"{record.frontier_role} {hp.batch_size}"] += 1
    assert state == "done"
    return study, spec, dict(counts)  # type: ignore[return-value]


def test_until_converged_adds_search_trials_only_where_the_tuning_curve_has_not_settled(tmp_path: Path) -> None:
    from search.analysis.tuning import tuning_curves
    from search.store.trials import without_superseded
    from search.store.views import create_views

    study, spec, counts = _converging_study(tmp_path)
    # 64: converged after its 4 fixed trials (improvement 0.0001 < seed half-width 0.025), one set of seeds.
    assert counts["search 64"] == 4 and counts["seed 64"] == 3
    # 16: every added trial is a new best, so each is re-run on the 3 seeds, until the cap of 7 trials.
    assert counts["search 16"] == 7 and counts["seed 16"] == 3 * (1 + 3)
    # The efficiency curve waited for 16's search to end, and ran once, on its final best.
    efficiency = [t for t in study.trials if TrialRecord.of(t).frontier_role == EFFICIENCY]
    trials = study.get_trials(deepcopy=False)
    best16 = min((t for t in trials if TrialRecord.of(t).frontier_role == SEARCH and t.params["batch_size"] == 16), key=lambda t: t.value)
    assert len(efficiency) == 5 * 3 and {TrialRecord.of(t).frontier_of for t in efficiency} == {best16.number}
    assert TrialRecord.of(best16).frontier_index == 6
    # Its sweeps too, on the final best; here the sweep's lowest rate has the lowest loss (0.01 per place), so each
    # share's efficiency runs train at a quarter of the best's lr (clipped to the range; a clipped repeat is not run).
    sweep = [t for t in trials if TrialRecord.of(t).frontier_role == REFERENCE]
    rates = sorted({min(0.5, max(0.01, best16.params["lr"] * f)) for f in (0.25, 0.5, 1, 2, 4)})
    assert {TrialRecord.of(t).frontier_of for t in sweep} == {best16.number} and len(sweep) == 5 * len(rates)
    assert all(t.params["lr"] == pytest.approx(rates[0]) and t.params["momentum"] == best16.params["momentum"] for t in efficiency)
    assert {TrialRecord.of(t).frontier_fraction for t in efficiency} == {1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2}
    assert len(study.trials) <= spec.n_trials  # the derived count bounds it
    rows = {r.batch_size: r for r in frontier_rows(without_superseded(trials))}
    assert rows[16].source_trial == best16.number and rows[16].n_seeds == 3
    assert rows[16].val_loss_mean == pytest.approx(best16.value + 0.01)  # the superseded re-runs (higher losses) left out
    # The SQL view applies the same rule.
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'q.sqlite3'}")
    create_views(engine)
    with engine.connect() as connection:
        view = {b: (n, mean) for b, n, mean in connection.execute(sqlalchemy.text("SELECT batch_size, n_seeds, val_loss_mean FROM search_frontier"))}
    assert view == {b: (3, pytest.approx(rows[b].val_loss_mean)) for b in (16, 64)}
    # The report's own tuning test agrees with the queue's: 16 stopped by the cap still under-tuned, 64 converged.
    curves = {c.batch_size: c for c in tuning_curves(trials, {b: r.val_loss_ci95 for b, r in rows.items()})}
    assert curves[16].converged is False and curves[16].draws == 7 and curves[64].converged is True


def test_the_cap_of_until_converged_is_checked() -> None:
    from search.config.load import validate_spec
    from tests.conftest import SMALL_STUDY, merge

    with pytest.raises(UserError, match="max_trials_per_batch_size"):
        validate_spec(merge({"name": "t", **SMALL_STUDY}, {**FRONTIER, "n_trials": 3, "frontier": {"trials_per_batch_size": 6, "until_converged": True, "max_trials_per_batch_size": 4}}))


def test_shared_tuning_aligns_other_batch_sizes_trials_to_the_one_being_tuned() -> None:
    from search.study.per_batch_size import aligned, lr_slope

    # Each batch size's best lr grows as B^0.5 (0.01 at 16); 256 also has a worse trial.
    trials = [_trial(i, b, 1.0 + 0.1 * i, lr=0.01 * (b / 16) ** 0.5) for i, b in enumerate([16, 64, 256])]
    trials.append(_trial(3, 256, 5.0, lr=0.9))
    assert lr_slope(trials) == pytest.approx(0.5)
    assert lr_slope(trials[:2]) == 0.0  # two batch sizes: no fitted slope, the study's parameterization stands
    view = {t.number: t for t in aligned(trials, 64)}
    assert view[0].params["lr"] == pytest.approx(0.02) and view[0].params["batch_size"] == 64  # 16's best, moved to 64
    assert view[2].params["lr"] == pytest.approx(0.02)
    assert view[1].params == trials[1].params  # 64's own trial as it was
    assert view[3].params["lr"] == pytest.approx(0.45)
    # Losses become ranks within each batch size: each batch size's best is 0, whatever its loss.
    assert [view[n].value for n in range(4)] == [0.0, 0.0, 0.0, 1.0]
    assert trials[0].params["batch_size"] == 16 and trials[0].value == 1.0  # the stored trials are untouched
    assert aligned(trials[:2], 64)[0].params["lr"] == trials[0].params["lr"]  # slope 0: lr kept


def test_shared_tuning_proposes_near_where_the_other_batch_sizes_point() -> None:
    """Batch size 256 has no trials yet; 16, 32 and 64 have 12 each, best at lr = 0.004 x B / 16. Shared, the
    sampler's proposals for 256 gather near the extrapolated 0.064; tuned on 256's own trials, they are random."""
    def proposals(shared: bool) -> list[float]:
        rng = np.random.default_rng(0)
        study = optuna.create_study(sampler=PerBatchSizeSampler(optuna.samplers.TPESampler(seed=1, n_startup_trials=2, multivariate=True), shared))
        for size in (16, 32, 64):
            for _ in range(12):
                lr = float(10 ** rng.uniform(-3, 0))
                study.add_trial(_trial(len(study.trials), size, 1.0 + math.log10(lr / (0.004 * size / 16)) ** 2, lr=lr))
        drawn = []
        for _ in range(12):
            study.enqueue_trial({"batch_size": 256})
            trial = study.ask()
            trial.suggest_categorical("batch_size", SIZES)
            drawn.append(trial.suggest_float("lr", 0.001, 1.0, log=True))
            trial.suggest_float("momentum", 0.0, 0.99)
            study.tell(trial, state=TrialState.FAIL)  # no evidence of its own: only the others' counts
        return drawn

    def distance(lrs: list[float]) -> float:
        return statistics.median(abs(math.log10(lr / 0.064)) for lr in lrs)

    assert distance(proposals(True)) < 0.5 < distance(proposals(False))  # measured: 0.33 and 1.03 decades


def test_how_a_frontier_is_searched_and_judged_can_change_on_resume(tmp_path: Path) -> None:
    """margin, share_tuning, until_converged and its cap leave the trials comparable: a study resumes with them changed,
    also one whose stored key holds the margin (as keys written before these fields left it did); a seed count does not."""
    from search.config.load import validate_spec
    from search.record import StudyRecord
    from search.store.storage import create_or_resume, open_storage
    from tests.conftest import SMALL_STUDY, merge

    def spec(**frontier: Any) -> Any:
        return validate_spec(merge({"name": "t", **SMALL_STUDY}, {**{k: v for k, v in FRONTIER.items() if v is not None},
                                                                   "frontier": {**FRONTIER["frontier"], **frontier}}))

    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    study = create_or_resume(open_storage(url), spec(), optuna.samplers.RandomSampler(), optuna.pruners.NopPruner(), data_fingerprint="x")
    key = StudyRecord.of(study).comparability
    study.set_user_attr("comparability", {**key, "frontier": {**key["frontier"], "margin": 0.01}})  # a key from before
    changed = spec(margin=0.05, share_tuning=True, until_converged=True, max_trials_per_batch_size=9)
    create_or_resume(open_storage(url), changed, optuna.samplers.RandomSampler(), optuna.pruners.NopPruner(), data_fingerprint="x")
    with pytest.raises(UserError, match="frontier"):
        create_or_resume(open_storage(url), spec(seeds=4), optuna.samplers.RandomSampler(), optuna.pruners.NopPruner(), data_fingerprint="x")


@pytest.mark.parametrize("name", ["median", "successive_halving", "hyperband"])
def test_a_frontier_pruner_stops_trials_only_from_its_first_trusted_rung(name: str) -> None:
    """Budget 512, reports every 64: a frontier study's pruner may stop a trial first at 320 examples (5/8, the first
    report at or after FRONTIER_FIRST_RUNG); a joint study's at the first report; pruner.args still decide when set."""
    from search.config.load import validate_spec
    from search.study.pruners import build_pruner
    from tests.conftest import SMALL_STUDY, merge

    def first_prune(strategy: dict[str, Any], args: dict[str, Any]) -> int | None:
        spec = validate_spec(merge({"name": "t", **SMALL_STUDY}, {**strategy, "pruner": {"name": name, "report_every_examples": 64, "args": args}}))
        study = optuna.create_study(pruner=build_pruner(spec))
        for loss in (1.3, 1.2, 1.1, 1.0, 9.0):  # four improving trials run through the pruner (the rung pruners keep their own
            study.enqueue_trial({"batch_size": 16, "lr": 0.1, "momentum": 0.9})  # records), then a bad one
            trial = study.ask(DISTRIBUTIONS)
            if strategy:
                trial.set_user_attr("frontier_role", "search")
            for step in range(64, 512, 64):
                trial.report(loss, step)
                if trial.should_prune():
                    return step if loss == 9.0 else -step
            study.tell(trial, loss)
        return None

    frontier = {k: v for k, v in FRONTIER.items() if v is not None and k != "search_space"}
    startup = {"n_startup_trials": 1} if name == "median" else {}
    assert first_prune(frontier, startup) == 320
    if name != "hyperband":  # with rungs from 64 or 128 Hyperband splits five trials into brackets, too few to prune in
        assert first_prune({}, startup) == 64
        assert first_prune(frontier, {**startup, ("n_warmup_examples" if name == "median" else "min_resource_examples"): 128}) == 128


def test_a_study_run_until_converged_gives_its_eta_for_the_planned_trials_and_its_most() -> None:
    from search.config.load import validate_spec
    from search.render.console import study_progress
    from tests.conftest import SMALL_STUDY, merge

    base = {k: v for k, v in SMALL_STUDY.items() if k != "n_trials"}
    spec = validate_spec(merge({"name": "t", **base}, {**{k: v for k, v in FRONTIER.items() if v is not None},
                                                       "frontier": {**FRONTIER["frontier"], "until_converged": True, "max_trials_per_batch_size": 5}}))
    planned = spec.frontier_trials(added=False)
    assert planned == 2 * (3 + 2) + 2 * (3 + 2) and spec.n_trials == 2 * (5 + 3 * 2) + 2 * (3 + 2)  # the cap: 2 added, each a new best
    study = optuna.create_study()
    for _ in range(4):
        study.add_trial(create_trial(value=1.0, params={}, distributions={}, user_attrs={"wall_seconds": 60.0}))
    line = study_progress(study, spec.n_trials, planned)
    assert line == f"study    4 finished ({planned} planned, at most {spec.n_trials} until converged), 0 running; ETA 16m00s for the planned trials, at most 28m00s at 1m00s a trial"
    assert study_progress(study, 20).endswith("; ETA 16m00s at 1m00s a trial")  # a plan known in advance: one ETA

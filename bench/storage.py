"""Storage scale: trials/s and `report`/`should_prune` latency with 1 to 32 worker processes.

    python -m bench.storage            # about 9 minutes on 2 busy CPU cores; writes bench/results/storage.md
    python -m bench.storage --long     # 30 s windows, 3 interleaved repeats (about an hour)

Every worker is a real process (spawned once, reused across configurations) running the same
per-trial loop of `search.study.worker` (its `take_turn`): the PostgreSQL trial gate, the stale-trial check, the
trial count, then one trial with the cifar_bs search space, its TPE sampler and a median pruner.
The objective trains nothing: it reports 10 intermediate values (`should_prune` after each but
the last) and stores the user attributes `search.objective` stores. Real workers spend almost
all their time training between two reports, so the PostgreSQL and gRPC configurations also run
with `--sleep` seconds before each report (standing in for training), and PostgreSQL at 32
workers with `--slow-sleep`, closer to a real trial's pace. PostgreSQL and SQLite go through `search.store.storage.open_storage`, as users run them;
the journal file is Optuna's JournalStorage; gRPC is Optuna's proxy (one server process, its
own pool) in front of the same PostgreSQL. Each configuration gets a fresh study, seeded with
the same 20 finished trials so that TPE and the pruner work from the first trial. The
PostgreSQL database `bench_storage` is created for the run and dropped after it.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import make_url

from search.config.load import load_spec
from search.config.spec import StudySpec
from search.record import TrialRecord
from search.store import storage as service_storage
from search.store.optuna_internals import frozen, storage_of
from search.store.reconnect import ReconnectingRDBStorage
from search.store.storage import TrialGate, open_storage
from search.study.pruners import build_pruner
from search.study.space import build_sampler, sample, sampler_seed
from search.study.worker import take_turn

optuna.logging.set_verbosity(optuna.logging.ERROR)

RESULTS = Path(__file__).parent / "results" / "storage.md"
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/bench_storage"
WORKER_COUNTS = (1, 4, 16, 32)
REPORTS = 10
SEED_TRIALS = 20
GRPC_PORT = 13071
# One proxy process serves every worker; its thread pool and its connection pool match.
GRPC_THREADS = 10
# A cifar_bs trial on our 2-core CPU: 225,000 examples at about 900 training examples/s.
CIFAR_EXAMPLES_PER_SECOND = 900.0


@dataclass(frozen=True)
class Config:
    kind: str  # postgresql | sqlite | journal | grpc
    workers: int
    sleep: float  # seconds of "training" before each report


@dataclass(frozen=True)
class WorkerTask:
    config: Config
    location: str  # URL, journal file path, or host:port of the gRPC proxy
    gate_url: str | None  # the PostgreSQL URL whose advisory lock serializes trial starts
    study_name: str
    worker_index: int
    signals: str  # a folder: each worker says it is ready, then waits for the common start


@dataclass
class WorkerResult:
    loop_seconds: float = 0.0  # the whole per-trial loop: gate, checks, the trial itself
    trials: int = 0  # finished (complete or pruned)
    pruned: int = 0
    report_ms: list[float] = field(default_factory=list)
    should_prune_ms: list[float] = field(default_factory=list)
    storage_seconds: float = 0.0  # storage calls of the main thread plus the trial gate
    gate_seconds: float = 0.0  # waiting for (and releasing) PostgreSQL's trial gate
    hold_seconds: float = 0.0  # holding it: the trial start that it serializes across workers
    cpu_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    retries: int = 0  # storage calls retried after a lost or refused connection (they then went through)


class TimedGate:
    """The trial gate as the workers take it, timed: waiting for and releasing it, and how long it
    is held (the trial start it serializes across workers). Without a gate (SQLite), nothing."""

    def __init__(self, gate: TrialGate | None, result: WorkerResult) -> None:
        self.gate = gate
        self.result = result
        self._held_since: float | None = None

    def acquire(self) -> None:
        if self.gate is None:
            return
        started = time.perf_counter()
        self.gate.acquire()
        self.result.gate_seconds += time.perf_counter() - started
        self._held_since = time.perf_counter()

    def release(self) -> None:
        if self.gate is None or self._held_since is None:
            return  # released already (the objective releases it as its trial starts)
        started = time.perf_counter()
        self.gate.release()
        self.result.gate_seconds += time.perf_counter() - started
        self.result.hold_seconds += time.perf_counter() - self._held_since
        self._held_since = None


class StorageClock:
    """Adds up the wall time of the main thread's storage calls (outermost call only)."""

    def __init__(self, storage: BaseStorage) -> None:
        self.seconds = 0.0
        self._depth = 0
        self._main = threading.get_ident()
        names = {n for n in dir(BaseStorage) + dir(BaseHeartbeat) if not n.startswith("__")}
        for name in names:
            method = getattr(storage, name, None)
            if callable(method):
                setattr(storage, name, self._timed(method))

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self._main or self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self._depth -= 1
        return timed


def _quality(trial: optuna.Trial, spec: StudySpec) -> float:
    """A made-up final loss, lowest near effective lr 0.1, momentum 0.9, batch size 256."""
    hp = sample(trial, spec)
    return abs(math.log10(hp.effective_lr / 0.1)) + abs(hp.momentum - 0.9) + 0.1 * abs(math.log2(hp.batch_size / 256))


class Objective:
    """A trial that trains nothing: 10 reports, `should_prune` between them, the service's attributes."""

    def __init__(self, spec: StudySpec, sleep: float, result: WorkerResult, on_start: Callable[[], None] = lambda: None) -> None:
        self.spec, self.sleep, self.result, self.on_start = spec, sleep, result, on_start

    def __call__(self, trial: optuna.Trial) -> float:
        self.on_start()
        frozen(trial)  # search.objective looks for a retried trial
        quality = _quality(trial, self.spec)
        every = self.spec.budget_examples // REPORTS
        for report in range(1, REPORTS + 1):
            if self.sleep:
                time.sleep(self.sleep)
            value = 1.0 + quality + 1.0 / report
            started = time.perf_counter()
            trial.report(value, step=report * every)
            self.result.report_ms.append(1000 * (time.perf_counter() - started))
            if report < REPORTS:
                started = time.perf_counter()
                prune = trial.should_prune()
                self.result.should_prune_ms.append(1000 * (time.perf_counter() - started))
                if prune:
                    self._store(trial, value)
                    raise optuna.TrialPruned()
        self._store(trial, value)
        return value

    def _store(self, trial: optuna.Trial, value: float) -> None:
        """The attributes search.study.objective stores on a finished trial without diagnostics (one storage write each)."""
        TrialRecord(
            reason="", effective_lr=value, steps=REPORTS, budget_examples=self.spec.budget_examples, seed=trial.number,
            schedule="decay_lr", device="cpu", optimizer="sgd", examples_seen=self.spec.budget_examples, wall_seconds=value,
            examples_per_second=value, train_loss=value, micro_batch_size=256, normalization_batch="full",
            worker=f"bench:{os.getpid()}", train_seconds=value, final_val_loss=value, final_val_acc=value, best_val_loss=value,
            best_val_acc=value,
        ).store(trial)


def study_spec() -> StudySpec:
    return load_spec("cifar_bs", {"pruner": {"name": "median"}})


def _open(kind: str, location: str, heartbeat_seconds: int | None = None) -> BaseStorage:
    if kind == "journal":
        return JournalStorage(JournalFileBackend(location))
    if kind == "grpc":
        host, port = location.rsplit(":", 1)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
        proxy.wait_server_ready(timeout=60)
        return proxy
    return open_storage(location, heartbeat_seconds)


def _close(storage: BaseStorage) -> None:
    if isinstance(storage, optuna.storages.RDBStorage):
        storage.engine.dispose()
    elif isinstance(storage, optuna.storages.GrpcStorageProxy):
        storage.close()


def _wait_for_start(signals: Path, worker_index: int) -> tuple[float, float]:
    (signals / f"ready-{worker_index}").touch()
    while not (signals / "go").exists():
        time.sleep(0.02)
    start_at, end_at = map(float, (signals / "go").read_text().split())
    time.sleep(max(0.0, start_at - time.time()))
    return start_at, end_at


def _start_together(signals: Path, workers: int, window: float) -> tuple[float, float]:
    """Start the window once every worker has connected: starting 32 processes' storage takes a while."""
    deadline = time.monotonic() + 300
    while len(list(signals.glob("ready-*"))) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    start_at = time.time() + 0.2
    (signals / "go.tmp").write_text(f"{start_at} {start_at + window}")
    (signals / "go.tmp").rename(signals / "go")
    return start_at, start_at + window


def run_worker(task: WorkerTask) -> WorkerResult:
    """One worker process: the per-trial storage calls of `search.study.worker.run_worker`, for the window."""
    with contextlib.redirect_stderr(io.StringIO()) as messages:  # the retry wrapper reports there
        result = _run_trials(task)
    result.retries = messages.getvalue().count("connection lost")
    return result


def _run_trials(task: WorkerTask) -> WorkerResult:
    spec = study_spec()
    result = WorkerResult()
    storage = _open(task.config.kind, task.location, spec.heartbeat_seconds)
    study = optuna.load_study(study_name=task.study_name, storage=storage, sampler=build_sampler(spec, sampler_seed(spec.sampler.seed, worker_index=task.worker_index)), pruner=build_pruner(spec))
    clock = StorageClock(storage_of(study))
    gate = TimedGate(TrialGate(task.gate_url, task.study_name) if task.gate_url else None, result)

    def finished(trial: optuna.trial.FrozenTrial) -> None:
        result.trials += 1
        result.pruned += trial.state == optuna.trial.TrialState.PRUNED

    objective = Objective(spec, task.config.sleep, result, on_start=gate.release)
    _, end_at = _wait_for_start(Path(task.signals), task.worker_index)
    cpu_started, loop_started = time.process_time(), time.perf_counter()
    while time.time() < end_at:  # the trials started inside the window run to their end
        try:
            # The workers' own turn (gate, stale-trial check, count, one trial), with no study-wide total.
            take_turn(study, gate, objective, n_trials=None, callbacks=[lambda _, trial: finished(trial)])
        except Exception as error:  # counted and reported, never hidden: the next trial goes on
            result.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200])
    result.cpu_seconds = time.process_time() - cpu_started
    result.loop_seconds = time.perf_counter() - loop_started
    result.storage_seconds = clock.seconds + result.gate_seconds
    _close(storage)
    return result


def _serve_grpc(url: str, port: int) -> None:
    """The gRPC proxy process: one cached RDBStorage with a pool as large as its thread pool."""
    engine_kwargs = {**service_storage._engine_kwargs(url), "pool_size": GRPC_THREADS}
    storage = optuna.storages.get_storage(ReconnectingRDBStorage(url, engine_kwargs=engine_kwargs))
    optuna.storages.run_grpc_proxy_server(storage, host="127.0.0.1", port=port, thread_pool=ThreadPoolExecutor(GRPC_THREADS))


def _has_grpc() -> bool:
    try:
        import grpc  # noqa: F401  (optional: only the gRPC rows need it)
    except ImportError:
        print("gRPC proxy rows skipped: `pip install grpcio` to include them", flush=True)
        return False
    return True


@contextmanager
def _grpc_proxy(url: str) -> Iterator[int]:
    """The proxy runs only while its rows are measured: its idle pool would count against max_connections."""
    process = multiprocessing.get_context("spawn").Process(target=_serve_grpc, args=(url, GRPC_PORT), daemon=True)
    process.start()
    try:
        yield process.pid or 0
    finally:
        process.terminate()
        process.join(10)


@contextmanager
def _bench_database(url: str) -> Iterator[sqlalchemy.Connection]:
    """A database of our own for the run, dropped afterwards; yields a connection to watch it with."""
    name = make_url(url).database
    admin = sqlalchemy.create_engine(make_url(url).set(database="postgres"), poolclass=sqlalchemy.pool.NullPool)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        try:
            _close(open_storage(url))  # creates Optuna's tables once, before any worker starts
            with admin.connect() as monitor:
                yield monitor
        finally:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def seed_trials(spec: StudySpec) -> list[optuna.trial.FrozenTrial]:
    """The same finished trials for every study, so TPE and the median pruner are active from the start."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), pruner=build_pruner(spec))
    study.optimize(Objective(spec, 0.0, WorkerResult()), n_trials=SEED_TRIALS)
    return study.trials


def _cpu_seconds(pids: list[int] | None = None) -> float:
    """CPU seconds of the given processes, else of PostgreSQL's (the backends the server reaped included)."""
    total = 0
    stats = [Path(f"/proc/{pid}/stat") for pid in pids] if pids is not None else Path("/proc").glob("[0-9]*/stat")
    for stat in stats:
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if pids is not None or name == "postgres":
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Measurement:
    config: Config
    trials_per_second: float
    trials: int
    pruned: int
    report_ms: list[float]
    should_prune_ms: list[float]
    storage_ms_per_trial: float
    gate_ms_per_trial: float
    hold_ms_per_trial: float
    errors: list[str]
    retries: int
    worker_cores: float
    postgres_cores: float
    proxy_cores: float
    machine_busy: float
    connections: float
    active: float
    connects: float
    server_connections: int


def _activity(monitor: sqlalchemy.Connection, database: str, until: float) -> tuple[float, float, float, int]:
    """Connections and active backends of the bench database (mean of a sample a second), new connections/s,
    and the most connections the whole server had (other clients included)."""
    query = sqlalchemy.text(
        "SELECT count(*) FILTER (WHERE datname = :db), count(*) FILTER (WHERE datname = :db AND state = 'active'), "
        "(SELECT sessions FROM pg_stat_database WHERE datname = :db), count(*) FILTER (WHERE backend_type = 'client backend') "
        "FROM pg_stat_activity"
    )
    samples = []
    while time.time() < until - 0.5 or len(samples) < 2:
        samples.append(tuple(monitor.execute(query, {"db": database}).one()))
        monitor.commit()  # a new snapshot of the statistics for the next sample
        time.sleep(1.0)
    mean = [statistics.mean(s[i] for s in samples[:-1]) for i in (0, 1)]
    return mean[0], mean[1], (samples[-1][2] - samples[0][2]) / (len(samples) - 1), max(s[3] for s in samples)


@dataclass(frozen=True)
class Locations:
    postgresql: str
    folder: Path  # SQLite and journal files, one per study
    # Opened before any worker: 32 workers' connections plus other clients can fill the server.
    monitor: sqlalchemy.Connection | None = None

    def of(self, kind: str, study_name: str) -> str:
        return {
            "postgresql": self.postgresql,
            "sqlite": f"sqlite:///{self.folder / study_name}.sqlite3",
            "journal": str(self.folder / f"{study_name}.log"),
            "grpc": f"127.0.0.1:{GRPC_PORT}",
        }[kind]


def measure(config: Config, pool: ProcessPoolExecutor, where: Locations, seeds: list[optuna.trial.FrozenTrial], window: float, tag: str) -> Measurement:
    """Start `config.workers` workers together on a fresh study; they start trials for `window` seconds."""
    name = f"bench-{config.kind}-{config.workers}-{config.sleep:g}-{tag}"
    location = where.of(config.kind, name)
    setup = open_storage(where.postgresql) if config.kind == "grpc" else _open(config.kind, location)
    optuna.create_study(storage=setup, study_name=name).add_trials(seeds)
    _close(setup)
    if config.kind != "grpc":
        return _measure(config, pool, where, name, window, [])
    with _grpc_proxy(where.postgresql) as proxy_pid:
        return _measure(config, pool, where, name, window, [proxy_pid])


def _measure(config: Config, pool: ProcessPoolExecutor, where: Locations, name: str, window: float, proxy: list[int]) -> Measurement:
    location = where.of(config.kind, name)
    on_postgres = config.kind in ("postgresql", "grpc")
    gate_url = where.postgresql if on_postgres else None
    signals = where.folder / f"{name}.signals"
    signals.mkdir()
    futures = [pool.submit(run_worker, WorkerTask(config, location, gate_url, name, i, str(signals))) for i in range(config.workers)]
    start, end = _start_together(signals, config.workers, window)
    time.sleep(max(0.0, start - time.time()))
    postgres_cpu, proxy_cpu, (busy, total) = _cpu_seconds(), _cpu_seconds(proxy), _machine_busy()
    activity = _activity(where.monitor, make_url(where.postgresql).database or "", end) if on_postgres and where.monitor else None
    connections, active, connects, server_connections = activity or (0.0, 0.0, 0.0, 0)
    time.sleep(max(0.0, end - time.time()))
    postgres_cpu, proxy_cpu = _cpu_seconds() - postgres_cpu, _cpu_seconds(proxy) - proxy_cpu
    busy_end, total_end = _machine_busy()
    results = [f.result() for f in futures]  # trials started in the window run to their end
    trials = sum(r.trials for r in results)
    return Measurement(
        config=config,
        # A worker runs trials one after another: its rate is its trials over the time they took.
        trials_per_second=sum(r.trials / r.loop_seconds for r in results if r.loop_seconds),
        trials=trials,
        pruned=sum(r.pruned for r in results),
        report_ms=[x for r in results for x in r.report_ms],
        should_prune_ms=[x for r in results for x in r.should_prune_ms],
        storage_ms_per_trial=1000 * sum(r.storage_seconds for r in results) / max(trials, 1),
        gate_ms_per_trial=1000 * sum(r.gate_seconds for r in results) / max(trials, 1),
        hold_ms_per_trial=1000 * sum(r.hold_seconds for r in results) / max(trials, 1),
        errors=[e for r in results for e in r.errors],
        retries=sum(r.retries for r in results),
        worker_cores=sum(r.cpu_seconds / r.loop_seconds for r in results if r.trials),
        postgres_cores=postgres_cpu / window,
        proxy_cores=proxy_cpu / window,
        machine_busy=(busy_end - busy) / max(total_end - total, 1),
        connections=connections,
        active=active,
        connects=connects,
        server_connections=server_connections,
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    """One configuration over all repeats: medians of the rates, latencies pooled."""

    runs: list[Measurement]

    def median(self, name: str) -> float:
        return statistics.median(getattr(m, name) for m in self.runs)

    def latencies(self, name: str) -> list[float]:
        return [x for m in self.runs for x in getattr(m, name)]

    @property
    def errors(self) -> list[str]:
        return [e for m in self.runs for e in m.errors]


LABELS = {"postgresql": "PostgreSQL", "sqlite": "SQLite", "journal": "journal file", "grpc": "gRPC proxy → PostgreSQL"}


def _table(rows: dict[Config, Row]) -> list[str]:
    lines = [
        "| storage | workers | sleep/report | trials/s | ×1 worker | pruned | report ms p50 / p95 | should_prune ms p50 / p95 "
        "| storage ms/trial (gate wait) | errors (retries) | worker CPU (cores) | postgres CPU (cores) | proxy CPU | machine busy | PG conns / active / new per s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config, row in rows.items():
        single = rows.get(Config(config.kind, 1, config.sleep))
        speedup = f"{row.median('trials_per_second') / single.median('trials_per_second'):.1f}" if single else "–"
        trials = sum(m.trials for m in row.runs)
        report, prune = row.latencies("report_ms"), row.latencies("should_prune_ms")
        lines.append(
            f"| {LABELS[config.kind]} | {config.workers} | {config.sleep:g} s | {row.median('trials_per_second'):.1f} | {speedup} "
            f"| {sum(m.pruned for m in row.runs) / max(trials, 1):.0%} "
            f"| {statistics.median(report) if report else math.nan:.1f} / {_percentile(report, 0.95):.1f} "
            f"| {statistics.median(prune) if prune else math.nan:.1f} / {_percentile(prune, 0.95):.1f} "
            f"| {row.median('storage_ms_per_trial'):.0f} ({row.median('gate_ms_per_trial'):.0f}) | {len(row.errors)} ({sum(m.retries for m in row.runs)}) | {row.median('worker_cores'):.2f} "
            f"| {row.median('postgres_cores'):.2f} | {row.median('proxy_cores'):.2f} | {row.median('machine_busy'):.0%} "
            f"| {row.median('connections'):.0f} / {row.median('active'):.1f} / {row.median('connects'):.0f} |"
        )
    return lines


def _reading(rows: dict[Config, Row], trial_seconds: float) -> list[str]:
    """The targets and the recommendation, in words, from the figures above."""
    def get(kind: str, workers: int, pause: float, name: str) -> float:
        row = rows.get(Config(kind, workers, pause))
        return row.median(name) if row else math.nan

    def latency(kind: str, workers: int, name: str, q: float) -> float:
        row = rows.get(Config(kind, workers, 0.0))
        return _percentile(row.latencies(name), q) if row else math.nan

    counts = sorted({c.workers for c in rows})
    big = max(counts)
    out = ["### Targets", ""]
    for pause in sorted({c.sleep for c in rows if c.kind == "postgresql"}):
        series = [(n, get("postgresql", n, pause, "trials_per_second")) for n in counts if Config("postgresql", n, pause) in rows]
        if len(series) < 2:
            continue
        upto16 = [v for n, v in series if n <= 16]
        grows = all(b > a for a, b in zip(upto16, upto16[1:]))
        out.append(
            f"* PostgreSQL trials/s with {pause:g} s per report: {' → '.join(f'{v:.2f}' for _, v in series)} at "
            f"{', '.join(str(n) for n, _ in series)} workers: {'grows' if grows else 'does **not** grow'} up to 16 workers "
            f"(target: grows up to at least 16)."
        )
    pauses = sorted(c.sleep for c in rows if c.kind == "postgresql" and c.workers == big)
    for pause in pauses:
        storage_ms, gate_ms = get("postgresql", big, pause, "storage_ms_per_trial"), get("postgresql", big, pause, "gate_ms_per_trial")
        share = storage_ms / 1000 / trial_seconds
        out.append(
            f"* Storage time per trial on PostgreSQL at {big} workers, {pause:g} s per report: {storage_ms:,.0f} ms "
            f"({gate_ms:,.0f} ms of it waiting for the trial gate) = {share:.2%} of a {trial_seconds:.0f} s cifar_bs trial "
            f"(target < 1%: {'met' if share < 0.01 else '**not met**'})."
        )
    if pauses:
        # The gate serializes trial starts, so its wait grows with the start rate; cifar_bs trials start far more rarely.
        slow = pauses[-1]
        hold = get("postgresql", big, slow, "hold_ms_per_trial") / 1000
        rate = big / trial_seconds
        busy = rate * hold
        wait = busy * hold / (2 * (1 - busy)) if busy < 1 else math.inf
        rest = (get("postgresql", big, slow, "storage_ms_per_trial") - get("postgresql", big, slow, "gate_ms_per_trial")) / 1000
        out.append(
            f"* At the cifar_bs pace, {big} workers start {rate:.3f} trials/s; with the gate held {hold * 1000:.0f} ms per trial "
            f"(measured above) it is busy {busy:.1%} of the time, so a start waits about {wait * 1000:.0f} ms on average "
            f"(M/D/1 queue). With the other storage calls as measured at {slow:g} s per report ({rest * 1000:,.0f} ms, an upper "
            f"bound: measured under far more contention), a cifar_bs trial would spend about {(rest + wait) / trial_seconds:.2%} "
            f"of its time in storage (estimate; target < 1%: {'met' if (rest + wait) / trial_seconds < 0.01 else '**not met**'})."
        )
    if Config("postgresql", big, 0.0) in rows:
        row = rows[Config("postgresql", big, 0.0)]
        database_bound = row.median("active") >= 1 or row.median("postgres_cores") > row.median("worker_cores")
        out += [
            "",
            "### What saturates",
            "",
            f"* {'The database' if database_bound else 'Not the database'}: at {big} zero-cost workers PostgreSQL used {row.median('postgres_cores'):.2f} cores and "
            f"{row.median('active'):.1f} of its {row.median('connections'):.0f} connections were running a query at a time, "
            f"while the machine was {row.median('machine_busy'):.0%} busy (other jobs included) and the {big} workers got "
            f"{row.median('worker_cores'):.2f} cores between them{'.' if database_bound else ': the clients are short of CPU.'}",
            f"* The trial gate: {row.median('gate_ms_per_trial'):,.0f} of the {row.median('storage_ms_per_trial'):,.0f} ms of storage "
            f"time per trial is waiting for it. It serializes trial starts (held {row.median('hold_ms_per_trial'):.0f} ms each, "
            f"so at most about {1000 / row.median('hold_ms_per_trial'):.1f} starts/s), and every poll of a waiting worker is a new "
            f"connection ({row.median('connects'):.0f} per second). PostgreSQL's trials/s therefore levels off near that bound "
            "however many workers run, until trials are long enough that starts rarely collide (see the estimate above).",
            f"* Retries: {sum(m.retries for r in rows.values() for m in r.runs)} storage calls in all found their connection lost "
            f"or refused and went through on a retry (errors counts the trials that failed anyway); at {big} workers the server "
            f"had up to {max(m.server_connections for m in row.runs)} client connections, other clients included, of its "
            "`max_connections = 100`.",
        ]
    journal_1, sqlite_1, pg_1 = (get(k, 1, 0.0, "trials_per_second") for k in ("journal", "sqlite", "postgresql"))
    grpc_big, pg_big = get("grpc", big, 0.0, "trials_per_second"), get("postgresql", big, 0.0, "trials_per_second")
    out += [
        "",
        "### Which storage at which scale",
        "",
        f"* **1 worker (one machine): SQLite**, the default (no server to run). Zero-cost trials: {sqlite_1:.1f} trials/s, "
        f"report p50 {latency('sqlite', 1, 'report_ms', 0.5):.0f} ms: "
        f"nothing next to a training run. Not for several workers: at {big} workers `report` takes "
        f"{latency('sqlite', big, 'report_ms', 0.95):,.0f} ms and `should_prune` {latency('sqlite', big, 'should_prune_ms', 0.95):,.0f} ms at p95 "
        f"(one writer at a time), which is why `search.run` refuses more than one SQLite worker.",
        f"* **2 to 32 workers, one or many machines: PostgreSQL.** {pg_1:.1f} trials/s with 1 worker, "
        f"{get('postgresql', big, 0.0, 'connections'):.0f} connections at {big} workers (up to 3 each: 2 pooled and the gate's, "
        f"so about 30 workers per server at the default `max_connections = 100`, fewer if other clients share it).",
        f"* **gRPC proxy in front of PostgreSQL** (the trial gate still on PostgreSQL directly) at {big} workers: {grpc_big:.1f} trials/s against {pg_big:.1f} directly (zero-cost "
        f"trials), {get('grpc', big, 0.0, 'connections'):.0f} connections against {get('postgresql', big, 0.0, 'connections'):.0f}: "
        + ("it helps here; " if grpc_big > 1.1 * pg_big else "no faster here; ")
        + "worth it for its connection count beyond about 30 workers per server, but `search.run` does not support it and "
        "it has no heartbeats (a lost worker's trial would stay RUNNING).",
        f"* **Journal file**: {journal_1:.1f} trials/s with 1 worker and {get('journal', big, 0.0, 'trials_per_second'):.1f} with {big}, "
        f"{'the fastest' if journal_1 >= max(sqlite_1, pg_1) else 'not the fastest'} on one machine, but one machine only (a shared file system's locks are not reliable) and without "
        f"heartbeats; `search.run` does not support it.",
    ]
    return out


def write_results(rows: dict[Config, Row], args: argparse.Namespace, started: datetime, seconds: float) -> str:
    trial_seconds = args.budget_examples / args.examples_per_second
    text = "\n".join([
        "# Storage scale (`bench/storage`)",
        "",
        f"Command: `python -m bench.storage{' --long' if args.long else ''}` · date {started:%Y-%m-%d %H:%M} UTC · "
        f"machine: {os.cpu_count()}-core CPU, no GPU, shared with other jobs · PostgreSQL 15 local · "
        f"{args.window:g} s window per configuration, {args.repeats} repeat(s) interleaved · {seconds / 60:.1f} min in all.",
        "",
        f"Each worker process runs cifar_bs trials (TPE, median pruner, {SEED_TRIALS} finished trials seeded) whose objective "
        f"reports {REPORTS} values; `sleep/report` is the time the objective waits before each report, standing in for training. "
        "trials/s: sum over workers of the trials each finished divided by the time its loop ran (trials started inside the window run to their end). Latencies are measured inside the workers. "
        "storage ms/trial: wall time of every storage call of the worker's main thread (trial gate, stale check, count, "
        "sampling reads, reports, pruning reads, 15 user attributes) per finished trial. CPU: cores used over the window "
        "(workers: their own CPU time; postgres: all server processes; machine: all CPUs of the machine, other jobs included). "
        "PG conns / active: connections to the benchmark database and those running a query, sampled every second.",
        "",
        *_table(rows),
        "",
        f"A cifar_bs trial: {args.budget_examples:,} examples at {args.examples_per_second:,.0f} examples/s = {trial_seconds:.0f} s.",
        "",
        "## Reading",
        "",
        *_reading(rows, trial_seconds),
        *([""] + ["Errors (first of each kind):"] + [f"* {e}" for e in dict.fromkeys(e for r in rows.values() for e in r.errors)][:8]
          if any(r.errors for r in rows.values()) else []),
        "",
    ])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return text


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _warm_up(pool: ProcessPoolExecutor, workers: int) -> None:
    """Start every worker process now (each imports Optuna once), not inside a measured window."""
    while len(set(pool.map(_pid_after, [2.0] * workers))) < workers:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="30 s windows and 3 interleaved repeats")
    parser.add_argument("--window", type=float, help="seconds in which trials start, per configuration (default 6, --long 30)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 1, --long 3)")
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds the sleeping objective waits before each report")
    parser.add_argument("--slow-sleep", type=float, default=1.5, help="one more PostgreSQL row at the most workers, closer to a real trial's pace (0: none)")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS))
    parser.add_argument("--storages", nargs="+", default=["postgresql", "sqlite", "journal"], choices=["postgresql", "sqlite", "journal"])
    parser.add_argument("--grpc-workers", type=int, nargs="*", default=[32], help="worker counts with the gRPC proxy (needs grpcio)")
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="a database this run may create and drop")
    parser.add_argument("--budget-examples", type=int, default=225_000)
    parser.add_argument("--examples-per-second", type=float, default=CIFAR_EXAMPLES_PER_SECOND)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.window = args.window or (30.0 if args.long else 6.0)
    args.repeats = args.repeats or (3 if args.long else 1)
    started, clock = datetime.now(timezone.utc), time.monotonic()
    spec = study_spec()
    seeds = seed_trials(spec)
    most = max(args.workers + args.grpc_workers)
    context = multiprocessing.get_context("spawn")
    grpc = ["grpc"] if _has_grpc() else []
    # Zero-cost trials on every storage at every scale; sleeping ones where the targets are: on
    # PostgreSQL at every scale, on the proxy too, and slower ones on PostgreSQL at the most workers.
    def kinds(workers: int) -> list[str]:
        return [*args.storages, *(grpc if workers in args.grpc_workers else [])]

    configs = [Config(kind, n, 0.0) for n in args.workers for kind in kinds(n)]
    configs += [Config(kind, n, args.sleep) for n in args.workers for kind in kinds(n) if kind in ("postgresql", "grpc")]
    if args.slow_sleep and "postgresql" in args.storages:
        configs.append(Config("postgresql", max(args.workers), args.slow_sleep))
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as folder, _bench_database(args.postgres_url) as monitor, \
            ProcessPoolExecutor(most, mp_context=context) as pool:
        print(f"starting {most} worker processes", flush=True)
        _warm_up(pool, most)
        where = Locations(args.postgres_url, Path(folder), monitor)
        rows: dict[Config, Row] = {c: Row([]) for c in configs}
        for repeat in range(args.repeats):
            for config in configs:
                m = measure(config, pool, where, seeds, args.window, f"r{repeat}")
                rows[config].runs.append(m)
                print(
                    f"[{time.monotonic() - clock:5.0f} s] {LABELS[config.kind]:>24} {config.workers:2d} workers "
                    f"sleep {config.sleep:g} s: {m.trials_per_second:6.1f} trials/s  report p50 "
                    f"{statistics.median(m.report_ms) if m.report_ms else math.nan:6.1f} ms  should_prune p50 "
                    f"{statistics.median(m.should_prune_ms) if m.should_prune_ms else math.nan:6.1f} ms  "
                    f"{m.storage_ms_per_trial:5.0f} ms storage/trial  errors {len(m.errors)} retries {m.retries}  "
                    f"CPU workers {m.worker_cores:.2f} postgres {m.postgres_cores:.2f}",
                    flush=True,
                )
    print(write_results(rows, args, started, time.monotonic() - clock))


if __name__ == "__main__":
    main()

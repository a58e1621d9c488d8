"""SQL views over Optuna's tables, so that anyone with `psql` or `sqlite3` can query a study.

  search_trials      one row per trial of every search study: parameters and metrics as columns
  search_best        the best completed trial of each search study (lowest final validation loss)
  search_evaluation  one row per test-set run of `search.evaluate` (studies named `<study>:evaluation`)
  search_frontier    one row per batch size of every frontier study: the mean over its seed re-runs,
                     with t-based 95% intervals (the same numbers as `search.analysis.frontier`)

Views, not tables: they are computed from Optuna's own rows on every query, so they never go
stale while workers add trials, and need no write on the hot path. Values are decoded from
Optuna's JSON columns in SQL (categorical parameters are stored as an index into their
choices); NaN and infinities read as NULL. The back ends differ only in the few small
expressions of `_Dialect`; everything else is shared.

Creating them is idempotent and safe when many workers start at once: one transaction, under
PostgreSQL's transaction advisory lock or SQLite's write lock, checks a version tag (a hash of
the SQL) and only then drops and recreates them. The columns are the fields of the records in
`search.record` (one per stored attribute, typed from its annotation) after the sampled
parameters; the view SQL is built from them and the constants below, never from user input;
queries against the views take bound parameters.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Literal

import optuna
import sqlalchemy

from search.record import (
    SHARE_OF_BUDGET,
    EvaluationRecord,
    Hyperparams,
    Kind,
    RunRecord,
    TrialRecord,
    column_kinds,
)
from search.stats import T975, Z975

# Dependents first: that is the order in which they are dropped.
VIEW_NAMES = ("search_frontier", "search_best", "search_evaluation", "search_trials")
# Study user attributes that mark the studies each view covers (set by search.storage / search.evaluate).
SEARCH_MARKER = "comparability"
EVALUATION_MARKER = "evaluation_of"  # StudyRecord.evaluation_of
_LOCK_KEY = int.from_bytes(hashlib.sha1(b"batch-size-search views").digest()[:8], "big", signed=True)


@dataclass(frozen=True)
class _Column:
    name: str
    source: Literal["param", "attr"]
    kind: Kind


def _columns(record: type[RunRecord]) -> list[_Column]:
    """The sampled parameters that the record does not hold, then one column per field of the record."""
    params = [_Column(name, "param", kind) for name, kind in column_kinds(Hyperparams).items() if name not in record.names()]
    return params + [_Column(name, "attr", kind) for name, kind in column_kinds(record).items()]


_SEARCH_COLUMNS = _columns(TrialRecord)
_EVALUATION_COLUMNS = _columns(EvaluationRecord)


@dataclass(frozen=True)
class _Dialect:
    """The only SQL that differs between back ends; each maps a SQL expression to one."""

    number: Callable[[str], str]  # JSON text -> floating point, NULL unless a finite number
    text: Callable[[str], str]  # JSON text -> string: a JSON string's value, another scalar as written, NULL for null
    integer_type: str
    choice: Callable[[str, str], str]  # (distribution JSON, index) -> the choice as JSON text
    is_categorical: Callable[[str], str]  # distribution JSON -> boolean


_SQLITE = _Dialect(
    # CASE evaluates lazily: json_type() never sees the invalid JSON that NaN is.
    number=lambda v: f"CASE WHEN json_valid({v}) THEN CASE WHEN json_type({v}) IN ('integer', 'real') THEN CAST({v} AS REAL) END END",
    text=lambda v: f"CASE WHEN json_valid({v}) THEN CASE json_type({v}) WHEN 'text' THEN json_extract({v}, '$') WHEN 'null' THEN NULL ELSE {v} END END",
    integer_type="INTEGER",
    choice=lambda d, i: f"json_quote(json_extract({d}, '$.attributes.choices[' || CAST({i} AS INTEGER) || ']'))",
    is_categorical=lambda d: f"json_extract({d}, '$.name') = 'CategoricalDistribution'",
)

_POSTGRESQL = _Dialect(
    # A cast of anything but a plain number (NaN, a string) would raise, so test the text first.
    number=lambda v: f"CASE WHEN {v} ~ '^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$' THEN CAST({v} AS double precision) END",
    text=lambda v: f"CASE WHEN left({v}, 1) = '\"' THEN CAST({v} AS json) #>> '{{}}' ELSE NULLIF({v}, 'null') END",
    integer_type="bigint",
    choice=lambda d, i: f"CAST(CAST({d} AS json) -> 'attributes' -> 'choices' -> CAST({i} AS integer) AS text)",
    is_categorical=lambda d: f"CAST({d} AS json) ->> 'name' = 'CategoricalDistribution'",
)

_DIALECTS = {"sqlite": _SQLITE, "postgresql": _POSTGRESQL}


def _column_sql(column: _Column, sql: _Dialect) -> str:
    if column.source == "param":
        decoded = (
            f"CASE WHEN {sql.is_categorical('p.distribution_json')} "
            f"THEN {sql.number(sql.choice('p.distribution_json', 'p.param_value'))} ELSE p.param_value END"
        )
        lookup = f"FROM trial_params p WHERE p.trial_id = t.trial_id AND p.param_name = '{column.name}'"
    else:
        decoded = sql.text("a.value_json") if column.kind == "text" else sql.number("a.value_json")
        lookup = f"FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.\"key\" = '{column.name}'"
    if column.kind == "integer":
        decoded = f"CAST({decoded} AS {sql.integer_type})"
    return f"(SELECT {decoded} {lookup}) AS {column.name}"


def _study_marker(marker: str) -> str:
    return f"FROM study_user_attributes u WHERE u.study_id = t.study_id AND u.\"key\" = '{marker}'"


def _trial_view(name: str, columns: list[_Column], marker: str, sql: _Dialect, extra: list[str]) -> str:
    selected = [
        "s.study_id", "s.study_name", "t.trial_id", "t.number", "t.state", *extra,
        *(_column_sql(c, sql) for c in columns),
        "t.datetime_start", "t.datetime_complete",
    ]
    return (
        f"CREATE VIEW {name} AS SELECT\n  " + ",\n  ".join(selected) + "\n"
        "FROM trials t JOIN studies s ON s.study_id = t.study_id\n"
        f"WHERE EXISTS (SELECT 1 {_study_marker(marker)})"
    )


def view_statements(dialect: str) -> list[str]:
    """The CREATE VIEW statements for a back end, in creation order."""
    sql = _DIALECTS[dialect]
    value = "(SELECT v.value FROM trial_values v WHERE v.trial_id = t.trial_id AND v.objective = 0) AS value"
    source = f"(SELECT {sql.text('u.value_json')} {_study_marker(EVALUATION_MARKER)}) AS source_study"
    trials = _trial_view("search_trials", _SEARCH_COLUMNS, SEARCH_MARKER, sql, [value])
    evaluation = _trial_view("search_evaluation", _EVALUATION_COLUMNS, EVALUATION_MARKER, sql, [source])
    columns = ", ".join(["study_id", "study_name", "trial_id", "number", "state", "value"] + [c.name for c in _SEARCH_COLUMNS])
    # Partitioning by study_name too lets PostgreSQL push `WHERE study_name = ...` into the window.
    best = (
        f"CREATE VIEW search_best AS SELECT {columns}, datetime_start, datetime_complete FROM (\n"
        f"  SELECT search_trials.*, ROW_NUMBER() OVER (PARTITION BY study_id, study_name ORDER BY value, number) AS position\n"
        f"  FROM search_trials WHERE state = 'COMPLETE' AND value IS NOT NULL\n"
        f"  AND (frontier_role IS NULL OR frontier_role NOT IN ({', '.join(repr(r) for r in SHARE_OF_BUDGET)}))\n"  # a share of the budget: not ranked
        f") ranked WHERE position = 1"
    )
    return [trials, evaluation, best, _frontier_view()]


def _t975_sql(df: str) -> str:
    """`search.stats.t975` in SQL: its table, then its expansion."""
    table = " ".join(f"WHEN {i} THEN {t}" for i, t in enumerate(T975, start=1))
    z = Z975
    return f"(CASE {df} {table} ELSE {z} + {z**3 + z} / (4.0 * {df}) + {5 * z**5 + 16 * z**3 + 3 * z} / (96.0 * {df} * {df}) END)"


def _ci95_sql(variance: str, n: str) -> str:
    return f"CASE WHEN {n} < 2 OR {variance} IS NULL THEN NULL ELSE {_t975_sql(f'({n} - 1)')} * sqrt(CASE WHEN {variance} < 0 THEN 0 ELSE {variance} END / {n}) END"


def _variance_sql(x: str) -> str:
    return f"(sum({x} * {x}) - sum({x}) * sum({x}) / count({x})) / NULLIF(count({x}) - 1, 0)"


def _frontier_view() -> str:
    """Each batch size's seed re-runs of a frontier study, aggregated (the configuration is the same in all of them)."""
    return (
        "CREATE VIEW search_frontier AS SELECT study_id, study_name, batch_size, n_seeds,\n"
        f"  val_loss_mean, {_ci95_sql('val_loss_var', 'n_seeds')} AS val_loss_ci95,\n"
        f"  val_acc_mean, {_ci95_sql('val_acc_var', 'n_acc')} AS val_acc_ci95,\n"
        "  lr, effective_lr, momentum, steps, examples_per_second\n"
        "FROM (\n"
        "  SELECT study_id, study_name, batch_size, count(*) AS n_seeds, avg(value) AS val_loss_mean,\n"
        f"    {_variance_sql('value')} AS val_loss_var, count(final_val_acc) AS n_acc, avg(final_val_acc) AS val_acc_mean,\n"
        f"    {_variance_sql('final_val_acc')} AS val_acc_var, min(lr) AS lr, min(effective_lr) AS effective_lr,\n"
        "    min(momentum) AS momentum, min(steps) AS steps, avg(examples_per_second) AS examples_per_second\n"
        "  FROM (\n"  # a superseded best's re-runs left out (search.store.trials.without_superseded)
        "    SELECT search_trials.*, max(frontier_of) OVER (PARTITION BY study_id, batch_size) AS latest_of\n"
        "    FROM search_trials WHERE state = 'COMPLETE' AND frontier_role = 'seed' AND value IS NOT NULL\n"
        "  ) reruns WHERE frontier_of = latest_of OR latest_of IS NULL\n"
        "  GROUP BY study_id, study_name, batch_size\n"
        ") seeds"
    )


def _tag(statements: list[str]) -> str:
    return "batch-size-search views " + hashlib.sha1("\n".join(statements).encode()).hexdigest()[:16]


def _is_current(connection: sqlalchemy.Connection, dialect: str, tag: str) -> bool:
    if dialect == "sqlite":
        query = "SELECT count(*) FROM sqlite_master WHERE type = 'view' AND name = :name AND instr(sql, :tag) > 0"
    else:
        query = "SELECT count(*) FROM pg_class WHERE oid = to_regclass(:name) AND obj_description(oid, 'pg_class') = :tag"
    return all(connection.execute(sqlalchemy.text(query), {"name": name, "tag": tag}).scalar() for name in VIEW_NAMES)


def create_views(engine: sqlalchemy.Engine) -> bool:
    """Create or update the views; True if this call changed them, False if they were current."""
    dialect = engine.dialect.name
    statements = view_statements(dialect)
    tag = _tag(statements)
    if dialect == "sqlite":
        # SQLite keeps a view's SQL verbatim, comments included: the tag rides along in one.
        statements = [s.replace(" AS SELECT", f" AS /* {tag} */ SELECT", 1) for s in statements]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if _is_current(connection, dialect, tag):
            return False
        # Our own transaction: with AUTOCOMMIT, SQLAlchemy and the driver leave BEGIN/COMMIT to us.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if dialect == "sqlite" else "BEGIN")
        try:
            if dialect == "postgresql":
                connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            changed = not _is_current(connection, dialect, tag)  # another worker may have just done it
            if changed:
                for name in VIEW_NAMES:
                    connection.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
                for statement in statements:
                    connection.exec_driver_sql(statement)
                if dialect == "postgresql":
                    for name in VIEW_NAMES:
                        connection.exec_driver_sql(f"COMMENT ON VIEW {name} IS '{tag}'")
            connection.exec_driver_sql("COMMIT")
        except BaseException:
            connection.exec_driver_sql("ROLLBACK")
            raise
    return changed


def ensure_views(storage: optuna.storages.BaseStorage) -> None:
    """The hook `search.store.storage.create_or_resume` calls: views for any database-backed storage."""
    if isinstance(storage, optuna.storages.RDBStorage):
        create_views(storage.engine)

"""deploy/: the launchers for many machines.

The Kubernetes manifests are validated against the real Kubernetes JSON schema (shipped inside
the kubernetes-validate package: no cluster and no network needed), strictly (unknown fields
are errors), and their meaning is checked: an Indexed Job, the password only from the Secret,
and a command that `search.run` accepts. The Slurm array script is checked by `bash -n`, by its
#SBATCH header, and by running it as Slurm would (SLURM_* variables, a stub `srun`), first with
a stub `python` that records what it is given, then for real against the local PostgreSQL.
"""
from __future__ import annotations

import copy
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import optuna
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from sqlalchemy.engine import make_url

from search.run import parse_args
from tests.conftest import PASSWORD_ROLE

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "deploy" / "kubernetes" / "job.yaml"
SECRET = REPO / "deploy" / "kubernetes" / "secret.example.yaml"
SBATCH = REPO / "deploy" / "slurm" / "search.sbatch"
STORAGE = "postgresql+psycopg2://search@postgres/search"
# The oldest and the newest Kubernetes whose schema the package ships (1.25 and 1.37 in 1.37.0).
VERSIONS = sorted({all_versions()[0], kubernetes_validate.latest_version()})


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> dict[str, Any]:
    [doc] = [doc for doc in documents(JOB) + documents(SECRET) if doc["kind"] == kind]
    return doc


def container() -> dict[str, Any]:
    [worker] = by_kind("Job")["spec"]["template"]["spec"]["containers"]
    return worker


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif node is not None:
        yield str(node)


# --- Kubernetes ------------------------------------------------------------------------------


def test_the_files_hold_a_configmap_and_a_job_and_a_secret_template() -> None:
    assert [doc["kind"] for doc in documents(JOB)] == ["ConfigMap", "Job"]
    assert [doc["kind"] for doc in documents(SECRET)] == ["Secret"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", ["ConfigMap", "Job", "Secret"])
def test_manifests_are_valid_against_the_kubernetes_schema(kind: str, version: str) -> None:
    assert kubernetes_validate.validate(by_kind(kind), version, strict=True)


def test_the_schema_check_is_real() -> None:
    """A misspelt field and a wrong type are refused: the validation above can fail."""
    job = by_kind("Job")
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["template"]["spec"]["containers"][0]["argz"] = misspelt["spec"]["template"]["spec"]["containers"][0].pop("args")
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["parallelism"] = "four"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_gpu_variant_is_one_uncommented_line_and_valid() -> None:
    text = JOB.read_text()
    assert text.count("# nvidia.com/gpu: 1") == 1
    [gpu_job] = [doc for doc in yaml.safe_load_all(text.replace("# nvidia.com/gpu: 1", "nvidia.com/gpu: 1")) if doc and doc["kind"] == "Job"]
    assert gpu_job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    for version in VERSIONS:
        kubernetes_validate.validate(gpu_job, version, strict=True)


def test_an_indexed_job_of_n_pods_that_restart_on_failure() -> None:
    spec = by_kind("Job")["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    assert 1 <= spec["backoffLimit"] <= 4 * spec["parallelism"]
    assert spec["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def env_values(worker: dict[str, Any], index: int) -> dict[str, str]:
    """What the container's variables hold in the pod of this completion index."""
    config = by_kind("ConfigMap")
    values: dict[str, str] = {}
    for var in worker["env"]:
        source = var.get("valueFrom", {})
        if "value" in var:
            values[var["name"]] = var["value"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["name"] == config["metadata"]["name"]
            values[var["name"]] = config["data"][ref["key"]]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            values[var["name"]] = str(index)
        elif "resourceFieldRef" in source:
            values[var["name"]] = "4"
        elif "secretKeyRef" in source:
            values[var["name"]] = "<secret>"
    return values


def test_the_command_is_a_search_run_invocation_with_the_pod_index_as_seed() -> None:
    worker = container()
    assert worker["command"] == ["python", "-m", "search.run"]
    values = env_values(worker, index=3)
    references = {name for arg in worker["args"] for name in re.findall(r"\$\((\w+)\)", arg)}
    # Kubernetes leaves an undefined $(NAME) as it is: every reference must be a variable.
    assert references <= set(values), references - set(values)
    argv = [re.sub(r"\$\((\w+)\)", lambda match: values[match.group(1)], arg) for arg in worker["args"]]
    args = parse_args(argv)
    assert args.study == by_kind("ConfigMap")["data"]["STUDY"]
    assert args.storage == STORAGE and make_url(args.storage).password is None
    assert args.workers == "auto" and args.quiet
    assert args.seed == 3  # JOB_COMPLETION_INDEX
    data_mount = next(mount for mount in worker["volumeMounts"] if mount["name"] == "data")
    assert Path(args.data).is_relative_to(data_mount["mountPath"])


def test_the_password_comes_only_from_the_secret() -> None:
    worker, secret = container(), by_kind("Secret")
    password_vars = [var for var in worker["env"] if "PASS" in var["name"].upper()]
    assert [var["name"] for var in password_vars] == ["PGPASSWORD"]
    [pgpassword] = password_vars
    assert set(pgpassword) == {"name", "valueFrom"}
    assert pgpassword["valueFrom"] == {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "password"}}
    secret_refs = [var for var in worker["env"] if "secretKeyRef" in var.get("valueFrom", {})]
    assert secret_refs == [pgpassword]
    assert "envFrom" not in worker
    # No literal: the Secret template holds a placeholder, which appears nowhere else; no URL
    # carries a password; nothing in the Job or ConfigMap looks like one.
    assert set(secret["stringData"]) == {"password"} and "data" not in secret
    placeholder = secret["stringData"]["password"]
    assert re.fullmatch(r"REPLACE_[A-Z_]+", placeholder)
    job_strings = [s for doc in documents(JOB) for s in strings(doc)]
    assert placeholder not in JOB.read_text() and "stringData" not in JOB.read_text()
    for text in job_strings:
        if "://" in text:
            assert make_url(text).password is None, text
        assert not re.search(r"(?i)pass(word)?\s*[=:]\s*\S", text), text
    assert [doc for doc in documents(JOB) if doc["kind"] == "Secret"] == []


def test_data_read_only_cache_writable_resources_set() -> None:
    worker = container()
    pod = by_kind("Job")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["name"]: mount for mount in worker["volumeMounts"]}
    assert mounts["data"]["readOnly"] is True
    assert volumes["data"]["persistentVolumeClaim"]["readOnly"] is True
    assert not mounts["cache"].get("readOnly") and ("emptyDir" in volumes["cache"] or "persistentVolumeClaim" in volumes["cache"])
    assert env_values(worker, 0)["SEARCH_CACHE_DIR"] == mounts["cache"]["mountPath"]
    resources = worker["resources"]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[part])


# --- Slurm -----------------------------------------------------------------------------------


def sbatch_header() -> tuple[list[str], list[str]]:
    """The #SBATCH options Slurm reads (those before the first command) and those after it."""
    read, ignored, before_commands = [], [], True
    for line in SBATCH.read_text().splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#SBATCH"):
            (read if before_commands else ignored).append(stripped.removeprefix("#SBATCH").strip())
        elif stripped and not stripped.startswith("#"):
            before_commands = False
    return read, ignored


def test_the_slurm_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(SBATCH)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert SBATCH.read_text().startswith("#!/bin/bash\n")


def test_the_sbatch_directives() -> None:
    options, ignored = sbatch_header()
    assert ignored == []
    assert any(re.fullmatch(r"--array=0-\d+", option) for option in options), options
    assert any(re.fullmatch(r"--output=\S*%A\S*%a\S*", option) for option in options)
    assert any(re.fullmatch(r"--error=\S*%A\S*%a\S*", option) for option in options)
    assert "--ntasks=1" in options
    # The GPU switch is there, and off (Slurm ignores '##SBATCH').
    assert "##SBATCH --gres=gpu:1" in SBATCH.read_text().splitlines()
    assert not any(option.startswith("--gres") for option in options)


def test_the_slurm_script_holds_no_password() -> None:
    for line in SBATCH.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        assert "PGPASSWORD=" not in line and "set -x" not in line, line
        for url in re.findall(r"postgresql\S*://\S+", re.sub(r"\$\{[^}]*\}", "X", line)):
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", url), line


SECRET_PASSWORD = "s3cr3t-for-the-test"


class FakeSlurm:
    """Runs the script as an array task would run: SLURM_* variables, a stub `srun` on PATH
    (it records its options, then runs the command with a job step's variables), a stub virtualenv whose `python` records
    its argv, PGPASSWORD and OMP_NUM_THREADS, or (real_python) runs the real interpreter."""

    def __init__(self, root: Path) -> None:
        self.root, self.home, self.record = root, root / "home", root / "record"
        self.slurm_bin, self.venv_bin = root / "slurm-bin", root / "venv" / "bin"
        for folder in (self.slurm_bin, self.venv_bin, self.home, self.record):
            folder.mkdir(parents=True)
        # What a real srun adds to a step's environment (Lightning detects Slurm by it).
        self._stub(self.slurm_bin / "srun", (
            'printf "%s\\0" "$@" > "$RECORD/srun"\nwhile [[ $1 == --* ]]; do shift; done\n'
            'export SLURM_JOB_ID=78 SLURM_JOB_NAME=batch-size-search SLURM_NTASKS=1 SLURM_NNODES=1 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0\n'
            'exec "$@"'
        ))
        (self.venv_bin / "activate").write_text(f'export PATH="{self.venv_bin}:$PATH"\n')
        self.use_python(real=False)

    @staticmethod
    def _stub(path: Path, body: str) -> None:
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)

    def use_python(self, real: bool) -> None:
        self._stub(self.venv_bin / "python", f'exec {shlex.quote(sys.executable)} "$@"' if real else (
            'printf "%s\\0" "$@" > "$RECORD/argv"\nprintf "%s" "${PGPASSWORD-<unset>}" > "$RECORD/password"\n'
            'printf "%s" "$OMP_NUM_THREADS" > "$RECORD/threads"\necho "python ran"'
        ))

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        return {
            "PATH": f"{self.slurm_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home), "RECORD": str(self.record),
            "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_JOB_ID": "77", "SLURM_SUBMIT_DIR": str(REPO), "SLURM_CPUS_PER_TASK": "3",
            "SEARCH_VENV": str(self.root / "venv"), "SEARCH_CACHE_DIR": os.environ.get("SEARCH_CACHE_DIR", str(self.root / "cache")),
            **env,
        }

    def start(self, env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(["bash", str(SBATCH)], env=self.environment(env), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SBATCH)], check=False, env=self.environment(env), cwd=self.root, capture_output=True, text=True, timeout=60)

    def argv(self) -> list[str]:
        return (self.record / "argv").read_text().split("\0")[:-1]

    def password_file(self, mode: int, password: str = SECRET_PASSWORD) -> Path:
        path = self.home / ".config" / "batch-size-search" / "pgpassword"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(mode)
        return path


@pytest.fixture
def slurm(tmp_path: Path) -> FakeSlurm:
    return FakeSlurm(tmp_path)


def test_an_array_task_runs_search_run_with_the_password_from_a_private_file(slurm: FakeSlurm) -> None:
    slurm.password_file(0o600)
    result = slurm.run({"STUDY": "smoke", "PGHOST": "db.cluster", "DATA": "/shared/cifar-10-python.tar.gz", "SEARCH_ARGS": "--n-trials 64"})
    assert result.returncode == 0, result.stderr
    assert "python ran" in result.stdout
    assert SECRET_PASSWORD not in result.stdout + result.stderr
    assert (slurm.record / "password").read_text() == SECRET_PASSWORD
    assert (slurm.record / "threads").read_text() == "3"
    srun = (slurm.record / "srun").read_text().split("\0")[:-1]
    assert srun[:2] == ["--ntasks=1", "--cpus-per-task=3"]
    argv = slurm.argv()
    assert argv[:2] == ["-m", "search.run"]
    args = parse_args(argv[2:])
    assert (args.study, args.data, args.workers, args.quiet, args.n_trials) == ("smoke", "/shared/cifar-10-python.tar.gz", "auto", True, 64)
    assert args.storage == "postgresql+psycopg2://search@db.cluster:5432/search"
    assert make_url(args.storage).password is None
    assert args.seed == 2  # SLURM_ARRAY_TASK_ID


def test_the_defaults_match_the_kubernetes_job(slurm: FakeSlurm) -> None:
    result = slurm.run({"PGPASSWORD": SECRET_PASSWORD})
    assert result.returncode == 0, result.stderr
    assert SECRET_PASSWORD not in result.stdout + result.stderr
    assert (slurm.record / "password").read_text() == SECRET_PASSWORD
    args = parse_args(slurm.argv()[2:])
    assert (args.study, args.data) == ("cifar_bs", None)
    storage, job_storage = make_url(args.storage), make_url(STORAGE)
    assert (storage.username, storage.host, storage.database) == (job_storage.username, job_storage.host, job_storage.database)


def test_a_password_file_others_can_read_is_refused(slurm: FakeSlurm) -> None:
    path = slurm.password_file(0o644)
    result = slurm.run({})
    assert result.returncode == 2
    assert "chmod 600" in result.stderr and str(path) in result.stderr
    assert SECRET_PASSWORD not in result.stdout + result.stderr
    assert not (slurm.record / "argv").exists()


def test_no_password_at_all_is_refused(slurm: FakeSlurm) -> None:
    result = slurm.run({})
    assert result.returncode == 2 and "no PostgreSQL password" in result.stderr
    assert not (slurm.record / "argv").exists()


def test_pgpass_is_left_to_libpq(slurm: FakeSlurm) -> None:
    pgpass = slurm.home / ".pgpass"
    pgpass.write_text(f"*:*:*:search:{SECRET_PASSWORD}\n")
    pgpass.chmod(stat.S_IRUSR | stat.S_IWUSR)
    result = slurm.run({})
    assert result.returncode == 0, result.stderr
    assert (slurm.record / "password").read_text() == "<unset>"


def test_outside_an_array_task_the_script_stops(slurm: FakeSlurm) -> None:
    result = slurm.run({"SLURM_ARRAY_TASK_ID": "", "PGPASSWORD": SECRET_PASSWORD})
    assert result.returncode != 0 and "array task" in result.stderr
    assert not (slurm.record / "argv").exists()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_array_tasks_share_one_study_on_postgres(slurm: FakeSlurm, study_file: Callable[..., Path], password_role: None) -> None:
    """The script for real: two array tasks at once run the real search.run against the local
    PostgreSQL as a role whose password is only in the private file; n_trials is study-wide."""
    user, password = PASSWORD_ROLE
    slurm.password_file(0o600, password)
    slurm.use_python(real=True)
    study = study_file({"n_trials": 3})
    env = {"STUDY": str(study), "PGUSER": user, "PGDATABASE": user, "PGHOST": "127.0.0.1", "SLURM_CPUS_PER_TASK": "1"}
    url = f"postgresql+psycopg2://{user}:{password}@127.0.0.1:5432/{user}"
    tasks = [slurm.start({**env, "SLURM_ARRAY_TASK_ID": task}) for task in ("0", "1")]
    try:
        outputs = [task.communicate(timeout=600) for task in tasks]
        for task, (stdout, stderr) in zip(tasks, outputs):
            assert task.returncode == 0, stdout + stderr
            assert password not in stdout + stderr
        trials = optuna.load_study(study_name=study.stem, storage=url).trials
        assert len([trial for trial in trials if trial.state.is_finished()]) == 3
        assert sorted(re.search(r"--seed (\d+)", stdout).group(1) for stdout, _ in outputs) == ["0", "1"]
    finally:
        for task in tasks:
            if task.poll() is None:
                task.kill()
        try:
            optuna.delete_study(study_name=study.stem, storage=url)
        except KeyError:
            pass

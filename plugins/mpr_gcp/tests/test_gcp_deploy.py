"""deploy/gcp stays true to the code: the job YAML, the task image, and setup.sh run against a stand-in gcloud."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from testkit import require

ROOT = Path(__file__).resolve().parents[3]
GCP = ROOT / "deploy" / "gcp"
SECRET_VARS = {"MPR_GS_ACCESS_KEY_ID", "MPR_GS_SECRET_ACCESS_KEY", "MPR_CALLBACK_SECRET"}

# A stand-in for gcloud: logs every call, answers "not found" to describe, makes an HMAC key,
# keeps the files handed to `run jobs replace` and the build context handed to `builds submit`.
FAKE_GCLOUD = r"""#!/bin/sh
echo "$*" >> "$GCLOUD_LOG"
case "$*" in
  *" describe "*|*" describe") exit 1 ;;
  "storage hmac create"*) printf 'GOOG1EXAMPLEID\tsecretExampleValue\n' ;;
  "run jobs replace"*) cp "$4" "$GCLOUD_DIR/job.applied.yaml" ;;
  "builds submit"*) ls -R "$3" > "$GCLOUD_DIR/context.txt" ;;
  *"--data-file=-"*) cat > "$GCLOUD_DIR/secret-$(echo "$*" | cut -d' ' -f3).txt" ;;
esac
exit 0
"""


def render(text: str, **values: str) -> str:
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    return text


def job_yaml(**values: str) -> dict:
    defaults = {
        "JOB": "mpr-transcode",
        "REGION": "europe-west1",
        "PROJECT_ID": "proj",
        "PARALLELISM": "10",
        "IMAGE": "europe-west1-docker.pkg.dev/proj/mpr/mpr-task:latest",
    }
    return yaml.safe_load(render((GCP / "job.yaml").read_text(), **{**defaults, **values}))


def test_job_yaml_is_a_cloud_run_job_running_the_task_entrypoint():
    from mpr_gcp.settings import GcpSettings

    job = job_yaml()
    assert job["apiVersion"] == "run.googleapis.com/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "mpr-transcode"
    execution = job["spec"]["template"]["spec"]
    assert execution["parallelism"] == 10
    task = execution["template"]["spec"]
    assert task["serviceAccountName"] == "mpr-task@proj.iam.gserviceaccount.com"
    (container,) = task["containers"]
    assert container["command"] == ["python", "-m", "mpr_gcp.task"]
    env = {e["name"]: e for e in container["env"]}
    # the task knows its last attempt only if both sides agree on the retries
    assert task["maxRetries"] == int(env["MPR_GCP_MAX_RETRIES"]["value"]) == GcpSettings().max_retries
    for name in SECRET_VARS:
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["key"] == "latest", name
    assert env["MPR_GS_ENDPOINT_URL"]["value"] == "https://storage.googleapis.com"


def test_setup_sh_substitutes_every_placeholder_of_the_job_yaml():
    placeholders = set(re.findall(r"\$\{([A-Z_]+)\}", (GCP / "job.yaml").read_text()))
    substituted = set(re.findall(r'-e "s\|\\\$\{([A-Z_]+)\}\|', (GCP / "setup.sh").read_text()))
    assert placeholders and placeholders == substituted


def test_task_image_installs_core_s3_and_gcp_and_runs_the_task_unprivileged():
    text = (GCP / "Dockerfile").read_text()
    assert "ffmpeg" in text and "USER mpr" in text
    assert 'ENTRYPOINT ["python", "-m", "mpr_gcp.task"]' in text
    assert re.search(r"pip install .* \. plugins/mpr_storage_s3 plugins/mpr_gcp", text)
    for source in re.findall(r"^COPY (\S+)", text, flags=re.MULTILINE):
        assert (ROOT / source).exists(), source


def test_setup_sh_runs_end_to_end_against_a_stand_in_gcloud(tmp_path):
    require("openssl", shutil.which("openssl") is not None, "setup.sh needs openssl")
    # a copy of deploy/gcp in a minimal repository tree, so the build-context step has files to pack
    repo = tmp_path / "repo"
    shutil.copytree(GCP, repo / "deploy" / "gcp")
    for name in (
        "pyproject.toml",
        "README.md",
        "mpr/__init__.py",
        "mpr/tests/skip.py",
        "plugins/mpr_storage_s3/pyproject.toml",
        "plugins/mpr_gcp/pyproject.toml",
        ".venv/bin/python",
    ):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(0o755)
    log = tmp_path / "gcloud.log"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "GCLOUD_LOG": str(log),
        "GCLOUD_DIR": str(tmp_path),
        "PROJECT_ID": "proj",
        "REGION": "europe-west1",
        "BUCKET": "proj-media",
        "MPR_PUBLIC_URL": "https://mpr.example.com",
    }
    result = subprocess.run(
        ["bash", str(repo / "deploy" / "gcp" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()

    def called(prefix: str) -> list[str]:
        return [c for c in calls if c.startswith(prefix)]

    assert called("storage buckets create gs://proj-media --location=europe-west1")
    assert called("storage buckets add-iam-policy-binding gs://proj-media --member=serviceAccount:mpr-storage@")
    assert "--role=roles/storage.objectUser" in called("storage buckets add-iam-policy-binding")[0]
    assert called("storage hmac create mpr-storage@proj.iam.gserviceaccount.com")
    assert {c.split()[3] for c in called("iam service-accounts create")} == {"mpr-storage", "mpr-task", "mpr-api"}
    assert (tmp_path / "secret-mpr-gcs-hmac-id.txt").read_text() == "GOOG1EXAMPLEID"
    assert len((tmp_path / "secret-mpr-callback-secret.txt").read_text()) == 64
    grants = called("secrets add-iam-policy-binding")
    assert len(grants) == 3 and all("mpr-task@" in g and "secretAccessor" in g for g in grants)
    # the server's role holds exactly what GcpExecutor calls: run (with overrides), get and cancel executions
    (role,) = called("iam roles create mprJobDispatcher")
    perms = set(re.search(r"--permissions=(\S+)", role).group(1).split(","))
    assert perms == {"run.jobs.run", "run.jobs.runWithOverrides", "run.executions.get", "run.executions.cancel"}
    assert called(
        "run jobs add-iam-policy-binding mpr-transcode --region=europe-west1 "
        "--member=serviceAccount:mpr-api@proj.iam.gserviceaccount.com"
    )
    context = (tmp_path / "context.txt").read_text()
    assert "Dockerfile" in context and "mpr_gcp" in context and "README.md" in context
    assert ".venv" not in context and "skip.py" not in context  # only what the image needs
    applied = yaml.safe_load((tmp_path / "job.applied.yaml").read_text())
    assert applied["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "europe-west1-docker.pkg.dev/proj/mpr/mpr-task:latest"
    )
    assert "MPR_GCP_JOB=projects/proj/locations/europe-west1/jobs/mpr-transcode" in result.stdout
    assert not (repo / "deploy" / "gcp" / "job.rendered.yaml").exists()  # the rendered copy is removed

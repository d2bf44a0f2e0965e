"""Project-level contracts: the published manifest schema, the deployment file, the CLI's usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from sohoa.kernel.models import Manifest

REPO = Path(__file__).resolve().parent.parent


def test_published_manifest_schema_matches_the_model():
    published = json.loads((REPO / "docs" / "manifest.schema.json").read_text())
    assert published == Manifest.model_json_schema(by_alias=True), "run: sohoa schema > docs/manifest.schema.json"
    assert published["properties"]["schema"]["const"] == "sohoa.manifest/2"


def test_every_deployment_points_at_its_flow_and_explains_each_parameter():
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = {d["name"] for d in config["deployments"]}
    assert names == {"process-dossier", "process-batch", "process-drop", "watch-inbox", "reprocess", "digitization-report",
                     "archive-check"}
    for deployment in config["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        assert flow.name == deployment["name"] and deployment["description"].strip()
        properties = flow.parameters.properties
        undocumented = [name for name, spec in properties.items() if not spec.get("description")]
        assert not undocumented, (deployment["name"], undocumented)  # the UI's Run form explains every field
    dossier = load_flow_from_entrypoint(str(REPO / "sohoa/orchestration/process.py:process_dossier")).parameters.properties
    assert set(dossier) == {"source", "archive", "procedure", "refresh", "decision", "review_timeout_s"}
    assert "s3://" in dossier["archive"]["description"]
    batch = load_flow_from_entrypoint(str(REPO / "sohoa/orchestration/process.py:process_batch")).parameters.properties
    assert batch["sources"]["type"] == "array"
    rerun = load_flow_from_entrypoint(str(REPO / "sohoa/orchestration/operations.py:reprocess")).parameters.properties
    assert "verify" in json.dumps(rerun["from_step"])  # a drop-down of the steps


def test_cli_usage_errors_are_one_line_with_exit_code_2(tmp_path):
    sohoa = str(Path(sys.executable).parent / "sohoa")
    done = subprocess.run([sohoa, "run", "x.pdf", "--archive", "ftp://nowhere/x"], capture_output=True, text=True)
    assert done.returncode == 2 and "configuration error" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sohoa, "run", "x.pdf", "--archive", str(tmp_path), "--refresh", "nope"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "unknown step 'nope'" in done.stderr


def test_readme_documents_every_setting():
    from sohoa.kernel.settings import Settings
    from sohoa.storage.config import S3Settings

    readme = (REPO / "README.md").read_text()
    names = [f"SOHOA_{name.upper()}" for name in Settings.model_fields]
    names += [f"SOHOA_S3_{name.upper()}" for name in S3Settings.model_fields]
    missing = [name for name in names if f"`{name}`" not in readme]
    assert not missing, f"README configuration reference lacks {missing}"


def test_the_cli_uses_a_configured_prefect_server_and_starts_its_own_only_without_one(tmp_path, monkeypatch):
    """A profile that points at a server wins: `sohoa run` must report there, not to a private server."""
    from sohoa.orchestration.embedded import configured_api_url

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    assert configured_api_url() is None  # no profiles file
    (tmp_path / "profiles.toml").write_text('active = "ops"\n[profiles.ops]\nPREFECT_API_URL = "http://ops:4200/api"\n'
                                           '[profiles.ephemeral]\n')
    assert configured_api_url() == "http://ops:4200/api"
    monkeypatch.setenv("PREFECT_PROFILE", "ephemeral")
    assert configured_api_url() is None
    monkeypatch.setenv("PREFECT_API_URL", "http://env:4200/api")
    assert configured_api_url() == "http://env:4200/api"

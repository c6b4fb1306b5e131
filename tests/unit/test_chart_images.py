"""The local image build (hack/component-images.sh) and the Containerfiles install the same thing:
the same Debian package list and the same install script, with the same entrypoint and user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ["api", "operator"]
LOCAL_BUILD = (REPO / "hack" / "component-images.sh").read_text()


def packages(component: str) -> list[str]:
    lines = (REPO / "containers" / f"{component}.packages").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("component", COMPONENTS)
def test_containerfile_installs_the_package_list_with_the_install_script(component):
    text = (REPO / f"Containerfile.{component}").read_text()
    assert f"COPY containers/{component}.packages containers/install.sh /build/" in text
    assert re.search(rf"grep -v .* /build/{component}\.packages \| xargs apt-get install", text)
    assert "/build/install.sh wheels /src /wheels" in text
    assert "/build/install.sh install /wheels" in text
    assert "USER 65532:65532" in text
    assert f'ENTRYPOINT ["/opt/sandbox/bin/sandbox-{component}"]' in text
    # Nothing else is installed: the only package manager call is the list's.
    assert text.count("apt-get install") == 1 and "pip install" not in text


def test_local_build_uses_the_same_list_script_entrypoint_and_user():
    assert 'COMPONENTS=(api operator)' in LOCAL_BUILD
    assert 'grep -v \'^[[:space:]]*#\' "$REPO_DIR/containers/$1.packages"' in LOCAL_BUILD
    assert '--packages "$(packages_of "$component")"' in LOCAL_BUILD
    assert '"$REPO_DIR/containers/install.sh" wheels "$REPO_DIR" "$WORK/wheels"' in LOCAL_BUILD
    assert '--run "/tmp/install.sh install /tmp/wheels' in LOCAL_BUILD
    assert '--entrypoint "/opt/sandbox/bin/sandbox-$component"' in LOCAL_BUILD
    # images.sh's default user is the Containerfiles' USER.
    assert "RUNTIME_USER=65532:65532" in (REPO / "hack" / "images.sh").read_text()
    assert "pip install" not in LOCAL_BUILD and "apt-get" not in LOCAL_BUILD


@pytest.mark.parametrize("component", COMPONENTS)
def test_package_lists_carry_python_and_venv(component):
    assert {"python3", "python3-venv"} <= set(packages(component))


def test_entrypoints_exist_in_the_distribution():
    pyproject = (REPO / "pyproject.toml").read_text()
    for component in COMPONENTS:
        assert f'sandbox-{component} = "sandbox_{component}.__main__:main"' in pyproject

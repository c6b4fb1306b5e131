"""The catalogue is the one list of languages: the runtime images and the host packages come from it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from sandbox_contract.catalogue import RUNNER_PACKAGES, image_packages, load_catalogue

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "contract" / "sandbox_contract" / "languages.yaml"


def ask_hack(*args: str, languages_file: Path | None = None) -> str:
    """What hack/ reads from the catalogue (hack/lib.sh's `catalogue`, as images.sh runs it)."""
    env = {name: value for name, value in os.environ.items() if name != "SANDBOX_LANGUAGES_FILE"}
    if languages_file is not None:
        env["SANDBOX_LANGUAGES_FILE"] = str(languages_file)
    completed = subprocess.run(["bash", "-c", 'source hack/lib.sh && catalogue "$@"', "catalogue", *args],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True)
    return completed.stdout


def test_every_shipped_language_names_the_packages_of_its_image():
    for language in load_catalogue(SHIPPED).languages.values():
        assert language.packages, language.name
        assert set(RUNNER_PACKAGES) <= set(image_packages(language))


def test_the_cluster_images_are_the_catalogues():
    lines = ask_hack("images").splitlines()
    catalogue = load_catalogue(SHIPPED)
    assert lines == [f"{catalogue.languages[name].image}|{' '.join(image_packages(catalogue.languages[name]))}"
                     for name in catalogue.names()]


def test_a_language_added_to_the_catalogue_gets_an_image_and_host_packages(tmp_path):
    document = yaml.safe_load(SHIPPED.read_text())
    document["languages"]["lua"] = {"version": "5.4", "image": "localhost/sandbox/lua:5.4-bookworm",
                                    "command": ["lua5.4", "{main}"], "main_file": "main.lua", "packages": ["lua5.4"]}
    extended = tmp_path / "languages.yaml"
    extended.write_text(yaml.safe_dump(document))
    assert "localhost/sandbox/lua:5.4-bookworm|lua5.4 python3" in ask_hack("images", languages_file=extended).splitlines()
    assert "lua5.4" in ask_hack("host-packages", languages_file=extended).split()
    assert load_catalogue(extended).find("lua").main_file == "main.lua"

"""The language catalogue: which languages can run, with which image, command and Debian packages.

The catalogue ships with the package (languages.yaml) and is replaced whole by the file named in
SANDBOX_LANGUAGES_FILE (the chart renders its values into such a file). It is the one list of
languages: the cluster's runtime images and the local backend's host packages come from it too
(`python3 -m sandbox_contract.catalogue images | host-packages`, which hack/ runs).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

LANGUAGES_FILE_ENV = "SANDBOX_LANGUAGES_FILE"
# What every runtime image carries besides the language's own packages: the runner's interpreter.
RUNNER_PACKAGES = ("python3",)


class CatalogueError(ValueError):
    """The catalogue file is malformed."""


@dataclass(frozen=True)
class Language:
    name: str
    aliases: tuple[str, ...]
    version: str
    image: str
    command: tuple[str, ...]
    main_file: str
    # Debian (bookworm) packages that provide the language: its image is built from them.
    packages: tuple[str, ...] = ()

    def argv(self, main_path: str) -> list[str]:
        """The program's argv with the code file's path in place of {main}."""
        return [part.replace("{main}", main_path) for part in self.command]


class Catalogue:
    def __init__(self, languages: list[Language]):
        self.languages = {language.name: language for language in languages}
        self._by_alias = {}
        for language in languages:
            for key in (language.name, *language.aliases):
                self._by_alias[key.lower()] = language

    def find(self, name: str) -> Language | None:
        """The language called `name` or one of its aliases, case-insensitively."""
        return self._by_alias.get(name.strip().lower())

    def names(self) -> list[str]:
        return sorted(self.languages)


def parse_catalogue(text: str, *, source: str) -> Catalogue:
    """Parse catalogue YAML; errors name the source and the entry at fault."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CatalogueError(f"{source}: not valid YAML: {error}") from error
    entries = (document or {}).get("languages") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise CatalogueError(f"{source}: expected a mapping 'languages' with at least one entry")
    languages = []
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise CatalogueError(f"{source}: language {name!r} must be a mapping")
        try:
            command = entry["command"]
            if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
                raise CatalogueError(f"{source}: language {name!r}: 'command' must be a non-empty list of strings")
            languages.append(
                Language(
                    name=str(name),
                    aliases=tuple(str(alias) for alias in entry.get("aliases") or ()),
                    version=str(entry["version"]),
                    image=str(entry["image"]),
                    command=tuple(command),
                    main_file=str(entry["main_file"]),
                    packages=tuple(str(package) for package in entry.get("packages") or ()),
                )
            )
        except KeyError as missing:
            raise CatalogueError(f"{source}: language {name!r} lacks the field {missing}") from None
    return Catalogue(languages)


def load_catalogue(path: str | os.PathLike[str] | None = None) -> Catalogue:
    """The catalogue from `path`, else from $SANDBOX_LANGUAGES_FILE, else the one shipped."""
    path = path or os.environ.get(LANGUAGES_FILE_ENV)
    if path:
        return parse_catalogue(Path(path).read_text(), source=str(path))
    shipped = resources.files("sandbox_contract").joinpath("languages.yaml")
    return parse_catalogue(shipped.read_text(), source="languages.yaml (shipped)")


def image_packages(language: Language) -> tuple[str, ...]:
    """The Debian packages of the language's runtime image: its own and the runner's."""
    return tuple(dict.fromkeys((*language.packages, *RUNNER_PACKAGES)))


def main(argv: list[str]) -> int:
    """`images`: a line `IMAGE|PACKAGES` per language that lists packages, for hack/images.sh;
    `host-packages`: the packages the local backend needs on its host for every language."""
    catalogue = load_catalogue()
    languages = [catalogue.languages[name] for name in catalogue.names() if catalogue.languages[name].packages]
    if argv == ["images"]:
        for language in languages:
            print(f"{language.image}|{' '.join(image_packages(language))}")
    elif argv == ["host-packages"]:
        print(" ".join(dict.fromkeys(package for language in languages for package in image_packages(language))))
    else:
        print("usage: python3 -m sandbox_contract.catalogue images | host-packages", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

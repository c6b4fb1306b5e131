"""The language catalogue: which languages can run, with which image, commands and Debian packages.

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


# What the catalogue's commands and variables may name: the code file's path, the memory limit in MiB.
PLACEHOLDERS = ("{main}", "{memory_mb}")


@dataclass(frozen=True)
class Language:
    name: str
    aliases: tuple[str, ...]
    version: str
    image: str
    main_file: str
    run: tuple[str, ...]
    # The compile stage's argv, run in the work directory before the program; None: nothing to compile.
    compile: tuple[str, ...] | None = None
    # Variables both stages get (GOCACHE, GOMEMLIMIT...); a request's env cannot override them.
    env: tuple[tuple[str, str], ...] = ()
    # Debian (bookworm) packages that provide the language: its image is built from them.
    packages: tuple[str, ...] = ()
    # What prints the toolchain's version; by default the first stage's program with --version.
    version_command: tuple[str, ...] | None = None
    # Directories under /etc the toolchain reads (a JVM's security settings, mono's config): the local
    # backend binds them into its sandboxes read-only; an image has them anyway.
    config_dirs: tuple[str, ...] = ()

    @property
    def version_argv(self) -> tuple[str, ...]:
        return self.version_command or ((self.compile or self.run)[0], "--version")

    @property
    def compiled(self) -> bool:
        return self.compile is not None

    @property
    def executables(self) -> tuple[str, ...]:
        """The programs the language needs on PATH: each stage's first word, unless a path in the
        work directory (the compiled program)."""
        stages = (self.compile, self.run) if self.compile else (self.run,)
        return tuple(dict.fromkeys(stage[0] for stage in stages if "/" not in stage[0]))

    def run_argv(self, main_path: str, memory_mb: int) -> list[str]:
        return fill(self.run, main_path, memory_mb)

    def compile_argv(self, main_path: str, memory_mb: int) -> list[str] | None:
        return None if self.compile is None else fill(self.compile, main_path, memory_mb)

    def environment(self, main_path: str, memory_mb: int) -> dict[str, str]:
        names, values = zip(*self.env) if self.env else ((), ())
        return dict(zip(names, fill(values, main_path, memory_mb)))


def fill(words: tuple[str, ...], main_path: str, memory_mb: int) -> list[str]:
    """`words` with the placeholders replaced: {main} by the code file's path, {memory_mb} by the limit."""
    return [word.replace("{main}", main_path).replace("{memory_mb}", str(memory_mb)) for word in words]


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

    def env_names(self) -> frozenset[str]:
        """The variables some runtime sets (a request may not set them, whatever its language)."""
        return frozenset(name for language in self.languages.values() for name, _ in language.env)


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
        where = f"{source}: language {name!r}"
        unknown = sorted(set(entry) - ENTRY_FIELDS)
        if unknown:
            raise CatalogueError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(ENTRY_FIELDS))})")
        try:
            env = entry.get("env") or {}
            if not isinstance(env, dict) or not all(isinstance(value, str) for value in env.values()):
                raise CatalogueError(f"{where}: 'env' must be a mapping of strings")
            languages.append(
                Language(
                    name=str(name),
                    aliases=tuple(str(alias) for alias in entry.get("aliases") or ()),
                    version=str(entry["version"]),
                    image=str(entry["image"]),
                    main_file=str(entry["main_file"]),
                    run=_argv(entry["run"], f"{where}: 'run'"),
                    compile=None if entry.get("compile") is None else _argv(entry["compile"], f"{where}: 'compile'"),
                    env=tuple(sorted((str(key), value) for key, value in env.items())),
                    packages=tuple(str(package) for package in entry.get("packages") or ()),
                    version_command=None if entry.get("version_command") is None
                    else _argv(entry["version_command"], f"{where}: 'version_command'"),
                    config_dirs=_config_dirs(entry.get("config_dirs") or [], where),
                )
            )
        except KeyError as missing:
            raise CatalogueError(f"{where} lacks the field {missing}") from None
    images: dict[str, tuple[str, ...]] = {}
    for language in languages:
        if images.setdefault(language.image, language.packages) != language.packages:
            raise CatalogueError(f"{source}: the languages sharing the image {language.image} must list the same packages")
    return Catalogue(languages)


ENTRY_FIELDS = frozenset({"aliases", "version", "image", "main_file", "compile", "run", "env", "packages",
                          "version_command", "config_dirs"})


def _config_dirs(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(path, str) and path.startswith("/etc/") and ".." not in path.split("/") for path in value):
        raise CatalogueError(f"{where}: 'config_dirs' must be a list of paths under /etc/ (without '..')")
    return tuple(value)


def _argv(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(word, str) and word for word in value):
        raise CatalogueError(f"{where} must be a non-empty list of non-empty strings")
    return tuple(value)


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
    """`images`: a line `IMAGE|PACKAGES` per image of the languages that list packages, for hack/images.sh;
    `host-packages`: the packages the local backend needs on its host for every language;
    `markdown`: the README's table of the languages."""
    catalogue = load_catalogue()
    languages = [catalogue.languages[name] for name in catalogue.names() if catalogue.languages[name].packages]
    if argv == ["images"]:
        for image, packages in dict((language.image, image_packages(language)) for language in languages).items():
            print(f"{image}|{' '.join(packages)}")
    elif argv == ["host-packages"]:
        print(" ".join(dict.fromkeys(package for language in languages for package in image_packages(language))))
    elif argv == ["markdown"]:
        print(markdown_table(catalogue))
    else:
        print("usage: python3 -m sandbox_contract.catalogue images | host-packages | markdown", file=sys.stderr)
        return 2
    return 0


def markdown_table(catalogue: Catalogue) -> str:
    """The README's table of the catalogue's languages, in the catalogue's order."""
    def code(words: tuple[str, ...]) -> str:
        return ", ".join(f"`{word}`" for word in words) if words else "—"

    def command(argv: tuple[str, ...] | None) -> str:
        return f"`{' '.join(argv)}`" if argv else "—"

    rows = ["| language | aliases | version | compile | run | Debian packages |", "| --- | --- | --- | --- | --- | --- |"]
    for language in catalogue.languages.values():
        cells = [f"`{language.name}`", code(language.aliases), language.version, command(language.compile),
                 command(language.run), code(language.packages)]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

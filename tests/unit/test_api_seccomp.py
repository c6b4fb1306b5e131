"""The local backend's seccomp filter: it compiles, every name is known here, the README lists them."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from sandbox_api.backends.seccomp import DENIED_SYSCALLS, build_filter_bpf

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_filter_compiles_to_bpf():
    program = build_filter_bpf()
    assert program and len(program) % 8 == 0, "a BPF program is a whole number of 8-byte instructions"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="some names exist only on x86_64")
def test_every_denied_name_is_a_syscall_libseccomp_knows():
    import pyseccomp

    unknown = [name for name in DENIED_SYSCALLS if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) < 0]
    assert not unknown, f"misspelt or unknown: {unknown}"


def test_the_readme_lists_every_denied_call():
    text = README.read_text()
    missing = [name for name in (*DENIED_SYSCALLS, "clone3") if f"`{name}`" not in text]
    assert not missing, f"README.md's 'How it is secured' does not list {missing}"

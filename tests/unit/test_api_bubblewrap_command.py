"""The bubblewrap command line: every isolation flag present, no writable host path."""

from __future__ import annotations

import pytest

from sandbox_api.backends.bubblewrap import DataFds, bwrap_argv, launch_argv, prepare_host
from sandbox_api.backends.cgroups import SandboxCgroup


@pytest.fixture
def host(tmp_path) -> DataFds:
    """One launch's descriptors: the argv names them."""
    runner = tmp_path / "runner.py"
    runner.write_text("print('runner')")
    fds = DataFds.open(prepare_host(runner))
    yield fds
    fds.close()


def _argv(fds: DataFds) -> list[str]:
    return bwrap_argv(fds, workdir="/sandbox/work")


def test_every_isolation_flag_is_present(host):
    argv = _argv(host)
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
                 "--die-with-parent", "--new-session", "--disable-userns", "--clearenv", "--as-pid-1"):
        assert flag in argv, flag
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--uid") + 1] == "65534"


def test_host_paths_are_only_bound_read_only(host):
    argv = _argv(host)
    assert not {"--bind", "--bind-try", "--dev-bind", "--dev-bind-try"} & set(argv)
    sources = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--ro-bind"]
    assert "/usr" in sources
    assert all(source == "/usr" or source.startswith("/etc/") for source in sources), sources


def test_our_files_and_the_seccomp_filter_come_from_memory_not_host_paths(host):
    argv = _argv(host)
    copied = {argv[i + 2]: int(argv[i + 1]) for i, arg in enumerate(argv) if arg == "--ro-bind-data"}
    assert copied == host.files and set(copied) == {"/sandbox/runner.py", "/etc/passwd", "/etc/group"}
    assert argv[argv.index("--seccomp") + 1] == str(host.seccomp)


def test_root_and_dev_are_remounted_read_only_after_the_writable_mounts(host):
    argv = _argv(host)
    remounted = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--remount-ro"]
    assert remounted == ["/dev", "/"]
    writable = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--tmpfs"]
    assert writable == ["/dev/shm", "/tmp", "/sandbox/work"]
    assert all(argv[argv.index(path) - 3] == "--size" for path in writable)


def test_the_runner_reads_its_spec_from_stdin_without_the_pods_isolation_gate(host):
    argv = _argv(host)
    assert argv[argv.index("--") + 1:] == ["python3", "-I", "-S", "/sandbox/runner.py", "-"]


def test_the_launch_joins_the_cgroups_before_anything_runs(host, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    cgroup = SandboxCgroup("sbx-test")
    argv = launch_argv(host, workdir="/w", cgroup=cgroup, memory_bytes=1 << 20)
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[4:6] == cgroup.procs_files
    dropped = argv.index("setpriv")
    assert argv.index("bwrap") > dropped and "--reuid=65534" in argv[dropped:argv.index("bwrap")]
    assert "--core=0" in argv

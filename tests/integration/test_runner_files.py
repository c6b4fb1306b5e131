"""The runner's files, for real: inputs materialised safely, outputs collected without following links."""

import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest

from sandbox_runner import RUNNER_PATH, read_result, runner_command
from tests.integration.test_runner_process import python_program, run_runner

BINARY = bytes(range(256)) * 4


def test_nested_text_and_binary_inputs_reach_the_program_byte_for_byte(tmp_path):
    files = [
        {"path": "data.txt", "content": "héllo\n", "encoding": "utf-8"},
        {"path": "deep/er/still/blob.bin", "content": base64.b64encode(BINARY).decode(), "encoding": "base64"},
        {"path": "deep/sibling.txt", "content": ""},
    ]
    program = python_program("""
        import hashlib
        for path in ("data.txt", "deep/er/still/blob.bin", "deep/sibling.txt"):
            print(path, hashlib.sha256(open(path, "rb").read()).hexdigest())
    """)
    result = run_runner(tmp_path / "w", program, files=files)
    expected = {
        "data.txt": hashlib.sha256("héllo\n".encode()).hexdigest(),
        "deep/er/still/blob.bin": hashlib.sha256(BINARY).hexdigest(),
        "deep/sibling.txt": hashlib.sha256(b"").hexdigest(),
    }
    assert dict(line.split() for line in result["stdout"].splitlines()) == expected


def test_created_and_changed_files_come_back_unchanged_inputs_do_not(tmp_path):
    files = [{"path": "keep.txt", "content": "same"}, {"path": "edit.txt", "content": "before"},
             {"path": "gone.txt", "content": "bye"}]
    program = python_program("""
        import os
        open("edit.txt", "w").write("after")
        os.remove("gone.txt")
        os.makedirs("out/nested")
        open("out/nested/report.txt", "w").write("ünïcode ✓\\n")
        open("out/image.bin", "wb").write(bytes(range(256)) * 4)
        open("empty.txt", "w").close()
    """)
    result = run_runner(tmp_path / "w", program, files=files)
    assert result["output_files"] == {
        "edit.txt": "after",
        "empty.txt": "",
        "out/image.bin": {"content": base64.b64encode(BINARY).decode(), "encoding": "base64"},
        "out/nested/report.txt": "ünïcode ✓\n",
    }
    assert not result["output_files_truncated"]


def test_a_planted_link_to_a_file_or_directory_outside_is_neither_followed_nor_returned(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    program = python_program(f"""
        import os
        os.symlink({str(outside / "secret.txt")!r}, "leak.txt")
        os.symlink({str(outside)!r}, "leakdir")
        os.symlink("/etc/passwd", "passwd")
        os.mkdir("real")
        os.symlink({str(outside / "secret.txt")!r}, "real/inner-leak")
        open("real/ok.txt", "w").write("mine")
    """)
    result = run_runner(tmp_path / "w", program)
    assert result["status"] == "completed"
    assert result["output_files"] == {"real/ok.txt": "mine"}
    assert "host secret" not in str(result)


def test_a_fifo_socket_or_device_in_the_workdir_does_not_hang_collection(tmp_path):
    program = python_program("""
        import os, socket
        os.mkfifo("pipe")
        socket.socket(socket.AF_UNIX).bind("sock")
        open("plain.txt", "w").write("x")
    """)
    result = run_runner(tmp_path / "w", program, timeout_seconds=30)
    assert result["status"] == "completed"
    assert result["output_files"] == {"plain.txt": "x"}


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt", "/tmp/absolute-escape.txt", "a//b", "./a"])
def test_traversal_paths_are_refused_before_anything_runs(tmp_path, path):
    result = run_runner(tmp_path / "w", ["bash", "-c", "echo ran"], files=[{"path": path, "content": "x"}])
    assert result["status"] == "error_setup"
    assert path in result["reason"]
    assert "must be relative" in result["reason"] or "must be normalised" in result["reason"]
    assert result["stdout"] == "" and result["exit_code"] is None
    assert not (tmp_path / "escape.txt").exists()


def test_inputs_are_never_written_through_a_link_already_in_the_workdir(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("original")
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "linkdir").symlink_to(outside)
    (workdir / "linkfile").symlink_to(outside / "target.txt")

    through_dir = run_runner(workdir, ["true"], files=[{"path": "linkdir/x.txt", "content": "x"}])
    assert through_dir["status"] == "error_setup"
    assert "'linkdir' is a link or a file, not a directory" in through_dir["reason"]
    onto_link = run_runner(workdir, ["true"], files=[{"path": "linkfile", "content": "overwritten"}])
    assert onto_link["status"] == "error_setup" and "already exists" in onto_link["reason"]
    assert sorted(os.listdir(outside)) == ["target.txt"]
    assert (outside / "target.txt").read_text() == "original"


def test_duplicate_and_conflicting_input_paths_are_refused(tmp_path):
    file_x = {"path": "x", "content": "1"}
    twice = run_runner(tmp_path / "a", ["true"], files=[file_x, {"path": "x", "content": "2"}])
    assert twice["status"] == "error_setup" and "given twice" in twice["reason"]
    under_file = run_runner(tmp_path / "b", ["true"], files=[file_x, {"path": "x/y", "content": "2"}])
    assert under_file["status"] == "error_setup" and "not a directory" in under_file["reason"]


def test_output_file_caps_on_count_size_and_total(tmp_path):
    program = python_program("""
        for name in "abcde":
            open(name + ".txt", "w").write(name * 100)
        open("huge.txt", "w").write("h" * 5000)
    """)
    by_count = run_runner(tmp_path / "a", program, limits={"output_files": 2})
    assert sorted(by_count["output_files"]) == ["a.txt", "b.txt"] and by_count["output_files_truncated"]
    by_size = run_runner(tmp_path / "b", program, limits={"output_file_bytes": 1000})
    assert "huge.txt" not in by_size["output_files"] and len(by_size["output_files"]) == 5
    assert by_size["output_files_truncated"]
    by_total = run_runner(tmp_path / "c", program, limits={"output_files_bytes": 250})
    assert sorted(by_total["output_files"]) == ["a.txt", "b.txt"] and by_total["output_files_truncated"]


def test_stdout_and_stderr_caps_flag_truncation(tmp_path):
    program = ["bash", "-c", "head -c 5000 /dev/zero | tr '\\0' o; head -c 300 /dev/zero | tr '\\0' e >&2"]
    result = run_runner(tmp_path, program, limits={"stdout_bytes": 1000, "stderr_bytes": 300})
    assert result["stdout"] == "o" * 1000 and result["stdout_truncated"]
    assert result["stderr"] == "e" * 300 and not result["stderr_truncated"]


def test_the_whole_result_fits_result_bytes_even_when_escaping_inflates_it(tmp_path):
    program = python_program("""
        import sys
        sys.stdout.write("é\\u0001" * 20000)
        sys.stderr.write("\\\\" * 20000)
        open("out.txt", "w").write('"' * 3000)
    """)
    budget = 8192
    result = run_runner(tmp_path / "w", program, limits={"result_bytes": budget, "stdout_bytes": 100_000,
                                                         "stderr_bytes": 100_000})
    assert len(json.dumps(result, separators=(",", ":"))) <= budget  # ASCII-escaped, as the runner writes it
    assert result["stdout_truncated"] and result["stderr_truncated"] and result["output_files_truncated"]
    assert result["status"] == "completed"


@pytest.mark.parametrize(
    ("spec_text", "reason"),
    [
        ("not json at all", "not valid UTF-8 JSON"),
        ('{"command": ["true"], "workdir": "/tmp/x", "timeout_seconds": 1, "extra": 1}', "unknown field 'extra'"),
        ('{"command": ["true"], "workdir": "/tmp/x"}', "'timeout_seconds' is required"),
        ("\xff\xfe", "not valid UTF-8 JSON"),
    ],
)
def test_an_invalid_spec_still_yields_one_error_setup_line(spec_text, reason):
    completed = subprocess.run(runner_command(str(RUNNER_PATH), "-", python=sys.executable),
                               input=spec_text.encode("latin-1"), capture_output=True, timeout=60)
    assert completed.stdout.count(b"\n") == 1
    result = read_result(completed.stdout.decode())
    assert result["status"] == "error_setup" and reason in result["reason"]


def test_the_spec_can_come_from_a_file_and_a_missing_file_is_reported(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"command": ["echo", "from a file"], "workdir": str(tmp_path / "w"),
                                     "timeout_seconds": 5, "env": {"PATH": "/usr/bin:/bin"}}))
    for path, expected in ((spec_path, "completed"), (tmp_path / "missing.json", "error_setup")):
        completed = subprocess.run(runner_command(str(RUNNER_PATH), str(path), python=sys.executable),
                                   capture_output=True, timeout=60)
        result = read_result(completed.stdout.decode())
        assert result["status"] == expected
    assert result["reason"] == f"cannot read the spec: No such file or directory: {tmp_path / 'missing.json'}"


def test_a_removed_spec_is_gone_before_the_program_starts_and_one_that_cannot_be_removed_is_not_run(tmp_path):
    handoff = tmp_path / "handoff"
    handoff.mkdir()
    spec_path = handoff / "spec.json"
    spec = {"command": ["sh", "-c", f"test -e {spec_path} && echo still there || echo gone"],
            "workdir": str(tmp_path / "w"), "timeout_seconds": 5, "env": {"PATH": "/usr/bin:/bin"}}
    spec_path.write_text(json.dumps(spec))
    command = runner_command(str(RUNNER_PATH), str(spec_path), python=sys.executable, remove_spec=True)
    result = read_result(subprocess.run(command, capture_output=True, timeout=60).stdout.decode())
    assert (result["status"], result["stdout"]) == ("completed", "gone\n")
    # A file nobody can unlink, root included: the spec comes through the runner's own stdin.
    undeletable = runner_command(str(RUNNER_PATH), "/proc/self/fd/0", python=sys.executable, remove_spec=True)
    completed = subprocess.run(undeletable, input=json.dumps(spec).encode(), capture_output=True, timeout=60)
    result = read_result(completed.stdout.decode())
    assert result["status"] == "error_setup" and result["reason"].startswith("cannot remove the spec once read"), result


def test_unwritable_files_and_work_directories_are_setup_errors(tmp_path):
    (tmp_path / "plain-file").write_text("")
    bad_workdir = run_runner(tmp_path / "plain-file" / "w", ["true"])
    assert bad_workdir["status"] == "error_setup"
    assert bad_workdir["reason"] == f"cannot use the work directory '{tmp_path}/plain-file/w': Not a directory"
    long_name = run_runner(tmp_path / "w", ["true"], files=[{"path": "n" * 300, "content": ""}])
    assert long_name["status"] == "error_setup" and "cannot write it: File name too long" in long_name["reason"]


def test_output_file_names_that_would_drive_a_terminal_are_skipped_and_flagged(tmp_path):
    program = python_program("""
        for name in ("ok.txt", "new\\nline", "title\\x1b]0;owned\\x07", "del\\x7f", "csi\\x9b2J"):
            open(name, "w").write("x")
    """)
    result = run_runner(tmp_path / "w", program)
    assert result["output_files"] == {"ok.txt": "x"}, result
    assert result["output_files_truncated"] is True

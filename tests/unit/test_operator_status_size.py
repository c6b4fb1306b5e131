"""The status is sized as the API server stores it and as the client sends it, and cut to fit.

The expected sizes are what Go's encoding/json (the API server's) writes for each value.
"""

from __future__ import annotations

import pytest

from sandbox_contract.crd import STATUS_BUDGET_BYTES, sent_size, stored_size
from sandbox_contract.result import Phase, Result
from sandbox_operator.outcomes import fit_status


@pytest.mark.parametrize("value, stored, sent", [
    ("<", 8, 3),                   # "\u003c"
    ("a&b>", 16, 6),
    ("é", 4, 8),                   # two bytes of UTF-8 stored, "\u00e9" sent
    ("\u2028", 8, 8),
    ("😀", 6, 14),                 # four bytes stored, a surrogate pair of escapes sent
    ("\ud800", 5, 8),              # a lone surrogate is stored as U+FFFD
    ("\n\t\b\f", 10, 10),
    ("\x01", 8, 8),
    ("\x7f", 3, 8),
    ({"a": [1, True, None]}, 19, 22),
])
def test_sizes_as_stored_and_as_sent(value, stored, sent):
    assert stored_size(value) == stored
    assert sent_size(value) == sent


def status(stdout: str = "", stderr: str = "", files: list[dict] | None = None) -> dict:
    return {**Result(status=Phase.COMPLETED, exit_code=0, stdout=stdout, stderr=stderr).to_status(),
            "outputFiles": files or []}


def test_a_status_within_the_budget_is_left_alone():
    small = status(stdout="<b>hello</b>\n", files=[{"name": "a.txt", "content": "x", "encoding": "utf-8"}])
    assert fit_status(small) == small


def test_angle_brackets_on_stdout_are_cut_to_the_stored_budget_and_flagged():
    """512 KiB of '<' is 512 KiB to the runner and 3 MiB to the API server."""
    flood = status(stdout="<" * 512 * 1024, stderr="warning\n")
    assert stored_size(flood) > 3 * STATUS_BUDGET_BYTES
    fitted = fit_status(flood)
    assert STATUS_BUDGET_BYTES - 6 < stored_size(fitted) <= STATUS_BUDGET_BYTES
    assert sent_size(fitted) <= STATUS_BUDGET_BYTES
    assert fitted["stdoutTruncated"] and set(fitted["stdout"]) == {"<"}
    assert (fitted["stderr"], fitted["stderrTruncated"], fitted["outputFilesTruncated"]) == ("warning\n", False, False)


def test_non_ascii_output_is_cut_to_what_the_client_may_send():
    fitted = fit_status(status(stdout="😀" * 200_000), budget=64 * 1024)
    assert fitted["stdoutTruncated"]
    assert 64 * 1024 - 14 < sent_size(fitted) <= 64 * 1024
    assert stored_size(fitted) < sent_size(fitted)


def test_output_files_go_first_largest_first_in_their_order():
    files = [{"name": f"f{index}", "content": "&" * size, "encoding": "utf-8"}
             for index, size in enumerate([100, 3000, 200, 2000])]
    fitted = fit_status(status(stdout="out", files=files), budget=3000)
    assert [item["name"] for item in fitted["outputFiles"]] == ["f0", "f2"]
    assert fitted["outputFilesTruncated"] and not fitted["stdoutTruncated"]
    assert fitted["stdout"] == "out"
    assert stored_size(fitted) <= 3000


def test_the_larger_stream_is_cut_first_then_the_other():
    fitted = fit_status(status(stdout="o" * 3000, stderr="<" * 3000, files=[
        {"name": "big", "content": "x" * 5000, "encoding": "utf-8"}]), budget=2500)
    assert fitted["outputFiles"] == [] and fitted["outputFilesTruncated"]
    assert fitted["stderr"] == "" and fitted["stderrTruncated"]  # 18 KB stored: cut to nothing first
    assert fitted["stdoutTruncated"] and 0 < len(fitted["stdout"]) < 3000 and set(fitted["stdout"]) == {"o"}
    assert stored_size(fitted) <= 2500

"""The attack set (tests/attack_run.py) through ``sohoa run``: each hostile input or fault is answered with a
typed reason or archived, the input intact, no traceback, no secret copied, memory and time bounded.

Its table, from one run, is docs/attacks.md.
"""

from __future__ import annotations

import pytest

from tests.attack_run import ATTACKS, MAX_RSS, MAX_SECONDS, run_attacks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return {r.attack.name: r for r in run_attacks(ATTACKS, tmp_path_factory.mktemp("attacks"))}


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_answered(attack, results):
    result = results[attack.name]
    assert not result.traceback, result.line
    assert result.typed, (result.status, result.code, result.line)
    assert result.intact and not result.leaked_secret
    assert result.peak_rss < MAX_RSS, f"{result.peak_rss >> 20} MB"
    assert result.seconds < MAX_SECONDS


def test_each_run_exits_with_the_code_of_its_worst_outcome(results):
    worst = {}
    for r in results.values():
        folder = "batch" if r.attack.fault is None and not r.attack.env else r.attack.name
        code = {"refused": 3, "failed": 4}.get(r.status, 0)
        worst[folder] = (max(worst.get(folder, (0, 0))[0], code), r.exit)
    assert all(expected == got for expected, got in worst.values()), worst

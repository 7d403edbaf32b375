"""The test suite's own rules: a missing prerequisite is a skip with its reason, and a failure on
CI, where every prerequisite must be present."""

from __future__ import annotations

import pytest

from conftest import missing, on_ci


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_a_missing_prerequisite_fails_on_ci(value, monkeypatch):
    monkeypatch.setenv("CI", value)
    assert on_ci()
    with pytest.raises(pytest.fail.Exception, match="chromium is not installed; CI must provide"):
        missing("chromium is not installed")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_a_missing_prerequisite_is_skipped_elsewhere(value, monkeypatch):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not on_ci()
    with pytest.raises(pytest.skip.Exception, match="^real data folder x is absent$"):
        missing("real data folder x is absent")

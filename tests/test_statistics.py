"""repmatch.statistics against figures worked out by hand (the arithmetic is in the comments)."""

import math

import pytest

from repmatch.errors import RepmatchError
from repmatch.statistics import (
    VERDICTS,
    Comparison,
    Summary,
    TTest,
    bootstrap_ci,
    compare,
    compare_summaries,
    compare_to_value,
    holm,
    one_sample_test,
    verdict,
    welch_from_summary,
    welch_test,
    with_holm,
    wording,
)


def test_welch_df4_by_hand():
    # a = 1, 2, 3: mean 2, s² = 1; b = 3, 4, 5: mean 4, s² = 1; n = 3 each.
    # se² = 1/3 + 1/3 = 2/3, t = (2 − 4) / √(2/3) = −√6 = −2.449490.
    # ν = (2/3)² / ((1/3)²/2 + (1/3)²/2) = (4/9) / (1/9) = 4.
    # Student t with ν = 4: F(t) = 1/2 + (3/8) (t/√(1 + t²/4)) (1 − t²/(12 (1 + t²/4))).
    # For t² = 6: t/√(1 + t²/4) = √6/√2.5 = 1.549193; 1 − t²/(12 (1 + t²/4)) = 1 − 6/30 = 0.8;
    # F(√6) = 1/2 + (3/8)(1.549193)(0.8) = 0.964758, two-sided p = 2 (1 − F) = 0.070484.
    result = welch_test([1, 2, 3], [3, 4, 5])
    assert result.t == pytest.approx(-math.sqrt(6))
    assert result.df == pytest.approx(4.0)
    assert result.p == pytest.approx(0.070484, abs=1e-6)


def test_welch_df2_by_hand():
    # a = 0, 2: mean 1, s² = 2; b = 4, 6: mean 5, s² = 2; se² = 2/2 + 2/2 = 2, t = −4/√2 = −2√2.
    # ν = 2² / (1²/1 + 1²/1) = 2. For ν = 2 the two-sided p is 1 − |t|/√(2 + t²) = 1 − √8/√10
    # = 1 − 0.894427 = 0.105573.
    result = welch_test([0, 2], [4, 6])
    assert result.df == pytest.approx(2.0)
    assert result.p == pytest.approx(1 - math.sqrt(8 / 10), abs=1e-9)


def test_welch_unequal_variances_df_by_hand():
    # a = 1, 2, 3 (s² = 1), b = 4, 6, 8 (s² = 4): se² = 1/3 + 4/3 = 5/3, t = −4/√(5/3);
    # ν = (5/3)² / ((1/3)²/2 + (4/3)²/2) = (25/9) / (17/18) = 50/17 = 2.941176.
    result = welch_test([1, 2, 3], [4, 6, 8])
    assert result.t == pytest.approx(-4 / math.sqrt(5 / 3))
    assert result.df == pytest.approx(50 / 17)
    assert 0.05 < result.p < 0.1  # between the ν = 2 and ν = 4 figures for |t| = 3.10


def test_welch_from_summary_matches_raw():
    assert welch_from_summary(Summary(2, 1, 3), Summary(4, 1, 3)).p == pytest.approx(
        welch_test([1, 2, 3], [3, 4, 5]).p
    )


def test_compare_summaries_t_interval_by_hand():
    # the df = 2 example above: diff −4, se = √2; t_{2, 0.975} = 4.302653 (for ν = 2,
    # t_q = (2q − 1) √(2 / (1 − (2q − 1)²)) = 0.95 √(2 / 0.0975)), half width 6.084905.
    result = compare_summaries(Summary(1, math.sqrt(2), 2), Summary(5, math.sqrt(2), 2))
    half = 0.95 * math.sqrt(2 / (1 - 0.95**2)) * math.sqrt(2)
    assert result.ci == pytest.approx((-4 - half, -4 + half))
    assert result.p == pytest.approx(1 - math.sqrt(8 / 10))


def test_one_sample_by_hand():
    # x = 1, 2, 3 against 0: t = 2 / (1/√3) = 2√3 = 3.4641, ν = 2;
    # p = 1 − |t|/√(2 + t²) = 1 − √12/√14 = 0.074180.
    result = one_sample_test([1, 2, 3], 0.0)
    assert result.t == pytest.approx(2 * math.sqrt(3))
    assert result.df == 2
    assert result.p == pytest.approx(1 - math.sqrt(12 / 14), abs=1e-9)


def test_paired_is_one_sample_of_differences():
    # differences (3−1, 5−2, 7−3) = 2, 3, 4: mean 3, s = 1, t = 3√3, ν = 2, p = 1 − √27/√29.
    result = compare([3, 5, 7], [1, 2, 3], paired=True)
    assert result.diff == pytest.approx(3.0)
    assert result.p == pytest.approx(1 - math.sqrt(27 / 29), abs=1e-9)


def test_degenerate_cases_give_a_stated_result():
    one = welch_test([0.7], [0.6, 0.65])
    assert one.p is None and "1 run" in one.note
    same = welch_test([0.33, 0.33], [0.33, 0.33, 0.33])
    assert same.p == 1.0 and "constant" in same.note
    apart = welch_test([0.33, 0.33], [0.35, 0.35])
    assert apart.p == 0.0 and apart.t == -math.inf
    # one group constant, the other not: an ordinary Welch test with ν = n − 1 of the other
    # (a = 1, 3: s² = 2; b = 0, 0: se² = 1, t = 2, ν = 1; Cauchy: p = 1 − (2/π) atan 2 = 0.295167)
    half = welch_test([1, 3], [0, 0])
    assert half.df == pytest.approx(1.0)
    assert half.p == pytest.approx(1 - 2 / math.pi * math.atan(2))
    assert verdict(compare([0.7], [0.6, 0.65]), +1) == "not decidable here"


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # sorted 0.01, 0.5, 0.6 → 0.03, min(1, 1.0) = 1.0, max(1.0, 0.6) = 1.0
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])
    # None is not part of the family: m = 2 → 0.04, 0.04 ... sorted 0.02, 0.04 → 0.04, 0.04
    assert holm([0.04, None, 0.02]) == [pytest.approx(0.04), None, pytest.approx(0.04)]


@pytest.mark.parametrize("bad", [math.nan, 1.5, -0.1])
def test_holm_refuses_what_is_not_a_p_value(bad):
    """Fifth pass: ``holm([nan, 0.01])`` gave [1.0, 1.0] (the NaN broke the sort), ``holm([1.5])``
    gave [1.0]."""
    with pytest.raises(RepmatchError, match="p-values must lie in"):
        holm([bad, 0.01])


def test_bootstrap_ci_by_hand():
    # a = 0, 1 resampled: mean 0 (prob 1/4), 0.5 (1/2), 1 (1/4); b = 0 always.
    # The 2.5th percentile of that distribution is 0 and the 97.5th is 1.
    assert bootstrap_ci([0, 1], [0], seed=3) == (0.0, 1.0)


def test_bootstrap_ci_properties():
    a, b = [0.73, 0.75, 0.72, 0.73, 0.73], [0.73, 0.72, 0.65, 0.64, 0.76]
    ci = bootstrap_ci(a, b, seed=0)
    diff = sum(a) / 5 - sum(b) / 5
    assert ci[0] <= diff <= ci[1]
    assert bootstrap_ci(a, b, seed=0) == ci
    assert bootstrap_ci(a, b, seed=1) != ci
    assert bootstrap_ci([2, 2, 2], [1, 1], seed=0) == (1.0, 1.0)
    narrow = bootstrap_ci(a, b, seed=0, level=0.5)
    assert ci[0] <= narrow[0] <= narrow[1] <= ci[1]


def _comparison(diff: float, p: float | None, p_holm: float | None) -> Comparison:
    return Comparison(Summary(diff, 0, 3), Summary(0, 0, 3), diff, (0, 0), TTest(1, 1, p), p_holm)


@pytest.mark.parametrize(
    ("diff", "p_holm", "paper_sign", "word", "expected"),
    [
        (0.04, 0.01, +1, "beats", "reproduced"),
        (0.04, 0.20, +1, "ties", "direction only"),
        (-0.04, 0.01, +1, "below", "not reproduced"),
        (-0.04, 0.20, +1, "ties", "not reproduced"),
        (0.0, 1.0, +1, "ties", "not reproduced"),
        (-0.04, 0.01, -1, "below", "reproduced"),
    ],
)
def test_wording_and_verdict(diff, p_holm, paper_sign, word, expected):
    comparison = _comparison(diff, p=p_holm / 3, p_holm=p_holm)
    assert wording(comparison) == word
    assert verdict(comparison, paper_sign) == expected
    assert verdict(comparison, paper_sign, not_decidable="reference at chance") == VERDICTS[3]


def test_wording_uses_the_holm_p():
    # raw p 0.02 is below 0.05, but Holm over the family lifts it above
    family = with_holm([_comparison(0.04, 0.02, None), _comparison(0.04, 0.03, None)])
    assert [c.p_holm for c in family] == pytest.approx([0.04, 0.04])
    lifted = with_holm([_comparison(0.04, 0.02, None), *[_comparison(0.1, 0.5, None)] * 2])
    assert lifted[0].p_holm == pytest.approx(0.06)
    assert wording(lifted[0]) == "ties" and verdict(lifted[0], +1) == "direction only"


def test_compare_to_value():
    # AUROCs 0.50, 0.52, 0.54 against 0.5: mean diff 0.02, s = 0.02, t = 0.02/(0.02/√3) = √3, ν = 2
    # p = 1 − √3/√5 = 0.225403
    result = compare_to_value([0.50, 0.52, 0.54], 0.5)
    assert result.diff == pytest.approx(0.02)
    assert result.p == pytest.approx(1 - math.sqrt(3 / 5), abs=1e-9)
    assert result.ci[0] <= 0.02 <= result.ci[1]


def test_bad_input_is_a_clear_error():
    with pytest.raises(RepmatchError, match="non-empty"):
        welch_test([], [1, 2])
    with pytest.raises(RepmatchError, match="finite"):
        welch_test([float("nan"), 1], [1, 2])
    with pytest.raises(RepmatchError, match="paired"):
        compare([1, 2], [1, 2, 3], paired=True)
    with pytest.raises(RepmatchError, match="paper_sign"):
        verdict(_comparison(1, 0.01, 0.01), 0)

r"""Statistics behind every comparison in ``results/``: Welch's t-test, a seeded bootstrap CI of
the difference of means, Holm's correction across a family, and the wording of a verdict.

Every table script (``experiments/*_tables.py``, ``subset_size_figure.py``, ``claims_table.py``)
compares two arms, A and B, each a list of per-run figures (one per fine-tuning or flip seed):

- **Welch's t-test** (unequal variances): :math:`t = (\bar a - \bar b) / \sqrt{s_a^2/n_a +
  s_b^2/n_b}` with Welch–Satterthwaite degrees of freedom :math:`\nu = (s_a^2/n_a +
  s_b^2/n_b)^2 / \big((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1)\big)`, two-sided
  :math:`p = 2\,P(T_\nu > |t|)`. Paired runs (same seeds, e.g. two detectors on the same flipped
  pools) use the one-sample test of the differences against 0 (:math:`\nu = n - 1`).
- Degenerate cases give a stated result, never NaN: fewer than 2 runs in a group gives no p
  (``p is None``, the note says why); both groups constant gives p = 1 if their means are equal
  and p = 0 otherwise (the limit of Welch's t as both variances go to 0; the note says so).
- **Bootstrap 95 % CI** of :math:`\bar a - \bar b`: each group resampled with replacement on its
  own (``resamples`` times, ``numpy.random.default_rng(seed)``), percentile interval.
- Where only means, stds and run counts are recorded (dataset matrices), :func:`compare_summaries`
  runs Welch's test from them and gives the Welch t interval instead of a bootstrap CI.
- An arm against a fixed figure (AUROC against chance, 0.5) uses the one-sample t-test and a
  bootstrap CI of its mean minus that figure (:func:`compare_to_value`).
- With 3–5 runs per arm the percentile bootstrap is narrower than the t interval (the bootstrap
  variance of a mean is (n − 1)/n of s²/n, and its quantiles lack the t distribution's heavy
  tails): a CI that excludes 0 with p ≥ 0.05 is that effect. Verdicts rest on the
  (Holm-adjusted) p; the CI shows the size of the difference.
- **Holm's step-down correction** across a family (one comparison over datasets, sizes or
  detectors): with the m p-values sorted, :math:`p_{(i)}^{adj} = \max_{j \le i} \min(1,
  (m - j + 1)\,p_{(j)})`. Comparisons without a p are left out of the family.

Wording of a comparison (A against B, from the Holm-adjusted p): **"beats"** when
:math:`\bar a > \bar b` and Holm p < 0.05, **"below"** when :math:`\bar a < \bar b` and Holm p
< 0.05, **"ties"** otherwise ("ties" means no significant difference at these n, not
equality); "no test" when there is no p.

Verdict on a paper's claim that A is above (``paper_sign=+1``) or below (``-1``) B, exactly one
of :data:`VERDICTS`:

- **"reproduced"**: our difference has the paper's sign and Holm p < 0.05;
- **"direction only"**: our difference has the paper's sign, Holm p ≥ 0.05 (not significant at
  these n);
- **"not reproduced"**: our difference is zero or of the opposite sign, significant or not (the
  wording, "beats"/"below", says when it is significantly the other way);
- **"not decidable here"**: this setup cannot answer the claim: the caller gives a reason (the
  reference or every arm did not learn the task, e.g. all at chance) or there is no p (fewer
  than 2 runs in a group).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from repmatch.errors import RepmatchError

ALPHA = 0.05
VERDICTS = ("reproduced", "direction only", "not reproduced", "not decidable here")


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof 1; 0 for one run) and number of runs of one arm."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class TTest:
    """A two-sided t-test; ``p`` is None (and ``note`` says why) when it cannot be computed."""

    t: float | None
    df: float | None
    p: float | None
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    """Arm A against arm B: ``diff`` = mean(A) − mean(B) (or mean(A) − value), its bootstrap CI,
    the test's p, and ``p_holm`` once :func:`with_holm` has corrected the family."""

    a: Summary
    b: Summary | None
    diff: float
    ci: tuple[float, float]
    test: TTest
    p_holm: float | None = None

    @property
    def p(self) -> float | None:
        return self.test.p


def summarise(values: Sequence[float]) -> Summary:
    x = _as_array(values)
    return Summary(float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0, int(x.size))


def welch_test(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Welch's two-sided t-test of mean(a) = mean(b) from the per-run figures."""
    return welch_from_summary(summarise(a), summarise(b))


def welch_from_summary(a: Summary, b: Summary) -> TTest:
    """Welch's test from means, sample stds and run counts (when only those are recorded)."""
    if min(a.n, b.n) < 2:
        return TTest(None, None, None, f"no test: {min(a.n, b.n)} run in a group (need 2)")
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    if va + vb == 0:
        return _constant(a.mean - b.mean)
    t = (a.mean - b.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    return TTest(t, df, _two_sided(t, df))


def one_sample_test(values: Sequence[float], value: float = 0.0) -> TTest:
    """Two-sided one-sample t-test of mean(values) = value (df = n − 1); on differences of paired
    runs it is the paired t-test."""
    s = summarise(values)
    if s.n < 2:
        return TTest(None, None, None, "no test: 1 run (need 2)")
    if s.std == 0:
        return _constant(s.mean - value)
    t = (s.mean - value) / (s.std / math.sqrt(s.n))
    return TTest(t, s.n - 1.0, _two_sided(t, s.n - 1.0))


def bootstrap_ci(
    a: Sequence[float],
    b: Sequence[float] | None = None,
    *,
    value: float = 0.0,
    seed: int = 0,
    resamples: int = 10_000,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) − mean(b), each group resampled on its own; without
    ``b``, of mean(a) − value."""
    rng = np.random.default_rng(seed)
    diff = _resampled_means(_as_array(a), rng, resamples)
    diff = diff - (value if b is None else _resampled_means(_as_array(b), rng, resamples))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(diff, [tail, 100 - tail])
    return float(low), float(high)


def compare(
    a: Sequence[float], b: Sequence[float], *, paired: bool = False, seed: int = 0
) -> Comparison:
    """A against B: Welch's test and the bootstrap CI of the difference of means; ``paired``
    (same seeds, same order) tests and resamples the per-seed differences instead."""
    if paired:
        x, y = _as_array(a), _as_array(b)
        if x.shape != y.shape:
            raise RepmatchError(
                f"paired comparison needs equal run counts, got {x.size} and {y.size}"
            )
        test, ci = one_sample_test(x - y), bootstrap_ci(x - y, seed=seed)
    else:
        test, ci = welch_test(a, b), bootstrap_ci(a, b, seed=seed)
    sa, sb = summarise(a), summarise(b)
    return Comparison(sa, sb, sa.mean - sb.mean, ci, test)


def compare_to_value(values: Sequence[float], value: float, *, seed: int = 0) -> Comparison:
    """An arm against a fixed figure (e.g. AUROC against chance, 0.5): one-sample t-test."""
    s = summarise(values)
    ci = bootstrap_ci(values, value=value, seed=seed)
    return Comparison(s, None, s.mean - value, ci, one_sample_test(values, value))


def compare_summaries(a: Summary, b: Summary, *, level: float = 0.95) -> Comparison:
    """A against B from means, stds and run counts only: Welch's test and the Welch t interval
    diff ± t_{ν, (1+level)/2} · se (the difference itself when there is no test)."""
    test = welch_from_summary(a, b)
    diff = a.mean - b.mean
    if test.df is None:
        return Comparison(a, b, diff, (diff, diff), test)
    half = stats.t.ppf((1 + level) / 2, test.df) * math.sqrt(a.std**2 / a.n + b.std**2 / b.n)
    return Comparison(a, b, diff, (diff - half, diff + half), test)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values in the input order; None stays None and is not counted in m."""
    if any(p is not None and not 0.0 <= p <= 1.0 for p in pvalues):
        raise RepmatchError(f"p-values must lie in [0, 1] (or be None), got {list(pvalues)!r}")
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (len(indexed) - rank) * p))
        adjusted[i] = running
    return adjusted


def with_holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons of one family with ``p_holm`` filled in."""
    adjusted = holm([c.p for c in comparisons])
    return [replace(c, p_holm=p) for c, p in zip(comparisons, adjusted, strict=True)]


def wording(comparison: Comparison, *, alpha: float = ALPHA) -> str:
    """ "beats" / "below" only when the Holm-adjusted p < alpha; otherwise "ties"."""
    p = comparison.p_holm if comparison.p_holm is not None else comparison.p
    if p is None:
        return "no test"
    if p < alpha and comparison.diff != 0:
        return "beats" if comparison.diff > 0 else "below"
    return "ties"


def verdict(
    comparison: Comparison,
    paper_sign: int,
    *,
    not_decidable: str | None = None,
    alpha: float = ALPHA,
) -> str:
    """One of :data:`VERDICTS` for the paper's claim sign(A − B) = ``paper_sign`` (+1 or −1);
    ``not_decidable`` is the caller's reason this setup cannot answer (e.g. nothing learned)."""
    if paper_sign not in (1, -1):
        raise RepmatchError(f"paper_sign must be +1 or -1, got {paper_sign!r}")
    p = comparison.p_holm if comparison.p_holm is not None else comparison.p
    if not_decidable or p is None:
        return "not decidable here"
    if comparison.diff * paper_sign <= 0:
        return "not reproduced"
    return "reproduced" if p < alpha else "direction only"


def format_p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def format_comparison(comparison: Comparison, *, scale: float = 1.0, digits: int = 1) -> str:
    """One sentence-ready phrase: "+3.8 (95 % CI −0.6 to 8.9; p = 0.190, Holm p = 0.410)"."""
    low, high = (scale * x for x in comparison.ci)
    text = f"{scale * comparison.diff:+.{digits}f} (95 % CI {low:.{digits}f} to {high:.{digits}f}"
    if comparison.p is None:
        return text + f"; {comparison.test.note})"
    text += f"; {_p_phrase('p', comparison.p)}"
    if comparison.p_holm is not None:
        text += f", {_p_phrase('Holm p', comparison.p_holm)}"
    return text + ")"


def format_summary(summary: Summary, *, scale: float = 1.0, digits: int = 1) -> str:
    return f"{scale * summary.mean:.{digits}f} ± {scale * summary.std:.{digits}f} (n = {summary.n})"


def comparison_cells(comparison: Comparison, *, scale: float = 1.0, digits: int = 1) -> list[str]:
    """Markdown cells: A, B, difference, 95 % CI, p, Holm p, wording (see :data:`CELL_HEADERS`)."""
    low, high = (scale * x for x in comparison.ci)
    b = comparison.b
    return [
        format_summary(comparison.a, scale=scale, digits=digits),
        format_summary(b, scale=scale, digits=digits) if b is not None else "–",
        f"{scale * comparison.diff:+.{digits}f}",
        f"{low:.{digits}f} to {high:.{digits}f}",
        format_p(comparison.p) if comparison.p is not None else comparison.test.note,
        format_p(comparison.p_holm),
        wording(comparison),
    ]


def markdown_header(columns: Sequence[str]) -> list[str]:
    """The two header lines of a Markdown table."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


CELL_HEADERS = ("A", "B", "A − B", "95 % CI", "p", "Holm p", "A vs B")


def _p_phrase(name: str, p: float) -> str:
    text = format_p(p)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


def _constant(diff: float) -> TTest:
    note = "both groups constant: t is infinite" if diff else "both groups constant and equal"
    return TTest(math.copysign(math.inf, diff) if diff else 0.0, None, 0.0 if diff else 1.0, note)


def _two_sided(t: float, df: float) -> float:
    return float(2 * stats.t.sf(abs(t), df))


def _resampled_means(x: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    return x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)


def _as_array(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise RepmatchError(f"expected a non-empty list of finite figures, got {values!r}")
    return x

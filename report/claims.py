"""A verdict for each claim of a paper spec, from the seeds of the records.

A claim says that ``method``'s metric is lower (or higher) than ``than``'s — another method's, or a
number — by at least a margin (a difference; a negative one allows that much the other way: "at a
comparable NLL") or a ratio (a factor). The verdict is a one-sided Welch t-test over the seeds
(``scipy.stats.ttest_ind``, or ``ttest_1samp`` against a number) of "the effect is at least as
claimed":

- ``holds``: p < the claim's level;
- ``fails``: p >= the level (a loss, or a difference the seeds cannot tell from no effect);
- ``inconclusive``: fewer than 3 seeds on a side (a t-test needs them);
- ``no runs``: a side has no run that ended ``ok`` with the current config.

A ratio is tested on the logarithm of the values (the metric must then be positive). Where neither
side varies over its seeds (an integer count such as active units can repeat exactly), the test is
undefined and the verdict follows the means: ``holds`` when the effect is there in every seed.
"""

import math
import warnings

from scipy import stats

MIN_SEEDS = 3


def verdict(claim, values: list[float], than: list[float] | float) -> dict:
    """``values``: the claim's method, one per seed; ``than``: the other method's, or the number.
    Returns the verdict, the p-value (None where not tested) and the test's name."""
    constant = not isinstance(than, list)
    if not values or (not constant and not than):
        return {"verdict": "no runs", "p": None, "test": None}
    if len(values) < MIN_SEEDS or (not constant and len(than) < MIN_SEEDS):
        return {"verdict": "inconclusive", "p": None, "test": f"fewer than {MIN_SEEDS} seeds on a side"}
    if claim.ratio is not None:
        if min(values) <= 0 or (min(than) if not constant else than) <= 0:
            return {"verdict": "inconclusive", "p": None, "test": "a ratio needs positive values"}
        shift = math.log(claim.ratio)
        values = [math.log(v) for v in values]
        than = math.log(than) if constant else [math.log(v) for v in than]
        test = f"one-sided Welch t-test on log values, ratio {claim.ratio:g}"
    else:
        shift = claim.margin
        test = f"one-sided Welch t-test, margin {claim.margin:g}"
    # The effect "values lower than than by shift" is "values + shift lower than than".
    sign = 1 if claim.direction == "lower" else -1
    shifted = [v + sign * shift for v in values]
    others = [than] if constant else than
    if constant:
        test = test.replace("Welch t-test", "one-sample t-test")
    if max(shifted) == min(shifted) and max(others) == min(others):
        # No variance on either side: the test is undefined, and every seed says the same.
        effect = shifted[0] < others[0] if claim.direction == "lower" else shifted[0] > others[0]
        return {"verdict": "holds" if effect else "fails", "p": None, "test": test + " (no variance: by the values)"}
    alternative = "less" if claim.direction == "lower" else "greater"
    with warnings.catch_warnings():
        # scipy warns of precision loss when one side is constant (every seed 0 active units, say):
        # exact values, and Welch's test stays defined by the other side's variance
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        if constant:
            result = stats.ttest_1samp(shifted, than, alternative=alternative)
        else:
            result = stats.ttest_ind(shifted, than, equal_var=False, alternative=alternative)
    p = float(result.pvalue)
    return {"verdict": "holds" if p < claim.level else "fails", "p": p, "test": test}

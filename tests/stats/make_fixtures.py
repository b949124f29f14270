# Writes tests/cases/stats/fixtures.json: scipy's answers for crates/detect/src/stats.rs.
# Run:  python3 -m venv ~/.cache/inferwatch-stats-venv && ~/.cache/inferwatch-stats-venv/bin/pip install scipy numpy
#       ~/.cache/inferwatch-stats-venv/bin/python tests/stats/make_fixtures.py   (from the repo root; deterministic, fixed seeds)
"""Reference values for the drift statistics, computed by scipy/numpy.

Inputs are rounded before the reference is computed, so the JSON stores
exactly the numbers scipy saw. crates/detect/tests/stats_vs_scipy.rs
compares the Rust functions with every value here.
"""
import json
import math
import os
import warnings

import numpy as np
import scipy
from scipy import stats
from scipy.spatial import distance

warnings.simplefilter("ignore")  # ks_2samp warns when it falls back to 'asymp'
OUT = os.path.join(os.path.dirname(__file__), "..", "cases", "stats", "fixtures.json")


def num(x):
    """JSON number, or None for NaN (strict JSON has no NaN)."""
    x = float(x)
    return None if math.isnan(x) else x


def r(x, d):
    return [float(v) for v in np.round(np.asarray(x, dtype=float), d)]


# ---------------------------------------------------------------- KS
SHARED = {}  # large samples, stored once in the JSON and referred to by name


def kolmogn_branch(n1, n2, x):
    """Which method scipy's _kolmogn(round(en), x, cdf=False) uses (for the record)."""
    m, n = sorted([float(n1), float(n2)], reverse=True)
    n = int(np.round(m * n / (m + n)))
    if n <= 0:
        return "asymp:n=0"
    if x >= 1.0 or x <= 0.0:
        return "asymp:x_bound"
    t = n * x
    if t <= 1.0:
        return "asymp:ruben_gambino_low"
    if t >= n - 1:
        return "asymp:ruben_gambino_high"
    if x >= 0.5:
        return "asymp:smirnov_x>=0.5"
    nx2 = t * x
    if n <= 140:
        return "asymp:n<=140:" + ("dmtw" if nx2 <= 0.754693 else "pomeranz" if nx2 <= 4 else "smirnov")
    if nx2 >= 370.0:
        return "asymp:zero"
    if nx2 >= 2.2:
        return "asymp:smirnov"
    if n <= 100000 and n * x ** 1.5 <= 1.4:
        return "asymp:dmtw"
    return "asymp:pelz_good"
def ks_cases():
    rng = np.random.default_rng(20260101)
    cases = []

    def add(name, a, b):
        xa = SHARED[a] if isinstance(a, str) else a
        xb = SHARED[b] if isinstance(b, str) else b
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = stats.ks_2samp(xa, xb)  # method='auto'
        exact = max(len(xa), len(xb)) <= 10000 and not caught
        cases.append({"name": name, "a": a, "b": b, "statistic": num(res.statistic),
                      "p_value": num(res.pvalue),
                      "path": "exact" if exact else kolmogn_branch(len(xa), len(xb), res.statistic)})

    # exact path, equal sizes
    for n in [1, 2, 3, 5, 8, 13, 20, 40, 75, 150, 400]:
        add(f"exact_equal_n{n}_shift", r(rng.normal(0, 1, n), 3), r(rng.normal(0.5, 1, n), 3))
    # exact path, unequal sizes
    for n, m in [(1, 2), (2, 7), (3, 10), (7, 13), (10, 25), (17, 31), (50, 80),
                 (99, 100), (120, 360), (500, 700), (1000, 1500), (3000, 2000)]:
        add(f"exact_unequal_{n}x{m}_null", r(rng.normal(0, 1, n), 3), r(rng.normal(0, 1, m), 3))
    for n, m in [(6, 9), (40, 60), (250, 100), (800, 1200)]:
        add(f"exact_unequal_{n}x{m}_shift", r(rng.normal(0, 1, n), 3), r(rng.normal(0.4, 1.2, m), 3))
    # ties: integer-valued data
    for n, m in [(10, 10), (30, 45), (200, 300), (2000, 2500)]:
        add(f"ties_{n}x{m}", r(rng.poisson(3, n), 0), r(rng.poisson(3.3, m), 0))
    # identical samples, disjoint samples (tiny / underflowing p-values)
    for n in [1, 4, 60, 900]:
        x = r(rng.normal(0, 1, n), 3)
        add(f"identical_n{n}", x, list(x))
    for n, m in [(1, 1), (2, 2), (5, 5), (5, 8), (30, 30), (100, 150), (500, 500), (600, 600), (3000, 2000)]:
        add(f"disjoint_{n}x{m}", r(rng.uniform(0, 1, n), 4), r(rng.uniform(2, 3, m), 4))
    # equal sizes with D = 1/n (interleaved): the exact series may leave [0, 1]
    # and scipy falls back to the asymptotic distribution
    for n in [2, 3, 4, 6, 9, 12, 17, 25, 40, 64, 100, 300]:
        a = [float(2 * i) for i in range(n)]
        b = [float(2 * i + 1) for i in range(n)]
        add(f"interleaved_n{n}", a, b)
    # asymptotic path: a sample larger than 10 000. The big samples are
    # stored once under "shared" and referred to by name.
    big = r(rng.normal(0, 1, 10001), 2)
    big2 = r(rng.normal(0, 1, 10500), 2)
    big_ties = r(rng.poisson(2, 10001), 0)
    SHARED.update({"big": big, "big2": big2, "big_ties": big_ties})
    for m, shift in [(3, 0.0), (5, 0.0), (5, 2.0), (8, 0.5), (40, 0.0), (60, 0.7), (100, 0.0),
                     (100, 0.3), (100, 1.5), (130, 0.15), (300, 0.0), (300, 0.05), (300, 0.4),
                     (1000, 0.0), (1000, 0.1), (1000, 0.5), (2000, 0.6), (2000, 1.3), (2000, 3.0),
                     (4000, 0.02), (4000, 0.2)]:
        add(f"asymp_10001x{m}_shift{shift}", "big", r(rng.normal(shift, 1, m), 2))
    add("asymp_10001x2000_disjoint", "big", r(rng.uniform(10, 11, 2000), 2))
    add("asymp_10001x5_far", "big", r(rng.normal(4.0, 0.1, 5), 2))
    add("asymp_10001x12_far", "big", r(rng.normal(3.5, 0.1, 12), 2))
    # b at the quantiles of big (tiny D): the Durbin matrix and Ruben-Gambino branches
    for m, shift in [(100, 0.0), (100, 0.01), (100, 0.02), (60, 0.03), (1000, 0.01), (3000, 0.008),
                     (3000, 0.015)]:
        q = np.quantile(np.asarray(big), (np.arange(m) + 0.5) / m) + shift
        add(f"asymp_10001x{m}_quantiles_shift{shift}", "big", r(q, 2))
    add("asymp_10001x20_ties", "big_ties", r(rng.poisson(2, 20), 0))
    add("asymp_10001x10500_null", "big", "big2")
    add("asymp_10500x10001_small_shift", "big2", r(np.asarray(big) + 0.03, 2))
    return cases


# ---------------------------------------------------------------- Mann-Whitney
def ci_rank(n, m, confidence):
    """k of the CI [D_(k), D_(nm+1-k)]: ceil(nm/2 - z*sqrt(nm(n+m+1)/12)),
    z = Phi^-1(1 - (1-confidence)/2), clamped to [1, ceil(nm/2)]."""
    total = n * m
    half = (total + 1) // 2
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    k = math.ceil(total / 2 - z * math.sqrt(total * (n + m + 1) / 12))
    return min(max(k, 1), half)


def mw_cases():
    rng = np.random.default_rng(20260202)
    cases = []

    def add(name, a, b, confidence=0.98):
        res = stats.mannwhitneyu(a, b, alternative="two-sided", use_continuity=True,
                                 method="asymptotic")
        d = np.sort(np.subtract.outer(np.asarray(b), np.asarray(a)).ravel())
        k = ci_rank(len(a), len(b), confidence)
        n, m = len(a), len(b)
        cases.append({"name": name, "a": a, "b": b, "confidence": confidence,
                      "u": num(res.statistic), "p_value": num(res.pvalue),
                      "rank_biserial": 1 - 2 * float(res.statistic) / (n * m),
                      "shift": float(np.median(d)),
                      "shift_low": float(d[k - 1]), "shift_high": float(d[n * m - k])})

    for n, m in [(1, 1), (1, 5), (2, 3), (4, 4), (5, 9), (8, 8), (12, 20), (25, 25),
                 (40, 70), (100, 100), (150, 90), (500, 800), (1200, 1000)]:
        add(f"null_{n}x{m}", r(rng.normal(0, 1, n), 3), r(rng.normal(0, 1, m), 3))
    for shift in [0.1, 0.3, 0.8, 2.0, 5.0]:
        for n, m in [(10, 15), (60, 60), (400, 300)]:
            add(f"shift{shift}_{n}x{m}", r(rng.normal(0, 1, n), 3), r(rng.normal(shift, 1, m), 3))
    for n, m in [(5, 5), (20, 30), (100, 80), (700, 900), (2000, 1500)]:
        add(f"ties_poisson_{n}x{m}", r(rng.poisson(2, n), 0), r(rng.poisson(2.4, m), 0))
    for n, m in [(10, 10), (50, 200), (1000, 1000)]:
        add(f"ties_heavy_{n}x{m}", r(rng.integers(0, 3, n), 0), r(rng.integers(0, 3, m), 0))
    add("all_tied", [3.0] * 40, [3.0] * 30)
    add("all_tied_small", [1.0], [1.0])
    x = r(rng.normal(0, 1, 50), 3)
    add("identical_50", x, list(x))
    add("disjoint_30x40", r(rng.uniform(0, 1, 30), 4), r(rng.uniform(5, 6, 40), 4))
    add("disjoint_rev_300x200", r(rng.uniform(5, 6, 300), 4), r(rng.uniform(0, 1, 200), 4))
    add("huge_shift_2000x2000", r(rng.normal(0, 1, 2000), 3), r(rng.normal(10, 1, 2000), 3))
    for conf in [0.5, 0.8, 0.9, 0.95, 0.99, 0.999]:
        add(f"confidence{conf}_80x120", r(rng.normal(0, 1, 80), 3),
            r(rng.normal(0.3, 1.5, 120), 3), conf)
    for n, m in [(3, 200), (200, 3), (7, 1000), (50, 51)]:
        add(f"unequal_{n}x{m}", r(rng.exponential(1, n), 3), r(rng.exponential(1.3, m), 3))
    add("latency_like_3000x2500", r(rng.lognormal(5, 0.5, 3000), 1), r(rng.lognormal(5.05, 0.5, 2500), 1))
    add("mixed_sign_shift_0", [-2.0, -1.0, 1.0, 2.0], [-1.5, 1.5])
    for i in range(10):
        n, m = int(rng.integers(2, 60)), int(rng.integers(2, 60))
        add(f"random_{i}_{n}x{m}", r(rng.normal(0, 2, n), 2), r(rng.normal(rng.uniform(-1, 1), 2, m), 2),
            float(rng.choice([0.9, 0.95, 0.98])))
    return cases


# ---------------------------------------------------------------- chi-square
def chi_cases():
    rng = np.random.default_rng(20260303)
    cases = []

    def add(name, a, b):
        a = [int(v) for v in a]
        b = [int(v) for v in b]
        keep = [i for i in range(len(a)) if a[i] + b[i] > 0]
        table = np.array([[a[i] for i in keep], [b[i] for i in keep]])
        res = stats.chi2_contingency(table)  # defaults: correction=True (Yates when dof == 1)
        v = stats.contingency.association(table, method="cramer")
        cases.append({"name": name, "a": [float(x) for x in a], "b": [float(x) for x in b],
                      "statistic": num(res.statistic), "p_value": num(res.pvalue),
                      "dof": int(res.dof), "cramers_v": num(v)})

    # 2x2 with Yates
    for a, b in [([10, 20], [30, 40]), ([1, 2], [3, 4]), ([5, 5], [5, 6]), ([100, 0], [0, 100]),
                 ([1, 0], [0, 1]), ([1000, 1010], [1000, 990]), ([50, 2], [40, 12]),
                 ([3, 97], [10, 90]), ([20000, 100], [19000, 300]), ([7, 7], [7, 7])]:
        add(f"yates_{a}_{b}", a, b)
    # zero categories dropped -> 2x2 with Yates
    add("yates_after_drop", [10, 0, 20, 0], [30, 0, 40, 0])
    add("yates_after_drop_front", [0, 4, 9], [0, 12, 3])
    # 2xk
    for k in [3, 4, 5, 8, 12, 20]:
        for scale in [5, 50, 1000]:
            p = rng.dirichlet(np.ones(k))
            q = 0.8 * p + 0.2 * rng.dirichlet(np.ones(k))
            add(f"k{k}_n{scale * k}", rng.multinomial(scale * k, p), rng.multinomial(int(scale * k * 1.3), q))
    for k in [3, 6, 10]:
        p = rng.dirichlet(np.ones(k))
        add(f"null_k{k}", rng.multinomial(5000, p), rng.multinomial(7000, p))
    # zero categories on one side, empty in both
    add("zero_one_side", [10, 0, 5, 7], [0, 9, 5, 7])
    add("zero_both_middle", [10, 0, 5, 0, 7], [8, 0, 6, 0, 9])
    add("zero_both_many", [0, 0, 3, 0, 9, 0, 1], [0, 0, 4, 0, 2, 0, 8])
    # tiny p-values
    add("tiny_p_k4", [100000, 0, 0, 0], [0, 100000, 0, 1])
    add("tiny_p_k3", [5000, 4000, 1000], [1000, 4000, 5000])
    add("tiny_p_2x2", [5000, 5000], [9000, 1000])
    add("identical_k5", [10, 20, 30, 40, 50], [10, 20, 30, 40, 50])
    add("proportional_k3", [1, 2, 3], [2, 4, 6])
    for i in range(20):
        k = int(rng.integers(2, 9))
        a = rng.integers(0, 40, k)
        b = rng.integers(0, 40, k)
        a[0] += 1
        b[-1] += 1
        add(f"random_{i}_k{k}", a, b)
    return cases


# ---------------------------------------------------------------- distances
def psi_ref(reference, current):
    """Evidently's PSI: proportions, empty bins at 1e-4, sum (cur-ref)*ln(cur/ref)."""
    ref = np.asarray(reference, float)
    cur = np.asarray(current, float)
    ref = ref / ref.sum()
    cur = cur / cur.sum()
    ref = np.where(ref == 0, 1e-4, ref)
    cur = np.where(cur == 0, 1e-4, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def hellinger_ref(p, q):
    p = np.asarray(p, float)
    q = np.asarray(q, float)
    p = p / p.sum()
    q = q / q.sum()
    return float(np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)) / np.sqrt(2))


def binned_pairs(rng):
    pairs = [("disjoint", [1, 0, 0], [0, 0, 1]), ("identical", [3, 5, 2], [3, 5, 2]),
             ("proportional", [1, 2, 3, 4], [10, 20, 30, 40]), ("empty_bins", [10, 0, 5, 0], [0, 3, 5, 2]),
             ("two_bins", [9, 1], [1, 9]), ("single_mass", [0, 0, 7, 0], [1, 1, 1, 1])]
    for i in range(26):
        k = int(rng.integers(2, 20))
        p = rng.dirichlet(np.ones(k) * rng.uniform(0.3, 3))
        q = rng.dirichlet(np.ones(k) * rng.uniform(0.3, 3)) if i % 3 else 0.7 * p + 0.3 * rng.dirichlet(np.ones(k))
        if i % 2:
            pairs.append((f"counts_{i}_k{k}", [float(v) for v in rng.multinomial(int(rng.integers(20, 5000)), p)],
                          [float(v) for v in rng.multinomial(int(rng.integers(20, 5000)), q)]))
        else:
            pairs.append((f"props_{i}_k{k}", r(p, 6), r(q, 6)))
    return [(n, [float(v) for v in p], [float(v) for v in q]) for n, p, q in pairs]


def distance_cases():
    rng = np.random.default_rng(20260404)
    pairs = binned_pairs(rng)
    psi_c = [{"name": n, "p": p, "q": q, "value": psi_ref(p, q)} for n, p, q in pairs]
    js_c = [{"name": n, "p": p, "q": q, "value": float(distance.jensenshannon(p, q, base=2))}
            for n, p, q in pairs]
    hel_c = [{"name": n, "p": p, "q": q, "value": hellinger_ref(p, q)} for n, p, q in pairs]
    ws = []

    def add(name, a, b):
        ws.append({"name": name, "a": a, "b": b, "value": float(stats.wasserstein_distance(a, b))})

    add("single", [0.0], [1.0])
    add("identical", [1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    add("all_equal", [2.0] * 5, [2.0] * 9)
    add("ties", [1.0, 1.0, 2.0, 2.0, 2.0], [1.0, 2.0, 2.0, 3.0])
    for i in range(30):
        n, m = int(rng.integers(1, 400)), int(rng.integers(1, 400))
        dist = i % 3
        if dist == 0:
            a, b = rng.normal(0, 1, n), rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 2), m)
        elif dist == 1:
            a, b = rng.exponential(1, n), rng.exponential(rng.uniform(0.5, 2), m)
        else:
            a, b = rng.poisson(4, n), rng.poisson(rng.uniform(2, 6), m)
        add(f"random_{i}_{n}x{m}", r(a, 3), r(b, 3))
    return psi_c, js_c, ws, hel_c


def main():
    psi_c, js_c, ws_c, hel_c = distance_cases()
    ks = ks_cases()
    out = {"scipy": scipy.__version__, "numpy": np.__version__, "shared": SHARED,
           "ks": ks, "mann_whitney": mw_cases(), "chi_square": chi_cases(),
           "psi": psi_c, "jensen_shannon": js_c, "wasserstein": ws_c, "hellinger": hel_c}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    print({k: len(v) for k, v in out.items() if isinstance(v, list)}, os.path.getsize(OUT), "bytes")
    paths = {}
    for c in ks:
        paths[c["path"]] = paths.get(c["path"], 0) + 1
    print("ks paths:", paths)
    for c in ks:
        if c["path"] != "exact":
            print("  ", c["name"], c["path"], c["statistic"], c["p_value"])


if __name__ == "__main__":
    main()

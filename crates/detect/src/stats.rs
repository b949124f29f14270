//! Two-sample statistics for drift detection, each equal to a scipy call.
//!
//! A drift rule compares a *reference* window with a *current* one. With
//! thousands of inferences per window every test reports a tiny p-value for
//! a shift nobody cares about, and with ten it reports nothing for a shift
//! that matters. So each function here returns an **effect size** next to
//! its statistic and p-value (rank-biserial and Hodges–Lehmann shift with a
//! confidence interval, Cramér's V, the distances), and a rule should gate
//! on effect size *and* sample size, never on a p-value alone.
//!
//! | function | equals |
//! | --- | --- |
//! | [`ks_two_sample`] | `scipy.stats.ks_2samp(a, b)` (`method='auto'`: exact when neither sample exceeds 10 000 observations, `kstwo.sf` otherwise or when the exact value falls outside [0, 1]) |
//! | [`mann_whitney`] | `scipy.stats.mannwhitneyu(a, b, alternative='two-sided', use_continuity=True, method='asymptotic')`, plus effect sizes |
//! | [`chi_square_two_sample`] | `scipy.stats.chi2_contingency([a, b])` (Yates when dof = 1), V = `scipy.stats.contingency.association(method='cramer')` |
//! | [`psi`] | Evidently's PSI: `Σ (cur − ref) · ln(cur / ref)`, empty bins at [`PSI_EPSILON`] |
//! | [`jensen_shannon`] | `scipy.spatial.distance.jensenshannon(p, q, base=2)` |
//! | [`wasserstein_1`] | `scipy.stats.wasserstein_distance(a, b)` |
//! | [`hellinger`] | `sqrt(sum((sqrt(p) - sqrt(q))**2)) / sqrt(2)` on normalised numpy arrays |
//!
//! `tests/stats/make_fixtures.py` writes scipy's (1.17) answers for a few
//! hundred cases and `tests/stats_vs_scipy.rs` holds these functions to them
//! at 1e-9 relative. Distribution functions come from `statrs` (χ² tail,
//! normal quantile) and `libm` (erfc, for the normal tail); the exact
//! two-sample KS distribution, the Kolmogorov distribution behind
//! `scipy.stats.kstwo` and selection among pairwise differences exist in no
//! crate and are written here.
//!
//! Conventions: the raw-sample functions (KS, Mann–Whitney, Wasserstein,
//! quantile edges) drop non-finite observations (NaN, ±∞) first, where
//! scipy would propagate NaN; [`bin_counts`] skips NaN and counts ±∞ in the
//! open-ended end bins; negative or non-finite counts count as 0; binned
//! inputs of different lengths are padded with zeros. Nothing here panics or
//! returns NaN.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// Statistic and p-value of a two-sample test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TestOutcome {
    /// The test statistic (for KS, the largest ECDF gap D).
    pub statistic: f64,
    /// The two-sided p-value.
    pub p_value: f64,
}

/// Mann–Whitney U test with its effect sizes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MannWhitney {
    /// U statistic of `a` (scipy's `statistic`): #{a_i > b_j} + ½ #{a_i = b_j}.
    pub u: f64,
    /// Two-sided p-value: `scipy.stats.mannwhitneyu(a, b,
    /// alternative='two-sided', use_continuity=True, method='asymptotic')`
    /// (tie-corrected variance).
    pub p_value: f64,
    /// Rank-biserial correlation `1 − 2U/(n·m)` = P(b > a) − P(a > b), in
    /// [−1, 1]: **positive means `b` tends to be larger than `a`**.
    pub rank_biserial: f64,
    /// Hodges–Lehmann estimate of the shift b − a: the median of all
    /// pairwise differences `b_j − a_i` (mean of the two middle ones when
    /// n·m is even).
    pub shift: f64,
    /// Lower end of the distribution-free confidence interval for the
    /// shift; see [`mann_whitney`] for the formula.
    pub shift_low: f64,
    /// Upper end of that interval.
    pub shift_high: f64,
}

/// Chi-square test of homogeneity on a 2×k table.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ChiSquare {
    /// Pearson's statistic (Yates-corrected when `dof == 1`).
    pub statistic: f64,
    /// Upper tail of χ²(dof) at `statistic`.
    pub p_value: f64,
    /// Degrees of freedom, k − 1 after dropping empty categories.
    pub dof: usize,
    /// Cramér's V, the effect size: `sqrt(χ²/N)` for a 2×k table, from the
    /// *uncorrected* statistic (as `scipy.stats.contingency.association`).
    pub cramers_v: f64,
}

/// The proportion given to an empty bin by [`psi`] (Evidently's value).
pub const PSI_EPSILON: f64 = 1e-4;

/// scipy's `ks_2samp` tries the exact distribution when neither sample is
/// larger than this.
const KS_MAX_EXACT_N: usize = 10_000;

fn finite_sorted(x: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Number of elements of sorted `xs` that are `<= v` (numpy
/// `searchsorted(side='right')`).
fn count_le(xs: &[f64], v: f64) -> usize {
    xs.partition_point(|&x| x <= v)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `scipy.stats.ks_2samp(a, b)` with its default `method='auto'`.
///
/// The statistic is D = max |F_a − F_b| over the pooled sample. When both
/// samples have at most 10 000 observations the exact p-value is computed
/// (Hodges' lattice-path count, in Viehmann's "1 − p" recursion for unequal
/// sizes and the alternating binomial series for equal ones) and D is
/// snapped to the lattice `h / lcm(n, m)`; if that fails (a value outside
/// [0, 1]) or a sample is larger, the p-value is `kstwo.sf(D, round(n·m/(n+m)))`
/// as scipy does. The one case where scipy answers NaN (two one-element
/// samples that differ: `kstwo` with n = round(½) = 0) returns p = 1 here.
///
/// Inputs need not be sorted. None when either sample is empty.
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> Option<TestOutcome> {
    let distance = KsDistance::between(a, b)?;
    Some(TestOutcome {
        statistic: distance.statistic,
        p_value: distance.p_value(),
    })
}

/// The two-sample KS distance of [`ks_two_sample`], with its p-value on demand.
///
/// The exact p-value walks a band of the n × m lattice, which is most of the
/// test's cost (a drift rule judges every source every minute); a judge that
/// needs D past an effect size first can skip it for the many pairs below.
pub struct KsDistance {
    n1: usize,
    n2: usize,
    /// D, snapped to the lattice `h / lcm` when the exact p-value applies.
    pub statistic: f64,
    /// `(gcd, h)` when both samples are small enough for the exact p-value.
    lattice: Option<(u64, u64)>,
}

impl KsDistance {
    /// D of `a` against `b` (need not be sorted); None when either is empty.
    pub fn between(a: &[f64], b: &[f64]) -> Option<KsDistance> {
        let a = finite_sorted(a);
        let b = finite_sorted(b);
        let (n1, n2) = (a.len(), b.len());
        if n1 == 0 || n2 == 0 {
            return None;
        }
        let (fn1, fn2) = (n1 as f64, n2 as f64);
        let mut max_diff = f64::NEG_INFINITY;
        let mut min_diff = f64::INFINITY;
        // The ECDF difference at every value of either sample, in one merge walk
        // of the sorted samples (a binary search per value was 8 % of `detect`).
        let (mut below_a, mut below_b) = (0, 0);
        while below_a < n1 || below_b < n2 {
            let v = match (a.get(below_a), b.get(below_b)) {
                (Some(&x), Some(&y)) => x.min(y),
                (Some(&x), None) | (None, Some(&x)) => x,
                (None, None) => break,
            };
            while below_a < n1 && a[below_a] <= v {
                below_a += 1;
            }
            while below_b < n2 && b[below_b] <= v {
                below_b += 1;
            }
            let diff = below_a as f64 / fn1 - below_b as f64 / fn2;
            max_diff = max_diff.max(diff);
            min_diff = min_diff.min(diff);
        }
        let min_s = (-min_diff).clamp(0.0, 1.0);
        let mut statistic = if min_s > max_diff { min_s } else { max_diff };
        let mut lattice = None;
        if n1.max(n2) <= KS_MAX_EXACT_N {
            let g = gcd(n1 as u64, n2 as u64);
            let lcm = (n1 as u64 / g) * n2 as u64;
            let h = (statistic * lcm as f64).round_ties_even() as u64;
            statistic = h as f64 / lcm as f64;
            lattice = Some((g, h));
        }
        Some(KsDistance {
            n1,
            n2,
            statistic,
            lattice,
        })
    }

    /// The p-value, as [`ks_two_sample`] gives it.
    pub fn p_value(&self) -> f64 {
        let (n1, n2) = (self.n1, self.n2);
        let exact = self.lattice.and_then(|(g, h)| {
            let p = if h == 0 {
                1.0
            } else if n1 == n2 {
                ks_prob_outside_square(n1 as u64, h)
            } else {
                ks_outer_prob_inside(n1 as u64, n2 as u64, g, h)
            };
            (0.0..=1.0).contains(&p).then_some(p)
        });
        let p = match exact {
            Some(p) => p,
            None => {
                let (fn1, fn2) = (n1 as f64, n2 as f64);
                let (m, n) = (fn1.max(fn2), fn1.min(fn2));
                let en = (m * n / (m + n)).round_ties_even();
                if en < 1.0 {
                    1.0 // scipy: NaN (kstwo with n = 0)
                } else {
                    kolmogn_sf(en as u64, self.statistic)
                }
            }
        };
        p.clamp(0.0, 1.0)
    }
}

/// P(D_{n,n} ≥ h/n): `2·Σ_k (−1)^{k−1} C(2n, n−kh) / C(2n, n)`, evaluated
/// Horner-style from the largest k so nothing overflows (scipy's
/// `_compute_prob_outside_square`). Written here because no crate has the
/// two-sample KS distribution.
fn ks_prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0;
    for k in (0..=n / h).rev() {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
    }
    2.0 * p
}

/// P(D_{m,n} ≥ h/lcm) for m ≠ n: the proportion of lattice paths from
/// (0,0) to (m,n) that leave the band |x/m − y/n| < h/lcm, by the inside
/// method with Viehmann's recursion (arXiv:2102.08037), which carries 1 − A
/// scaled by the binomial coefficient so it neither overflows nor cancels.
/// Same column sweep and window as scipy's `_compute_outer_prob_inside_method`.
fn ks_outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = ((m / g) as f64, (n / g) as f64);
    let hf = h as f64;
    let n_i = n as i64;
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((hf / mg).ceil() as i64).min(n_i + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n_i + 1).max(1) as usize;
    let mut a = vec![1.0f64; len_a];
    for v in a.iter_mut().take(maxj.max(0) as usize) {
        *v = 0.0;
    }
    for i in 1..=m {
        let fi = i as f64;
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((((ng * fi - hf) / mg).floor() as i64) + 1).max(0).min(n_i);
        maxj = (((ng * fi + hf) / mg).ceil() as i64).min(n_i + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = (jj + minj) as f64;
            let src = (jj + minj - lastminj) as usize;
            let prev = a.get(src).copied().unwrap_or(1.0);
            val = (prev * fi + val * j) / (fi + j);
            if let Some(slot) = a.get_mut(jj as usize) {
                *slot = val;
            }
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let start = (maxj - minj) as usize;
            let end = (start + (lastlen - curlen) as usize).min(a.len());
            for v in a.iter_mut().take(end).skip(start) {
                *v = 1.0;
            }
        }
    }
    a.get((maxj - minj - 1).max(0) as usize)
        .copied()
        .unwrap_or(1.0)
}

// ---------------------------------------------------------------------------
// Kolmogorov distribution: scipy.stats.kstwo.sf(x, n), i.e. scipy's
// `_kolmogn(n, x, cdf=False)` (Simard & L'Ecuyer's choice of method by n and
// n·x²). statrs has no Kolmogorov distribution, so the methods are written
// here: Ruben–Gambino closed forms, Durbin's matrix (Marsaglia–Tsang–Wang),
// Pomeranz's recursion, Pelz–Good's expansion and 2·smirnov.

const E128: i32 = 128;
const P128: f64 = 3.402_823_669_209_385e38; // 2^128
const M128: f64 = 2.938_735_877_055_719e-39; // 2^-128

fn ldexp(x: f64, e: i32) -> f64 {
    // Split so neither factor over- nor underflows on its own.
    let half = e / 2;
    x * 2f64.powi(half) * 2f64.powi(e - half)
}

fn kolmogn_sf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            let mut p = 1.0;
            for i in 1..=n {
                p *= i as f64 * (1.0 / nf) * (2.0 * t - 1.0);
            }
            p
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return (1.0 - prob).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        return (2.0 * (1.0 - x).powf(nf)).clamp(0.0, 1.0);
    }
    if x >= 0.5 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let nxsquared = t * x;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return (1.0 - kolmogn_dmtw_cdf(n, x).clamp(0.0, 1.0)).clamp(0.0, 1.0);
        }
        if nxsquared <= 4.0 {
            return (1.0 - kolmogn_pomeranz_cdf(n, x).clamp(0.0, 1.0)).clamp(0.0, 1.0);
        }
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let cdf = if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        kolmogn_dmtw_cdf(n, x).clamp(0.0, 1.0)
    } else {
        kolmogn_pelz_good_cdf(nf, x)
    };
    (1.0 - cdf).clamp(0.0, 1.0)
}

/// ln(n!/n^n) by Stirling's series.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    // The series' rational coefficients as scipy writes them.
    #[allow(clippy::excessive_precision)]
    const C: [f64; 8] = [
        -2.955065359477124183e-2,
        6.4102564102564102564e-3,
        -1.9175269175269175269e-3,
        8.4175084175084175084e-4,
        -5.952380952380952381e-4,
        7.9365079365079365079e-4,
        -2.7777777777777777778e-3,
        8.3333333333333333333e-2,
    ];
    let rn = 1.0 / n;
    let z = rn / n;
    let poly = C.iter().fold(0.0, |acc, &c| acc * z + c);
    n.ln() / 2.0 - n + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * poly
}

/// One-sided Smirnov survival function P(D_n⁺ ≥ x) by the exact
/// Birnbaum–Tingey sum `x Σ_{j ≤ n(1−x)} C(n,j) (x + j/n)^{j−1} (1 − x − j/n)^{n−j}`,
/// each (positive) term in log space. scipy's `special.smirnov` evaluates
/// the same sum in double-double arithmetic.
fn smirnov_sf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let jmax = (nf * (1.0 - x)).floor().max(0.0) as u64;
    let lnx = x.ln();
    let mut logs = Vec::with_capacity(jmax as usize + 1);
    let mut ln_binom = 0.0;
    for j in 0..=jmax.min(n) {
        if j > 0 {
            ln_binom += ((nf - j as f64 + 1.0) / j as f64).ln();
        }
        let jn = j as f64 / nf;
        let left = x + jn;
        let rest = 1.0 - left;
        if rest <= 0.0 && n > j {
            continue;
        }
        let tail = if n > j {
            (n - j) as f64 * (-left).ln_1p()
        } else {
            0.0
        };
        logs.push(lnx + ln_binom + tail + (j as f64 - 1.0) * left.ln());
    }
    let Some(max) = logs.iter().copied().reduce(f64::max) else {
        return 0.0;
    };
    if !max.is_finite() {
        return 0.0;
    }
    let s: f64 = logs.iter().map(|l| (l - max).exp()).sum();
    (max + s.ln()).exp().clamp(0.0, 1.0)
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * m];
    for i in 0..m {
        for k in 0..m {
            let aik = a[i * m + k];
            if aik == 0.0 {
                continue;
            }
            let (brow, crow) = (&b[k * m..(k + 1) * m], &mut c[i * m..(i + 1) * m]);
            for (cv, bv) in crow.iter_mut().zip(brow) {
                *cv += aik * bv;
            }
        }
    }
    c
}

/// Pr(D_n ≤ d) by Durbin's matrix method (Marsaglia, Tsang & Wang 2003),
/// with the same 2^128 rescaling as scipy's `_kolmogn_DMTW`.
fn kolmogn_dmtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powi(j as i32)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;
    let mut hm = vec![0.0; m * m];
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    let mut pw = vec![0.0; m * m];
    for i in 0..m {
        pw[i * m + i] = 1.0;
    }
    let (mut nn, mut expnt, mut hexpnt) = (n, 0i32, 0i32);
    while nn > 0 {
        if nn % 2 == 1 {
            pw = matmul(&pw, &hm, m);
            expnt += hexpnt;
        }
        hm = matmul(&hm, &hm, m);
        hexpnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > P128 {
            for v in hm.iter_mut() {
                *v /= P128;
            }
            hexpnt += E128;
        }
        nn /= 2;
    }
    let mut p = pw[(k - 1) * m + (k - 1)];
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < M128 {
            p *= P128;
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    p
}

fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1) / 2, (i + 1) % 2);
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Pr(D_n ≤ x) by Pomeranz's recursion (1974), as scipy's
/// `_kolmogn_Pomeranz` (same windows and 2^128 rescaling).
fn kolmogn_pomeranz_cdf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let ni = n as i64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![1.0; npwrs];
    let mut twogpower = vec![1.0; npwrs];
    let mut onem2gpower = vec![1.0; npwrs];
    let (g_n, two_g_n, one_m2g_n) = (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_m2g_n / m as f64;
    }
    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt = 0i32;
    let (mut j1, mut _j2) = pomeranz_j1j2(0, ni, ll, ceilf, roundf);
    for i in 1..(2 * ni + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.iter_mut().for_each(|v| *v = 0.0);
        let (nj1, j2) = pomeranz_j1j2(i, ni, ll, ceilf, roundf);
        j1 = nj1;
        _j2 = j2;
        let pwrs = if i == 1 || i == 2 * ni + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let start = (k1 - v0s).max(0) as usize;
            let end = ((k1 - v0s + ln2).max(0) as usize).min(npwrs);
            let src = &v0[start.min(end)..end];
            let p = &pwrs[..(ln2 as usize).min(npwrs)];
            let conv_start = (j1 - k1).max(0) as usize;
            let conv_len = (j2 - j1 + 1).max(0) as usize;
            let full_len = if src.is_empty() || p.is_empty() {
                0
            } else {
                src.len() + p.len() - 1
            };
            for (out, idx) in (conv_start..(conv_start + conv_len).min(full_len)).enumerate() {
                let mut acc = 0.0;
                let lo = idx.saturating_sub(p.len() - 1);
                let hi = idx.min(src.len() - 1);
                for s in lo..=hi {
                    acc += src[s] * p[idx - s];
                }
                if out < npwrs {
                    v1[out] = acc;
                }
            }
            let vmax = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < vmax && vmax < M128 {
                v1.iter_mut().for_each(|v| *v *= P128);
                expnt -= E128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let mut ans = v1.get((ni - v1s).max(0) as usize).copied().unwrap_or(0.0);
    for m in 1..=n {
        if ans.abs() > P128 {
            ans *= M128;
            expnt += E128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    ans.clamp(0.0, 1.0)
}

/// Pelz–Good asymptotic expansion of Pr(D_n ≤ x) (scipy's
/// `_kolmogn_PelzGood`).
fn kolmogn_pelz_good_cdf(n: f64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let sqrt2pi = (2.0 * PI).sqrt();
    let z = n.sqrt() * x;
    let (z2, z3, z4, z6) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let qlog = -pi2 / 8.0 / z2;
    if qlog < -708.0 {
        return 0.0;
    }
    let mut q = qlog.exp();
    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);
    let mut k = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf((8 * kk) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (kv, c) in k.iter_mut().zip(coeffs) {
            *kv = *kv * qpower + c;
        }
    }
    let den = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (kv, d) in k.iter_mut().zip(den) {
        *kv = *kv * q * sqrt2pi / d;
    }
    q = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for kk in (1..=maxk).rev() {
        let ks2 = (kk * kk) as f64;
        let kspi = PI * kk as f64;
        let qp = q.powf(ks2);
        k2extra += ks2 * qp;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ks2 * qp;
    }
    k[2] += k2extra * (pi2 * sqrt2pi / (-36.0 * z3));
    k[3] += k3extra * (pi2 * sqrt2pi / (216.0 * z6));
    let mut sum = 0.0;
    for (i, kv) in k.iter().enumerate() {
        sum += kv / n.powf(i as f64 / 2.0);
    }
    sum
}

// ---------------------------------------------------------------------------
// Mann–Whitney

/// Standard normal upper tail, accurate far into the tail. Uses `libm`'s
/// erfc (musl's, within an ulp): statrs 0.19's `erfc` is only good to
/// ~1e-10 relative, too close to the 1e-9 we promise.
fn norm_sf(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    if z == f64::NEG_INFINITY {
        return 1.0;
    }
    if z == f64::INFINITY {
        return 0.0;
    }
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// Mann–Whitney U test of `a` against `b`, with effect sizes.
///
/// * `u`, `p_value`: `scipy.stats.mannwhitneyu(a, b, alternative='two-sided',
///   use_continuity=True, method='asymptotic')`: average ranks,
///   σ² = nm/12 · ((N+1) − Σ(t³−t)/(N(N−1))), z = (max(U, nm−U) − nm/2 − ½)/σ,
///   p = min(1, 2·Φ̄(z)); p = 1 when all observations tie (σ = 0).
/// * `rank_biserial` = 1 − 2U/(nm): positive when `b` tends to be larger.
/// * `shift`: Hodges–Lehmann median of the n·m differences `b_j − a_i`.
/// * `shift_low`/`shift_high`: with z = Φ⁻¹(1 − (1−confidence)/2) and
///   σ₀ = sqrt(nm(n+m+1)/12) (the untied null sd of U),
///   `k = clamp(ceil(nm/2 − z·σ₀), 1, ceil(nm/2))`, the interval is
///   [D₍k₎, D₍nm+1−k₎] — the k-th smallest and k-th largest difference
///   (1-based). Confidence ≥ 1 gives [min, max] and ≤ 0 (or NaN) the
///   median pair.
///
/// The order statistics of the differences are found by selection over the
/// two sorted samples (two-pointer counts, O((n+m) log(nm)) expected) and
/// never materialise the n·m differences. None when either sample is empty
/// (after dropping non-finite values).
pub fn mann_whitney(a: &[f64], b: &[f64], confidence: f64) -> Option<MannWhitney> {
    let a: Vec<f64> = a.iter().copied().filter(|v| v.is_finite()).collect();
    let b: Vec<f64> = b.iter().copied().filter(|v| v.is_finite()).collect();
    let (u1, p) = rank_sum(&a, &b)?;
    let (n1, n2) = (a.len(), b.len());
    let nm = n1 as f64 * n2 as f64;
    let mut sa = a;
    let mut sb = b;
    sa.sort_by(f64::total_cmp);
    sb.sort_by(f64::total_cmp);
    let total = n1 as u64 * n2 as u64;
    let shift = if total % 2 == 1 {
        kth_difference(&sa, &sb, total.div_ceil(2))
    } else {
        (kth_difference(&sa, &sb, total / 2) + kth_difference(&sa, &sb, total / 2 + 1)) / 2.0
    };
    let k = ci_rank(n1 as u64, n2 as u64, confidence);
    let shift_low = kth_difference(&sa, &sb, k);
    let shift_high = kth_difference(&sa, &sb, total + 1 - k);
    Some(MannWhitney {
        u: u1,
        p_value: p,
        rank_biserial: 1.0 - 2.0 * u1 / nm,
        shift,
        shift_low,
        shift_high,
    })
}

/// U and the two-sided p-value of [`mann_whitney`] alone, without the
/// shift and its interval (three order statistics of the n·m differences,
/// most of the test's cost). None when either sample is empty.
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    let a: Vec<f64> = a.iter().copied().filter(|v| v.is_finite()).collect();
    let b: Vec<f64> = b.iter().copied().filter(|v| v.is_finite()).collect();
    rank_sum(&a, &b)
}

/// U of `a` and the normal-approximation p-value (tie- and
/// continuity-corrected) over finite samples.
fn rank_sum(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    // Average ranks over the pooled sample, tie sizes for the correction.
    let mut pooled: Vec<(f64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut r1 = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i + 1;
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        let t = (j - i) as f64;
        let rank = (i + 1 + j) as f64 / 2.0;
        let in_a = pooled[i..j].iter().filter(|p| p.1).count() as f64;
        r1 += rank * in_a;
        tie_term += t * t * t - t;
        i = j;
    }
    let (f1, f2) = (n1 as f64, n2 as f64);
    let u1 = r1 - f1 * (f1 + 1.0) / 2.0;
    let nm = f1 * f2;
    let u2 = nm - u1;
    let big_u = u1.max(u2);
    let n = f1 + f2;
    let var_term = (n + 1.0) - tie_term / (n * (n - 1.0));
    let s = (nm / 12.0 * var_term).max(0.0).sqrt();
    let num = big_u - nm / 2.0 - 0.5;
    let p = if s > 0.0 {
        (2.0 * norm_sf(num / s)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    Some((u1, p))
}

/// The 1-based rank k of the lower confidence bound (see [`mann_whitney`]).
fn ci_rank(n1: u64, n2: u64, confidence: f64) -> u64 {
    let total = n1 * n2;
    let half = total.div_ceil(2);
    if confidence.is_nan() || confidence <= 0.0 {
        return half;
    }
    if confidence >= 1.0 {
        return 1;
    }
    let z = Normal::standard().inverse_cdf(1.0 - (1.0 - confidence) / 2.0);
    let (f1, f2) = (n1 as f64, n2 as f64);
    let sigma = (f1 * f2 * (f1 + f2 + 1.0) / 12.0).sqrt();
    let k = (f1 * f2 / 2.0 - z * sigma).ceil();
    if k.is_nan() || k < 1.0 {
        1
    } else {
        (k as u64).min(half)
    }
}

/// Per row i, how many j have `b_j − a_i < p` and how many `≤ p` (as
/// computed in floating point). `a`, `b` sorted ascending. Since
/// rounding is monotone, `fl(b_j − a_i)` rises with j and falls with i, so
/// one pointer per inequality walks `b` once.
fn count_diffs(a: &[f64], b: &[f64], p: f64) -> (Vec<usize>, Vec<usize>) {
    let m = b.len();
    let mut lt = Vec::with_capacity(a.len());
    let mut le = Vec::with_capacity(a.len());
    let (mut jl, mut je) = (0usize, 0usize);
    for &ai in a {
        while jl < m && b[jl] - ai < p {
            jl += 1;
        }
        while je < m && b[je] - ai <= p {
            je += 1;
        }
        lt.push(jl);
        le.push(je);
    }
    (lt, le)
}

/// The k-th smallest (1-based) of the differences `b_j − a_i`, by
/// randomised selection on the implicit n×m matrix whose rows are sorted:
/// keep per row the column window still holding candidates, pick a random
/// candidate as pivot, count globally how many differences are below / at
/// most the pivot, and shrink the windows. Expected O(log(nm)) rounds of
/// O(n + m) work. Written here because no crate selects in X + Y.
fn kth_difference(a: &[f64], b: &[f64], k: u64) -> f64 {
    let (n, m) = (a.len(), b.len());
    let mut lo = vec![0usize; n];
    let mut hi = vec![m; n];
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15 ^ k;
    loop {
        let remaining: u64 = lo.iter().zip(&hi).map(|(l, h)| (h - l) as u64).sum();
        if remaining == 0 {
            // Unreachable for 1 ≤ k ≤ nm; stay total anyway.
            return b[0] - a[0];
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut r = rng % remaining;
        let mut pivot = b[0] - a[0];
        for i in 0..n {
            let w = (hi[i] - lo[i]) as u64;
            if r < w {
                pivot = b[lo[i] + r as usize] - a[i];
                break;
            }
            r -= w;
        }
        let (lt, le) = count_diffs(a, b, pivot);
        let c_lt: u64 = lt.iter().map(|&c| c as u64).sum();
        let c_le: u64 = le.iter().map(|&c| c as u64).sum();
        if k <= c_lt {
            for (h, c) in hi.iter_mut().zip(&lt) {
                *h = (*h).min(*c);
            }
            for (l, h) in lo.iter_mut().zip(&hi) {
                *l = (*l).min(*h);
            }
        } else if k <= c_le {
            return pivot;
        } else {
            for (l, c) in lo.iter_mut().zip(&le) {
                *l = (*l).max(*c);
            }
            for (h, l) in hi.iter_mut().zip(&lo) {
                *h = (*h).max(*l);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Chi-square

fn clean_count(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

fn padded_pair(p: &[f64], q: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let len = p.len().max(q.len());
    let get = |v: &[f64], i: usize| v.get(i).copied().map(clean_count).unwrap_or(0.0);
    (
        (0..len).map(|i| get(p, i)).collect(),
        (0..len).map(|i| get(q, i)).collect(),
    )
}

/// Two samples of category counts (same length, category i in both) as a
/// 2×k contingency table: equals `scipy.stats.chi2_contingency([a, b])`
/// with its defaults (Yates' correction — each cell moved by
/// min(½, |E − O|) towards its expectation — when dof == 1).
///
/// Categories empty in both samples are dropped first (scipy refuses a zero
/// expected frequency); `dof` is the number of remaining categories − 1.
/// Cramér's V is `sqrt(χ²/N)` from the uncorrected statistic, as
/// `scipy.stats.contingency.association(method='cramer')`.
/// None when a sample total is 0 or fewer than 2 categories remain (or the
/// counts are so large, ~1e154, that the statistic overflows).
pub fn chi_square_two_sample(a_counts: &[f64], b_counts: &[f64]) -> Option<ChiSquare> {
    let (a, b) = padded_pair(a_counts, b_counts);
    let (a, b): (Vec<f64>, Vec<f64>) = a
        .into_iter()
        .zip(b)
        .filter(|(x, y)| *x > 0.0 || *y > 0.0)
        .unzip();
    if a.len() < 2 {
        return None;
    }
    let (ra, rb) = (a.iter().sum::<f64>(), b.iter().sum::<f64>());
    if ra <= 0.0 || rb <= 0.0 {
        return None;
    }
    let total = ra + rb;
    let dof = a.len() - 1;
    let pearson = |yates: bool| {
        let mut stat = 0.0;
        for (&x, &y) in a.iter().zip(&b) {
            let col = x + y;
            for (obs, row) in [(x, ra), (y, rb)] {
                let exp = row * col / total;
                let mut o = obs;
                if yates {
                    let diff = exp - o;
                    o += diff.abs().min(0.5) * diff.signum();
                }
                stat += (o - exp) * (o - exp) / exp;
            }
        }
        stat
    };
    let statistic = pearson(dof == 1);
    if !statistic.is_finite() {
        return None; // counts so large (~1e154) that the arithmetic overflows
    }
    let p_value = ChiSquared::new(dof as f64)
        .map(|d| d.sf(statistic))
        .unwrap_or(1.0);
    let cramers_v = (pearson(false) / total).max(0.0).sqrt().min(1.0);
    Some(ChiSquare {
        statistic,
        p_value: if p_value.is_nan() { 1.0 } else { p_value },
        dof,
        cramers_v,
    })
}

// ---------------------------------------------------------------------------
// Distances between binned distributions

/// Normalised copies of two binned distributions, or None when a total is
/// not positive.
fn normalised_pair(p: &[f64], q: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
    let (p, q) = padded_pair(p, q);
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    if !(sp > 0.0 && sq > 0.0 && sp.is_finite() && sq.is_finite()) {
        return None;
    }
    Some((
        p.iter().map(|v| v / sp).collect(),
        q.iter().map(|v| v / sq).collect(),
    ))
}

/// Population stability index between two binned distributions (counts or
/// proportions; each is normalised to sum 1):
/// `Σ (cur_i − ref_i) · ln(cur_i / ref_i)`, where an empty bin's proportion
/// is replaced by [`PSI_EPSILON`] = 1e-4 (as Evidently does; no
/// renormalisation), so it stays finite. 0 when either side has no mass.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let Some((r, c)) = normalised_pair(reference, current) else {
        return 0.0;
    };
    r.iter()
        .zip(&c)
        .map(|(&r, &c)| {
            let r = if r == 0.0 { PSI_EPSILON } else { r };
            let c = if c == 0.0 { PSI_EPSILON } else { c };
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// `x·ln(x/y)` with scipy's `rel_entr` conventions for x = 0.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else if y > 0.0 {
        x * (x / y).ln()
    } else {
        f64::INFINITY
    }
}

/// `scipy.spatial.distance.jensenshannon(p, q, base=2)`: the JS *distance*
/// in [0, 1] (square root of the divergence in bits). 0 when either side
/// has no mass.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let Some((p, q)) = normalised_pair(p, q) else {
        return 0.0;
    };
    let (mut left, mut right) = (0.0, 0.0);
    for (&x, &y) in p.iter().zip(&q) {
        let m = (x + y) / 2.0;
        left += rel_entr(x, m);
        right += rel_entr(y, m);
    }
    let js = (left + right) / std::f64::consts::LN_2;
    (js / 2.0).max(0.0).sqrt().min(1.0)
}

/// `scipy.stats.wasserstein_distance(a, b)` on raw samples: the area
/// between the two ECDFs. 0 when either sample is empty.
pub fn wasserstein_1(a: &[f64], b: &[f64]) -> f64 {
    let a = finite_sorted(a);
    let b = finite_sorted(b);
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut all: Vec<f64> = a.iter().chain(&b).copied().collect();
    all.sort_by(f64::total_cmp);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let mut sum = 0.0;
    for w in all.windows(2) {
        let delta = w[1] - w[0];
        if delta == 0.0 {
            continue;
        }
        let fa = count_le(&a, w[0]) as f64 / na;
        let fb = count_le(&b, w[0]) as f64 / nb;
        if fa != fb {
            sum += (fa - fb).abs() * delta; // (skipping 0·∞ when a gap overflows)
        }
    }
    sum
}

/// Hellinger distance in [0, 1] between two binned distributions
/// (normalised inside): `sqrt(Σ (√p_i − √q_i)²) / √2`, which equals
/// `sqrt(1 − Σ √(p_i q_i))` but without its cancellation for close
/// distributions. 0 when either side has no mass.
pub fn hellinger(p: &[f64], q: &[f64]) -> f64 {
    let Some((p, q)) = normalised_pair(p, q) else {
        return 0.0;
    };
    let s: f64 = p
        .iter()
        .zip(&q)
        .map(|(&x, &y)| (x.sqrt() - y.sqrt()).powi(2))
        .sum();
    (s.sqrt() / std::f64::consts::SQRT_2).min(1.0)
}

/// Interior bin edges at the reference sample's quantiles: the values at
/// probabilities i/bins, i = 1..bins−1 (numpy's default linear
/// interpolation), deduplicated. With `e` the returned edges, the bins are
/// `(−∞, e₀], (e₀, e₁], …, (e_last, +∞)` — the first and last open-ended —
/// so there are `edges.len() + 1` of them. Empty when `bins < 2` or the
/// reference has no finite value (one bin holding everything).
pub fn quantile_edges(reference: &[f64], bins: usize) -> Vec<f64> {
    let r = finite_sorted(reference);
    if r.is_empty() || bins < 2 {
        return Vec::new();
    }
    let last = (r.len() - 1) as f64;
    let mut edges: Vec<f64> = Vec::with_capacity(bins - 1);
    for i in 1..bins {
        let pos = last * i as f64 / bins as f64;
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(r.len() - 1);
        let frac = pos - lo as f64;
        let v = r[lo] + (r[hi] - r[lo]) * frac;
        if edges.last().is_none_or(|&e| v > e) {
            edges.push(v);
        }
    }
    edges
}

/// Counts of `sample` in the bins defined by `edges` (see
/// [`quantile_edges`]): `edges.len() + 1` counts, bin i holding
/// `edges[i−1] < x ≤ edges[i]`. NaN observations are not counted.
pub fn bin_counts(sample: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0.0; edges.len() + 1];
    for &x in sample {
        if x.is_nan() {
            continue;
        }
        let bin = edges.partition_point(|&e| e < x);
        counts[bin] += 1.0;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_diffs(a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut d: Vec<f64> = b
            .iter()
            .flat_map(|&y| a.iter().map(move |&x| y - x))
            .collect();
        d.sort_by(f64::total_cmp);
        d
    }

    #[test]
    fn selection_matches_brute_force() {
        let mut seed = 12345u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for trial in 0..60 {
            let n = 1 + trial % 7;
            let m = 1 + (trial * 3) % 11;
            // Coarse values so ties are common.
            let a: Vec<f64> = (0..n).map(|_| (next() * 6.0).floor() * 0.5).collect();
            let b: Vec<f64> = (0..m).map(|_| (next() * 6.0).floor() * 0.5 + 0.3).collect();
            let mut sa = a.clone();
            let mut sb = b.clone();
            sa.sort_by(f64::total_cmp);
            sb.sort_by(f64::total_cmp);
            let d = brute_diffs(&a, &b);
            for k in 1..=d.len() as u64 {
                assert_eq!(
                    kth_difference(&sa, &sb, k),
                    d[k as usize - 1],
                    "n={n} m={m} k={k}"
                );
            }
            let mw = mann_whitney(&a, &b, 0.98).unwrap();
            let l = d.len();
            let med = if l % 2 == 1 {
                d[l / 2]
            } else {
                (d[l / 2 - 1] + d[l / 2]) / 2.0
            };
            assert_eq!(mw.shift, med);
            assert!(mw.shift_low <= mw.shift && mw.shift <= mw.shift_high);
        }
    }

    #[test]
    fn empty_and_degenerate_inputs() {
        assert!(ks_two_sample(&[], &[1.0]).is_none());
        assert!(ks_two_sample(&[f64::NAN], &[1.0]).is_none());
        assert!(mann_whitney(&[1.0], &[], 0.98).is_none());
        let same = ks_two_sample(&[1.0; 50], &[1.0; 70]).unwrap();
        assert_eq!(
            same,
            TestOutcome {
                statistic: 0.0,
                p_value: 1.0
            }
        );
        // scipy answers NaN here (kstwo with n = 0); we answer 1.
        let one = ks_two_sample(&[1.0], &[2.0]).unwrap();
        assert_eq!(
            one,
            TestOutcome {
                statistic: 1.0,
                p_value: 1.0
            }
        );
        let mw = mann_whitney(&[3.0; 40], &[3.0; 30], 0.98).unwrap();
        assert_eq!(mw.p_value, 1.0);
        assert_eq!(mw.u, 600.0);
        assert_eq!((mw.shift, mw.shift_low, mw.shift_high), (0.0, 0.0, 0.0));
        assert_eq!(mw.rank_biserial, 0.0);
        let single = mann_whitney(&[1.0], &[2.0], 0.98).unwrap();
        assert_eq!(single.shift, 1.0);
        assert_eq!(single.rank_biserial, 1.0);
        assert!(chi_square_two_sample(&[0.0, 0.0], &[1.0, 2.0]).is_none());
        assert!(chi_square_two_sample(&[5.0, 0.0], &[3.0, 0.0]).is_none());
        assert!(chi_square_two_sample(&[], &[]).is_none());
        assert!(chi_square_two_sample(&[1e300, 0.0], &[0.0, 1.0]).is_none());
        assert_eq!(psi(&[], &[1.0]), 0.0);
        assert_eq!(jensen_shannon(&[0.0], &[0.0]), 0.0);
        assert_eq!(hellinger(&[f64::NAN], &[1.0]), 0.0);
        assert_eq!(wasserstein_1(&[], &[1.0]), 0.0);
        assert!(quantile_edges(&[], 10).is_empty());
        assert_eq!(bin_counts(&[1.0, f64::NAN], &[]), vec![1.0]);
    }

    #[test]
    fn bounded_distances() {
        assert_eq!(jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]), 1.0);
        assert_eq!(hellinger(&[1.0, 0.0], &[0.0, 1.0]), 1.0);
        assert_eq!(jensen_shannon(&[2.0, 3.0], &[4.0, 6.0]), 0.0);
        assert_eq!(psi(&[2.0, 3.0], &[4.0, 6.0]), 0.0);
        // Empty bins stay finite.
        let v = psi(&[10.0, 0.0], &[0.0, 10.0]);
        assert!(v.is_finite() && v > 10.0);
        // Lengths differ: the shorter is padded with zeros.
        assert_eq!(hellinger(&[1.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn quantile_binning() {
        let r: Vec<f64> = (0..100).map(f64::from).collect();
        let e = quantile_edges(&r, 4);
        assert_eq!(e, vec![24.75, 49.5, 74.25]);
        assert_eq!(bin_counts(&r, &e), vec![25.0, 25.0, 25.0, 25.0]);
        // Heavy ties collapse edges.
        let t = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0];
        let e = quantile_edges(&t, 10);
        assert_eq!(e.first(), Some(&0.0));
        assert!(e.windows(2).all(|w| w[0] < w[1]));
        let c = bin_counts(&t, &e);
        assert_eq!(c.iter().sum::<f64>(), 10.0);
        assert_eq!(c[0], 8.0);
        assert_eq!(quantile_edges(&[5.0], 10), vec![5.0]);
    }

    #[test]
    fn kolmogorov_methods_agree_where_they_overlap() {
        // Pomeranz and Durbin compute the same exact CDF.
        for &(n, x) in &[(10u64, 0.2), (50, 0.1), (100, 0.08), (30, 0.25)] {
            let a = kolmogn_dmtw_cdf(n, x);
            let b = kolmogn_pomeranz_cdf(n, x);
            assert!((a - b).abs() < 1e-12, "n={n} x={x}: {a} vs {b}");
        }
        // Pelz–Good is close to exact for large n.
        let a = kolmogn_dmtw_cdf(2000, 0.02);
        let b = kolmogn_pelz_good_cdf(2000.0, 0.02);
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn huge_inputs_do_not_blow_up() {
        let a: Vec<f64> = (0..5000).map(|i| f64::from(i % 37)).collect();
        let b: Vec<f64> = (0..4000).map(|i| f64::from(i % 41) + 0.5).collect();
        let mw = mann_whitney(&a, &b, 0.98).unwrap();
        assert!(mw.shift_low <= mw.shift && mw.shift <= mw.shift_high);
        let ks = ks_two_sample(&a, &b).unwrap();
        assert!((0.0..=1.0).contains(&ks.p_value));
    }

    fn value() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (-5i32..5).prop_map(f64::from),
            6 => -1e3f64..1e3,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(-0.0),
            1 => Just(1e300),
            1 => Just(-1e-300),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// The merge walk finds the same D as the ECDF difference evaluated
        /// by binary search at every value of either sample (ties included).
        #[test]
        fn ks_statistic_is_the_largest_ecdf_gap_at_any_sample_value(
            a in proptest::collection::vec(value(), 1..60),
            b in proptest::collection::vec(value(), 1..60),
        ) {
            let (sorted_a, sorted_b) = (finite_sorted(&a), finite_sorted(&b));
            if !sorted_a.is_empty() && !sorted_b.is_empty() {
                let (fa, fb) = (sorted_a.len() as f64, sorted_b.len() as f64);
                let gaps: Vec<f64> = sorted_a.iter().chain(&sorted_b)
                    .map(|&v| count_le(&sorted_a, v) as f64 / fa - count_le(&sorted_b, v) as f64 / fb)
                    .collect();
                let up = gaps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let down = (-gaps.iter().copied().fold(f64::INFINITY, f64::min)).clamp(0.0, 1.0);
                let expected = if down > up { down } else { up };
                let t = ks_two_sample(&a, &b).unwrap();
                if sorted_a.len().max(sorted_b.len()) > KS_MAX_EXACT_N {
                    proptest::prop_assert_eq!(t.statistic, expected);
                } else {
                    // The exact path snaps D to the lattice of multiples of 1/lcm(n, m).
                    let g = gcd(sorted_a.len() as u64, sorted_b.len() as u64);
                    let lcm = (sorted_a.len() as u64 / g * sorted_b.len() as u64) as f64;
                    proptest::prop_assert_eq!(t.statistic, (expected * lcm).round_ties_even() / lcm);
                }
            }
        }

        /// Whatever comes in, nothing panics and every answer is finite and
        /// within its range.
        #[test]
        fn total_and_bounded(
            a in proptest::collection::vec(value(), 0..40),
            b in proptest::collection::vec(value(), 0..40),
            confidence in -0.5f64..1.5,
        ) {
            if let Some(t) = ks_two_sample(&a, &b) {
                proptest::prop_assert!((0.0..=1.0).contains(&t.statistic));
                proptest::prop_assert!((0.0..=1.0).contains(&t.p_value));
            }
            if let Some(m) = mann_whitney(&a, &b, confidence) {
                proptest::prop_assert!((0.0..=1.0).contains(&m.p_value));
                proptest::prop_assert!((-1.0..=1.0).contains(&m.rank_biserial));
                proptest::prop_assert!(m.shift_low <= m.shift && m.shift <= m.shift_high);
            }
            if let Some(c) = chi_square_two_sample(&a, &b) {
                proptest::prop_assert!(c.statistic.is_finite() && c.statistic >= 0.0);
                proptest::prop_assert!((0.0..=1.0).contains(&c.p_value));
                proptest::prop_assert!((0.0..=1.0).contains(&c.cramers_v));
            }
            proptest::prop_assert!(psi(&a, &b).is_finite());
            proptest::prop_assert!((0.0..=1.0).contains(&jensen_shannon(&a, &b)));
            proptest::prop_assert!((0.0..=1.0).contains(&hellinger(&a, &b)));
            let w = wasserstein_1(&a, &b);
            proptest::prop_assert!(w.is_finite() && w >= 0.0);
            let edges = quantile_edges(&a, 10);
            proptest::prop_assert!(edges.windows(2).all(|e| e[0] < e[1]));
            let counts = bin_counts(&b, &edges);
            let finite_or_inf = b.iter().filter(|v| !v.is_nan()).count() as f64;
            proptest::prop_assert_eq!(counts.iter().sum::<f64>(), finite_or_inf);
        }
    }
}

//! Every function of `inferwatch_detect::stats` against scipy's answers in
//! `tests/cases/stats/fixtures.json` (written by `tests/stats/make_fixtures.py`).
//!
//! Tolerance: 1e-9 relative. Where scipy's value is below 1e-300 (or exactly
//! 0, e.g. a p-value that underflowed) relative error is meaningless, so
//! the value must instead be within 1e-300 absolute.

use inferwatch_detect::stats::{
    chi_square_two_sample, hellinger, jensen_shannon, ks_two_sample, mann_whitney, psi,
    wasserstein_1,
};
use serde_json::Value;
use std::collections::BTreeMap;

const REL: f64 = 1e-9;
const TINY: f64 = 1e-300;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/cases/stats/fixtures.json"
    );
    let text = std::fs::read_to_string(path).expect("read fixtures.json");
    serde_json::from_str(&text).expect("parse fixtures.json")
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Relative error of `got` against `want`, or 0 when both are tiny.
fn rel_err(got: f64, want: f64) -> f64 {
    if want.abs() < TINY {
        if (got - want).abs() <= TINY {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        ((got - want) / want).abs()
    }
}

#[derive(Default)]
struct Worst(BTreeMap<String, (f64, String)>);

impl Worst {
    fn check(&mut self, test: &str, case: &str, field: &str, got: f64, want: f64) {
        let e = rel_err(got, want);
        assert!(
            e <= REL,
            "{test} case '{case}': {field} = {got:e}, scipy says {want:e} (rel err {e:e})"
        );
        let key = format!("{test}.{field}");
        let slot = self.0.entry(key).or_insert((0.0, String::new()));
        if e >= slot.0 {
            *slot = (e, case.to_string());
        }
    }
}

fn cases<'a>(f: &'a Value, key: &str, min: usize) -> &'a Vec<Value> {
    let c = f[key].as_array().expect(key);
    assert!(
        c.len() >= min,
        "{key}: only {} cases, expected at least {min}",
        c.len()
    );
    c
}

#[test]
fn stats_equal_scipy() {
    let f = fixtures();
    let mut worst = Worst::default();

    // Large samples are stored once under "shared" and named by the case.
    let sample = |v: &Value| match v.as_str() {
        Some(shared) => nums(&f["shared"][shared]),
        None => nums(v),
    };
    let ks = cases(&f, "ks", 60);
    let asymptotic = ks.iter().filter(|c| c["path"] != "exact").count();
    assert!(
        asymptotic >= 20,
        "ks: only {asymptotic} cases on scipy's asymptotic path"
    );
    for c in ks {
        let name = c["name"].as_str().unwrap();
        let got = ks_two_sample(&sample(&c["a"]), &sample(&c["b"])).expect(name);
        worst.check(
            "ks",
            name,
            "statistic",
            got.statistic,
            c["statistic"].as_f64().unwrap(),
        );
        match c["p_value"].as_f64() {
            Some(p) => worst.check("ks", name, "p_value", got.p_value, p),
            // scipy answers NaN (kstwo with n = round(1/2) = 0); documented as 1.
            None => assert_eq!(got.p_value, 1.0, "ks case '{name}'"),
        }
    }

    for c in cases(&f, "mann_whitney", 60) {
        let name = c["name"].as_str().unwrap();
        let conf = c["confidence"].as_f64().unwrap();
        let got = mann_whitney(&nums(&c["a"]), &nums(&c["b"]), conf).expect(name);
        for (field, g) in [
            ("u", got.u),
            ("p_value", got.p_value),
            ("rank_biserial", got.rank_biserial),
            ("shift", got.shift),
            ("shift_low", got.shift_low),
            ("shift_high", got.shift_high),
        ] {
            worst.check("mann_whitney", name, field, g, c[field].as_f64().unwrap());
        }
    }

    for c in cases(&f, "chi_square", 60) {
        let name = c["name"].as_str().unwrap();
        let got = chi_square_two_sample(&nums(&c["a"]), &nums(&c["b"])).expect(name);
        assert_eq!(
            got.dof as u64,
            c["dof"].as_u64().unwrap(),
            "chi_square case '{name}': dof"
        );
        for (field, g) in [
            ("statistic", got.statistic),
            ("p_value", got.p_value),
            ("cramers_v", got.cramers_v),
        ] {
            worst.check("chi_square", name, field, g, c[field].as_f64().unwrap());
        }
    }

    type Binned = fn(&[f64], &[f64]) -> f64;
    let binned: [(&str, Binned); 3] = [
        ("psi", psi),
        ("jensen_shannon", jensen_shannon),
        ("hellinger", hellinger),
    ];
    for (key, func) in binned {
        for c in cases(&f, key, 30) {
            let name = c["name"].as_str().unwrap();
            let got = func(&nums(&c["p"]), &nums(&c["q"]));
            worst.check(key, name, "value", got, c["value"].as_f64().unwrap());
        }
    }

    for c in cases(&f, "wasserstein", 30) {
        let name = c["name"].as_str().unwrap();
        let got = wasserstein_1(&nums(&c["a"]), &nums(&c["b"]));
        worst.check(
            "wasserstein",
            name,
            "value",
            got,
            c["value"].as_f64().unwrap(),
        );
    }

    for (k, (e, case)) in &worst.0 {
        println!("worst relative error {k}: {e:.3e} ({case})");
    }
}

//! Derived columns: `confidence`, `predicted_class`, `margin` and `entropy`
//! computed from `probabilities`, or from `logits` when only logits are given.
//!
//! Detectors for drift and adversarial probing look at how sure a model is,
//! so these are filled at ingest, once, instead of in every query. Values
//! that the event already carries are never replaced.

/// The summary of one class distribution.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClassSummary {
    /// Index of the most likely class (the first one on ties).
    pub predicted_class: Option<i32>,
    /// Probability of the most likely class.
    pub confidence: Option<f64>,
    /// Top-1 minus top-2 probability; `None` with fewer than two classes.
    pub margin: Option<f64>,
    /// Shannon entropy in nats, `-Σ p ln p`.
    pub entropy: Option<f64>,
}

/// Summarises class probabilities as given (they are not renormalised:
/// a distribution that does not sum to one is the model's own business, and
/// a detector may want to see it).
pub fn summarise_probabilities(probabilities: &[f64]) -> ClassSummary {
    let Some((top_index, top1, top2)) = top_two(probabilities) else {
        return ClassSummary::default();
    };
    let entropy = probabilities
        .iter()
        .copied()
        .filter(|&probability| probability > 0.0)
        .map(|probability| -probability * probability.ln())
        .sum::<f64>();
    ClassSummary {
        predicted_class: i32::try_from(top_index).ok(),
        confidence: Some(top1),
        margin: top2.map(|second| top1 - second),
        entropy: Some(entropy),
    }
}

/// Summarises the softmax of `logits` without materialising it.
///
/// Shifting by the largest logit keeps every `exp` in `(0, 1]`, so huge
/// logits neither overflow nor lose the top class. With `m` the largest logit
/// and `Z = Σ exp(l_i - m)`: `p_i = exp(l_i - m) / Z`, the confidence is `1/Z`
/// and `H = ln Z - Σ p_i (l_i - m)`.
pub fn summarise_logits(logits: &[f64]) -> ClassSummary {
    let Some((top_index, top_logit, second_logit)) = top_two(logits) else {
        return ClassSummary::default();
    };
    let mut partition = 0.0f64;
    let mut weighted_shift = 0.0f64;
    for &logit in logits {
        let shifted = logit - top_logit;
        let weight = shifted.exp();
        partition += weight;
        weighted_shift += weight * shifted;
    }
    // partition >= 1 because the top logit contributes exp(0).
    let confidence = 1.0 / partition;
    let entropy = (partition.ln() - weighted_shift / partition).max(0.0);
    let margin = second_logit.map(|second| confidence - (second - top_logit).exp() / partition);
    ClassSummary {
        predicted_class: i32::try_from(top_index).ok(),
        confidence: Some(confidence),
        margin,
        entropy: Some(entropy),
    }
}

/// Index and value of the largest element, and the second largest value.
fn top_two(values: &[f64]) -> Option<(usize, f64, Option<f64>)> {
    let mut best: Option<(usize, f64)> = None;
    let mut second: Option<f64> = None;
    for (index, &value) in values.iter().enumerate() {
        match best {
            None => best = Some((index, value)),
            Some((_, best_value)) if value > best_value => {
                second = Some(best_value);
                best = Some((index, value));
            }
            Some(_) => {
                if second.is_none_or(|second_value| value > second_value) {
                    second = Some(value);
                }
            }
        }
    }
    best.map(|(index, value)| (index, value, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("value present");
        assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
    }

    #[test]
    fn probabilities_summary() {
        let summary = summarise_probabilities(&[0.1, 0.7, 0.2]);
        assert_eq!(summary.predicted_class, Some(1));
        close(summary.confidence, 0.7);
        close(summary.margin, 0.5);
        let entropy = -(0.1f64 * 0.1f64.ln() + 0.7 * 0.7f64.ln() + 0.2 * 0.2f64.ln());
        close(summary.entropy, entropy);
    }

    #[test]
    fn logits_match_an_explicit_softmax() {
        let logits = [2.0f64, 1.0, 0.1];
        let exps: Vec<f64> = logits.iter().map(|&l| l.exp()).collect();
        let total: f64 = exps.iter().sum();
        let probabilities: Vec<f64> = exps.iter().map(|e| e / total).collect();
        let summary = summarise_logits(&logits);
        assert_eq!(summary.predicted_class, Some(0));
        close(summary.confidence, probabilities[0]);
        close(summary.margin, probabilities[0] - probabilities[1]);
        let entropy: f64 = probabilities.iter().map(|p| -p * p.ln()).sum();
        close(summary.entropy, entropy);
    }

    #[test]
    fn huge_logits_stay_finite() {
        let summary = summarise_logits(&[1000.0, 999.0, -1000.0]);
        let expected = 1.0 / (1.0 + (-1.0f64).exp());
        close(summary.confidence, expected);
        assert!(summary.entropy.unwrap().is_finite());
    }

    #[test]
    fn ties_pick_the_first_class_and_have_zero_margin() {
        let summary = summarise_probabilities(&[0.5, 0.5]);
        assert_eq!(summary.predicted_class, Some(0));
        close(summary.margin, 0.0);
        close(summary.entropy, std::f64::consts::LN_2);
    }

    #[test]
    fn degenerate_lists() {
        assert_eq!(summarise_probabilities(&[]), ClassSummary::default());
        assert_eq!(summarise_logits(&[]), ClassSummary::default());
        let single = summarise_logits(&[3.0]);
        close(single.confidence, 1.0);
        assert_eq!(single.margin, None);
        close(single.entropy, 0.0);
    }
}

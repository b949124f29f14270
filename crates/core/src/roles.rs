//! Deployment roles: which arm of a model is the baseline and which the
//! canary, whatever a fleet calls them.
//!
//! Fleets name their arms `baseline`/`canary`, `stable`/`canary`,
//! `control`/`treatment`, `prod`/`candidate`, … A rule that compares arms
//! says `ab_role == "canary"`; the detection engine fills `ab_role` from
//! `ab_group` through this vocabulary, and where `ab_group` is missing or
//! says nothing it knows, from the traffic itself (see `inferwatch_detect`'s
//! role book). The vocabulary is one list per role, extended in a mapping
//! file's `roles:`.

/// The name of the column the detection engine adds to every batch.
pub const AB_ROLE: &str = "ab_role";

/// A deployment's part in a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The arm that serves most traffic and that the canary is judged against.
    Baseline,
    /// The arm under evaluation.
    Canary,
}

impl Role {
    /// The value of the `ab_role` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Baseline => "baseline",
            Role::Canary => "canary",
        }
    }
}

/// Words that name each role in `ab_group` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleVocabulary {
    /// Words for the baseline arm.
    pub baseline: Vec<String>,
    /// Words for the canary arm.
    pub canary: Vec<String>,
}

impl Default for RoleVocabulary {
    fn default() -> Self {
        let words = |list: &[&str]| list.iter().map(|word| word.to_string()).collect();
        RoleVocabulary {
            baseline: words(&[
                "baseline",
                "stable",
                "control",
                "primary",
                "prod",
                "production",
                "champion",
                "main",
                "current",
            ]),
            canary: words(&[
                "canary",
                "treatment",
                "candidate",
                "shadow",
                "challenger",
                "experiment",
                "experimental",
                "preview",
                "beta",
            ]),
        }
    }
}

impl RoleVocabulary {
    /// The role an `ab_group` value names, if any. Matching ignores case
    /// and looks at each word of the value (`canary-eu`, `Treatment_B` and
    /// `arm:control` all count); a value naming both roles names neither.
    pub fn role_of(&self, ab_group: &str) -> Option<Role> {
        let mut found = None;
        for word in ab_group
            .split(|c: char| !c.is_alphanumeric())
            .filter(|word| !word.is_empty())
        {
            let role = if self
                .baseline
                .iter()
                .any(|known| known.eq_ignore_ascii_case(word))
            {
                Role::Baseline
            } else if self
                .canary
                .iter()
                .any(|known| known.eq_ignore_ascii_case(word))
            {
                Role::Canary
            } else {
                continue;
            };
            match found {
                None => found = Some(role),
                Some(earlier) if earlier != role => return None,
                Some(_) => {}
            }
        }
        found
    }

    /// Adds words (from a mapping's `roles:`) to the defaults.
    pub fn extend(&mut self, baseline: &[String], canary: &[String]) {
        self.baseline.extend(baseline.iter().cloned());
        self.canary.extend(canary.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_vocabularies_name_their_roles() {
        let vocabulary = RoleVocabulary::default();
        for (value, role) in [
            ("baseline", Some(Role::Baseline)),
            ("Stable", Some(Role::Baseline)),
            ("control", Some(Role::Baseline)),
            ("prod-eu", Some(Role::Baseline)),
            ("canary", Some(Role::Canary)),
            ("Treatment_B", Some(Role::Canary)),
            ("arm:candidate", Some(Role::Canary)),
            ("shadow", Some(Role::Canary)),
            ("blue", None),
            ("", None),
            ("canary-vs-control", None),
            ("canarybird", None),
        ] {
            assert_eq!(vocabulary.role_of(value), role, "{value}");
        }
    }

    #[test]
    fn a_mapping_adds_words() {
        let mut vocabulary = RoleVocabulary::default();
        assert_eq!(vocabulary.role_of("blue"), None);
        vocabulary.extend(&["blue".into()], &["green".into()]);
        assert_eq!(vocabulary.role_of("blue"), Some(Role::Baseline));
        assert_eq!(vocabulary.role_of("GREEN"), Some(Role::Canary));
    }
}

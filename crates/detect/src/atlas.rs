//! MITRE ATLAS techniques that inference logs can reveal, and how much of
//! them a rule pack covers (`inferwatch rules coverage`).
//!
//! [`TECHNIQUES`] holds ids, names and tactics as in atlas-data v5.6, each
//! with what it leaves in inference logs. [`coverage`] judges a rule pack
//! against them from the rules' `atlas:` ids and their fixtures (`tests:`).
//!
//! **Naming modes.** A rule should fire on the traffic it was written for
//! (`default`: the simulator's model names, versions and A/B groups) and on
//! the same traffic under other names (`foreign`: renamed models, other
//! version schemes and A/B vocabulary, served through a mapping). A rule
//! *fires* in a mode when it has a fixture in that mode expecting a `firing`
//! alert and, when fixtures are run, every such fixture passes. Fixtures
//! that expect silence say nothing about coverage.
//!
//! **Status of a technique.**
//! * covered: one rule carrying its id fires in both naming modes;
//! * partial: rules carry its id but none fires in both modes (no firing
//!   fixture, some fixtures fail when run, or one mode only);
//! * not covered: no rule carries its id.
//!
//! Ids match exactly. A parent id such as `AML.T0024` does not count for
//! its sub-techniques: it does not say which of membership inference,
//! inversion or extraction the rule sees, and counting it for all three
//! would overstate coverage. Ids outside the catalogue are listed apart.
//!
//! A simulated fixture (`simulate:`) runs in both modes: the simulator also
//! writes the fleet under foreign names, which `rules test` decodes through
//! the matching mapping. A fixture reading a file runs in its own names only.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::{Rule, RuleTest};

/// An ATLAS tactic: the adversary's goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tactic {
    /// `AML.TA….`
    pub id: &'static str,
    /// Its name in ATLAS.
    pub name: &'static str,
}

/// An ATLAS technique (or sub-technique) visible in inference logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Technique {
    /// `AML.T….`, with the sub-technique suffix when there is one.
    pub id: &'static str,
    /// Its name in ATLAS; a sub-technique's is prefixed with its parent's.
    pub name: &'static str,
    /// The tactics it serves, in [`TACTICS`] order.
    pub tactics: &'static [Tactic],
    /// What it leaves in inference logs.
    pub indicator: &'static str,
}

/// AML.TA0003.
pub const RESOURCE_DEVELOPMENT: Tactic = Tactic {
    id: "AML.TA0003",
    name: "Resource Development",
};
/// AML.TA0004.
pub const INITIAL_ACCESS: Tactic = Tactic {
    id: "AML.TA0004",
    name: "Initial Access",
};
/// AML.TA0000 ("ML Model Access" before ATLAS 5).
pub const AI_MODEL_ACCESS: Tactic = Tactic {
    id: "AML.TA0000",
    name: "AI Model Access",
};
/// AML.TA0005.
pub const EXECUTION: Tactic = Tactic {
    id: "AML.TA0005",
    name: "Execution",
};
/// AML.TA0006.
pub const PERSISTENCE: Tactic = Tactic {
    id: "AML.TA0006",
    name: "Persistence",
};
/// AML.TA0012.
pub const PRIVILEGE_ESCALATION: Tactic = Tactic {
    id: "AML.TA0012",
    name: "Privilege Escalation",
};
/// AML.TA0007.
pub const DEFENSE_EVASION: Tactic = Tactic {
    id: "AML.TA0007",
    name: "Defense Evasion",
};
/// AML.TA0001 ("ML Attack Staging" before ATLAS 5).
pub const AI_ATTACK_STAGING: Tactic = Tactic {
    id: "AML.TA0001",
    name: "AI Attack Staging",
};
/// AML.TA0010.
pub const EXFILTRATION: Tactic = Tactic {
    id: "AML.TA0010",
    name: "Exfiltration",
};
/// AML.TA0011.
pub const IMPACT: Tactic = Tactic {
    id: "AML.TA0011",
    name: "Impact",
};

/// The tactics of [`TECHNIQUES`], in the left-to-right order of the ATLAS matrix.
pub const TACTICS: &[Tactic] = &[
    RESOURCE_DEVELOPMENT,
    INITIAL_ACCESS,
    AI_MODEL_ACCESS,
    EXECUTION,
    PERSISTENCE,
    PRIVILEGE_ESCALATION,
    DEFENSE_EVASION,
    AI_ATTACK_STAGING,
    EXFILTRATION,
    IMPACT,
];

const EXTRACTION_INDICATOR: &str =
    "steady high volume from one client, nearly every input new, inputs that sweep the input space";

/// The techniques an inference log can show, grouped loosely by how an
/// attack unfolds.
pub const TECHNIQUES: &[Technique] = &[
    Technique {
        id: "AML.T0040",
        name: "AI Model Inference API Access",
        tactics: &[AI_MODEL_ACCESS],
        indicator: "keys or IPs never seen before; a key leaving its own usual pattern",
    },
    Technique {
        id: "AML.T0024.000",
        name: "Exfiltration via AI Inference API: Infer Training Data Membership",
        tactics: &[EXFILTRATION],
        indicator: EXTRACTION_INDICATOR,
    },
    Technique {
        id: "AML.T0024.001",
        name: "Exfiltration via AI Inference API: Invert AI Model",
        tactics: &[EXFILTRATION],
        indicator: EXTRACTION_INDICATOR,
    },
    Technique {
        id: "AML.T0024.002",
        name: "Exfiltration via AI Inference API: Extract AI Model",
        tactics: &[EXFILTRATION],
        indicator: EXTRACTION_INDICATOR,
    },
    Technique {
        id: "AML.T0043",
        name: "Craft Adversarial Data",
        tactics: &[AI_ATTACK_STAGING],
        indicator: "bursts of near-identical inputs; confidences crowding the decision boundary",
    },
    Technique {
        id: "AML.T0015",
        name: "Evade AI Model",
        tactics: &[DEFENSE_EVASION, IMPACT],
        indicator: "one source's predicted classes or confidences shifting away from the rest",
    },
    Technique {
        id: "AML.T0029",
        name: "Denial of AI Service",
        tactics: &[IMPACT],
        indicator: "request volume, p99 latency and 5xx/429 responses spiking",
    },
    Technique {
        id: "AML.T0034",
        name: "Cost Harvesting",
        tactics: &[IMPACT],
        indicator: "a key's tokens and latency per request far above its own past",
    },
    Technique {
        id: "AML.T0031",
        name: "Erode AI Model Integrity",
        tactics: &[IMPACT],
        indicator: "confidence drifting slowly over hours or days",
    },
    Technique {
        id: "AML.T0020",
        name: "Poison Training Data",
        tactics: &[RESOURCE_DEVELOPMENT, PERSISTENCE],
        indicator: "one data source's outputs diverging from the other sources'",
    },
    Technique {
        id: "AML.T0010.003",
        name: "AI Supply Chain Compromise: Model",
        tactics: &[INITIAL_ACCESS],
        indicator: "a model_version nobody deployed, or behaviour changing at a deploy",
    },
    Technique {
        id: "AML.T0012",
        name: "Valid Accounts",
        tactics: &[
            INITIAL_ACCESS,
            PERSISTENCE,
            PRIVILEGE_ESCALATION,
            DEFENSE_EVASION,
        ],
        indicator: "one key suddenly used from many new IPs",
    },
    Technique {
        id: "AML.T0051",
        name: "LLM Prompt Injection",
        tactics: &[EXECUTION],
        indicator: "needs a classifier over prompts: an input hash cannot show it",
    },
];

/// The catalogued technique with this exact id.
pub fn technique(id: &str) -> Option<&'static Technique> {
    TECHNIQUES.iter().find(|technique| technique.id == id)
}

/// How a fixture names models, versions and A/B groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The simulator's own names.
    Default,
    /// Renamed models, other version schemes and A/B vocabulary, through a mapping.
    Foreign,
}

impl Naming {
    /// Both modes, in report order.
    pub const ALL: [Naming; 2] = [Naming::Default, Naming::Foreign];

    /// `default` or `foreign`.
    pub fn as_str(self) -> &'static str {
        match self {
            Naming::Default => "default",
            Naming::Foreign => "foreign",
        }
    }

    /// The modes a fixture runs in: a simulated fixture in both (the
    /// simulator writes the foreign fleet too), a file fixture in its own
    /// names only.
    pub fn modes_of(fixture: &RuleTest) -> &'static [Naming] {
        if fixture.simulate.is_some() {
            &Naming::ALL
        } else {
            &[Naming::Default]
        }
    }
}

/// Runs one fixture of a rule in one naming mode and says whether it passed.
pub type RunFixture<'a> = dyn FnMut(&Rule, &RuleTest, Naming) -> bool + 'a;

/// What one rule's fixtures show in one naming mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModeEvidence {
    /// Fixtures in this mode.
    pub fixtures: usize,
    /// Of those, fixtures expecting a `firing` alert.
    pub firing: usize,
    /// Of those, fixtures that passed when run; `None` when not run.
    pub passed: Option<usize>,
}

impl ModeEvidence {
    /// Whether the rule fires in this mode: a fixture expects it to, and
    /// every such fixture passed when run.
    pub fn fires(&self) -> bool {
        self.firing > 0 && self.passed.is_none_or(|passed| passed == self.firing)
    }

    /// One short phrase: `expects firing` (declared, not run), `fires`,
    /// `fires in 1 of 2`, `fails`, `no firing fixture` or `no fixture`.
    pub fn describe(&self) -> String {
        match (self.fixtures, self.firing, self.passed) {
            (0, _, _) => "no fixture".to_string(),
            (_, 0, _) => "no firing fixture".to_string(),
            (_, _, None) => "expects firing".to_string(),
            (_, firing, Some(passed)) if passed == firing => "fires".to_string(),
            (_, _, Some(0)) => "fails".to_string(),
            (_, firing, Some(passed)) => format!("fires in {passed} of {firing}"),
        }
    }
}

/// What one rule's fixtures show, per naming mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEvidence {
    /// The rule's id.
    pub id: String,
    /// Its ATLAS ids, as written.
    pub atlas: Vec<String>,
    /// Fixtures under the simulator's names.
    pub default: ModeEvidence,
    /// Fixtures under foreign names.
    pub foreign: ModeEvidence,
}

impl RuleEvidence {
    /// Reads a rule's fixtures; with `run`, also runs those expecting a
    /// `firing` alert (`run` says whether one passed).
    pub fn of(rule: &Rule, mut run: Option<&mut RunFixture<'_>>) -> Self {
        let mut evidence = RuleEvidence {
            id: rule.id.clone(),
            atlas: rule.atlas.clone(),
            default: ModeEvidence::default(),
            foreign: ModeEvidence::default(),
        };
        if run.is_some() {
            evidence.default.passed = Some(0);
            evidence.foreign.passed = Some(0);
        }
        for fixture in &rule.tests {
            for &naming in Naming::modes_of(fixture) {
                let mode = evidence.mode_mut(naming);
                mode.fixtures += 1;
                if !fixture.expect.iter().any(|alert| alert.state == "firing") {
                    continue;
                }
                mode.firing += 1;
                if let Some(run) = run.as_mut() {
                    if run(rule, fixture, naming) {
                        *mode.passed.get_or_insert(0) += 1;
                    }
                }
            }
        }
        evidence
    }

    /// The evidence in one mode.
    pub fn mode(&self, naming: Naming) -> &ModeEvidence {
        match naming {
            Naming::Default => &self.default,
            Naming::Foreign => &self.foreign,
        }
    }

    fn mode_mut(&mut self, naming: Naming) -> &mut ModeEvidence {
        match naming {
            Naming::Default => &mut self.default,
            Naming::Foreign => &mut self.foreign,
        }
    }

    /// Covered when it fires in both modes, partial otherwise.
    pub fn status(&self) -> Status {
        if Naming::ALL.iter().all(|&naming| self.mode(naming).fires()) {
            Status::Covered
        } else {
            Status::Partial
        }
    }
}

/// How well a technique is covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// No rule carries its id.
    NotCovered,
    /// Rules carry its id, none fires in both naming modes.
    Partial,
    /// A rule carrying its id fires in both naming modes.
    Covered,
}

impl Status {
    /// `covered`, `partial` or `not_covered` (the JSON spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Covered => "covered",
            Status::Partial => "partial",
            Status::NotCovered => "not_covered",
        }
    }
}

/// Where the fixture evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Fixtures read, not run: what they expect is taken as what happens.
    Declared,
    /// Fixtures expecting an alert were run.
    Run,
}

/// One technique's line in the matrix.
#[derive(Debug, Clone)]
pub struct TechniqueCoverage {
    /// The technique.
    pub technique: &'static Technique,
    /// Its status.
    pub status: Status,
    /// Ids of the rules carrying its id, in load order.
    pub rules: Vec<String>,
}

/// A rule pack's coverage of [`TECHNIQUES`].
#[derive(Debug, Clone)]
pub struct Coverage {
    /// Declared or run.
    pub evidence: Evidence,
    /// Rules in the pack.
    pub rule_count: usize,
    /// Every technique, in [`TECHNIQUES`] order.
    pub techniques: Vec<TechniqueCoverage>,
    /// The fixture evidence of every rule carrying a catalogued id.
    pub rules: Vec<RuleEvidence>,
    /// Ids the rules carry that are not in the catalogue (parents such as
    /// `AML.T0024`, other techniques, typos), with the rules carrying them.
    pub outside: BTreeMap<String, Vec<String>>,
}

impl Coverage {
    /// How many techniques have this status.
    pub fn count(&self, status: Status) -> usize {
        self.techniques
            .iter()
            .filter(|technique| technique.status == status)
            .count()
    }
}

/// Judges `rules` against [`TECHNIQUES`]. Without `run` it reads fixture
/// declarations only; with it, each fixture expecting a `firing` alert of a
/// rule carrying a catalogued id is run through `run`, which says whether it
/// passed.
pub fn coverage(rules: &[Rule], mut run: Option<&mut RunFixture<'_>>) -> Coverage {
    let kind = if run.is_some() {
        Evidence::Run
    } else {
        Evidence::Declared
    };
    let mut evidence = Vec::new();
    let mut outside: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rule in rules {
        for id in &rule.atlas {
            if technique(id).is_none() {
                outside.entry(id.clone()).or_default().push(rule.id.clone());
            }
        }
        if rule.atlas.iter().any(|id| technique(id).is_some()) {
            evidence.push(RuleEvidence::of(rule, run.as_deref_mut()));
        }
    }
    let mut coverage = classify(evidence, kind);
    coverage.rule_count = rules.len();
    coverage.outside = outside;
    coverage
}

/// Judges [`TECHNIQUES`] from rules' fixture evidence: a technique takes the
/// best status among the rules carrying its id.
pub fn classify(rules: Vec<RuleEvidence>, evidence: Evidence) -> Coverage {
    let techniques = TECHNIQUES
        .iter()
        .map(|technique| {
            let carrying: Vec<&RuleEvidence> = rules
                .iter()
                .filter(|rule| rule.atlas.iter().any(|id| id == technique.id))
                .collect();
            TechniqueCoverage {
                technique,
                status: carrying
                    .iter()
                    .map(|rule| rule.status())
                    .max()
                    .unwrap_or(Status::NotCovered),
                rules: carrying.iter().map(|rule| rule.id.clone()).collect(),
            }
        })
        .collect();
    Coverage {
        evidence,
        rule_count: rules.len(),
        techniques,
        rules,
        outside: BTreeMap::new(),
    }
}

fn mode_json(evidence: &ModeEvidence) -> Value {
    json!({
        "result": evidence.describe(),
        "fixtures": evidence.fixtures,
        "firing_fixtures": evidence.firing,
        "passed": evidence.passed,
    })
}

/// The coverage as JSON (`inferwatch rules coverage --format json` adds
/// `rules_dir`; `GET /api/v1/rules/coverage` serves it as is). Its shape
/// is a contract: fields may be added, never renamed or removed.
pub fn coverage_json(report: &Coverage) -> Value {
    json!({
        "rule_count": report.rule_count,
        "evidence": match report.evidence {
            Evidence::Declared => "declared",
            Evidence::Run => "run",
        },
        "naming_modes": Naming::ALL.map(Naming::as_str),
        "summary": {
            "covered": report.count(Status::Covered),
            "partial": report.count(Status::Partial),
            "not_covered": report.count(Status::NotCovered),
        },
        "techniques": report.techniques.iter().map(|line| json!({
            "id": line.technique.id,
            "name": line.technique.name,
            "tactics": line.technique.tactics.iter()
                .map(|tactic| json!({ "id": tactic.id, "name": tactic.name }))
                .collect::<Vec<_>>(),
            "status": line.status.as_str(),
            "rules": line.rules,
            "indicator": line.technique.indicator,
        })).collect::<Vec<_>>(),
        "rules": report.rules.iter().map(|rule| json!({
            "id": rule.id,
            "atlas": rule.atlas,
            "status": rule.status().as_str(),
            "naming": {
                "default": mode_json(&rule.default),
                "foreign": mode_json(&rule.foreign),
            },
        })).collect::<Vec<_>>(),
        "outside_catalogue": report.outside.iter()
            .map(|(id, rules)| json!({ "id": id, "rules": rules }))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn rule(id: &str, atlas: &str, tests: &str) -> Rule {
        let yaml = format!(
            "id: {id}\ntitle: T\nseverity: high\nwindow: 5m\ncondition: count() > 5\n\
             atlas: [{atlas}]\ntests:{tests}\n"
        );
        Rule::from_yaml_str(Path::new("r.yaml"), &yaml).unwrap()
    }

    const FIRES: &str = "\n  - name: fires\n    simulate: { scenario: extraction, duration: 1h }\n    expect: [{ state: firing }, { state: resolved }]";
    const SILENT: &str =
        "\n  - name: silent\n    simulate: { scenario: baseline, duration: 1h }\n    expect: []";

    fn status_of<'a>(coverage: &'a Coverage, id: &str) -> &'a TechniqueCoverage {
        coverage
            .techniques
            .iter()
            .find(|t| t.technique.id == id)
            .unwrap()
    }

    #[test]
    fn the_catalogue_is_consistent() {
        assert_eq!(TECHNIQUES.len(), 13);
        for technique in TECHNIQUES {
            assert!(!technique.tactics.is_empty(), "{}", technique.id);
            let order: Vec<usize> = technique
                .tactics
                .iter()
                .map(|t| TACTICS.iter().position(|known| known == t).unwrap())
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", technique.id);
            assert_eq!(
                TECHNIQUES.iter().filter(|t| t.id == technique.id).count(),
                1
            );
        }
        // Every tactic listed serves some technique.
        for tactic in TACTICS {
            assert!(TECHNIQUES.iter().any(|t| t.tactics.contains(tactic)));
        }
        assert_eq!(technique("AML.T0012").unwrap().tactics.len(), 4);
    }

    const FILE_FIRES: &str =
        "\n  - name: from a file\n    input: events.jsonl\n    expect: [{ state: firing }]";

    #[test]
    fn simulated_fixtures_count_in_both_modes_and_files_in_one() {
        let rules = vec![
            rule("simulated", "AML.T0029", FIRES),
            rule("filed", "AML.T0034", FILE_FIRES),
        ];
        let coverage = coverage(&rules, None);
        assert_eq!(status_of(&coverage, "AML.T0029").status, Status::Covered);
        assert_eq!(status_of(&coverage, "AML.T0034").status, Status::Partial);
        assert_eq!(coverage.rules[1].foreign.describe(), "no fixture");
    }

    #[test]
    fn without_foreign_fixtures_a_firing_rule_is_only_partial() {
        let rules = vec![
            rule(
                "sweep",
                "AML.T0024.002, AML.T0040",
                &format!("{SILENT}{FILE_FIRES}"),
            ),
            rule("untested", "AML.T0029", " []"),
            rule("quiet", "AML.T0031", SILENT),
        ];
        let coverage = coverage(&rules, None);
        assert_eq!(coverage.evidence, Evidence::Declared);
        let sweep = status_of(&coverage, "AML.T0024.002");
        assert_eq!(
            (sweep.status, sweep.rules.clone()),
            (Status::Partial, vec!["sweep".into()])
        );
        assert_eq!(status_of(&coverage, "AML.T0040").status, Status::Partial);
        assert_eq!(status_of(&coverage, "AML.T0029").status, Status::Partial);
        assert_eq!(status_of(&coverage, "AML.T0031").status, Status::Partial);
        assert_eq!(status_of(&coverage, "AML.T0012").status, Status::NotCovered);
        assert!(status_of(&coverage, "AML.T0012").rules.is_empty());
        let evidence = &coverage.rules[0];
        assert_eq!(
            (evidence.default.describe(), evidence.foreign.describe()),
            (
                "expects firing".to_string(),
                "no firing fixture".to_string()
            )
        );
        assert_eq!(coverage.rules[1].default.describe(), "no fixture");
        assert_eq!(coverage.rules[2].default.describe(), "no firing fixture");
        assert_eq!(
            (
                coverage.count(Status::Covered),
                coverage.count(Status::Partial)
            ),
            (0, 4)
        );
    }

    #[test]
    fn a_rule_firing_in_both_modes_covers_its_techniques() {
        let both = ModeEvidence {
            fixtures: 2,
            firing: 1,
            passed: None,
        };
        let rules = vec![
            RuleEvidence {
                id: "everywhere".into(),
                atlas: vec!["AML.T0020".into()],
                default: both,
                foreign: both,
            },
            RuleEvidence {
                id: "home-only".into(),
                atlas: vec!["AML.T0020".into(), "AML.T0015".into()],
                default: both,
                foreign: ModeEvidence::default(),
            },
        ];
        let coverage = classify(rules, Evidence::Declared);
        let poison = status_of(&coverage, "AML.T0020");
        assert_eq!(poison.status, Status::Covered);
        assert_eq!(poison.rules, ["everywhere", "home-only"]);
        assert_eq!(status_of(&coverage, "AML.T0015").status, Status::Partial);
        assert_eq!(coverage.count(Status::Covered), 1);
        assert_eq!(coverage.count(Status::NotCovered), 11);
    }

    #[test]
    fn run_fixtures_count_only_when_every_firing_one_passes() {
        let rules = vec![
            rule("half", "AML.T0029", &format!("{FIRES}{SILENT}{FIRES}")),
            rule("broken", "AML.T0034", FIRES),
            rule("untagged", "", FIRES),
        ];
        let mut calls = Vec::new();
        let mut run = |rule: &Rule, fixture: &RuleTest, naming: Naming| {
            calls.push(format!(
                "{}::{}::{}",
                rule.id,
                fixture.name,
                naming.as_str()
            ));
            // The first firing fixture of "half" passes in both modes,
            // everything else fails.
            calls.len() <= 2
        };
        let coverage = coverage(&rules, Some(&mut run));
        // Silent fixtures and rules with no catalogued id are not run.
        assert_eq!(
            calls,
            [
                "half::fires::default",
                "half::fires::foreign",
                "half::fires::default",
                "half::fires::foreign",
                "broken::fires::default",
                "broken::fires::foreign"
            ]
        );
        assert_eq!(coverage.evidence, Evidence::Run);
        assert_eq!(coverage.rules[0].default.describe(), "fires in 1 of 2");
        assert!(!coverage.rules[0].default.fires());
        assert_eq!(coverage.rules[1].default.describe(), "fails");
        assert_eq!(coverage.rules[1].foreign.describe(), "fails");
        assert_eq!(status_of(&coverage, "AML.T0029").status, Status::Partial);
        assert_eq!(status_of(&coverage, "AML.T0034").status, Status::Partial);
        assert_eq!(coverage.rule_count, 3);
    }

    #[test]
    fn parent_ids_do_not_cover_sub_techniques() {
        let rules = vec![
            rule("parent", "AML.T0024", FILE_FIRES),
            rule("typo", "AML.T0024.002, aml.t0040", FILE_FIRES),
        ];
        let coverage = coverage(&rules, None);
        for sub in ["AML.T0024.000", "AML.T0024.001"] {
            assert_eq!(status_of(&coverage, sub).status, Status::NotCovered);
        }
        assert_eq!(status_of(&coverage, "AML.T0024.002").rules, ["typo"]);
        assert_eq!(status_of(&coverage, "AML.T0040").status, Status::NotCovered);
        assert_eq!(
            coverage.outside.keys().collect::<Vec<_>>(),
            ["AML.T0024", "aml.t0040"]
        );
        assert_eq!(coverage.outside["AML.T0024"], ["parent"]);
        // Only rules carrying a catalogued id bring evidence.
        assert_eq!(coverage.rules.len(), 1);
    }
}

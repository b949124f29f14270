use std::path::Path;

use super::*;

const MINUTE_SECONDS: i64 = 60;
/// 2014-01-01T00:00:00Z, in seconds.
const START_SECONDS: i64 = 1_388_534_400;

/// Deterministic, roughly normal noise (sum of four uniforms, an LCG), so the
/// tests need no RNG crate.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        ((0..4).map(|_| self.uniform()).sum::<f64>() - 2.0) * 3f64.sqrt()
    }
}

fn noise(count: usize, level: f64, sigma: f64, seed: u64) -> Vec<f64> {
    let mut noise = Noise(seed);
    (0..count).map(|_| level + sigma * noise.normal()).collect()
}

/// A CSV of `values`, one per five minutes, NAB-style timestamps.
fn csv_of(values: &[f64]) -> String {
    let mut text = String::from("timestamp,value\n");
    for (index, value) in values.iter().enumerate() {
        let seconds = START_SECONDS + 5 * MINUTE_SECONDS * index as i64;
        let days = seconds / 86_400;
        let second_of_day = seconds % 86_400;
        // 2014-01-01 plus `days`, valid for the test lengths (within January to March).
        let (month, day) = match days - 16_071 {
            d @ 0..=30 => (1, d + 1),
            d @ 31..=58 => (2, d - 30),
            d => (3, d - 58),
        };
        text.push_str(&format!(
            "2014-{month:02}-{day:02} {:02}:{:02}:{:02},{value}\n",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        ));
    }
    text
}

fn run(text: &str, detector: &str) -> Result<(String, ScoreSummary), DetectError> {
    run_with(text, detector, None)
}

fn run_with(
    text: &str,
    detector: &str,
    config: Option<ScoreConfig>,
) -> Result<(String, ScoreSummary), DetectError> {
    let mut output = Vec::new();
    let options = ScoreOptions {
        detector: detector.to_string(),
        config,
    };
    let summary = score_csv(text.as_bytes(), "series.csv", &mut output, &options)?;
    Ok((String::from_utf8(output).unwrap(), summary))
}

fn scores(values: &[f64], detector: &str) -> Vec<f64> {
    let (output, summary) = run(&csv_of(values), detector).unwrap();
    assert_eq!(summary.rows, values.len() as u64);
    output
        .lines()
        .skip(1)
        .map(|line| line.rsplit(',').next().unwrap().parse::<f64>().unwrap())
        .collect()
}

fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (index, score) in scores.iter().enumerate() {
        if *score > scores[best] {
            best = index;
        }
    }
    best
}

fn error_text(text: &str) -> String {
    run(text, "auto").unwrap_err().to_string()
}

#[test]
fn z_maps_to_the_documented_scores() {
    assert_eq!(z_to_score(0.0), 0.0);
    assert_eq!(z_to_score(-2.0), 0.0);
    assert!((z_to_score(6.0) - 0.5).abs() < 1e-12);
    assert!((z_to_score(-10.0) - 0.8).abs() < 1e-12);
    assert!(z_to_score(1e6) < 1.0 && z_to_score(1e6) > z_to_score(1e3));
    assert_eq!(z_to_score(f64::INFINITY), 1.0);
    assert_eq!(z_to_score(f64::NAN), 0.0);
}

#[test]
fn spike_in_noise_gets_the_top_score() {
    let mut values = noise(600, 50.0, 2.0, 1);
    values[400] = 75.0;
    for detector in ["ewma", "seasonal", "auto"] {
        let scores = scores(&values, detector);
        assert_eq!(argmax(&scores), 400, "{detector}");
        assert!(scores[400] > 0.5, "{detector}: {}", scores[400]);
    }
    // The forest sees the spike in every shingle that holds it.
    let forest = scores(&values, "forest");
    assert!(forest[400] > 0.5, "forest: {}", forest[400]);
    assert!((400..408).contains(&argmax(&forest)), "{}", argmax(&forest));
}

#[test]
fn level_shift_scores_high_at_the_shift_and_decays_after() {
    let mut values = noise(400, 50.0, 2.0, 2);
    values.extend(noise(400, 80.0, 2.0, 3));
    for detector in Detector::NAMES {
        let scores = scores(&values, detector);
        let at_shift = scores[400..405].iter().copied().fold(0.0, f64::max);
        assert!(at_shift > 0.5, "{detector}: {at_shift}");
        let late = &scores[500..];
        let late_mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!(late_mean < 0.05, "{detector}: mean {late_mean}");
        assert!(
            late.iter().all(|score| *score < 0.5),
            "{detector}: {late:?}"
        );
    }
}

#[test]
fn flat_stretch_then_small_wiggle_does_not_score_one_forever() {
    let mut values = vec![5.0; 300];
    values.extend(noise(400, 5.0, 0.01, 4));
    for detector in Detector::NAMES {
        let scores = scores(&values, detector);
        assert!(
            scores[..300].iter().all(|score| *score == 0.0),
            "{detector}"
        );
        let late = &scores[450..];
        let late_mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!(late_mean < 0.05, "{detector}: mean {late_mean}");
        assert!(late.iter().all(|score| *score < 0.9), "{detector}");
    }
    // Flat at zero: no relative floor to lean on.
    let mut values = vec![0.0; 300];
    values.extend(noise(400, 0.0, 1.0, 5));
    for detector in Detector::NAMES {
        let scores = scores(&values, detector);
        let late = &scores[450..];
        let late_mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!(late_mean < 0.05, "{detector}: mean {late_mean}");
    }
}

#[test]
fn huge_outlier_does_not_suppress_the_next_anomaly() {
    let mut values = noise(700, 50.0, 2.0, 6);
    values[300] = 1e9;
    values[450] = 70.0;
    for detector in Detector::NAMES {
        let scores = scores(&values, detector);
        assert!(scores[300] > 0.9, "{detector}: {}", scores[300]);
        assert!(scores[450] > 0.4, "{detector}: {}", scores[450]);
        let after = &scores[320..];
        assert_eq!(argmax(after) + 320, 450, "{detector}");
    }
}

#[test]
fn scores_are_bounded_and_causal() {
    let mut values = noise(500, 10.0, 1.0, 7);
    values[250] = -40.0;
    values[300] = f64::NAN;
    for value in &mut values[350..500] {
        *value += 15.0;
    }
    let full_text = csv_of(&values);
    let prefix_text: String = full_text
        .lines()
        .take(321)
        .map(|line| format!("{line}\n"))
        .collect();
    for detector in Detector::NAMES {
        let (full, _) = run(&full_text, detector).unwrap();
        let (prefix, summary) = run(&prefix_text, detector).unwrap();
        assert_eq!(summary.rows, 320);
        assert_eq!(summary.skipped, 1);
        assert!(full.starts_with(&prefix), "{detector}: not causal");
        let scores = scores(&values, detector);
        assert!(
            scores.iter().all(|score| (0.0..=1.0).contains(score)),
            "{detector}"
        );
        assert_eq!(scores[300], 0.0, "{detector}: NaN scores 0");
        // Deterministic: the same input gives the same bytes.
        assert_eq!(run(&full_text, detector).unwrap().0, full, "{detector}");
    }
}

#[test]
fn warmup_rows_score_zero() {
    let mut values = noise(100, 10.0, 1.0, 8);
    values[10] = 1e6;
    let config = ScoreConfig {
        warmup: 40,
        ..ScoreConfig::default()
    };
    for detector in Detector::NAMES {
        let (output, summary) = run_with(&csv_of(&values), detector, Some(config.clone())).unwrap();
        assert_eq!(summary.warmup_rows, 40);
        let scores: Vec<f64> = output
            .lines()
            .skip(1)
            .map(|line| line.rsplit(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(scores[..40].iter().all(|score| *score == 0.0), "{detector}");
    }
}

#[test]
fn seasonal_detector_knows_the_daily_cycle() {
    // Five-minute points over 12 days: busy from 08:00 to 20:00 UTC.
    let mut noise_source = Noise(9);
    let mut values: Vec<f64> = (0..12 * 288)
        .map(|index| {
            let hour = (index % 288) / 12;
            let level = if (8..20).contains(&hour) { 100.0 } else { 20.0 };
            level + 2.0 * noise_source.normal()
        })
        .collect();
    // Day-time traffic at 03:00 on the last day.
    let anomaly = 11 * 288 + 3 * 12;
    values[anomaly] = 100.0;
    let scores = scores(&values, "seasonal");
    assert!(scores[anomaly] > 0.9, "{}", scores[anomaly]);
    let last_day = &scores[11 * 288..];
    assert_eq!(argmax(last_day) + 11 * 288, anomaly);
    let ewma = super::tests::scores(&values, "ewma");
    assert!(ewma[anomaly] < scores[anomaly]);
}

#[test]
fn output_echoes_rows_in_order_with_a_header() {
    let text = "value,timestamp,host\n1.50,2014-02-14 14:30:00,a\n 2 ,1392388500,b\n,2014-02-14T14:40:00Z,c\nnan,1392388800000,d\n";
    let (output, summary) = run(text, "ewma").unwrap();
    assert_eq!(
        output,
        "timestamp,value,anomaly_score\n2014-02-14 14:30:00,1.50,0\n1392388500, 2 ,0\n2014-02-14T14:40:00Z,,0\n1392388800000,nan,0\n"
    );
    assert_eq!(
        summary,
        ScoreSummary {
            rows: 4,
            skipped: 2,
            warmup_rows: 2,
            earlier_rows: 0,
            // 14:40:00Z twice, written two ways.
            duplicate_rows: 1,
        }
    );
    // A header and no rows: a header and no rows out.
    let (output, summary) = run("timestamp,value\n", "auto").unwrap();
    assert_eq!(output, "timestamp,value,anomaly_score\n");
    assert_eq!(summary.rows, 0);
}

#[test]
fn timestamps_in_every_documented_format() {
    let nanos = 1_392_388_200_000_000_000;
    assert_eq!(parse_timestamp("2014-02-14 14:30:00"), Some(nanos));
    assert_eq!(parse_timestamp("2014-02-14T14:30:00"), Some(nanos));
    assert_eq!(parse_timestamp("2014-02-14T14:30:00Z"), Some(nanos));
    assert_eq!(parse_timestamp("2014-02-14T15:30:00+01:00"), Some(nanos));
    assert_eq!(
        parse_timestamp("2014-02-14 14:30:00.5"),
        Some(nanos + 500_000_000)
    );
    assert_eq!(parse_timestamp("1392388200"), Some(nanos));
    assert_eq!(parse_timestamp("1392388200000"), Some(nanos));
    assert_eq!(parse_timestamp("yesterday"), None);
    assert_eq!(parse_timestamp("2014-02-30 14:30:00"), None);
    assert_eq!(parse_timestamp("2014-02-14 14:30:00é"), None);
    assert_eq!(parse_timestamp(""), None);
}

#[test]
fn bad_input_names_the_file_and_line() {
    assert_eq!(
        error_text(""),
        "series.csv:1: empty input: expected a header 'timestamp,value'"
    );
    assert_eq!(
        error_text("2014-02-14 14:30:00,1\n2014-02-14 14:35:00,2\n"),
        "series.csv:1: expected a header naming the columns 'timestamp' and 'value', \
         found '2014-02-14 14:30:00,1' (the first line must be a header)"
    );
    assert_eq!(
        error_text("time,val\n2014-02-14 14:30:00,1\n"),
        "series.csv:1: expected a header naming the columns 'timestamp' and 'value', found 'time,val'"
    );
    assert_eq!(
        error_text("timestamp,value\n2014-02-14 14:30:00,1\n2014-02-14 14:35:00,abc\n"),
        "series.csv:3: invalid value 'abc': expected a number"
    );
    assert_eq!(
        error_text("timestamp,value\n2014-02-14 14:30:00,1\nlater,2\n"),
        "series.csv:3: invalid timestamp 'later': expected RFC 3339, \
         'YYYY-MM-DD HH:MM:SS' or epoch seconds or milliseconds"
    );
    assert_eq!(
        error_text("timestamp,value\n2014-02-14 14:30:00,1\n2014-02-14 14:35:00\n"),
        "series.csv:3: expected at least 2 fields, found 1"
    );
    // A timestamp earlier than the previous row's used to be refused here;
    // it is now scored with a warning (issue 17):
    // rows_out_of_time_order_are_scored_in_file_order_with_warnings.
    let (_, summary) = run(
        "timestamp,value\n2014-02-14 14:30:00,1\n2014-02-14 14:35:00,2\n2014-02-14 14:32:00,3\n",
        "auto",
    )
    .unwrap();
    assert_eq!((summary.rows, summary.earlier_rows), (3, 1));
    let mut invalid_utf8 = b"timestamp,value\n2014-02-14 14:30:00,1\n".to_vec();
    invalid_utf8.extend_from_slice(b"2014-02-14 14:35:00,\xff\n");
    let mut output = Vec::new();
    let options = ScoreOptions {
        detector: "auto".into(),
        config: None,
    };
    let error = score_csv(&invalid_utf8[..], "bytes.csv", &mut output, &options).unwrap_err();
    assert_eq!(error.to_string(), "bytes.csv:3: invalid UTF-8");
    let error = run("timestamp,value\n", "zscore").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown detector 'zscore', expected one of: ewma, seasonal, forest, auto"
    );
}

#[test]
fn config_reads_yaml_and_reports_positions() {
    let path = Path::new("score.yaml");
    assert_eq!(
        ScoreConfig::from_yaml_str(path, "").unwrap(),
        ScoreConfig::default()
    );
    let config = ScoreConfig::from_yaml_str(
        path,
        "warmup: 10\nhalf_life: 30\nseasonal: hour_of_week\nshingle_size: 4\ntrees: 20\ntree_capacity: 64\nseed: 7\n",
    )
    .unwrap();
    assert_eq!(
        config,
        ScoreConfig {
            warmup: 10,
            half_life: 30,
            seasonal: SeasonalChoice::HourOfWeek,
            shingle_size: 4,
            trees: 20,
            tree_capacity: 64,
            seed: 7,
        }
    );
    let error = ScoreConfig::from_yaml_str(path, "warmup: 10\nshingles: 4\n").unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("score.yaml:2:1: unknown field 'shingles'"),
        "{error}"
    );
    let error = ScoreConfig::from_yaml_str(path, "warmup: 10\ntrees: 0\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "score.yaml:2:8: trees must be between 1 and 1000, got 0"
    );
    let error = ScoreConfig::from_yaml_str(path, "warmup: lots\n").unwrap_err();
    assert!(error.to_string().starts_with("score.yaml:1:9: "), "{error}");
    let error = ScoreConfig::from_yaml_str(path, "seasonal: monthly\n").unwrap_err();
    assert!(error.to_string().starts_with("score.yaml:1:"), "{error}");
    // Smaller forests still score.
    let mut values = noise(300, 10.0, 1.0, 10);
    values[250] = 30.0;
    let (output, _) = run_with(&csv_of(&values), "forest", Some(config)).unwrap();
    assert_eq!(output.lines().count(), 301);
}

/// `text` scored by `detector`, with the warnings given and the scores.
fn run_warned(text: &str, detector: &str) -> (Vec<f64>, ScoreSummary, Vec<OrderWarning>) {
    let mut output = Vec::new();
    let mut warnings = Vec::new();
    let options = ScoreOptions {
        detector: detector.to_string(),
        config: None,
    };
    let summary = score_csv_with_warnings(
        text.as_bytes(),
        "series.csv",
        &mut output,
        &options,
        |warning| warnings.push(warning.clone()),
    )
    .unwrap();
    let scores = String::from_utf8(output)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    (scores, summary, warnings)
}

/// `csv_of(values)` with the timestamp of row `index` replaced by that of row `from`.
fn with_timestamp_of(text: &str, index: usize, from: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let timestamp = lines[from + 1].split(',').next().unwrap();
    let value = lines[index + 1].split(',').nth(1).unwrap();
    let replaced = format!("{timestamp},{value}");
    let mut out: Vec<&str> = lines.clone();
    out[index + 1] = &replaced;
    out.iter().map(|line| format!("{line}\n")).collect()
}

#[test]
fn rows_out_of_time_order_are_scored_in_file_order_with_warnings() {
    let mut values = noise(400, 50.0, 1.0, 11);
    values[300] = 90.0;
    let ordered = csv_of(&values);
    // Row 150 goes back to row 148's time; row 250 repeats row 249's.
    let disordered = with_timestamp_of(&with_timestamp_of(&ordered, 150, 148), 250, 249);
    for detector in Detector::NAMES {
        let (scores, summary, warnings) = run_warned(&disordered, detector);
        assert_eq!(scores.len(), 400, "{detector}: every row scored");
        assert_eq!(
            (summary.rows, summary.earlier_rows, summary.duplicate_rows),
            (400, 1, 1),
            "{detector}"
        );
        assert_eq!(summary.unreported_order_rows(), 0);
        let texts: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                // Row 150 (line 152) took row 148's 12:20; row 149 is at 12:25.
                "series.csv:152: timestamp 2014-01-01 12:20:00 is before the previous row's \
                 2014-01-01 12:25:00 (line 151); scored in file order",
                "series.csv:252: timestamp 2014-01-01 20:45:00 equals the previous row's \
                 2014-01-01 20:45:00 (line 251); scored in file order",
            ],
            "{detector}"
        );
        assert!(scores.iter().all(|score| (0.0..=1.0).contains(score)));
        assert_eq!(
            argmax(&scores),
            300,
            "{detector}: the spike still ranks first"
        );
        // No look-ahead: the rows before the disorder score as the prefix alone.
        let prefix: String = disordered
            .lines()
            .take(151)
            .map(|line| format!("{line}\n"))
            .collect();
        let (prefix_scores, _, prefix_warnings) = run_warned(&prefix, detector);
        assert_eq!(prefix_scores[..], scores[..150], "{detector}");
        assert!(prefix_warnings.is_empty());
        // Scored in file order: where timestamps play no part the scores are
        // exactly those of the ordered series.
        if matches!(detector, "ewma" | "forest") {
            let (ordered_scores, _, ordered_warnings) = run_warned(&ordered, detector);
            assert_eq!(ordered_scores, scores, "{detector}");
            assert!(ordered_warnings.is_empty());
        }
    }
}

#[test]
fn order_warnings_stop_at_the_cap_and_the_rest_are_counted() {
    // 25 rows going back in time, then 5 repeating the previous row's time.
    let mut text = String::from("timestamp,value\n");
    for index in 0..25 {
        text.push_str(&format!("{},{index}\n", 1_392_388_200 - 60 * index));
    }
    for index in 0..5 {
        text.push_str(&format!("1392300000,{index}\n"));
    }
    let (scores, summary, warnings) = run_warned(&text, "auto");
    assert_eq!(scores.len(), 30);
    assert_eq!((summary.earlier_rows, summary.duplicate_rows), (25, 4));
    assert_eq!(warnings.len() as u64, MAX_ORDER_WARNINGS);
    assert_eq!(summary.unreported_order_rows(), 29 - MAX_ORDER_WARNINGS);
    assert_eq!(
        warnings[0].to_string(),
        "series.csv:3: timestamp 1392388140 is before the previous row's 1392388200 (line 2); \
         scored in file order"
    );
    assert_eq!(
        warnings
            .iter()
            .map(|warning| warning.line)
            .collect::<Vec<_>>(),
        (3..13).collect::<Vec<u64>>()
    );
}

#[test]
fn scorer_takes_any_step_between_timestamps() {
    // Backwards, repeated, pre-epoch and extreme times: no detector uses the
    // step, so none can divide by zero or overflow.
    let times = [
        0,
        -1,
        -1,
        i64::MIN,
        i64::MAX,
        i64::MAX,
        -3_600_000_000_000,
        1,
    ];
    for detector in Detector::NAMES {
        let config = ScoreConfig {
            warmup: 0,
            ..ScoreConfig::default()
        };
        let mut scorer = Scorer::new(Detector::from_name(detector).unwrap(), &config).unwrap();
        let mut noise = Noise(3);
        for round in 0..200 {
            for at in times {
                let value = 10.0 + noise.normal() + if round == 150 { 50.0 } else { 0.0 };
                let score = scorer.score(at, value).unwrap();
                assert!((0.0..=1.0).contains(&score), "{detector}: {score}");
            }
        }
    }
}

#[test]
fn stuck_sensor_scores_high_once_the_value_stops_changing() {
    let mut values = noise(800, 50.0, 2.0, 11);
    // The sensor sticks at its last reading for 60 points, then recovers.
    let stuck = values[499];
    for value in &mut values[500..560] {
        *value = stuck;
    }
    let auto = scores(&values, "auto");
    assert!(
        auto[500..505].iter().any(|score| *score > 0.5),
        "{:?}",
        &auto[498..506]
    );
    // It stays high for the whole run: one crossing, not one per point.
    assert!(auto[505..560].iter().all(|score| *score > 0.5));
    // Repeats were not learned: noise after the flatline is ordinary again.
    let after = &auto[600..];
    assert!(after.iter().all(|score| *score < 0.5), "{after:?}");
    // The point detectors alone cannot see it.
    let ewma = scores(&values, "ewma");
    assert!(ewma[505..560].iter().all(|score| *score < 0.2));
}

#[test]
fn repeats_that_are_usual_for_the_series_are_not_stuck() {
    // Small counts repeat all the time: 0, 1 or 2 errors a minute.
    let mut source = Noise(12);
    let mut values: Vec<f64> = (0..800).map(|_| (source.uniform() * 3.0).floor()).collect();
    for value in &mut values[500..506] {
        *value = 1.0;
    }
    let auto = scores(&values, "auto");
    assert!(auto[500..506].iter().all(|score| *score < 0.2));
    // A series flat from its first point is not a stuck sensor either.
    let mut values = vec![3.0; 400];
    values.extend(noise(200, 3.0, 0.1, 13));
    let auto = scores(&values, "auto");
    assert!(auto[..400].iter().all(|score| *score == 0.0));
}

#[test]
fn slow_drift_is_scored_where_no_point_stands_out() {
    // A ramp of ten spreads over 500 points: each point is close to the last.
    let mut values = noise(1500, 100.0, 2.0, 14);
    for (index, value) in values.iter_mut().enumerate().skip(600) {
        *value += 20.0 * ((index - 600) as f64 / 500.0).min(1.0);
    }
    let auto = scores(&values, "auto");
    let ewma = scores(&values, "ewma");
    let during = |scores: &[f64]| scores[600..1100].iter().copied().fold(0.0, f64::max);
    let before = auto[200..600].iter().copied().fold(0.0, f64::max);
    assert!(during(&auto) > 0.35, "auto {}", during(&auto));
    assert!(
        during(&auto) > before + 0.1,
        "{} vs {before}",
        during(&auto)
    );
    assert!(during(&ewma) < during(&auto));
}

//! End to end: `forecourt forecast --json` on the shared one-hour Azure LLM trace prints one JSON
//! document with every model's and the ensemble's errors per horizon.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use forecourt_test_utils::*;

/// The shared trace, relative to the workspace root (where the command runs).
const TRACE: &str = "../shared/traces/azure-llm-code-2023.csv";

/// A ratio that is present, finite and within `range`.
fn ratio(score: &serde_json::Value, key: &str, range: std::ops::RangeInclusive<f64>) -> f64 {
    let value = score[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or null in {score}"));
    assert!(
        value.is_finite() && range.contains(&value),
        "{key} = {value} outside {range:?} in {score}"
    );
    value
}

#[test]
fn forecast_json_reports_the_ensemble_per_horizon() {
    let root = env!("CARGO_MANIFEST_DIR");
    if !Path::new(root).join(TRACE).exists() {
        eprintln!("skipped: {TRACE} is not there (the shared traces are not in the repository)");
        return;
    }
    let report = json_output(
        Command::new(forecourt_bin())
            .current_dir(root)
            .args(["forecast", "--trace", TRACE, "--json"]),
    );
    assert_eq!(report["trace"], TRACE);
    assert_eq!(report["train_fraction"].as_f64(), Some(0.7));
    assert_eq!(
        report["horizons_seconds"],
        serde_json::json!([5, 10, 30, 60])
    );

    let services = report["services"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    let service = &services[0];
    assert_eq!(service["service"], "llm-code");
    assert_eq!(service["requests"].as_u64(), Some(8_819));
    let seconds = service["seconds"].as_u64().unwrap();
    let train = service["train_seconds"].as_u64().unwrap();
    let test = service["test_seconds"].as_u64().unwrap();
    assert!(seconds > 3_000, "about an hour: {seconds} s");
    assert_eq!(train + test, seconds);
    assert_eq!(train, (seconds as f64 * 0.7).round() as u64);
    let test_mean = service["test_mean"].as_f64().unwrap();
    assert!(
        test_mean > 0.1 && test_mean < 50.0,
        "test mean {test_mean}/s"
    );

    let horizons = service["horizons"].as_array().unwrap();
    let seen: Vec<_> = horizons
        .iter()
        .map(|h| h["horizon_seconds"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, [5, 10, 30, 60], "the default horizons");
    for horizon in horizons {
        let ensemble = &horizon["ensemble"];
        assert_eq!(ensemble["model"], "ensemble");
        // Every test second is scored, including those forecast before the split.
        assert_eq!(ensemble["points"].as_f64(), Some(test as f64));
        let mae = ratio(ensemble, "mae", 0.0..=10.0 * test_mean);
        assert!(mae > 0.0, "a bursty trace is never forecast exactly");
        ratio(ensemble, "wape", 0.0..=10.0);
        ratio(ensemble, "mase", 0.1..=5.0);
        ratio(ensemble, "bias", -2.0..=2.0);
        ratio(ensemble, "under_rate", 0.0..=1.0);
        ratio(ensemble, "coverage", 0.5..=1.0);

        let models = horizon["models"].as_array().unwrap();
        assert!(models.len() >= 2, "several models besides the ensemble");
        assert!(models.iter().all(|m| m["model"] != "ensemble"));
        // MASE is relative to the last value's error, so the last value's own is 1.
        let last = models.iter().find(|m| m["model"] == "last_value").unwrap();
        assert!((ratio(last, "mase", 0.0..=2.0) - 1.0).abs() < 1e-9);
    }

    // Bad input is still an error that names it, not a JSON document.
    let bad = Command::new(forecourt_bin())
        .current_dir(root)
        .args(["forecast", "--json", "--train", "2", "--trace", TRACE])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--train"));
}

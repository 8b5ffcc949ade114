//! End to end: `forecourt replay` on a small synthetic trace, JSON and plots.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use forecourt_test_utils::*;

/// Ten quiet minutes at 2/s, then a ramp to 202/s over 100 s, then a plateau.
fn ramp_trace() -> String {
    let mut text = String::from("t,service,count\n");
    for t in 0..1_200u64 {
        let rate = match t {
            0..=599 => 2,
            600..=699 => 2 + 2 * (t - 600),
            _ => 202,
        };
        text.push_str(&format!("{t},shop,{rate}\n"));
    }
    text
}

#[test]
fn replay_compares_policies_and_forecourt_beats_kpa_on_a_ramp() {
    let dir = scratch_dir("replay");
    let trace = dir.join("ramp.csv");
    std::fs::write(&trace, ramp_trace()).unwrap();
    let plots = dir.join("plots");
    let out = Command::new(forecourt_bin())
        .args(["replay", "--json", "--boot", "10s", "--capacity", "10"])
        .args(["--utilization", "0.6,0.7,0.8", "--trace"])
        .arg(&trace)
        .arg("--plot")
        .arg(&plots)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4 * 3, "four policies × three targets");
    let waited = |policy: &str, util: f64| {
        runs.iter()
            .find(|r| {
                r["policy"] == policy
                    && (r["target_utilization"].as_f64().unwrap() - util).abs() < 1e-9
            })
            .and_then(|r| r["waited_percent"].as_f64())
            .unwrap()
    };
    for util in [0.6, 0.7, 0.8] {
        assert_eq!(waited("static-peak", util), 0.0);
        assert!(waited("oracle", util) < 0.1, "the oracle barely waits");
        assert!(
            waited("forecourt", util) < waited("knative-kpa", util),
            "at {util}: forecourt {} vs kpa {}",
            waited("forecourt", util),
            waited("knative-kpa", util)
        );
    }
    let arrived = runs[0]["arrived"].as_f64().unwrap();
    let expected: f64 = ramp_trace()
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(arrived, expected);
    assert!(report["summary"]
        .as_str()
        .unwrap()
        .contains("oracle's gain"));
    for file in [
        "timeline.svg",
        "timeline.png",
        "tradeoff.svg",
        "tradeoff.png",
    ] {
        let bytes = std::fs::read(plots.join(file)).unwrap();
        assert!(bytes.len() > 1_000, "{file} is empty");
    }

    // Bad input is an error that names it.
    let bad = Command::new(forecourt_bin())
        .args(["replay", "--utilization", "1.5", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--utilization"));
    let _ = std::fs::remove_dir_all(&dir);
}

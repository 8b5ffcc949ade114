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
fn replay_compares_policies_at_equal_cost_and_forecourt_beats_kpa_on_a_ramp() {
    let dir = scratch_dir("replay");
    let trace = dir.join("ramp.csv");
    std::fs::write(&trace, ramp_trace()).unwrap();
    let plots = dir.join("plots");
    let report = json_output(
        Command::new(forecourt_bin())
            .args(["replay", "--json", "--boot", "10s", "--capacity", "10"])
            .args(["--warmup", "5m", "--utilization", "0.5,0.6,0.7,0.8"])
            .args([
                "--waiting-cost",
                "0.1,1,10,100",
                "--forecourt-utilization",
                "0.7",
                "--rate-oracle-z",
                "0,2,4",
            ])
            .arg("--trace")
            .arg(&trace)
            .arg("--plot")
            .arg(&plots),
    );
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(
        runs.len(),
        3 * 4 + 4 + 3,
        "three policies × four targets, Forecourt × four costs, the rate oracle × three"
    );
    let rate_oracle: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|r| r["policy"] == "rate-oracle")
        .collect();
    assert_eq!(rate_oracle.len(), 3);
    // More headroom over the rate it knows costs more.
    let cost = |r: &serde_json::Value| r["instance_seconds"].as_f64().unwrap();
    assert!(cost(rate_oracle[0]) < cost(rate_oracle[2]));
    assert_eq!(rate_oracle[2]["rate_oracle_z"], 4.0);
    let waited = |policy: &str, util: f64| {
        runs.iter()
            .find(|r| {
                r["policy"] == policy
                    && (r["target_utilization"].as_f64().unwrap() - util).abs() < 1e-9
            })
            .and_then(|r| r["waited_percent"].as_f64())
            .unwrap()
    };
    for util in [0.5, 0.6, 0.7, 0.8] {
        assert_eq!(waited("static-peak", util), 0.0);
        assert!(waited("oracle", util) < 0.1, "the oracle barely waits");
    }
    // Forecourt's curve at KPA's costs: every KPA run it reaches waits more than Forecourt.
    let rows = report["equal_cost"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "one row per KPA run");
    let compared: Vec<f64> = rows.iter().filter_map(|r| r["ratio"].as_f64()).collect();
    assert!(compared.len() >= 2, "the sweeps overlap: {rows:?}");
    for row in rows.iter().filter(|r| r["ratio"].is_number()) {
        let ratio = row["ratio"].as_f64().unwrap();
        assert!(ratio < 1.0, "at KPA {}: ratio {ratio}", row["kpa_target"]);
        assert!(row["forecourt_waited_percent"].as_f64().unwrap() >= 0.0);
        assert!(row["kpa_instance_seconds"].as_f64().unwrap() > 0.0);
    }
    // The rate oracle's mark sits next to Forecourt's wherever its sweep reaches KPA's cost.
    assert!(
        rows.iter()
            .any(|r| r["rate_oracle_waited_percent"].is_number()
                && r["rate_oracle_ratio"].is_number())
    );
    // The warm-up is simulated, not measured.
    let arrived = runs[0]["arrived"].as_f64().unwrap();
    let expected: f64 = ramp_trace()
        .lines()
        .skip(1 + 300)
        .map(|l| l.rsplit(',').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(arrived, expected);
    assert_eq!(report["warmup_seconds"], 300);
    assert!(report["summary"]
        .as_str()
        .unwrap()
        .contains("At equal cost"));
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
    for (flag, value) in [
        ("--utilization", "1.5"),
        ("--waiting-cost", "0"),
        ("--rate-oracle-z", "NaN"),
    ] {
        let bad = Command::new(forecourt_bin())
            .args(["replay", flag, value, "--trace"])
            .arg(&trace)
            .output()
            .unwrap();
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains(flag));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scaling_a_trace_superposes_unless_told_to_multiply() {
    let dir = scratch_dir("replay-scale");
    let trace = dir.join("steady.csv");
    // One hour at a steady 5/s.
    let mut text = String::from("t,service,count\n");
    for t in 0..3_600 {
        text.push_str(&format!("{t},api,5\n"));
    }
    std::fs::write(&trace, text).unwrap();
    let replay = |extra: &[&str]| -> serde_json::Value {
        json_output(
            Command::new(forecourt_bin())
                .args([
                    "replay",
                    "--json",
                    "--utilization",
                    "0.7",
                    "--waiting-cost",
                    "1",
                ])
                .args([
                    "--forecourt-utilization",
                    "0.7",
                    "--warmup",
                    "0s",
                    "--scale",
                    "4",
                ])
                .args(extra)
                .arg("--trace")
                .arg(&trace),
        )
    };
    let superposed = replay(&[]);
    let multiplied = replay(&["--multiply"]);
    assert_eq!(superposed["scaled_by"], "superposing");
    assert_eq!(multiplied["scaled_by"], "multiplying");
    // Four shifted copies of a constant trace are the same total as multiplying by four.
    let arrived = |r: &serde_json::Value| r["runs"][0]["arrived"].as_f64().unwrap();
    assert_eq!(arrived(&superposed), 4.0 * 5.0 * 3_600.0);
    assert_eq!(arrived(&multiplied), arrived(&superposed));

    // A synthetic family replays without a trace file.
    let report = json_output(
        Command::new(forecourt_bin())
            .args([
                "replay",
                "--json",
                "--synthetic",
                "bursty-mmpp",
                "--rate",
                "20",
            ])
            .args([
                "--seconds",
                "30m",
                "--utilization",
                "0.7",
                "--waiting-cost",
                "1",
            ])
            .args(["--forecourt-utilization", "0.7"]),
    );
    assert_eq!(report["synthetic"], "bursty-mmpp");
    assert!(arrived(&report) > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

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
    let replay = |extra: &[&str]| {
        let mut args = vec!["--warmup", "0s", "--scale", "4"];
        args.extend_from_slice(extra);
        one_setting_replay(&trace, &args)
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

/// `forecourt replay --json` of `trace` at one target utilisation (0.7) and one waiting cost (1)
/// for every policy, with `extra` arguments before the trace.
fn one_setting_replay(trace: &std::path::Path, extra: &[&str]) -> serde_json::Value {
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
            .args(["--forecourt-utilization", "0.7"])
            .args(extra)
            .arg("--trace")
            .arg(trace),
    )
}

/// Runs `forecourt forecast` and a one-setting-per-policy `forecourt replay` on a fleet trace
/// and returns both JSON documents.
fn forecast_and_replay(trace: &std::path::Path) -> (serde_json::Value, serde_json::Value) {
    let bin = forecourt_bin();
    let started = std::time::Instant::now();
    let forecast = json_output(
        Command::new(bin)
            .args(["forecast", "--json", "--trace"])
            .arg(trace),
    );
    let replay = one_setting_replay(trace, &["--rate-oracle-z", "1"]);
    eprintln!(
        "forecast {:.1} s, then replay: {:.1?} in all",
        forecast["evaluated_in_seconds"].as_f64().unwrap_or(0.0),
        started.elapsed()
    );
    (forecast, replay)
}

/// The seconds `forecourt forecast` models a service whose trace rows are `seconds`: from each
/// arrival after a quiet spell until `forget` seconds after the last arrival before the next.
fn modelled_seconds(arrivals: &[u64], total: u64, forget: u64) -> u64 {
    let mut modelled = 0;
    let mut stretch: Option<(u64, u64)> = None;
    for &t in arrivals {
        stretch = match stretch {
            Some((first, last)) if t <= last + forget => Some((first, t)),
            Some((first, last)) => {
                modelled += last + forget + 1 - first;
                Some((t, t))
            }
            None => Some((t, t)),
        };
    }
    if let Some((first, last)) = stretch {
        modelled += (last + forget + 1).min(total) - first;
    }
    modelled
}

#[test]
fn a_fleet_of_mostly_idle_services_costs_its_busy_seconds_in_forecast_and_replay() {
    let dir = scratch_dir("fleet-trace");
    let trace = dir.join("fleet.csv");
    let (services, seconds) = (40usize, 12 * 3_600u64);
    let totals = write_fleet_trace(&trace, services, seconds, 7);
    let with_traffic = totals.iter().filter(|&&n| n > 0).count();
    assert!(with_traffic > 30, "{with_traffic}");
    // Each service's seconds with requests, from the file itself.
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut busy: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for line in text.lines().skip(1) {
        let mut fields = line.split(',');
        let t: u64 = fields.next().unwrap().parse().unwrap();
        let list = busy.entry(fields.next().unwrap().to_owned()).or_default();
        if list.last() != Some(&t) {
            list.push(t);
        }
    }
    let duration = busy.values().filter_map(|v| v.last()).max().unwrap() + 1;
    let (forecast, replay) = forecast_and_replay(&trace);

    // Forecast: every service with traffic is evaluated, exactly while it holds an ensemble
    // (from an arrival until an idle hour), and the quiet rest is jumped.
    let reports = forecast["services"].as_array().unwrap();
    assert_eq!(reports.len(), with_traffic);
    let mut modelled = 0;
    for report in reports {
        let name = report["service"].as_str().unwrap();
        let index: usize = name.trim_start_matches("svc-").parse().unwrap();
        assert_eq!(report["requests"].as_u64(), Some(totals[index]), "{name}");
        assert_eq!(report["horizons"].as_array().unwrap().len(), 4);
        let expected = modelled_seconds(&busy[name], duration, 3_600);
        assert_eq!(
            report["modelled_seconds"].as_u64(),
            Some(expected),
            "{name}"
        );
        modelled += expected;
    }
    let all = (with_traffic as u64) * duration;
    assert!(
        modelled * 2 < all,
        "modelled {modelled} of {all} service-seconds"
    );
    eprintln!("modelled {modelled} of {all} service-seconds");

    // Replay: every policy sees every request after the warm-up, and steps a part of the
    // service-seconds (the quiet rest is billed in one step).
    let runs = replay["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5, "one setting of each policy");
    let arrived = runs[0]["arrived"].as_f64().unwrap();
    assert!(arrived > 0.0);
    for run in runs {
        assert_eq!(run["arrived"].as_f64(), Some(arrived), "{}", run["policy"]);
        let stepped = run["stepped_seconds"].as_u64().unwrap();
        eprintln!("{}: stepped {stepped}", run["policy"]);
        assert!(
            stepped * 3 < all * 2,
            "{}: stepped {stepped} of {all} service-seconds",
            run["policy"]
        );
        if run["policy"] != "forecourt" {
            assert!(stepped * 4 < all, "{}: stepped {stepped}", run["policy"]);
        }
    }
    assert_eq!(replay["services"].as_array().unwrap().len(), with_traffic);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The size the issue asks for, timed: `cargo test --release --test test_replay -- --ignored
/// --nocapture` (4,000 services over two days; prints the seconds each command took).
#[test]
#[ignore = "a benchmark-sized run: minutes of CPU"]
fn a_fleet_of_four_thousand_services_at_full_size() {
    let dir = scratch_dir("fleet-trace-full");
    let trace = dir.join("fleet.csv");
    let started = std::time::Instant::now();
    let totals = write_fleet_trace(&trace, 4_000, 2 * 86_400, 11);
    eprintln!(
        "wrote {} requests of 4,000 services over two days in {:.1?}",
        totals.iter().sum::<u64>(),
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let (forecast, replay) = forecast_and_replay(&trace);
    eprintln!(
        "forecast: evaluated in {:.1} s; replay (5 runs per service) and forecast together {:.1?}",
        forecast["evaluated_in_seconds"].as_f64().unwrap(),
        started.elapsed()
    );
    for run in replay["runs"].as_array().unwrap() {
        eprintln!(
            "  {}: stepped {} service-seconds, waited {:.3} %",
            run["policy"], run["stepped_seconds"], run["waited_percent"]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

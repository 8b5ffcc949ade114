use std::time::Duration;

use super::*;

const SEC: u64 = 1000;

/// 10 req/s per pod at 70 % = 7 req/s per pod; every other setting is Knative's default
/// (stable 60 s, panic 6 s, threshold 200 %, up 1000×, down ÷2, grace 30 s, TBC 200).
fn config() -> KpaConfig {
    KpaConfig::with_target(10.0)
}

fn kpa_with(config: KpaConfig) -> Kpa {
    Kpa::new(config).expect("test config is valid")
}

fn kpa() -> Kpa {
    kpa_with(config())
}

// === config ===

#[test]
fn defaults_are_knatives() {
    let c = KpaConfig::default();
    assert_eq!(c.target, 200.0);
    assert_eq!(c.target_utilization, 0.7);
    assert_eq!(c.stable_window, Duration::from_secs(60));
    assert_eq!(c.panic_window(), Duration::from_secs(6));
    assert_eq!(c.panic_threshold(), 2.0);
    assert_eq!(c.max_scale_up_rate, 1000.0);
    assert_eq!(c.max_scale_down_rate, 2.0);
    assert_eq!(c.scale_to_zero_grace_period, Duration::from_secs(30));
    assert!(c.enable_scale_to_zero);
    assert_eq!((c.min_scale, c.max_scale, c.activation_scale), (0, 0, 1));
    assert_eq!(c.target_burst_capacity, 200.0);
    assert_eq!(c.validate(), Ok(()));
    // 10 × 0.7 is exactly 7.0 in f64, which the hand-worked numbers below rely on.
    assert_eq!(config().effective_target(), 7.0);
}

#[test]
fn validate_reports_every_problem_by_field() {
    let bad = KpaConfig {
        target: 0.0,
        target_utilization: 1.5,
        stable_window: Duration::from_secs(5),
        panic_window_percentage: 0.5,
        panic_threshold_percentage: 100.0,
        max_scale_up_rate: 1.0,
        max_scale_down_rate: f64::NAN,
        scale_to_zero_grace_period: Duration::ZERO,
        min_scale: 4,
        max_scale: 3,
        activation_scale: 5,
        target_burst_capacity: -2.0,
        enable_scale_to_zero: true,
    };
    let errors = bad.validate().expect_err("everything is wrong");
    let fields: Vec<&str> = errors
        .iter()
        .filter_map(|e| match e {
            KpaConfigError::OutOfRange { field, .. } => Some(*field),
            _ => None,
        })
        .collect();
    assert_eq!(
        fields,
        [
            "target",
            "target_utilization",
            "stable_window",
            "panic_window_percentage",
            "panic_threshold_percentage",
            "max_scale_up_rate",
            "max_scale_down_rate",
            "scale_to_zero_grace_period",
            "target_burst_capacity",
        ]
    );
    assert!(errors.contains(&KpaConfigError::MinAboveMax { min: 4, max: 3 }));
    assert!(errors.contains(&KpaConfigError::ActivationAboveMax {
        activation: 5,
        max: 3
    }));
    assert_eq!(errors.len(), 11);
    assert_eq!(
        errors[0].to_string(),
        "kpa config: target = 0, must be at least 0.01"
    );
    assert!(Kpa::new(bad).is_err());
}

#[test]
fn validate_accepts_the_edges_of_knatives_ranges() {
    for (window, pct, threshold, tbc) in [(6, 100.0, 110.0, -1.0), (3600, 1.0, 1000.0, 0.0)] {
        let c = KpaConfig {
            stable_window: Duration::from_secs(window),
            panic_window_percentage: pct,
            panic_threshold_percentage: threshold,
            target_burst_capacity: tbc,
            ..config()
        };
        assert_eq!(c.validate(), Ok(()), "{c:?}");
    }
    let fractional = KpaConfig {
        stable_window: Duration::from_millis(60_500),
        ..config()
    };
    assert!(fractional.validate().is_err());
    let zero_activation = KpaConfig {
        activation_scale: 0,
        ..config()
    };
    assert!(zero_activation.validate().is_err());
}

#[test]
fn panic_window_rounds_to_whole_seconds_and_is_at_least_one() {
    let with = |secs, pct| KpaConfig {
        stable_window: Duration::from_secs(secs),
        panic_window_percentage: pct,
        ..config()
    };
    assert_eq!(with(6, 1.0).panic_window(), Duration::from_secs(1)); // 0.06 s
    assert_eq!(with(15, 10.0).panic_window(), Duration::from_secs(2)); // 1.5 s
    assert_eq!(with(61, 10.0).panic_window(), Duration::from_secs(6)); // 6.1 s
    assert_eq!(with(60, 100.0).panic_window(), Duration::from_secs(60));
}

// === stable mode ===

#[test]
fn steady_load_asks_for_ceil_load_over_effective_target() {
    // 100 / 7 = 14.29 → 15.
    let d = kpa().scale(0, 100.0, 100.0, 15);
    assert_eq!((d.desired, d.stable_pods, d.panicking), (15, 15, false));
    // 15 wanted of 14 ready is 1.07×, far from panic.
    let d = kpa().scale(0, 100.0, 100.0, 14);
    assert_eq!((d.desired, d.panicking), (15, false));
    // 70 / 7 = 10 exactly: no extra pod.
    let d = kpa().scale(0, 70.0, 70.0, 10);
    assert_eq!((d.desired, d.panicking), (10, false));
}

#[test]
fn stable_mode_follows_the_stable_window_not_the_panic_one() {
    // Panic window 35 → 5 pods, 5/10 ready < 2: stable 70 → 10 decides.
    let d = kpa().scale(0, 70.0, 35.0, 10);
    assert_eq!((d.desired, d.stable_pods, d.panic_pods), (10, 10, 5));
}

// === panic mode ===

#[test]
fn threshold_is_reached_at_exactly_twice_the_ready_pods() {
    // 140 / 7 = 20 = 2 × 10 ready → panic; 133 / 7 = 19 → 1.9 → no panic.
    assert!(kpa().scale(0, 70.0, 140.0, 10).panicking);
    assert!(!kpa().scale(0, 70.0, 133.0, 10).panicking);
}

#[test]
fn zero_ready_pods_count_as_one_for_the_threshold() {
    // 14 / 7 = 2 pods over max(0, 1) ready = 2 → panic; 7 / 7 = 1 → no panic.
    let d = kpa().scale(0, 0.0, 14.0, 0);
    assert_eq!((d.desired, d.panicking), (2, true));
    // Stable 0: the decider wants none; the grace period keeps one for now.
    let d = kpa().scale(0, 0.0, 7.0, 0);
    assert_eq!(
        (d.autoscaler_desired, d.desired, d.panicking),
        (0, 1, false)
    );
    assert!(d.awaiting_scale_to_zero);
}

#[test]
fn step_up_three_times_panics_and_scales_at_once() {
    let mut kpa = kpa();
    let d = kpa.scale(0, 70.0, 70.0, 10);
    assert_eq!((d.desired, d.panicking), (10, false));
    // Load triples: panic 210 → 30 pods = 3× ready; stable has only crept to 80 → 12.
    let d = kpa.scale(100 * SEC, 80.0, 210.0, 10);
    assert_eq!((d.stable_pods, d.panic_pods), (12, 30));
    assert_eq!((d.desired, d.panicking), (30, true));
    assert_eq!(kpa.max_panic_pods(), 30);
}

#[test]
fn panic_never_scales_down_and_ends_a_stable_window_after_the_last_crossing() {
    let mut kpa = kpa();
    // Crossed at 100 s.
    assert!(kpa.scale(100 * SEC, 80.0, 210.0, 10).panicking);
    // 30 ready now: 30/30 = 1, not over, but still panicking; stable 90 → 13, below
    // the scale-down floor 15; the panic peak 30 holds.
    let d = kpa.scale(101 * SEC, 90.0, 210.0, 30);
    assert_eq!((d.stable_pods, d.desired, d.panicking), (15, 30, true));
    // Load falls back: stable 100 → 15, panic 70 → 10 → floor 15; still 30.
    let d = kpa.scale(120 * SEC, 100.0, 70.0, 30);
    assert_eq!((d.stable_pods, d.panic_pods), (15, 15));
    assert_eq!((d.desired, d.panicking), (30, true));
    // 100 s + 60 s is not yet before 160 s.
    let d = kpa.scale(160 * SEC, 70.0, 70.0, 30);
    assert_eq!((d.desired, d.panicking), (30, true));
    // At 161 s it is: panic ends, its peak is forgotten, stable 70 → 10, halving floor 15.
    let d = kpa.scale(161 * SEC, 70.0, 70.0, 30);
    assert_eq!((d.desired, d.panicking), (15, false));
    assert_eq!(kpa.max_panic_pods(), 0);
}

#[test]
fn crossing_again_while_panicking_extends_the_panic() {
    let mut kpa = kpa();
    assert!(kpa.scale(100 * SEC, 80.0, 210.0, 10).panicking);
    // Over again at 130 s (ready 15: 30/15 = 2).
    let d = kpa.scale(130 * SEC, 100.0, 210.0, 15);
    assert_eq!((d.desired, d.panicking), (30, true));
    // 161 s would have ended the first panic; 190 s is not yet past 130 + 60.
    assert!(kpa.scale(161 * SEC, 70.0, 70.0, 30).panicking);
    assert!(kpa.scale(190 * SEC, 70.0, 70.0, 30).panicking);
    let d = kpa.scale(191 * SEC, 70.0, 70.0, 30);
    assert_eq!((d.desired, d.panicking), (15, false));
}

#[test]
fn panic_takes_the_stable_count_when_it_is_higher() {
    let mut kpa = kpa();
    assert_eq!(kpa.scale(0, 0.0, 140.0, 10).desired, 20);
    // Stable 210 → 30 beats panic 140 → 20; the peak rises to 30.
    let d = kpa.scale(SEC, 210.0, 140.0, 20);
    assert_eq!((d.desired, d.panicking), (30, true));
    assert_eq!(kpa.max_panic_pods(), 30);
}

#[test]
fn restart_with_many_ready_pods_starts_in_panic_holding_them() {
    let mut kpa = Kpa::with_ready_pods(config(), 0, 5).expect("valid");
    assert!(kpa.panicking());
    // No traffic: stable wants max(0, floor(5/2)) = 2, but the restart holds 5.
    let d = kpa.scale(SEC, 0.0, 0.0, 5);
    assert_eq!((d.stable_pods, d.desired, d.panicking), (2, 5, true));
    let d = kpa.scale(61 * SEC, 0.0, 0.0, 5);
    assert_eq!((d.desired, d.panicking), (2, false));
    // One pod or none: normal behaviour from the start.
    assert!(!Kpa::with_ready_pods(config(), 0, 1)
        .expect("valid")
        .panicking());
}

// === rate limits ===

#[test]
fn scale_down_is_limited_to_halving_per_decision() {
    let mut kpa = kpa();
    // 7 req/s needs 1 pod; from 40 ready each decision may only halve (floor).
    let mut ready = 40;
    let mut seen = Vec::new();
    for s in 0..7 {
        let d = kpa.scale(s * SEC, 7.0, 7.0, ready);
        assert!(!d.panicking);
        seen.push(d.desired);
        ready = d.desired;
    }
    assert_eq!(seen, [20, 10, 5, 2, 1, 1, 1]);
}

#[test]
fn scale_down_rate_three_cuts_to_a_third() {
    let mut kpa = kpa_with(KpaConfig {
        max_scale_down_rate: 3.0,
        ..config()
    });
    // floor(40 / 3) = 13.
    assert_eq!(kpa.scale(0, 7.0, 7.0, 40).desired, 13);
}

#[test]
fn scale_up_is_limited_by_the_max_scale_up_rate() {
    let fast = |rate| {
        kpa_with(KpaConfig {
            max_scale_up_rate: rate,
            ..config()
        })
    };
    // 700 / 7 = 100 wanted; at most ceil(2 × 3) = 6.
    let d = fast(2.0).scale(0, 700.0, 700.0, 3);
    assert_eq!((d.desired, d.stable_pods, d.panic_pods), (6, 6, 6));
    // Knative's own example: rate 1.1, 2 ready, 3 needed → ceil(2.2) = 3, not stuck at 2.
    assert_eq!(fast(1.1).scale(0, 21.0, 21.0, 2).desired, 3);
    // Zero ready counts as one: ceil(2 × 1) = 2.
    assert_eq!(fast(2.0).scale(0, 700.0, 700.0, 0).desired, 2);
    // The default 1000× does not bind: 0 ready → 100 at once.
    assert_eq!(kpa().scale(0, 700.0, 700.0, 0).desired, 100);
}

// === scale to zero ===

#[test]
fn scale_to_zero_only_after_the_grace_period_of_zero_traffic() {
    let mut kpa = kpa();
    assert_eq!(kpa.scale(0, 7.0, 7.0, 1).desired, 1);
    // Stable average reaches zero at 10 s: the 30 s clock starts.
    for s in [10, 11, 25, 39] {
        let d = kpa.scale(s * SEC, 0.0, 0.0, 1);
        assert_eq!((d.autoscaler_desired, d.desired), (0, 1), "at {s} s");
        assert!(d.awaiting_scale_to_zero);
    }
    let d = kpa.scale(39_999, 0.0, 0.0, 1);
    assert_eq!(d.desired, 1);
    let d = kpa.scale(40 * SEC, 0.0, 0.0, 1);
    assert_eq!(d.desired, 0);
    assert!(!d.awaiting_scale_to_zero);
    assert_eq!(kpa.scale(41 * SEC, 0.0, 0.0, 0).desired, 0);
    // Traffic returns and resets the clock; the next zero waits a full grace period again.
    assert_eq!(kpa.scale(50 * SEC, 3.0, 3.0, 0).desired, 1);
    assert_eq!(kpa.scale(60 * SEC, 0.0, 0.0, 1).desired, 1);
    assert_eq!(kpa.scale(89 * SEC, 0.0, 0.0, 1).desired, 1);
    assert_eq!(kpa.scale(90 * SEC, 0.0, 0.0, 1).desired, 0);
}

#[test]
fn scale_to_zero_clock_starts_at_the_first_zero_stable_average() {
    let mut kpa = kpa();
    // 4 ready, no traffic: halving 4 → 2 → 1 → 0 wanted; the clock started at 0 s.
    assert_eq!(kpa.scale(0, 0.0, 0.0, 4).desired, 2);
    assert_eq!(kpa.scale(SEC, 0.0, 0.0, 2).desired, 1);
    assert_eq!(kpa.scale(2 * SEC, 0.0, 0.0, 1).desired, 1);
    assert_eq!(kpa.scale(30 * SEC, 0.0, 0.0, 1).desired, 0);
}

#[test]
fn scale_to_zero_disabled_keeps_one_pod() {
    let mut kpa = kpa_with(KpaConfig {
        enable_scale_to_zero: false,
        ..config()
    });
    for s in [0, 30, 300] {
        let d = kpa.scale(s * SEC, 0.0, 0.0, 1);
        assert_eq!((d.autoscaler_desired, d.desired), (0, 1));
        assert!(!d.awaiting_scale_to_zero);
    }
}

// === activation scale, bounds ===

#[test]
fn activation_scale_when_scaling_up_from_zero() {
    let mut kpa = kpa_with(KpaConfig {
        activation_scale: 3,
        ..config()
    });
    // 5 req/s wants 1 pod; from zero the activation scale asks for 3.
    let d = kpa.scale(0, 5.0, 5.0, 0);
    assert_eq!((d.stable_pods, d.panic_pods, d.desired), (3, 3, 3));
    // 1 wanted / 1 ready < 2: the count before activation scale decides panic.
    assert!(!d.panicking);
    // With no traffic it does not apply.
    let mut idle = kpa_with(KpaConfig {
        activation_scale: 3,
        ..config()
    });
    let d = idle.scale(0, 0.0, 0.0, 0);
    assert_eq!(d.autoscaler_desired, 0);
}

#[test]
fn activation_scale_is_a_floor_while_there_is_traffic() {
    let mut kpa = kpa_with(KpaConfig {
        activation_scale: 3,
        ..config()
    });
    // 5 req/s on 3 ready: 1 wanted, floor(3/2) = 1, raised to 3.
    assert_eq!(kpa.scale(0, 5.0, 5.0, 3).desired, 3);
    // Traffic gone: halving to floor(3/2) = 1, then zero after the grace period.
    assert_eq!(kpa.scale(SEC, 0.0, 0.0, 3).desired, 1);
    assert_eq!(kpa.scale(31 * SEC, 0.0, 0.0, 1).desired, 0);
}

#[test]
fn min_and_max_scale_clamp_the_decision() {
    let bounded = || {
        kpa_with(KpaConfig {
            min_scale: 2,
            max_scale: 5,
            ..config()
        })
    };
    let mut kpa = bounded();
    // 700 / 7 = 100 wanted (and 100 / 5 ready = 20×: panic), capped at 5.
    let d = kpa.scale(0, 700.0, 700.0, 5);
    assert_eq!((d.autoscaler_desired, d.desired), (100, 5));
    // The decider's panic peak of 100 is held for the stable window; the cap still applies.
    let d = kpa.scale(30 * SEC, 7.0, 7.0, 5);
    assert_eq!(
        (d.autoscaler_desired, d.desired, d.panicking),
        (100, 5, true)
    );
    // No traffic for far longer than the grace period: never below min_scale.
    let mut kpa = bounded();
    for s in [1, 60, 600] {
        let d = kpa.scale(s * SEC, 0.0, 0.0, 2);
        assert_eq!((d.autoscaler_desired, d.desired), (1, 2), "at {s} s");
        assert!(!d.awaiting_scale_to_zero);
    }
    let d = kpa.scale(601 * SEC, 0.0, 0.0, 1);
    assert_eq!((d.autoscaler_desired, d.desired), (0, 2));
    // max_scale 0 is unbounded.
    assert_eq!(kpa_with(config()).scale(0, 700.0, 700.0, 5).desired, 100);
}

// === excess burst capacity, odd inputs ===

#[test]
fn excess_burst_capacity_is_total_capacity_minus_burst_and_panic_load() {
    // floor(30 × 10 − 200 − 100) = 0; floor(10 × 10 − 200 − 50.5) = −151.
    assert_eq!(kpa().scale(0, 100.0, 100.0, 30).excess_burst_capacity, 0);
    assert_eq!(kpa().scale(0, 50.5, 50.5, 10).excess_burst_capacity, -151);
    let with_tbc = |tbc| {
        kpa_with(KpaConfig {
            target_burst_capacity: tbc,
            ..config()
        })
        .scale(0, 50.0, 50.0, 10)
        .excess_burst_capacity
    };
    assert_eq!(with_tbc(0.0), 0);
    assert_eq!(with_tbc(-1.0), -1);
}

#[test]
fn negative_and_nan_rates_count_as_zero() {
    let d = kpa().scale(0, f64::NAN, -5.0, 1);
    assert_eq!(
        (d.autoscaler_desired, d.desired, d.panicking),
        (0, 1, false)
    );
}

// === windows ===

#[test]
fn windows_take_their_lengths_from_the_config() {
    let w = KpaWindows::new(&KpaConfig::default());
    assert_eq!((w.stable.buckets.len(), w.panic.buckets.len()), (60, 6));
    let w = KpaWindows::with_windows(Duration::from_millis(1500), Duration::ZERO);
    assert_eq!((w.stable.buckets.len(), w.panic.buckets.len()), (2, 1));
}

#[test]
fn records_in_the_same_second_add_up() {
    let mut w = KpaWindows::new(&config());
    w.record(1000, 1.0);
    w.record(1500, 1.0);
    w.record(1999, 1.0);
    assert_eq!(w.stable_average(1999), 3.0);
    assert_eq!(w.panic_average(1999), 3.0);
}

#[test]
fn a_young_window_averages_over_the_seconds_seen() {
    let mut w = KpaWindows::new(&config());
    for (s, v) in [(0, 10.0), (1, 20.0), (2, 30.0)] {
        w.record(s * SEC, v);
    }
    // 60 / 3, not 60 / 60.
    assert_eq!(w.stable_average(2 * SEC), 20.0);
    assert_eq!(w.panic_average(2 * SEC), 20.0);
    // Young, but panic is full after six seconds: 0..=7 seen, panic holds 2..=7.
    for s in 3..8 {
        w.record(s * SEC, 40.0);
    }
    assert_eq!(w.stable_average(7 * SEC), 260.0 / 8.0); // 32.5
    assert_eq!(w.panic_average(7 * SEC), 38.333_333); // 230 / 6, floored
}

#[test]
fn full_windows_slide_over_the_last_sixty_and_six_seconds() {
    let mut w = KpaWindows::new(&config());
    for s in 0..100 {
        w.record(s * SEC, s as f64);
    }
    // Stable: 40..=99 → 69.5; panic: 94..=99 → 96.5.
    assert_eq!(w.stable_average(99 * SEC), 69.5);
    assert_eq!(w.panic_average(99 * SEC), 96.5);
    let observed = w.observed(99 * SEC).expect("has data");
    assert_eq!((observed.stable, observed.panic), (69.5, 96.5));
}

#[test]
fn skipped_seconds_between_records_count_as_zero() {
    let mut w = KpaWindows::new(&config());
    w.record(0, 66.0);
    w.record(10 * SEC, 0.0);
    // Seconds 0..=10 seen, 66 in total → 6.
    assert_eq!(w.stable_average(10 * SEC), 6.0);
    // Panic window 5..=10: all zero.
    assert_eq!(w.panic_average(10 * SEC), 0.0);
}

#[test]
fn seconds_not_yet_recorded_at_the_end_are_left_out() {
    let mut w = KpaWindows::new(&config());
    for s in 0..10 {
        w.record(s * SEC, 30.0);
    }
    // Asked at 12 s with the last record at 9 s: still 30, not 300 / 13.
    assert_eq!(w.stable_average(12 * SEC), 30.0);
    // Panic: seconds 7..=9 remain of the 6 s window ending at 12 → 90 / 3.
    assert_eq!(w.panic_average(12 * SEC), 30.0);
    // Six or more seconds later the panic window has nothing.
    assert_eq!(w.panic_average(15 * SEC), 0.0);
    assert_eq!(w.stable_average(15 * SEC), 30.0);
}

#[test]
fn a_window_without_records_is_empty_and_then_young_again() {
    let mut w = KpaWindows::new(&config());
    assert!(w.is_empty(0));
    assert_eq!(w.observed(0), None);
    for s in 0..10 {
        w.record(s * SEC, 30.0);
    }
    // Exactly a window after the last record: not empty, but nothing left to average.
    assert_eq!(
        w.observed(69 * SEC),
        Some(KpaObserved {
            stable: 0.0,
            panic: 0.0
        })
    );
    assert!(w.is_empty(70 * SEC));
    assert_eq!(w.observed(70 * SEC), None);
    // The next record starts a fresh, young window.
    w.record(100 * SEC, 12.0);
    assert_eq!(w.stable_average(100 * SEC), 12.0);
    assert_eq!(w.panic_average(100 * SEC), 12.0);
}

#[test]
fn late_records_count_inside_the_window_and_are_dropped_outside_it() {
    let mut w = KpaWindows::new(&config());
    w.record(10 * SEC, 60.0);
    w.record(0, 60.0); // late, but inside the 60 s window: seconds 0..=10 seen
    assert_eq!(w.stable_average(10 * SEC), 10.909_09);
    w.record(100 * SEC, 5.0); // 90 s later: fresh start
    w.record(30 * SEC, 1000.0); // older than a window before 100 s: ignored
    assert_eq!(w.stable_average(100 * SEC), 5.0);
}

#[test]
fn averages_are_floored_to_six_decimal_places() {
    let mut w = KpaWindows::new(&config());
    w.record(0, 1.0);
    w.record(SEC, 1.0);
    w.record(2 * SEC, 0.0);
    assert_eq!(w.stable_average(2 * SEC), 0.666_666);
}

// === windows and decisions together ===

/// Per-second replay: 70 req/s (10 pods) for two minutes, 210 req/s from 120 s to 200 s,
/// 70 req/s after; pods become ready only at 126 s (30) and 260 s (15).
#[test]
fn replay_of_a_threefold_step_through_the_windows() {
    let mut windows = KpaWindows::new(&config());
    let mut kpa = kpa();
    let mut at = |s: u64, ready: u32| {
        let rate = if (120..200).contains(&s) { 210.0 } else { 70.0 };
        windows.record(s * SEC, rate);
        let observed = windows.observed(s * SEC).expect("recorded this second");
        kpa.scale(s * SEC, observed.stable, observed.panic, ready)
    };
    for s in 0..120 {
        let d = at(s, 10);
        assert_eq!((d.desired, d.panicking), (10, false), "at {s} s");
    }
    // Panic window 115..=120: (5 × 70 + 210) / 6 = 93.3 → 14 pods, 1.4× → calm;
    // stable (59 × 70 + 210) / 60 = 72.3 → 11.
    let d = at(120, 10);
    assert_eq!((d.desired, d.panic_pods, d.panicking), (11, 14, false));
    // (4 × 70 + 2 × 210) / 6 = 116.7 → 17: calm; stable 74.7 → 11.
    let d = at(121, 10);
    assert_eq!((d.desired, d.panic_pods, d.panicking), (11, 17, false));
    // (3 × 70 + 3 × 210) / 6 = 140 → 20 = 2 × 10 ready: panic; stable 77 → 11.
    let d = at(122, 10);
    assert_eq!((d.desired, d.stable_pods, d.panicking), (20, 11, true));
    // 163.3 → 24, 186.7 → 27, 210 → 30.
    assert_eq!(at(123, 10).desired, 24);
    assert_eq!(at(124, 10).desired, 27);
    // Last crossing: 30 / 10 ready.
    assert_eq!(at(125, 10).desired, 30);
    // 30 ready from 126 s: 30 / 30 = 1, calm, but panic holds until 125 + 60 < now.
    for s in 126..=185 {
        let d = at(s, 30);
        assert_eq!((d.desired, d.panicking), (30, true), "at {s} s");
    }
    let d = at(186, 30);
    assert_eq!((d.desired, d.panicking), (30, false));
    for s in 187..200 {
        assert_eq!(at(s, 30).desired, 30, "at {s} s");
    }
    // Back to 70 req/s: the stable average drains over a minute; never panicking.
    let mut previous = 30;
    for s in 200..259 {
        let d = at(s, 30);
        assert!(
            !d.panicking && d.desired <= previous && d.desired >= 15,
            "at {s} s"
        );
        previous = d.desired;
    }
    // Stable 200..=259 all 70 → 10, but 30 ready may only halve → 15.
    let d = at(259, 30);
    assert_eq!((d.stable_pods, d.desired), (15, 15));
    // With 15 ready the floor is 7: 10.
    assert_eq!(at(260, 15).desired, 10);
}

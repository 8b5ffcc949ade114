use std::collections::HashSet;

use forecourt_config::{Capacity, ScalingRule};

use super::*;

/// 50 req/s per replica (what the predictive arm and the live floor divide by), 35 req/s at the
/// 70 % target (what the reactive arm and panic divide by); min 1, max 10, up 100/0s,
/// down 100/10s/30s stabilization, panic 6s × 2.0, stable 60s, idle 60s, no warm pool.
fn rps() -> ScalingConfig {
    ScalingConfig::with_capacity(Capacity::RequestsPerSecond(50.0))
}

fn scale_to_zero() -> ScalingConfig {
    ScalingConfig {
        min_replicas: 0,
        ..rps()
    }
}

/// One tick at second `t`: `current` replicas all ready, both windows at `rate`, the forecast
/// (point, upper bound and demand) flat at `rate`, a request arriving this second when
/// `rate` > 0.
fn at(t: u64, current: u32, rate: f64) -> ScalingInputs {
    ScalingInputs {
        now_ms: t * 1_000,
        current,
        ready: current,
        stable_rate: rate,
        panic_rate: rate,
        forecast: Some(ForecastAtHorizon {
            point: rate,
            upper: rate,
            demand: rate,
        }),
        last_arrival_ms: (rate > 0.0).then_some(t * 1_000),
        ..ScalingInputs::default()
    }
}

/// `inputs` with the forecast (point, upper bound and demand) flat at `rate`.
fn with_forecast(mut inputs: ScalingInputs, rate: f64) -> ScalingInputs {
    inputs.forecast = Some(ForecastAtHorizon {
        point: rate,
        upper: rate,
        demand: rate,
    });
    inputs
}

/// `inputs` with the forecast's demand (what the predictive arm scales on) at `demand`.
fn with_demand(mut inputs: ScalingInputs, demand: f64) -> ScalingInputs {
    let forecast = inputs
        .forecast
        .get_or_insert_with(ForecastAtHorizon::default);
    forecast.demand = demand;
    inputs
}

/// [`rps`] with a scale-up step of `max_step` and no cooldown.
fn rps_stepping(max_step: u32) -> ScalingConfig {
    ScalingConfig {
        scale_up: forecourt_config::ScaleUp {
            max_step,
            cooldown: Duration::ZERO,
        },
        ..rps()
    }
}

/// A service whose orders take effect at once (ordered = ready).
struct Service {
    config: ScalingConfig,
    state: ScalingState,
    current: u32,
}

impl Service {
    fn new(config: ScalingConfig, current: u32) -> Self {
        Self {
            config,
            state: ScalingState::new(),
            current,
        }
    }

    fn tick(&mut self, mut inputs: ScalingInputs) -> Decision {
        inputs.current = self.current;
        inputs.ready = self.current;
        let decision = decide(&self.config, &mut self.state, &inputs);
        assert_eq!(decision.current, self.current);
        self.current = decision.desired;
        decision
    }
}

fn once(config: &ScalingConfig, inputs: ScalingInputs) -> Decision {
    decide(config, &mut ScalingState::new(), &inputs)
}

// === reasons, one scenario each ===

fn steady() -> Decision {
    once(&rps(), at(0, 2, 70.0))
}

fn reactive() -> Decision {
    // 100 req/s over 35 per replica = 2.86 → 3; 2.86 / 2 ready is below the panic threshold.
    let mut inputs = at(0, 2, 100.0);
    inputs.forecast = None;
    once(&rps(), inputs)
}

fn predicted_load() -> Decision {
    once(&rps(), with_forecast(at(0, 2, 60.0), 200.0))
}

fn rule_fired() -> Decision {
    let config = ScalingConfig {
        rules: vec![
            ScalingRule {
                above: 0.8,
                scale_up_by: 3,
            },
            ScalingRule {
                above: 5.0,
                scale_up_by: 9,
            },
        ],
        ..rps()
    };
    // 85 req/s forecast needs ceil(85 / 50) = 2, but 85 / (2 × 50) = 0.85 > 0.8 asks 2 + 3.
    once(&config, with_forecast(at(0, 2, 60.0), 85.0))
}

fn panic() -> Decision {
    let mut inputs = at(0, 2, 60.0);
    inputs.panic_rate = 300.0;
    once(&rps(), inputs)
}

fn scale_from_zero() -> Decision {
    let config = ScalingConfig {
        scale_up: forecourt_config::ScaleUp {
            max_step: 4,
            cooldown: Duration::from_secs(60),
        },
        ..scale_to_zero()
    };
    let mut state = ScalingState::new();
    // A scale-up one second ago would hold any other scale-up in cooldown.
    decide(&config, &mut state, &at(0, 1, 10.0));
    let mut inputs = at(1, 0, 0.0);
    inputs.forecast = None;
    inputs.held_requests = 1;
    decide(&config, &mut state, &inputs)
}

fn scale_down_after_stabilization() -> Decision {
    let mut service = Service::new(rps(), 4);
    service.tick(at(0, 0, 140.0));
    for t in 1..=30 {
        let d = service.tick(at(t, 0, 35.0));
        assert_eq!(d.reason, Reason::StabilizingScaleDown, "t={t}");
    }
    service.tick(at(31, 0, 35.0))
}

fn cooldown_scale_up() -> Decision {
    let config = ScalingConfig {
        scale_up: forecourt_config::ScaleUp {
            max_step: 4,
            cooldown: Duration::from_secs(20),
        },
        ..rps()
    };
    let mut service = Service::new(config, 2);
    assert_eq!(service.tick(at(0, 0, 120.0)).desired, 3, "ceil(120 / 50)");
    // ceil(200 / 50) = 4; 200 / 35 = 5.7 is under twice the 3 ready: no panic.
    service.tick(at(1, 0, 200.0))
}

fn cooldown_scale_down() -> Decision {
    let config = ScalingConfig {
        scale_down: forecourt_config::ScaleDown {
            max_step: 1,
            cooldown: Duration::from_secs(10),
            stabilization: Duration::ZERO,
        },
        ..rps()
    };
    let mut service = Service::new(config, 2);
    assert_eq!(service.tick(at(0, 0, 120.0)).desired, 3, "ceil(120 / 50)");
    service.tick(at(1, 0, 35.0))
}

fn idle_to_zero() -> Decision {
    let mut state = ScalingState::new();
    let config = scale_to_zero();
    decide(&config, &mut state, &at(0, 1, 1.0));
    decide(&config, &mut state, &at(60, 1, 0.0))
}

fn not_yet_idle() -> Decision {
    let mut state = ScalingState::new();
    let config = scale_to_zero();
    decide(&config, &mut state, &at(0, 1, 1.0));
    decide(&config, &mut state, &at(59, 1, 0.0))
}

fn warm_pool() -> Decision {
    let config = ScalingConfig {
        warm_pool: 2,
        ..scale_to_zero()
    };
    once(&config, with_forecast(at(0, 0, 0.0), 5.0))
}

fn clamped_to_min() -> Decision {
    let config = ScalingConfig {
        min_replicas: 2,
        ..rps()
    };
    once(&config, at(0, 2, 0.0))
}

fn clamped_to_max() -> Decision {
    let config = ScalingConfig {
        max_replicas: 3,
        ..rps()
    };
    once(&config, at(0, 3, 100.0 * 3.0))
}

#[test]
fn steady_load_keeps_the_count() {
    let d = steady();
    assert_eq!((d.desired, d.reason), (2, Reason::Steady));
    assert!(!d.changed());
    assert_eq!(d.reactive, 2);
    assert_eq!(d.predictive, Some(2));
}

#[test]
fn live_load_scales_up_reactively() {
    let d = reactive();
    assert_eq!((d.desired, d.reason), (3, Reason::Reactive));
    assert_eq!(d.predictive, None, "no forecast while warming up");
    assert_eq!(d.predicted_utilization, None);
    assert!(!d.panicking);
}

#[test]
fn forecast_demand_scales_up_ahead() {
    let d = predicted_load();
    // 200 / 50 = 4 at full capacity; the live 60 req/s needs 2.
    assert_eq!((d.desired, d.reason), (4, Reason::PredictedLoad));
    assert_eq!((d.reactive, d.predictive), (2, Some(4)));
    assert!((d.demand - 200.0).abs() < 1e-9);
}

#[test]
fn the_demand_quantile_scales_not_the_point_or_the_upper_bound() {
    let mut inputs = at(0, 2, 60.0);
    inputs.forecast = Some(ForecastAtHorizon {
        point: 60.0,
        upper: 100.0,
        demand: 140.0,
    });
    let d = once(&rps(), inputs);
    assert_eq!(
        (d.predictive, d.desired, d.reason),
        (Some(3), 3, Reason::PredictedLoad),
        "ceil(140 / 50); the point and the upper bound need 2"
    );
    assert!((d.demand - 140.0).abs() < 1e-9);
    // Rules see the upper bound: 100 over 2 × 50.
    assert!((d.predicted_utilization.unwrap_or_default() - 1.0).abs() < 1e-9);
}

#[test]
fn headroom_is_counted_once() {
    // 140 req/s on 3 replicas (140 / 35 = 4 is under twice 3: no panic).
    let d = once(&rps(), at(0, 3, 140.0));
    // With a forecast the demand quantile is the headroom: 140 / 50 = 2.8 → 3, not 140 / 35.
    assert_eq!(d.predictive, Some(3));
    assert_eq!((d.desired, d.reason), (3, Reason::Steady));
    assert_eq!(d.reactive, 4, "reported, but not what decides");
    // A demand of exactly three replicas' full capacity needs three; just above it, four.
    assert_eq!(
        once(&rps(), with_demand(at(0, 3, 140.0), 150.0)).predictive,
        Some(3)
    );
    assert_eq!(
        once(&rps(), with_demand(at(0, 3, 140.0), 151.0)).predictive,
        Some(4)
    );

    // Without a forecast (warming up) the reactive arm keeps the target utilization.
    let mut warming = at(0, 3, 140.0);
    warming.forecast = None;
    let d = once(&rps(), warming);
    assert_eq!(
        (d.predictive, d.desired, d.reason),
        (None, 4, Reason::Reactive)
    );
    // So does a reactive policy, whatever the forecast says.
    let reactive_policy = ScalingConfig {
        predictive: false,
        ..rps()
    };
    let d = once(&reactive_policy, at(0, 3, 140.0));
    assert_eq!(
        (d.predictive, d.desired, d.reason),
        (None, 4, Reason::Reactive)
    );
    assert_eq!(d.predicted_utilization, None);
}

#[test]
fn held_requests_are_demand_drained_within_the_panic_window() {
    // A forecast of 100 req/s needs 2 replicas at 50 each.
    let quiet = with_forecast(at(0, 2, 100.0), 100.0);
    assert_eq!(once(&rps(), quiet).predictive, Some(2));
    // 300 held, drained within the 6 s panic window, add 50 req/s: 150 / 50 = 3.
    let mut held = quiet;
    held.held_requests = 300;
    let d = once(&rps(), held);
    assert!((d.demand - 150.0).abs() < 1e-9, "{}", d.demand);
    assert_eq!(
        (d.predictive, d.desired, d.reason),
        (Some(3), 3, Reason::PredictedLoad)
    );
    // A 3 s window drains them twice as fast: 100 + 100 req/s → 4.
    let mut config = rps();
    config.panic.window = Duration::from_secs(3);
    let d = once(&config, held);
    assert!((d.demand - 200.0).abs() < 1e-9, "{}", d.demand);
    assert_eq!((d.predictive, d.desired), (Some(4), 4));
}

#[test]
fn the_live_load_is_a_floor_under_a_low_forecast() {
    // The forecast says 10 req/s (1 replica); the panic window sees 175 req/s (175 / 50 = 3.5
    // → 4 at full capacity); the stable window 100 (100 / 35 = 2.9 → 3). 175 / 35 = 5 is
    // under twice the 3 ready: no panic.
    let mut inputs = with_forecast(at(0, 3, 175.0), 10.0);
    inputs.stable_rate = 100.0;
    let d = once(&rps(), inputs);
    assert!(!d.panicking);
    assert_eq!((d.predictive, d.reactive), (Some(1), 3));
    assert_eq!(
        (d.recommended, d.desired, d.reason),
        (4, 4, Reason::Reactive)
    );

    // Live load that needs all five running keeps them however long the forecast stays low.
    let mut service = Service::new(rps(), 5);
    for t in 0..300 {
        let d = service.tick(with_forecast(at(t, 0, 250.0), 10.0));
        assert_eq!((d.desired, d.reason), (5, Reason::Steady), "t={t}");
        assert_eq!(d.predictive, Some(1));
    }
}

#[test]
fn in_a_burst_the_panic_peak_wins_over_a_lagging_forecast() {
    let config = ScalingConfig {
        max_replicas: 20,
        ..rps()
    };
    // The forecast still says 100 req/s (2); the panic window sees 300 (6 at full capacity,
    // 300 / 35 = 8.6 → 9 at the target, 4.3× the 2 ready: panic).
    let mut inputs = with_forecast(at(0, 2, 100.0), 100.0);
    inputs.panic_rate = 300.0;
    let d = once(&config, inputs);
    assert!(d.panicking);
    assert_eq!((d.predictive, d.reactive), (Some(2), 9));
    assert_eq!((d.desired, d.reason), (9, Reason::Panic));

    // A forecast above the panic peak still leads while panicking: 600 / 50 = 12.
    let d = once(&config, with_forecast(inputs, 600.0));
    assert!(d.panicking);
    assert_eq!(
        (d.predictive, d.reactive, d.desired, d.reason),
        (Some(12), 9, 12, Reason::PredictedLoad)
    );
}

#[test]
fn a_rule_adds_its_step_and_is_named() {
    let d = rule_fired();
    assert_eq!((d.desired, d.reason), (5, Reason::RuleFired { rule: 0 }));
    assert_eq!(d.rules, Some(5));
    assert_eq!(d.predictive, Some(2));
    assert!((d.predicted_utilization.unwrap_or_default() - 0.85).abs() < 1e-9);
    assert_eq!(d.reason.to_string(), "scaling rule 0 fired on the forecast");
}

#[test]
fn the_biggest_rule_wins() {
    let config = ScalingConfig {
        max_replicas: 30,
        scale_up: forecourt_config::ScaleUp {
            max_step: 20,
            cooldown: Duration::ZERO,
        },
        rules: vec![
            ScalingRule {
                above: 0.5,
                scale_up_by: 1,
            },
            ScalingRule {
                above: 0.8,
                scale_up_by: 6,
            },
            ScalingRule {
                above: 0.9,
                scale_up_by: 2,
            },
        ],
        ..rps()
    };
    let d = once(&config, with_forecast(at(0, 2, 60.0), 95.0));
    assert_eq!((d.desired, d.reason), (8, Reason::RuleFired { rule: 1 }));
}

#[test]
fn a_rule_on_zero_replicas_fires_on_any_forecast_traffic() {
    let config = ScalingConfig {
        rules: vec![ScalingRule {
            above: 0.8,
            scale_up_by: 2,
        }],
        ..scale_to_zero()
    };
    let d = once(&config, with_forecast(at(0, 0, 0.0), 1.0));
    assert_eq!((d.desired, d.reason), (2, Reason::RuleFired { rule: 0 }));
    assert_eq!(d.predicted_utilization, Some(f64::INFINITY));
}

#[test]
fn a_burst_in_the_short_window_panics() {
    let d = panic();
    // 300 / 35 = 8.6 → 9 replicas wanted, 4.3× the 2 ready: panic, met in one order.
    assert_eq!((d.desired, d.reason), (9, Reason::Panic));
    assert!(d.panicking);
    assert_eq!((d.reactive, d.predictive), (9, Some(2)));
    // A step of 4 limits it: 2 + 4.
    let mut inputs = at(0, 2, 60.0);
    inputs.panic_rate = 300.0;
    let d = once(&rps_stepping(4), inputs);
    assert_eq!((d.desired, d.reason, d.recommended), (6, Reason::Panic, 9));
}

#[test]
fn a_step_in_load_panics_then_holds_for_a_stable_window() {
    let mut service = Service::new(rps(), 2);
    for t in 0..60 {
        assert_eq!(service.tick(at(t, 0, 60.0)).reason, Reason::Steady);
    }
    // The step: the 6 s window sees it at once; the 60 s average lags.
    let mut stable = 60.0;
    for t in 60..70 {
        stable += (300.0 - 60.0) / 60.0;
        let mut inputs = at(t, 0, 300.0);
        inputs.stable_rate = stable;
        let d = service.tick(inputs);
        assert!(d.panicking, "t={t}");
        assert_eq!(d.reason, Reason::Panic, "t={t}");
        if t == 60 {
            assert_eq!(d.desired, 9, "the panic peak, in one order");
        }
    }
    // The last trigger was at 60 s: from 61 s on, 8.6 wanted is under twice the 9 ready.
    assert_eq!(service.current, 9);
    // The burst ends; panic never scales down and lasts a stable window after the last trigger.
    for t in 70..120 {
        let d = service.tick(at(t, 0, 60.0));
        assert_eq!((d.desired, d.reason), (9, Reason::Panic), "t={t}");
    }
    // Then the panic peak still stands in the stabilization window for 30 s.
    for t in 120..150 {
        let d = service.tick(at(t, 0, 60.0));
        assert!(!d.panicking);
        assert_eq!(
            (d.desired, d.reason),
            (9, Reason::StabilizingScaleDown),
            "t={t}"
        );
    }
    // Then it follows the live load down in one order: 60 / 35 = 1.7 → 2.
    let d = service.tick(at(150, 0, 60.0));
    assert_eq!((d.desired, d.reason), (2, Reason::ScaleDown));
}

#[test]
fn panic_compares_with_ready_not_ordered_replicas() {
    // Six ordered, one ready: the short window wanting three is a burst for the one serving.
    let mut inputs = at(0, 6, 60.0);
    inputs.ready = 1;
    inputs.panic_rate = 100.0;
    let d = once(&rps(), inputs);
    assert!(d.panicking);
    assert_eq!(d.desired, 6, "panic holds what is ordered");
}

#[test]
fn ramp_is_met_by_the_forecast_before_live_load() {
    // Load rises 3 req/s every second; the forecast sees 10 s ahead with a 10 % margin.
    let rate = |t: f64| 10.0 + 3.0 * t.max(0.0);
    let run = |with_forecast: bool| {
        let mut service = Service::new(rps(), 1);
        let mut first_up = None;
        let mut overloaded = 0;
        for t in 0..120u64 {
            let now = t as f64;
            let mut inputs = at(t, 0, rate(now));
            inputs.stable_rate = (rate(now) + rate(now - 60.0)) / 2.0;
            inputs.panic_rate = (rate(now) + rate(now - 6.0)) / 2.0;
            inputs.forecast = with_forecast.then(|| ForecastAtHorizon {
                point: rate(now + 10.0),
                upper: rate(now + 10.0) * 1.1,
                demand: rate(now + 10.0) * 1.1,
            });
            let d = service.tick(inputs);
            if d.changed() && first_up.is_none() {
                first_up = Some((t, d.reason));
            }
            if rate(now) > f64::from(service.current) * 50.0 {
                overloaded += 1;
            }
        }
        (first_up, overloaded)
    };
    let (predictive_first, predictive_overloaded) = run(true);
    let (reactive_first, reactive_overloaded) = run(false);
    let (p_at, p_reason) = predictive_first.expect("the forecast scales up");
    let (r_at, _) = reactive_first.expect("live load scales up eventually");
    assert_eq!(p_reason, Reason::PredictedLoad);
    assert!(p_at < r_at, "forecast at {p_at}s, live load at {r_at}s");
    assert_eq!(predictive_overloaded, 0, "never behind the ramp");
    assert!(reactive_overloaded > predictive_overloaded);
}

#[test]
fn noise_does_not_flap() {
    // ±15 % noise around 100 req/s: recommendations swing between 2 and 3.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as f64 / f64::from(1u32 << 31)) * 0.3 - 0.15
    };
    let mut service = Service::new(rps(), 3);
    let mut changes = 0;
    let mut seen = HashSet::new();
    for t in 0..600 {
        let rate = 100.0 * (1.0 + noise());
        let mut inputs = at(t, 0, rate);
        inputs.panic_rate = 100.0 * (1.0 + noise());
        inputs.forecast = Some(ForecastAtHorizon {
            point: 100.0,
            upper: 100.0 * (1.0 + noise()),
            demand: 100.0 * (1.0 + noise()),
        });
        let d = service.tick(inputs);
        seen.insert(d.recommended);
        changes += u32::from(d.changed());
    }
    assert!(seen.len() > 1, "the noise does move the recommendation");
    assert!(changes <= 1, "{changes} changes in 10 minutes");
}

#[test]
fn stabilization_holds_then_steps_down_by_max_step_each_cooldown() {
    let d = scale_down_after_stabilization();
    assert_eq!((d.desired, d.reason), (1, Reason::ScaleDown));

    let one_at_a_time = ScalingConfig {
        scale_down: forecourt_config::ScaleDown {
            max_step: 1,
            ..rps().scale_down
        },
        ..rps()
    };
    let mut service = Service::new(one_at_a_time, 6);
    service.tick(at(0, 0, 200.0));
    let mut timeline = Vec::new();
    for t in 1..=90 {
        let d = service.tick(at(t, 0, 35.0));
        if d.changed() {
            timeline.push((t, d.desired));
        } else if t < 31 {
            assert_eq!(d.reason, Reason::StabilizingScaleDown, "t={t}");
        } else if service.current > 1 {
            assert_eq!(d.reason, Reason::CooldownScaleDown, "t={t}");
        }
    }
    assert_eq!(
        timeline,
        vec![(31, 5), (41, 4), (51, 3), (61, 2), (71, 1)],
        "one replica per 10 s cooldown once the 30 s window has passed"
    );
}

#[test]
fn by_default_a_surge_scales_in_at_once_when_the_window_has_passed() {
    // 10 replicas for a surge, then back to 35 req/s: with the built-in step (100), the count
    // follows the load down in one order once the 30 s stabilization window has passed,
    // instead of one replica per cooldown (the replay's flash crowds paid for that slowness
    // in instance-seconds at every cost).
    let mut service = Service::new(rps(), 10);
    service.tick(at(0, 0, 500.0));
    let mut timeline = Vec::new();
    for t in 1..=60 {
        let d = service.tick(at(t, 0, 35.0));
        if d.changed() {
            timeline.push((t, d.desired));
        }
    }
    assert_eq!(timeline, vec![(31, 1)]);
}

#[test]
fn the_live_floor_follows_a_ramp_the_windows_see() {
    // 3 replicas of 50 req/s each; the forecast lags at 100 req/s. The panic window sees
    // 200 req/s (200 / 35 = 5.7, under twice the 3 ready: no panic), the stable window 100: the
    // rise over the 27 s between the windows' centres, less two standard deviations of
    // Poisson noise (2·√(200/6 + 100/60) = 11.8), goes on for the 12 s horizon:
    // 200 · (1 + (100 − 11.8) / 27 · 12 / 200) = 239.2 → 5 replicas, not 4.
    let config = rps();
    let mut inputs = with_forecast(at(0, 3, 200.0), 100.0);
    inputs.stable_rate = 100.0;
    let d = once(&config, inputs);
    assert_eq!(
        (d.desired, d.panicking),
        (4, false),
        "no horizon: the live load only"
    );
    inputs.horizon_secs = 12.0;
    let d = once(&config, inputs);
    assert_eq!((d.desired, d.reason), (5, Reason::Reactive));

    // Steady traffic projects nothing at any rate: a panic window as far above the stable
    // one as Poisson noise allows adds no replica.
    for rate in [10.0, 1_000.0, 100_000.0] {
        let noise = 2.0 * (rate / 6.0 + rate / 60.0_f64).sqrt();
        let mut inputs = with_forecast(at(0, 1, rate + noise), rate);
        inputs.stable_rate = rate;
        inputs.horizon_secs = 60.0;
        let with_ramp = once(&config, inputs).recommended;
        inputs.horizon_secs = 0.0;
        assert_eq!(with_ramp, once(&config, inputs).recommended, "rate {rate}");
    }
}

#[test]
fn stabilization_follows_the_highest_recommendation_in_the_window() {
    let config = ScalingConfig {
        scale_down: forecourt_config::ScaleDown {
            max_step: 10,
            cooldown: Duration::ZERO,
            stabilization: Duration::from_secs(30),
        },
        ..rps()
    };
    let mut service = Service::new(config, 8);
    assert_eq!(service.tick(at(0, 0, 400.0)).recommended, 8);
    assert_eq!(service.tick(at(10, 0, 200.0)).recommended, 4);
    assert_eq!(service.tick(at(20, 0, 50.0)).recommended, 1);
    let d = service.tick(at(31, 0, 50.0));
    assert_eq!(
        (d.desired, d.reason),
        (4, Reason::ScaleDown),
        "max of 4 and 1"
    );
    let d = service.tick(at(41, 0, 50.0));
    assert_eq!(d.desired, 1);
}

#[test]
fn a_falling_forecast_scales_in_down_to_the_live_floor() {
    // 250 req/s needs all five; then the forecast falls to 10 req/s (1) and the live load to
    // 100 (2): the forecast alone would keep one.
    let mut service = Service::new(rps(), 5);
    assert_eq!(service.tick(at(0, 0, 250.0)).reason, Reason::Steady);
    let mut timeline = Vec::new();
    for t in 1..=120 {
        let d = service.tick(with_forecast(at(t, 0, 100.0), 10.0));
        assert_eq!((d.predictive, d.recommended), (Some(1), 2), "t={t}");
        if d.changed() {
            timeline.push((t, d.desired, d.reason));
        } else if t <= 30 {
            assert_eq!(d.reason, Reason::StabilizingScaleDown, "t={t}");
        } else {
            assert_eq!(d.reason, Reason::Steady, "t={t}");
        }
    }
    assert_eq!(
        timeline,
        vec![(31, 2, Reason::ScaleDown)],
        "after the stabilization window, in one order, never below the live load's 2"
    );
}

#[test]
fn scale_up_waits_for_its_cooldown() {
    let d = cooldown_scale_up();
    assert_eq!((d.desired, d.reason), (3, Reason::CooldownScaleUp));
    assert_eq!(d.recommended, 4);
    let config = ScalingConfig {
        scale_up: forecourt_config::ScaleUp {
            max_step: 4,
            cooldown: Duration::from_secs(20),
        },
        ..rps()
    };
    let mut service = Service::new(config, 2);
    service.tick(at(0, 0, 120.0));
    for t in 1..20 {
        assert_eq!(
            service.tick(at(t, 0, 200.0)).reason,
            Reason::CooldownScaleUp
        );
    }
    let d = service.tick(at(20, 0, 200.0));
    assert_eq!((d.desired, d.reason), (4, Reason::Reactive));
}

#[test]
fn scale_down_waits_for_its_cooldown_after_any_scaling() {
    let d = cooldown_scale_down();
    assert_eq!((d.desired, d.reason), (3, Reason::CooldownScaleDown));
    let config = ScalingConfig {
        scale_down: forecourt_config::ScaleDown {
            max_step: 1,
            cooldown: Duration::from_secs(10),
            stabilization: Duration::ZERO,
        },
        ..rps()
    };
    let mut service = Service::new(config, 2);
    service.tick(at(0, 0, 120.0));
    for t in 1..10 {
        assert_eq!(
            service.tick(at(t, 0, 35.0)).reason,
            Reason::CooldownScaleDown
        );
    }
    assert_eq!(service.tick(at(10, 0, 35.0)).desired, 2);
}

#[test]
fn a_held_request_starts_a_replica_at_once() {
    let d = scale_from_zero();
    assert_eq!((d.desired, d.reason), (1, Reason::ScaleFromZero));
}

#[test]
fn a_burst_from_zero_starts_up_to_one_step() {
    let mut inputs = at(0, 0, 500.0);
    inputs.held_requests = 40;
    let stepping = ScalingConfig {
        min_replicas: 0,
        ..rps_stepping(4)
    };
    let d = once(&stepping, inputs);
    assert_eq!((d.desired, d.reason), (4, Reason::ScaleFromZero));
    // The default step meets it in one order, up to max_replicas.
    let d = once(&scale_to_zero(), inputs);
    assert_eq!((d.desired, d.reason), (10, Reason::ScaleFromZero));
}

#[test]
fn idle_service_scales_to_zero_after_idle_to_zero_after() {
    assert_eq!(
        (not_yet_idle().desired, not_yet_idle().reason),
        (1, Reason::NotYetIdle)
    );
    let d = idle_to_zero();
    assert_eq!((d.desired, d.reason), (0, Reason::IdleToZero));

    // From three replicas: down to one (stabilized, in one order), hold it, then straight
    // to zero.
    let mut service = Service::new(scale_to_zero(), 3);
    service.tick(at(0, 0, 90.0));
    let mut timeline = Vec::new();
    for t in 1..=120 {
        let d = service.tick(at(t, 0, 0.0));
        if d.changed() {
            timeline.push((t, d.desired, d.reason));
        }
    }
    assert_eq!(
        timeline,
        vec![(31, 1, Reason::ScaleDown), (60, 0, Reason::IdleToZero)]
    );
    let d = service.tick(at(121, 0, 0.0));
    assert_eq!((d.desired, d.reason), (0, Reason::Steady));
}

#[test]
fn scale_to_zero_needs_silence_in_every_signal() {
    let config = scale_to_zero();
    let quiet = |state: &mut ScalingState, inputs: ScalingInputs| {
        decide(&config, state, &at(0, 1, 1.0));
        decide(&config, state, &inputs)
    };
    // Traffic forecast: the forecast keeps a replica.
    let d = quiet(
        &mut ScalingState::new(),
        with_forecast(at(100, 1, 0.0), 1.0),
    );
    assert_eq!((d.desired, d.reason), (1, Reason::Steady));
    // Demand from an upstream service.
    let mut inputs = at(100, 1, 0.0);
    inputs.dependency_demand = 2.0;
    assert_eq!(quiet(&mut ScalingState::new(), inputs).desired, 1);
    // A held request.
    let mut inputs = at(100, 1, 0.0);
    inputs.held_requests = 1;
    assert_eq!(quiet(&mut ScalingState::new(), inputs).desired, 1);
    // A recent arrival.
    let mut inputs = at(100, 1, 0.0);
    inputs.last_arrival_ms = Some(90_000);
    assert_eq!(
        quiet(&mut ScalingState::new(), inputs).reason,
        Reason::NotYetIdle
    );
    // min_replicas 1 never goes to zero.
    let d = decide(&rps(), &mut ScalingState::new(), &at(1_000, 1, 0.0));
    assert_eq!((d.desired, d.reason), (1, Reason::ClampedToMin));
}

#[test]
fn idle_time_counts_from_the_last_forecast_traffic_too() {
    let config = scale_to_zero();
    let mut state = ScalingState::new();
    decide(&config, &mut state, &at(0, 1, 1.0));
    decide(&config, &mut state, &with_forecast(at(50, 1, 0.0), 3.0));
    assert_eq!(state.idle_since_ms(Some(0)), Some(50_000));
    let d = decide(&config, &mut state, &at(100, 1, 0.0));
    assert_eq!(
        d.reason,
        Reason::NotYetIdle,
        "only 50 s since the forecast went quiet"
    );
    let d = decide(&config, &mut state, &at(110, 1, 0.0));
    assert_eq!(d.reason, Reason::IdleToZero);
}

#[test]
fn forecast_traffic_keeps_the_warm_pool() {
    let d = warm_pool();
    assert_eq!((d.desired, d.reason), (2, Reason::WarmPool));
    assert_eq!(d.predictive, Some(1));
    // With nothing forecast, no warm pool is kept.
    let config = ScalingConfig {
        warm_pool: 2,
        ..scale_to_zero()
    };
    let d = once(&config, at(0, 0, 0.0));
    assert_eq!((d.desired, d.reason), (0, Reason::Steady));
}

#[test]
fn forecast_traffic_wakes_a_service_at_zero() {
    let d = once(&scale_to_zero(), with_forecast(at(0, 0, 0.0), 80.0));
    assert_eq!(
        (d.predictive, d.desired, d.reason),
        (Some(2), 2, Reason::PredictedLoad),
        "ceil(80 / 50)"
    );
}

#[test]
fn the_warm_pool_and_idleness_follow_the_point_forecast() {
    let config = ScalingConfig {
        warm_pool: 2,
        ..scale_to_zero()
    };
    let mut service = Service::new(config, 1);
    let d = service.tick(at(0, 0, 1.0));
    assert_eq!((d.desired, d.reason), (2, Reason::WarmPool));
    // Nothing expected (point 0), only a demand quantile of 5 req/s: one replica is needed,
    // the warm pool is let go, and the service counts as idle since the last traffic.
    let d = service.tick(with_demand(at(50, 0, 0.0), 5.0));
    assert_eq!(
        (d.predictive, d.desired, d.reason),
        (Some(1), 1, Reason::ScaleDown)
    );
    assert_eq!(
        service.state.idle_since_ms(None),
        Some(0),
        "the quantile is not traffic"
    );
    // A point forecast of 5 req/s is traffic: the warm pool comes back and the service is busy.
    let d = service.tick(with_forecast(at(51, 0, 0.0), 5.0));
    assert_eq!(
        (d.predictive, d.desired, d.reason),
        (Some(1), 2, Reason::WarmPool)
    );
    assert_eq!(service.state.idle_since_ms(None), Some(51_000));
}

#[test]
fn a_negligible_forecast_counts_as_none() {
    let d = once(
        &scale_to_zero(),
        with_forecast(at(0, 0, 0.0), NEGLIGIBLE_RATE / 2.0),
    );
    assert_eq!((d.desired, d.predictive), (0, Some(0)));
}

#[test]
fn counts_are_clamped_to_min_and_max() {
    let d = clamped_to_min();
    assert_eq!((d.desired, d.reason), (2, Reason::ClampedToMin));
    let d = clamped_to_max();
    assert_eq!((d.desired, d.reason), (3, Reason::ClampedToMax));
    assert_eq!(d.reactive, 9);

    let config = ScalingConfig {
        max_replicas: 3,
        ..rps()
    };
    let d = once(&config, at(0, 2, 300.0));
    assert_eq!((d.desired, d.reason), (3, Reason::ClampedToMax));
}

#[test]
fn a_lowered_max_or_raised_min_applies_at_once() {
    let config = ScalingConfig {
        min_replicas: 2,
        max_replicas: 3,
        ..rps()
    };
    let d = once(&config, at(0, 8, 300.0));
    assert_eq!(
        (d.desired, d.reason),
        (3, Reason::ClampedToMax),
        "no stabilization"
    );
    let mut state = ScalingState::new();
    let config = ScalingConfig {
        scale_up: forecourt_config::ScaleUp {
            max_step: 1,
            cooldown: Duration::from_secs(60),
        },
        min_replicas: 4,
        ..rps()
    };
    decide(&config, &mut state, &at(0, 4, 175.0));
    let d = decide(&config, &mut state, &at(1, 1, 0.0));
    assert_eq!(
        (d.desired, d.reason),
        (4, Reason::ClampedToMin),
        "no cooldown, no step"
    );
}

#[test]
fn up_steps_are_limited() {
    // 1 500 req/s forecast: 1 500 / 50 = 30 replicas.
    let config = ScalingConfig {
        max_replicas: 50,
        ..rps_stepping(4)
    };
    let mut service = Service::new(config, 1);
    let mut counts = Vec::new();
    for t in 0..5 {
        counts.push(service.tick(with_forecast(at(t, 0, 30.0), 1_500.0)).desired);
    }
    assert_eq!(counts, vec![5, 9, 13, 17, 21]);
    // The default step of 100 orders them all at once.
    let config = ScalingConfig {
        max_replicas: 50,
        ..rps()
    };
    let d = once(&config, with_forecast(at(0, 1, 30.0), 1_500.0));
    assert_eq!((d.desired, d.reason), (30, Reason::PredictedLoad));
}

#[test]
fn concurrency_capacity_uses_in_flight_and_littles_law() {
    // 10 in flight per replica (the predictive arm), 7 at 70 % (the reactive arm).
    let config = ScalingConfig::with_capacity(Capacity::Concurrency(10.0));
    let mut inputs = at(0, 2, 100.0);
    inputs.stable_concurrency = 20.0;
    inputs.panic_concurrency = 20.0;
    inputs.mean_latency_secs = 0.2;
    let d = once(&config, inputs);
    // 20 / 7 = 2.9 → 3 reactive; 100 req/s × 0.2 s = 20 in flight over 10 → 2 predicted, and
    // the live 20 in flight need 2 too.
    assert_eq!(
        (d.reactive, d.predictive, d.desired, d.reason),
        (3, Some(2), 2, Reason::Steady)
    );

    inputs.mean_latency_secs = 0.5;
    let d = once(&config, inputs);
    // 100 × 0.5 = 50 in flight → 5.
    assert_eq!(
        (d.predictive, d.desired, d.reason),
        (Some(5), 5, Reason::PredictedLoad)
    );
    assert!((d.predicted_utilization.unwrap_or_default() - 50.0 / 20.0).abs() < 1e-9);

    // No latency measured: in flight over arrival rate (20 / 100 = 0.2 s).
    inputs.mean_latency_secs = 0.0;
    inputs.forecast = Some(ForecastAtHorizon {
        point: 200.0,
        upper: 200.0,
        demand: 200.0,
    });
    assert_eq!(
        once(&config, inputs).predictive,
        Some(4),
        "200 × 0.2 = 40 in flight over 10"
    );

    // Nothing to convert with: forecast traffic still keeps one.
    let mut quiet = at(0, 0, 0.0);
    quiet.forecast = Some(ForecastAtHorizon {
        point: 5.0,
        upper: 5.0,
        demand: 5.0,
    });
    assert_eq!(once(&config, quiet).predictive, Some(1));
    let with_rule = ScalingConfig {
        rules: vec![ScalingRule {
            above: 0.5,
            scale_up_by: 3,
        }],
        ..config
    };
    let d = once(&with_rule, quiet);
    assert_eq!(d.predicted_utilization, None, "unknown without a latency");
    assert_eq!((d.rules, d.desired), (None, 1), "so no rule fires");
}

#[test]
fn dependency_demand_is_predictive_load() {
    let mut inputs = at(0, 1, 20.0);
    inputs.forecast = None;
    inputs.dependency_demand = 100.0;
    let d = once(&rps(), inputs);
    assert_eq!(
        (d.predictive, d.desired, d.reason),
        (Some(2), 2, Reason::PredictedLoad),
        "100 over 50"
    );
    let mut inputs = at(0, 1, 20.0);
    inputs.dependency_demand = 100.0;
    let d = once(&rps(), inputs);
    assert_eq!(d.predictive, Some(3), "20 + 100 over 50");
    assert!((d.demand - 120.0).abs() < 1e-9);
}

#[test]
fn bad_numbers_count_as_nothing() {
    let mut inputs = at(0, 2, f64::NAN);
    inputs.panic_rate = f64::INFINITY;
    inputs.forecast = Some(ForecastAtHorizon {
        point: f64::NAN,
        upper: -3.0,
        demand: -3.0,
    });
    inputs.dependency_demand = f64::NEG_INFINITY;
    let d = once(&rps(), inputs);
    assert_eq!((d.reactive, d.predictive, d.demand), (0, Some(0), 0.0));
    assert_eq!(
        (d.recommended, d.desired),
        (1, 2),
        "min 1, stabilizing from 2"
    );
    assert!(!d.panicking);
}

#[test]
fn a_fresh_state_does_not_scale_down_before_a_stabilization_window() {
    // E.g. after Forecourt restarts: what is running now counts as a recent recommendation.
    let mut service = Service::new(rps(), 5);
    for t in 0..=30 {
        assert_eq!(
            service.tick(at(t, 0, 35.0)).reason,
            Reason::StabilizingScaleDown
        );
    }
    assert_eq!(service.tick(at(31, 0, 35.0)).desired, 1);
}

#[test]
fn state_exposes_what_it_remembers() {
    let mut state = ScalingState::new();
    assert!(!state.panicking());
    let mut inputs = at(5, 2, 60.0);
    inputs.panic_rate = 300.0;
    decide(&rps(), &mut state, &inputs);
    assert!(state.panicking());
    assert_eq!(state.last_scale_up_ms(), Some(5_000));
    assert_eq!(state.last_scale_down_ms(), None);
}

// === reasons ===

#[test]
fn every_reason_is_reachable_and_labelled_once() {
    let reached: HashSet<&str> = [
        steady(),
        reactive(),
        predicted_load(),
        rule_fired(),
        panic(),
        scale_from_zero(),
        scale_down_after_stabilization(),
        cooldown_scale_up(),
        cooldown_scale_down(),
        idle_to_zero(),
        not_yet_idle(),
        warm_pool(),
        clamped_to_min(),
        clamped_to_max(),
    ]
    .iter()
    .map(|d| d.reason.as_str())
    .chain(["stabilizing_scale_down"]) // asserted inside scale_down_after_stabilization
    .collect();
    let labels: HashSet<&str> = Reason::LABELS.into_iter().collect();
    assert_eq!(labels.len(), Reason::LABELS.len(), "labels are unique");
    assert_eq!(reached, labels);
}

#[test]
fn reasons_read_well_in_logs() {
    for reason in [
        Reason::Steady,
        Reason::PredictedLoad,
        Reason::RuleFired { rule: 2 },
        Reason::Reactive,
        Reason::Panic,
        Reason::ScaleFromZero,
        Reason::ScaleDown,
        Reason::StabilizingScaleDown,
        Reason::CooldownScaleUp,
        Reason::CooldownScaleDown,
        Reason::IdleToZero,
        Reason::NotYetIdle,
        Reason::WarmPool,
        Reason::ClampedToMin,
        Reason::ClampedToMax,
    ] {
        let text = reason.to_string();
        assert!(!text.is_empty() && text == text.to_lowercase(), "{text}");
        assert!(Reason::LABELS.contains(&reason.as_str()));
    }
}

// === TimeToReady ===

#[test]
fn horizon_defaults_before_any_measurement() {
    let ttr = TimeToReady::default();
    assert_eq!(ttr.estimate(), None);
    let auto = Horizon::Auto {
        margin: Duration::from_secs(2),
    };
    assert_eq!(
        ttr.horizon(&auto),
        DEFAULT_TIME_TO_READY + Duration::from_secs(2)
    );
    assert_eq!(
        ttr.horizon(&Horizon::Fixed(Duration::from_secs(15))),
        Duration::from_secs(15)
    );
}

#[test]
fn horizon_follows_a_high_percentile_of_recent_measurements() {
    let mut ttr = TimeToReady::new(10);
    for s in 1..=10 {
        ttr.record(Duration::from_secs(s));
    }
    assert_eq!(
        ttr.estimate(),
        Some(Duration::from_secs(9)),
        "p90 of 1..=10"
    );
    let auto = Horizon::Auto {
        margin: Duration::from_millis(500),
    };
    assert_eq!(ttr.horizon(&auto), Duration::from_millis(9_500));
    assert_eq!(ttr.horizon_secs(&auto), 10, "rounded up");
    // Only the last ten are kept: an old slow start is forgotten.
    for _ in 0..10 {
        ttr.record(Duration::from_secs(3));
    }
    assert_eq!(ttr.samples(), 10);
    assert_eq!(ttr.estimate(), Some(Duration::from_secs(3)));
    // A single slow outlier among few samples counts (p90 of few is the max).
    let mut few = TimeToReady::default();
    few.record(Duration::from_secs(2));
    few.record(Duration::from_secs(30));
    assert_eq!(few.estimate(), Some(Duration::from_secs(30)));
}

#[test]
fn automatic_horizon_is_clamped() {
    let auto = Horizon::Auto {
        margin: Duration::ZERO,
    };
    let mut fast = TimeToReady::default();
    fast.record(Duration::from_millis(50));
    assert_eq!(fast.horizon(&auto), MIN_HORIZON);
    let mut slow = TimeToReady::default();
    slow.record(Duration::from_secs(600));
    assert_eq!(slow.horizon(&auto), MAX_HORIZON);
}

#[test]
fn orders_pair_with_readiness_oldest_first() {
    let mut ttr = TimeToReady::default();
    ttr.ordered(1_000, 2);
    ttr.ordered(3_000, 1);
    assert_eq!(ttr.pending(), 3);
    ttr.became_ready(5_000, 1); // the first of the 1 s orders: 4 s
    ttr.cancelled(1); // the 3 s order is scaled away
    ttr.became_ready(8_000, 3); // the second 1 s order: 7 s; nothing else is pending
    assert_eq!(ttr.pending(), 0);
    assert_eq!(ttr.samples(), 2);
    assert_eq!(ttr.estimate(), Some(Duration::from_secs(7)));
}

// === dependency_demand ===

fn dep(service: &str, fan_out: f64) -> Dependency {
    Dependency {
        service: service.to_owned(),
        fan_out,
    }
}

#[test]
fn surges_flow_down_the_dependency_graph() {
    // shop → api (0.5) → db (2); shop → db (1). Listed out of order on purpose.
    let shop = [dep("api", 0.5), dep("db", 1.0)];
    let api = [dep("db", 2.0)];
    let services = [
        ServiceLoad {
            name: "db",
            dependencies: &[],
            forecast: Some(10.0),
            current_rate: 10.0,
        },
        ServiceLoad {
            name: "api",
            dependencies: &api,
            forecast: Some(55.0),
            current_rate: 50.0, // its own surge: 5
        },
        ServiceLoad {
            name: "shop",
            dependencies: &shop,
            forecast: Some(200.0),
            current_rate: 100.0, // its surge: 100
        },
    ];
    let extra = dependency_demand(&services);
    // api gets 0.5 × 100 = 50; its surge is 5 + 50 = 55; db gets 2 × 55 + 1 × 100 = 210.
    assert_eq!(extra, vec![210.0, 50.0, 0.0]);
}

#[test]
fn steady_upstreams_push_nothing() {
    let deps = [dep("b", 3.0)];
    let services = [
        ServiceLoad {
            name: "a",
            dependencies: &deps,
            forecast: Some(80.0),
            current_rate: 100.0, // forecast below today's rate: no surge
        },
        ServiceLoad {
            name: "b",
            dependencies: &[],
            forecast: None,
            current_rate: 0.0,
        },
    ];
    assert_eq!(dependency_demand(&services), vec![0.0, 0.0]);
    let warming = [ServiceLoad {
        forecast: None,
        ..services[0]
    }];
    assert_eq!(dependency_demand(&warming), vec![0.0]);
}

#[test]
fn unknown_names_self_edges_and_cycles_do_not_hang() {
    let a = [dep("b", 1.0), dep("nowhere", 1.0), dep("a", 1.0)];
    let b = [dep("a", 1.0)];
    let services = [
        ServiceLoad {
            name: "a",
            dependencies: &a,
            forecast: Some(10.0),
            current_rate: 0.0,
        },
        ServiceLoad {
            name: "b",
            dependencies: &b,
            forecast: Some(10.0),
            current_rate: 0.0,
        },
    ];
    let extra = dependency_demand(&services);
    assert_eq!(extra.len(), 2);
    assert!(extra.iter().all(|e| e.is_finite()));
}

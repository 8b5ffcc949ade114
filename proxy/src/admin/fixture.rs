//! Test fixtures of the admin API: a front door with many services, and a forecast board
//! published by the control loop's own forecast step on virtual time.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use forecourt_config::Policy;
use forecourt_orchestrator::{ForecastBoard, ForecastLoop};
use forecourt_predictor::{ManualClock, ServiceForecast};

use crate::front_door::FrontDoor;

/// A front door with `services` services named `svc-00000`, … (one static instance each)
/// and `extra` at the top of the policy.
pub(crate) fn front_door(services: usize, extra: &str) -> FrontDoor {
    FrontDoor::new(policy(services, extra), Arc::new(ManualClock::new(0)))
}

/// The policy of [`front_door`].
pub(crate) fn policy(services: usize, extra: &str) -> Policy {
    let mut text =
        format!("listeners: {{ proxy: 127.0.0.1:0, admin: 127.0.0.1:0 }}\n{extra}services:\n");
    for i in 0..services {
        let _ = writeln!(
            text,
            "  - name: svc-{i:05}\n    routes: [{{ path_prefix: /svc-{i:05} }}]\n    instances: [{{ address: 127.0.0.1:9 }}]"
        );
    }
    Policy::parse(&text, Path::new("t.yaml")).unwrap()
}

/// Runs the control loop's forecast step for two minutes of virtual time in which each of
/// `busy` (service, requests per second) had steady arrivals and every other service none,
/// and publishes its board.
pub(crate) fn publish_board(front_door: &FrontDoor, busy: &[(&str, u64)]) {
    let snapshot = front_door.snapshot();
    let predictor = &snapshot.predictor;
    let forecast = &snapshot.policy.forecast;
    let mut step = ForecastLoop::new(
        Arc::clone(predictor),
        forecast,
        Arc::clone(&front_door.control.forecasts),
    );
    let start_ms = 1_700_000_000_000;
    for sec in 0..=120 {
        let now_ms = start_ms + sec * 1_000;
        step.tick(predictor, forecast, &front_door.control.events, now_ms);
        for (name, rps) in busy {
            let id = predictor.service_id(name).unwrap();
            predictor.record_arrivals(id, *rps, now_ms + 10);
        }
    }
}

/// Changes the published board's entry for `service`.
pub(crate) fn edit_board(
    front_door: &FrontDoor,
    service: &str,
    edit: impl FnOnce(&mut ServiceForecast),
) {
    let mut board = ForecastBoard::clone(&front_door.control.forecasts.load());
    let entry = board.services.iter_mut().find(|s| s.service == service);
    edit(Arc::make_mut(entry.unwrap()));
    front_door.control.forecasts.store(Arc::new(board));
}

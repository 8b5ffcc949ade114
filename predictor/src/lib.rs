//! # Forecourt predictor
//!
//! ```text
//!  request path (many threads, &self, atomics only)
//!    ServiceId ─► Predictor::record_arrival ─► SlidingWindow buckets (arrivals, tenant)
//!              └► request_started / request_finished ─► in-flight gauge + time integral
//!                                       │
//!  control loop (one task, once a second)│ closed seconds
//!    ForecastEngine::tick ◄──────────────┘
//!      ├─► Ensemble::observe ─► Scoreboard.score (forecasts from t−h meet their actual)
//!      │                     ├► models: last value · EWMA fast/slow · damped Holt · trend ·
//!      │                     │          seasonal · autoregressive (log counts, daily lag)
//!      │                     └► weights ∝ 1/MAE², upper = point + p90 of own residuals
//!      ├─► PanicSignal (6 s vs 60 s)
//!      └─► ServiceForecast snapshots (+ scheduled events) ─► admin API, metrics, policy
//!
//!  offline: trace CSV ─► parse_trace ─► dense series ─► evaluate (same ensemble, virtual clock)
//! ```
//!
//! Lock-free sliding windows per service and tenant, and short-horizon load forecasts that keep
//! score of their own errors. Pure library: no IO, no async runtime, time always injected.

#![forbid(unsafe_code)]

pub mod burst;
pub mod clock;
pub mod demand;
pub mod engine;
pub mod ensemble;
pub mod evaluate;
pub mod events;
pub mod forecast;
pub mod hot_keys;
pub mod predictor;
pub mod profile;
pub mod score;
pub mod service;
pub mod tenant;
pub mod trace;
pub mod window;

/// Atomics used by the window: std normally, loom's under `--cfg loom` for model checking.
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
}

pub use burst::{BurstConfig, BurstState, PanicSignal};
pub use clock::{unix_now_ms, Clock, ManualClock, SystemClock};
pub use demand::DemandRing;
pub use engine::{EngineConfig, ForecastEngine, HorizonForecast, ServiceForecast};
pub use ensemble::{Ensemble, EnsembleConfig, EnsembleSnapshot, IDLE_FORGET_SECS};
pub use evaluate::{evaluate, evaluate_models, format_report, EvalConfig, EvalReport};
pub use events::{EventEffect, ScheduledEvent};
pub use forecast::{Forecast, Forecaster};
pub use hot_keys::HotKeys;
pub use predictor::{Predictor, PredictorConfig, PredictorError, ServiceId};
pub use profile::DailyProfile;
pub use score::{ErrorStats, ScoreConfig};
pub use service::ServiceWindows;
pub use tenant::TenantWindows;
pub use trace::{parse_trace, Trace, TraceError};
pub use window::{SlidingWindow, WindowConfig};

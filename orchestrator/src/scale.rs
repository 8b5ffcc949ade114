//! Scaling decisions: the pure [`decide`](decide::decide) (reactive and predictive arms,
//! time-to-ready, dependency fan-out), the per-tick [`Autoscaler`](autoscaler::Autoscaler) that
//! orders what it decides, and Knative's KPA as documented, the baseline replay compares against.
//!
//! ```text
//!  windows + forecast ─► autoscaler::ServiceScaler ─► decide() ─► Decision ─► Orchestrator
//!                                                      (pure)
//!  the same windows ───► kpa::Kpa::scale (replay only: the baseline)
//! ```

pub mod autoscaler;
pub mod decide;
pub mod headroom;
pub mod kpa;

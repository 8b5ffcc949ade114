//! # Admission control
//!
//! ```text
//!  request ─► InFlightLimit ─► TenantLimits::admit ─► TenantLimits::hold_slot
//!             try_enter:       the tenant's slot:     only while no instance
//!             the whole        concurrency, then      is ready: the tenant's
//!             proxy, fast 503  GCRA rate (429 with    fair share of the hold
//!                              Retry-After)           queue
//! ```
//!
//! Per-instance circuit breaking (closed, open, one half-open trial) is part of the instance's
//! passive ejection: `forecourt_orchestrator::Instance::is_ejected` and `begin_attempt`.
//!
//! Everything here runs per request: no locks, no allocation, only atomics. Time is injected as
//! `now_ms` (milliseconds on the proxy's clock) and never read here. Every permit gives back what
//! it holds when it is dropped, so a cancelled request cannot leak a slot.

mod concurrency;
mod rate;
mod tenants;
#[cfg(test)]
mod tests;

pub use concurrency::{ConcurrencyLimit, InFlightLimit, OwnedInFlightPermit, OwnedPermit};
pub use rate::{RetryAfter, TokenBucket};
pub use tenants::{OwnedTenantPermit, Refusal, TenantLimit, TenantLimits};

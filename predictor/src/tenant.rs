//! Per-tenant arrival windows in a bounded table.
//!
//! ```text
//!  tenant name ──ahash──► slot (fixed count)
//!                          ├─ empty?     claim it: store the name once (the only allocation)
//!                          ├─ same name? record into its window
//!                          └─ other name (collision or table full) ──► the shared "other" window
//! ```
//!
//! Memory is fixed when the service is created: `slots` windows plus one for "other". A tenant's
//! slot is never given back, so a tenant keeps its window for the life of the table.

use std::sync::OnceLock;

use crate::window::{SlidingWindow, WindowConfig};

/// Name reported for arrivals that did not get a tenant slot of their own.
pub const OTHER_TENANT: &str = "other";

/// Fixed hash seeds, so a tenant maps to the same slot in every replica and every run.
const SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

#[derive(Debug)]
struct TenantSlot {
    name: OnceLock<Box<str>>,
    window: SlidingWindow,
}

/// A tenant's arrival rate in a [`TenantWindows::rates`] snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRate {
    /// Tenant name, or [`OTHER_TENANT`].
    pub tenant: String,
    /// Arrivals per second over the requested span.
    pub rate_per_sec: f64,
}

/// Arrival windows for a bounded number of tenants of one service.
#[derive(Debug)]
pub struct TenantWindows {
    hasher: ahash::RandomState,
    slots: Box<[TenantSlot]>,
    other: SlidingWindow,
}

impl TenantWindows {
    /// A table of `slots` tenant windows (at least 1) plus the "other" window.
    pub fn new(slots: usize, window: WindowConfig) -> Self {
        Self {
            hasher: ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]),
            slots: (0..slots.max(1))
                .map(|_| TenantSlot {
                    name: OnceLock::new(),
                    window: SlidingWindow::new(window),
                })
                .collect(),
            other: SlidingWindow::new(window),
        }
    }

    /// Number of tenant slots (not counting "other").
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, tenant: &str) -> &TenantSlot {
        let index = self.hasher.hash_one(tenant) % self.slots.len() as u64;
        &self.slots[index as usize]
    }

    /// The window `tenant` records into: its own, or "other" when its slot belongs to another.
    /// Allocates only the first time a slot is claimed.
    fn window_for(&self, tenant: &str) -> &SlidingWindow {
        let slot = self.slot(tenant);
        let name = match slot.name.get() {
            Some(name) => name,
            None => {
                // First tenant seen in this slot: store its name once. A racing claimant may win.
                let _ = slot.name.set(Box::from(tenant));
                match slot.name.get() {
                    Some(name) => name,
                    None => return &self.other,
                }
            }
        };
        if **name == *tenant {
            &slot.window
        } else {
            &self.other
        }
    }

    /// Records `n` arrivals of `tenant` at `now_ms`.
    #[inline]
    pub fn record(&self, tenant: &str, now_ms: u64, n: u64) {
        self.window_for(tenant).record(now_ms, n);
    }

    /// The window `tenant`'s arrivals are counted in, if it has one of its own.
    pub fn tenant_window(&self, tenant: &str) -> Option<&SlidingWindow> {
        let slot = self.slot(tenant);
        match slot.name.get() {
            Some(name) if **name == *tenant => Some(&slot.window),
            _ => None,
        }
    }

    /// Arrival rate of `tenant` over `span_ms`; tenants without a slot share "other"'s rate.
    pub fn rate_per_sec(&self, tenant: &str, now_ms: u64, span_ms: u64) -> f64 {
        match self.tenant_window(tenant) {
            Some(window) => window.rate_per_sec(now_ms, span_ms),
            None => self.other.rate_per_sec(now_ms, span_ms),
        }
    }

    /// The window shared by tenants that did not get a slot.
    pub fn other(&self) -> &SlidingWindow {
        &self.other
    }

    /// Every tenant seen so far with a non-zero rate over `span_ms`, plus "other" when non-zero.
    pub fn rates(&self, now_ms: u64, span_ms: u64) -> Vec<TenantRate> {
        let mut rates: Vec<TenantRate> = self
            .slots
            .iter()
            .filter_map(|slot| {
                let name = slot.name.get()?;
                let rate = slot.window.rate_per_sec(now_ms, span_ms);
                (rate > 0.0).then(|| TenantRate {
                    tenant: name.to_string(),
                    rate_per_sec: rate,
                })
            })
            .collect();
        let other = self.other.rate_per_sec(now_ms, span_ms);
        if other > 0.0 {
            rates.push(TenantRate {
                tenant: OTHER_TENANT.to_string(),
                rate_per_sec: other,
            });
        }
        rates
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_gets_its_own_window() {
        let tenants = TenantWindows::new(64, WindowConfig::default());
        for _ in 0..10 {
            tenants.record("acme", 1_000, 1);
        }
        tenants.record("globex", 1_000, 4);
        assert_eq!(
            tenants.tenant_window("acme").map(|w| w.sum(1_000, 60_000)),
            Some(10)
        );
        assert!((tenants.rate_per_sec("globex", 1_000, 60_000) - 4.0).abs() < 1e-9);
        assert!(tenants.tenant_window("initech").is_none());
    }

    #[test]
    fn collisions_are_counted_as_other() {
        let tenants = TenantWindows::new(1, WindowConfig::default());
        tenants.record("first", 0, 1);
        tenants.record("second", 0, 2);
        tenants.record("third", 0, 3);
        assert_eq!(
            tenants.tenant_window("first").map(|w| w.sum(0, 1_000)),
            Some(1)
        );
        assert_eq!(tenants.other().sum(0, 1_000), 5);
        let rates = tenants.rates(0, 60_000);
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[1].tenant, OTHER_TENANT);
        assert!((rates[1].rate_per_sec - 5.0).abs() < 1e-9);
    }

    #[test]
    fn tenant_slots_are_stable_across_tables() {
        let a = TenantWindows::new(16, WindowConfig::default());
        let b = TenantWindows::new(16, WindowConfig::default());
        for name in ["a", "b", "c", "tenant-42"] {
            assert!(std::ptr::eq(a.slot(name), &a.slots[slot_index(&a, name)]));
            assert_eq!(slot_index(&a, name), slot_index(&b, name));
        }
    }

    fn slot_index(t: &TenantWindows, name: &str) -> usize {
        (t.hasher.hash_one(name) % t.slots.len() as u64) as usize
    }

    #[test]
    fn concurrent_first_sightings_keep_every_count() {
        let tenants = std::sync::Arc::new(TenantWindows::new(4, WindowConfig::default()));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let tenants = std::sync::Arc::clone(&tenants);
                std::thread::spawn(move || {
                    let name = format!("tenant-{t}");
                    for _ in 0..10_000 {
                        tenants.record(&name, 0, 1);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("recording thread");
        }
        let total: f64 = tenants.rates(0, 1_000).iter().map(|r| r.rate_per_sec).sum();
        assert!((total - 40_000.0).abs() < 1e-9);
    }
}

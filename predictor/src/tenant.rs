//! Per-tenant arrival windows in a bounded table.
//!
//! ```text
//!  tenant name ──ahash──► slot (fixed count)
//!                          ├─ empty?     claim it: store the name once (the only allocation)
//!                          ├─ same name? record into its window
//!                          └─ other name (collision or table full) ──► the shared "other" window
//! ```
//!
//! Memory is bounded when the service is created: `slots` windows plus one for "other". The
//! slots are allocated at the first tenant seen (one allocation, once; a service that never
//! sees a tenant, like most of ten thousand idle ones, holds only the "other" window). A
//! tenant's slot is never given back, so a tenant keeps its window for the life of the table.

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
    /// How many slots the table has once allocated (at least 1).
    capacity: usize,
    window: WindowConfig,
    /// The slots, allocated when the first tenant is recorded.
    slots: OnceLock<Box<[TenantSlot]>>,
    other: SlidingWindow,
}

impl TenantWindows {
    /// A table of `slots` tenant windows (at least 1, allocated at the first tenant) plus the
    /// "other" window.
    pub fn new(slots: usize, window: WindowConfig) -> Self {
        Self {
            hasher: ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]),
            capacity: slots.max(1),
            window,
            slots: OnceLock::new(),
            other: SlidingWindow::new(window),
        }
    }

    /// Number of tenant slots (not counting "other").
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the slots have been allocated (a tenant has been recorded).
    pub fn is_allocated(&self) -> bool {
        self.slots.get().is_some()
    }

    fn index(&self, tenant: &str) -> usize {
        (self.hasher.hash_one(tenant) % self.capacity as u64) as usize
    }

    /// The slot `tenant` hashes to, allocating the table the first time.
    fn claimable_slot(&self, tenant: &str) -> &TenantSlot {
        let slots = self.slots.get_or_init(|| {
            (0..self.capacity)
                .map(|_| TenantSlot {
                    name: OnceLock::new(),
                    window: SlidingWindow::new(self.window),
                })
                .collect()
        });
        &slots[self.index(tenant)]
    }

    /// The slot `tenant` hashes to, if the table exists.
    fn slot(&self, tenant: &str) -> Option<&TenantSlot> {
        self.slots.get().map(|slots| &slots[self.index(tenant)])
    }

    /// The window `tenant` records into: its own, or "other" when its slot belongs to another.
    /// Allocates only the first time a slot is claimed (and the table at the first tenant).
    fn window_for(&self, tenant: &str) -> &SlidingWindow {
        let slot = self.claimable_slot(tenant);
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
        let slot = self.slot(tenant)?;
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
            .get()
            .into_iter()
            .flat_map(|slots| slots.iter())
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
            assert_eq!(a.index(name), b.index(name));
            assert!(a.index(name) < a.capacity());
        }
    }

    #[test]
    fn slots_are_allocated_at_the_first_tenant() {
        let tenants = TenantWindows::new(64, WindowConfig::default());
        assert!(!tenants.is_allocated());
        assert!(tenants.tenant_window("acme").is_none());
        assert!(tenants.rates(0, 60_000).is_empty());
        assert_eq!(tenants.rate_per_sec("acme", 0, 60_000), 0.0);
        assert!(!tenants.is_allocated(), "reading allocates nothing");
        tenants.record("acme", 0, 3);
        assert!(tenants.is_allocated());
        assert_eq!(tenants.capacity(), 64);
        assert_eq!(
            tenants.tenant_window("acme").map(|w| w.sum(0, 1_000)),
            Some(3)
        );
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

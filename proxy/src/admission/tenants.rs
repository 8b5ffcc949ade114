//! Per-tenant limits: a fixed, lock-free table of tenant slots (each with its rate, requests in
//! flight and share of the hold queue), with one overflow slot for tenants beyond it.

use std::sync::atomic::{
    AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, Release, SeqCst},
};
use std::sync::Arc;
use std::sync::OnceLock;

use super::concurrency::{acquire, Permit};
use super::rate::{Pace, RetryAfter, COUNTED, NANOS_PER_MS};

/// Fixed ahash seeds, so a tenant hashes to the same slot in every process of a build. (Not
/// ahash's own `PI2` constants: `with_seeds` XORs with them, and those seeds give all-zero keys.)
const TENANT_SEEDS: [u64; 4] = [
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
    0xd6e8_feb8_6659_fd93,
];

/// Slot hash of a slot nobody has claimed yet.
const EMPTY: u64 = 0;

/// Slot hash while a slot is being handed from an idle tenant to a new one.
pub(super) const BUSY: u64 = 1;

/// Slots looked at from a tenant's home slot before it falls into the overflow slot.
const MAX_PROBES: usize = 16;

/// Lookups retried when a slot changed tenant under them before giving up on the table.
const ATTEMPTS: usize = 4;

// === TenantLimits ===

/// One tenant class's limit for each of its tenants (the policy's resolved limit); `None` is
/// unlimited.
pub use forecourt_config::RateLimit as TenantLimit;

/// Why a tenant's request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over its rate: 429 with `Retry-After`.
    Rate(RetryAfter),
    /// Over its concurrency: too many of its requests in flight.
    Concurrency,
}

/// Per-tenant rate, concurrency and hold-queue share for any number of tenants, without a lock.
///
/// A fixed table of slots (claimed by compare-and-swap, linear probing of at most 16 slots from
/// the tenant's home slot) keyed by the 64-bit ahash of the tenant string with fixed seeds:
///
/// - two tenants with the same 64-bit hash share a slot (and so a limit): about one pair in
///   2^64, accepted;
/// - a tenant that finds neither its slot, an empty one nor an idle one in its probe window
///   falls into one shared overflow slot: tenants beyond capacity share one limit, the safe
///   direction. [`TenantPermit::is_shared`] says when that happened;
/// - a slot whose tenant is idle (nothing in flight or held, its bucket full again) is handed to
///   a new tenant that [`admit`](Self::admit)s, so the table serves an unbounded set of
///   tenants over time. A tenant with a rate of 0 never counts as idle (that would give its
///   burst back).
///
/// The limits are those passed with each call (the tenant's class's limit now), so a reload that
/// changes a class applies at once (a looser rate once the tenant has waited off what it owes
/// under the old one: the bucket keeps its arrival time, as cutting it short would let a clock
/// going backwards mint tokens); tenants in the overflow slot each judge the shared state by
/// their own limit. The key is the tenant string only: a request without a tenant is the
/// caller's business, it passes the default class's key (e.g. `""`), and all such requests
/// share one slot.
///
/// Two rare races are accepted: a slot handed to a new tenant while a request of the old one was
/// looking it up may cost the new tenant one token; and the first requests of a new tenant
/// racing a hand-over may give it a second slot briefly (later lookups use the first one found).
///
/// Every call has an `_owned` twin taking `self: &Arc<Self>` whose permit keeps the table alive
/// itself, for a request context that cannot borrow.
#[derive(Debug)]
pub struct TenantLimits {
    /// The slots, allocated when the first tenant is admitted (24 KB at the default 1,024, which
    /// a service that never sees a tenant does not need).
    table: OnceLock<Box<[Slot]>>,
    capacity: usize,
    mask: usize,
    probes: usize,
    pub(super) overflow: Slot,
    claimed: AtomicUsize,
    hasher: ahash::RandomState,
}

/// One tenant's state in the table.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// The tenant's hash: [`EMPTY`], [`BUSY`] or a tenant's (never below 2).
    pub(super) hash: AtomicU64,
    /// The bucket state of [`Pace::take`].
    bucket: AtomicU64,
    /// Requests of the tenant in flight (counted even without a concurrency limit).
    pub(super) in_use: AtomicU32,
    /// Requests of the tenant waiting in the hold queue.
    pub(super) held: AtomicU32,
}

/// Where a tenant's counts are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The table slot at this index.
    Table(usize),
    /// The shared overflow slot.
    Overflow,
}

/// What a lookup found.
enum Found {
    /// The tenant's slot, at this index.
    Slot(usize),
    /// A slot in the window is changing tenant: look again.
    Busy,
    /// No slot for the tenant in its window: the overflow slot.
    Full,
}

/// One admitted request of a tenant, counted in its concurrency until dropped.
#[derive(Debug)]
#[must_use = "the tenant's place is released when the permit is dropped"]
pub struct TenantPermit<'a> {
    _in_use: Permit<'a>,
    shared: bool,
}

/// One admitted request of a tenant, keeping the table alive itself; released on drop.
#[derive(Debug)]
#[must_use = "the tenant's place is released when the permit is dropped"]
pub struct OwnedTenantPermit {
    limits: Arc<TenantLimits>,
    place: Place,
}

/// One request of a tenant waiting in the hold queue, counted in its share until dropped.
#[derive(Debug)]
#[must_use = "the tenant's hold place is released when the permit is dropped"]
pub struct HeldPermit<'a> {
    _held: Permit<'a>,
    shared: bool,
}

/// One held request of a tenant, keeping the table alive itself; released on drop.
#[derive(Debug)]
#[must_use = "the tenant's hold place is released when the permit is dropped"]
pub struct OwnedHeldPermit {
    limits: Arc<TenantLimits>,
    place: Place,
}

// === impl Slot ===

impl Slot {
    /// Whether the slot's tenant is idle at `now_ns`: nothing in flight or held, bucket full.
    fn is_idle(&self, now_ns: u64) -> bool {
        self.in_use.load(SeqCst) == 0
            && self.held.load(SeqCst) == 0
            && self.bucket.load(SeqCst) <= now_ns
    }

    /// Counts one request in by `limit` at `now_ms`: concurrency first (nothing is spent on a
    /// refusal), then the rate (the place is given back on a refusal).
    fn admit(&self, limit: &TenantLimit, now_ms: u64) -> Result<(), Refusal> {
        if !acquire(&self.in_use, limit.concurrency.unwrap_or(u32::MAX)) {
            return Err(Refusal::Concurrency);
        }
        let Some(rate) = limit.rate else {
            return Ok(());
        };
        Pace::new(rate, limit.burst)
            .take(&self.bucket, now_ms)
            .map_err(|retry| {
                self.in_use.fetch_sub(1, Release);
                Refusal::Rate(retry)
            })
    }
}

// === impl TenantLimits ===

impl TenantLimits {
    /// A table of `capacity` slots (rounded up to a power of two, at least 1), all empty.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        Self {
            table: OnceLock::new(),
            capacity,
            mask: capacity - 1,
            probes: capacity.min(MAX_PROBES),
            overflow: Slot::default(),
            claimed: AtomicUsize::new(0),
            hasher: ahash::RandomState::with_seeds(
                TENANT_SEEDS[0],
                TENANT_SEEDS[1],
                TENANT_SEEDS[2],
                TENANT_SEEDS[3],
            ),
        }
    }

    /// Admits one request of `tenant` under its class's `limit` at `now_ms`, or says why not.
    pub fn admit(
        &self,
        tenant: &str,
        limit: &TenantLimit,
        now_ms: u64,
    ) -> Result<TenantPermit<'_>, Refusal> {
        let place = self.admit_place(tenant, limit, now_ms)?;
        Ok(TenantPermit {
            _in_use: Permit {
                count: &self.slot(place).in_use,
            },
            shared: place == Place::Overflow,
        })
    }

    /// [`TenantLimits::admit`] with a permit that keeps the table alive itself.
    pub fn admit_owned(
        self: &Arc<Self>,
        tenant: &str,
        limit: &TenantLimit,
        now_ms: u64,
    ) -> Result<OwnedTenantPermit, Refusal> {
        let place = self.admit_place(tenant, limit, now_ms)?;
        Ok(OwnedTenantPermit {
            limits: Arc::clone(self),
            place,
        })
    }

    /// Holds one request of `tenant` in the hold queue if fewer than `max_held` of its
    /// requests are held: one tenant's burst cannot fill the queue. It finds or claims the
    /// tenant's slot but takes over no idle one (it has no time): call it after
    /// [`admit`](Self::admit).
    pub fn hold_slot(&self, tenant: &str, max_held: u32) -> Option<HeldPermit<'_>> {
        let place = self.hold_place(tenant, max_held)?;
        Some(HeldPermit {
            _held: Permit {
                count: &self.slot(place).held,
            },
            shared: place == Place::Overflow,
        })
    }

    /// [`TenantLimits::hold_slot`] with a permit that keeps the table alive itself.
    pub fn hold_slot_owned(
        self: &Arc<Self>,
        tenant: &str,
        max_held: u32,
    ) -> Option<OwnedHeldPermit> {
        let place = self.hold_place(tenant, max_held)?;
        Some(OwnedHeldPermit {
            limits: Arc::clone(self),
            place,
        })
    }

    /// Slots claimed by a tenant (at most the capacity; the overflow slot not counted).
    pub fn len(&self) -> usize {
        self.claimed.load(Relaxed)
    }

    /// Whether no tenant has claimed a slot yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The slots, allocated at the first call (once; later calls are one atomic load).
    pub(super) fn slots(&self) -> &[Slot] {
        self.table
            .get_or_init(|| (0..self.capacity).map(|_| Slot::default()).collect())
    }

    /// Counts one request of `tenant` in and says where.
    fn admit_place(
        &self,
        tenant: &str,
        limit: &TenantLimit,
        now_ms: u64,
    ) -> Result<Place, Refusal> {
        let hash = self.hash(tenant);
        let now_ns = now_ms.saturating_mul(NANOS_PER_MS).min(COUNTED - 1);
        for _ in 0..ATTEMPTS {
            match self.find(hash, Some(now_ns)) {
                Found::Slot(index) => {
                    let slot = &self.slots()[index];
                    let outcome = slot.admit(limit, now_ms);
                    // Still the tenant's slot after the count went up: no hand-over can
                    // happen now (it needs the slot idle), so the outcome is the tenant's.
                    if slot.hash.load(SeqCst) == hash {
                        return outcome.map(|()| Place::Table(index));
                    }
                    if outcome.is_ok() {
                        slot.in_use.fetch_sub(1, Release);
                    }
                }
                Found::Busy => std::hint::spin_loop(),
                Found::Full => break,
            }
        }
        self.overflow.admit(limit, now_ms).map(|()| Place::Overflow)
    }

    /// Counts one held request of `tenant` in and says where.
    fn hold_place(&self, tenant: &str, max_held: u32) -> Option<Place> {
        let hash = self.hash(tenant);
        for _ in 0..ATTEMPTS {
            match self.find(hash, None) {
                Found::Slot(index) => {
                    let slot = &self.slots()[index];
                    let held = acquire(&slot.held, max_held);
                    if slot.hash.load(SeqCst) == hash {
                        return held.then_some(Place::Table(index));
                    }
                    if held {
                        slot.held.fetch_sub(1, Release);
                    }
                }
                Found::Busy => std::hint::spin_loop(),
                Found::Full => break,
            }
        }
        acquire(&self.overflow.held, max_held).then_some(Place::Overflow)
    }

    /// The slot at `place`.
    fn slot(&self, place: Place) -> &Slot {
        match place {
            Place::Table(index) => &self.slots()[index],
            Place::Overflow => &self.overflow,
        }
    }

    /// The tenant's 64-bit hash, never [`EMPTY`] or [`BUSY`].
    pub(super) fn hash(&self, tenant: &str) -> u64 {
        let hash = self.hasher.hash_one(tenant);
        if hash <= BUSY {
            hash + 2
        } else {
            hash
        }
    }

    /// The tenant's home slot.
    pub(super) fn home(&self, hash: u64) -> usize {
        // Truncation keeps the low bits, which are all the mask wants.
        (hash as usize) & self.mask
    }

    /// Finds the slot of `hash`, claims an empty one, or (given `now_ns`) takes over an idle one.
    ///
    /// Slots never become empty again, so a tenant's slot always lies before the first empty
    /// slot of its window: claiming that empty slot cannot give the tenant a second one.
    fn find(&self, hash: u64, now_ns: Option<u64>) -> Found {
        let slots = self.slots();
        let home = self.home(hash);
        let mut busy = false;
        let mut idle = None;
        for probe in 0..self.probes {
            let index = (home + probe) & self.mask;
            let slot = &slots[index];
            let mut current = slot.hash.load(SeqCst);
            if current == EMPTY {
                match slot.hash.compare_exchange(EMPTY, hash, SeqCst, SeqCst) {
                    Ok(_) => {
                        self.claimed.fetch_add(1, Relaxed);
                        return Found::Slot(index);
                    }
                    Err(actual) => current = actual,
                }
            }
            if current == hash {
                return Found::Slot(index);
            }
            if current == BUSY {
                busy = true;
            } else if idle.is_none() && now_ns.is_some_and(|now| slot.is_idle(now)) {
                idle = Some((index, current));
            }
        }
        if busy {
            // The slot changing hands may be becoming this tenant's.
            return Found::Busy;
        }
        let (Some((index, owner)), Some(now_ns)) = (idle, now_ns) else {
            return Found::Full;
        };
        // Hand the idle slot over: mark it busy, then check it is still idle. A request of the
        // old owner counts itself in before checking the hash again (both sequentially
        // consistent), so either it sees the mark and backs off, or this check sees its count.
        let slot = &slots[index];
        if slot
            .hash
            .compare_exchange(owner, BUSY, SeqCst, SeqCst)
            .is_err()
        {
            return Found::Busy;
        }
        if slot.is_idle(now_ns) {
            slot.hash.store(hash, SeqCst);
            Found::Slot(index)
        } else {
            slot.hash.store(owner, SeqCst);
            Found::Busy
        }
    }
}

// === impl TenantPermit ===

impl TenantPermit<'_> {
    /// Whether the tenant was admitted by the shared overflow slot (the table had no room).
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}

// === impl OwnedTenantPermit ===

impl OwnedTenantPermit {
    /// Whether the tenant was admitted by the shared overflow slot (the table had no room).
    pub fn is_shared(&self) -> bool {
        self.place == Place::Overflow
    }
}

impl Drop for OwnedTenantPermit {
    fn drop(&mut self) {
        self.limits.slot(self.place).in_use.fetch_sub(1, Release);
    }
}

// === impl HeldPermit ===

impl HeldPermit<'_> {
    /// Whether the hold place is in the shared overflow slot (the table had no room).
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}

// === impl OwnedHeldPermit ===

impl OwnedHeldPermit {
    /// Whether the hold place is in the shared overflow slot (the table had no room).
    pub fn is_shared(&self) -> bool {
        self.place == Place::Overflow
    }
}

impl Drop for OwnedHeldPermit {
    fn drop(&mut self) {
        self.limits.slot(self.place).held.fetch_sub(1, Release);
    }
}

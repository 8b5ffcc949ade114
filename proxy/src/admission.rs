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

use std::sync::atomic::{
    AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, Release, SeqCst},
};
use std::sync::Arc;

/// Nanoseconds per millisecond: bucket state is kept in nanoseconds of the proxy's clock.
const NANOS_PER_MS: u64 = 1_000_000;

/// Nanoseconds per second, for turning a rate into an emission interval.
const NANOS_PER_SEC: f64 = 1e9;

/// Emission intervals from this long on (about 31 years a token) are a rate of 0.
const MAX_EMISSION_NS: f64 = 1e18;

/// Marks a bucket state that counts the tokens taken from a bucket without refill (rate 0).
/// Times stay below it (292 years of nanoseconds), so the two never mix up.
const COUNTED: u64 = 1 << 63;

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
const BUSY: u64 = 1;

/// Slots looked at from a tenant's home slot before it falls into the overflow slot.
const MAX_PROBES: usize = 16;

/// Lookups retried when a slot changed tenant under them before giving up on the table.
const ATTEMPTS: usize = 4;

// === RetryAfter ===

/// How long until a refused request could be admitted: the value of a `Retry-After` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetryAfter {
    millis: u64,
}

// === impl RetryAfter ===

impl RetryAfter {
    /// No token will ever come again (a rate of 0 with its burst spent).
    pub const NEVER: Self = Self { millis: u64::MAX };

    /// A wait of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    /// A wait of `nanos` nanoseconds, rounded up to whole milliseconds.
    fn from_nanos(nanos: u64) -> Self {
        Self::from_millis(nanos.div_ceil(NANOS_PER_MS))
    }

    /// Milliseconds until a token is there (`u64::MAX` for [`RetryAfter::NEVER`]).
    pub const fn millis(self) -> u64 {
        self.millis
    }

    /// Whole seconds for a `Retry-After` header: rounded up, at least 1.
    pub const fn seconds(self) -> u64 {
        let seconds = self.millis.div_ceil(1000);
        if seconds == 0 {
            1
        } else {
            seconds
        }
    }

    /// Whether no token will ever come (the caller may leave out `Retry-After`).
    pub const fn is_never(self) -> bool {
        self.millis == u64::MAX
    }
}

// === Pace ===

/// How a bucket refills, decided from a rate and a burst; the state lives in one `AtomicU64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// No limit: a rate too high for nanosecond resolution.
    Unlimited,
    /// `burst` tokens in all, never refilled (a rate of 0): the state counts tokens taken.
    Fixed { burst: u64 },
    /// GCRA: one token every `emission` ns, up to `tolerance` ns of them saved up. The state is
    /// the theoretical arrival time: when the bucket will be full again.
    Every { emission: u64, tolerance: u64 },
}

// === impl Pace ===

impl Pace {
    /// The pace of `rate` tokens a second with `burst` saved up at most.
    ///
    /// A rate that is 0, negative or NaN gives `burst` tokens and never more; a rate above 1e9
    /// a second is unlimited; with a positive rate the burst is at least 1.
    fn new(rate: f64, burst: u32) -> Self {
        if rate.is_nan() || rate <= 0.0 {
            return Self::Fixed {
                burst: u64::from(burst),
            };
        }
        let emission = NANOS_PER_SEC / rate;
        if emission < 1.0 {
            return Self::Unlimited;
        }
        if emission >= MAX_EMISSION_NS {
            return Self::Fixed {
                burst: u64::from(burst),
            };
        }
        // In range: 1 ≤ emission < 1e18.
        let emission = emission.round() as u64;
        Self::Every {
            emission,
            tolerance: emission.saturating_mul(u64::from(burst.max(1))),
        }
    }

    /// Takes one token from the bucket whose state is `state`, or says how long until one.
    fn take(self, state: &AtomicU64, now_ms: u64) -> Result<(), RetryAfter> {
        match self {
            Self::Unlimited => Ok(()),
            Self::Fixed { burst } => state
                .fetch_update(SeqCst, Relaxed, |current| {
                    // A time (the limit was a positive rate until now) starts the count afresh.
                    let taken = if current & COUNTED == 0 {
                        0
                    } else {
                        current & !COUNTED
                    };
                    (taken < burst).then_some(COUNTED | (taken + 1))
                })
                .map(drop)
                .map_err(|_| RetryAfter::NEVER),
            Self::Every {
                emission,
                tolerance,
            } => {
                let now = now_ms.saturating_mul(NANOS_PER_MS).min(COUNTED - 1);
                let mut current = state.load(Relaxed);
                loop {
                    // A count (the limit was a rate of 0 until now) starts the bucket afresh.
                    let full_at = if current & COUNTED == 0 { current } else { 0 };
                    // A clock that went back only makes `now` smaller: stricter, never a token.
                    let next = match full_at.max(now).checked_add(emission) {
                        Some(next) if next < COUNTED => next,
                        _ => return Err(RetryAfter::NEVER),
                    };
                    let allowed_at = next.saturating_sub(tolerance);
                    if allowed_at > now {
                        return Err(RetryAfter::from_nanos(allowed_at - now));
                    }
                    match state.compare_exchange_weak(current, next, SeqCst, Relaxed) {
                        Ok(_) => return Ok(()),
                        Err(actual) => current = actual,
                    }
                }
            }
        }
    }
}

// === TokenBucket ===

/// A rate limit: `rate` tokens a second, at most `burst` saved up; lock-free GCRA on one atomic.
#[derive(Debug)]
pub struct TokenBucket {
    pace: Pace,
    state: AtomicU64,
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate_per_sec`.
    ///
    /// A rate of 0 (or negative, or NaN) admits `burst` requests in all; a rate above 1e9 a
    /// second is unlimited; with a positive rate a burst of 0 counts as 1, and a burst longer
    /// than 292 years of the rate is cut to what fits.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        Self {
            pace: Pace::new(rate_per_sec, burst),
            state: AtomicU64::new(0),
        }
    }

    /// Takes one token at `now_ms`, or says how long until the next one will be there.
    pub fn try_take(&self, now_ms: u64) -> Result<(), RetryAfter> {
        self.pace.take(&self.state, now_ms)
    }
}

// === ConcurrencyLimit ===

/// At most `max` holders at once; a permit releases its place when dropped.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    max: AtomicU32,
    in_use: AtomicU32,
}

/// One place in a [`ConcurrencyLimit`] (or in a tenant's count), released on drop.
#[derive(Debug)]
#[must_use = "the place is released when the permit is dropped"]
pub struct Permit<'a> {
    count: &'a AtomicU32,
}

/// One place in a shared [`ConcurrencyLimit`], for holders that must not borrow it; released on
/// drop.
#[derive(Debug)]
#[must_use = "the place is released when the permit is dropped"]
pub struct OwnedPermit {
    limit: Arc<ConcurrencyLimit>,
}

/// Adds one to `count` unless it is at `max` already.
fn acquire(count: &AtomicU32, max: u32) -> bool {
    count
        .fetch_update(SeqCst, Relaxed, |n| (n < max).then(|| n + 1))
        .is_ok()
}

// === impl ConcurrencyLimit ===

impl ConcurrencyLimit {
    /// A limit of `max` holders at once (0 admits nobody).
    pub const fn new(max: u32) -> Self {
        Self {
            max: AtomicU32::new(max),
            in_use: AtomicU32::new(0),
        }
    }

    /// A place, or `None` when `max` are taken.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        // Built only once the place is taken: a permit releases a place when dropped.
        if self.acquire() {
            Some(Permit {
                count: &self.in_use,
            })
        } else {
            None
        }
    }

    /// A place that keeps the limit alive itself, or `None` when `max` are taken.
    pub fn try_acquire_owned(self: &Arc<Self>) -> Option<OwnedPermit> {
        if self.acquire() {
            Some(OwnedPermit {
                limit: Arc::clone(self),
            })
        } else {
            None
        }
    }

    /// Places taken now.
    pub fn in_use(&self) -> u32 {
        self.in_use.load(Relaxed)
    }

    /// The most places at once.
    pub fn max(&self) -> u32 {
        self.max.load(Relaxed)
    }

    /// Changes the most places at once (a reload); places taken beyond it stay until dropped.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Relaxed);
    }

    /// Takes a place if one is free.
    fn acquire(&self) -> bool {
        acquire(&self.in_use, self.max.load(Relaxed))
    }
}

// === impl Permit ===

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Release);
    }
}

// === impl OwnedPermit ===

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        self.limit.in_use.fetch_sub(1, Release);
    }
}

// === InFlightLimit ===

/// The proxy-wide in-flight limit: requests beyond it are refused at once (a fast 503).
#[derive(Debug)]
pub struct InFlightLimit(ConcurrencyLimit);

/// One request in flight, counted until dropped.
pub type InFlightPermit<'a> = Permit<'a>;

/// One request in flight, keeping the limit alive itself; released on drop.
#[derive(Debug)]
#[must_use = "the request leaves the count when the permit is dropped"]
pub struct OwnedInFlightPermit {
    limit: Arc<InFlightLimit>,
}

// === impl InFlightLimit ===

impl InFlightLimit {
    /// At most `max` requests in flight through the proxy.
    pub const fn new(max: u32) -> Self {
        Self(ConcurrencyLimit::new(max))
    }

    /// Enters one request, or `None` when `max` are in flight: refuse it early.
    pub fn try_enter(&self) -> Option<InFlightPermit<'_>> {
        self.0.try_acquire()
    }

    /// [`InFlightLimit::try_enter`] with a permit that keeps the limit alive itself.
    pub fn try_enter_owned(self: &Arc<Self>) -> Option<OwnedInFlightPermit> {
        if self.0.acquire() {
            Some(OwnedInFlightPermit {
                limit: Arc::clone(self),
            })
        } else {
            None
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.0.in_use()
    }

    /// The most requests in flight at once.
    pub fn max(&self) -> u32 {
        self.0.max()
    }

    /// Changes the most requests in flight at once (a reload); those beyond it finish.
    pub fn set_max(&self, max: u32) {
        self.0.set_max(max);
    }
}

// === impl OwnedInFlightPermit ===

impl Drop for OwnedInFlightPermit {
    fn drop(&mut self) {
        self.limit.0.in_use.fetch_sub(1, Release);
    }
}

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
    slots: Box<[Slot]>,
    mask: usize,
    probes: usize,
    overflow: Slot,
    claimed: AtomicUsize,
    hasher: ahash::RandomState,
}

/// One tenant's state in the table.
#[derive(Debug, Default)]
struct Slot {
    /// The tenant's hash: [`EMPTY`], [`BUSY`] or a tenant's (never below 2).
    hash: AtomicU64,
    /// The bucket state of [`Pace::take`].
    bucket: AtomicU64,
    /// Requests of the tenant in flight (counted even without a concurrency limit).
    in_use: AtomicU32,
    /// Requests of the tenant waiting in the hold queue.
    held: AtomicU32,
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
            slots: (0..capacity).map(|_| Slot::default()).collect(),
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
        self.slots.len()
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
                    let slot = &self.slots[index];
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
                    let slot = &self.slots[index];
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
            Place::Table(index) => &self.slots[index],
            Place::Overflow => &self.overflow,
        }
    }

    /// The tenant's 64-bit hash, never [`EMPTY`] or [`BUSY`].
    fn hash(&self, tenant: &str) -> u64 {
        let hash = self.hasher.hash_one(tenant);
        if hash <= BUSY {
            hash + 2
        } else {
            hash
        }
    }

    /// The tenant's home slot.
    fn home(&self, hash: u64) -> usize {
        // Truncation keeps the low bits, which are all the mask wants.
        (hash as usize) & self.mask
    }

    /// Finds the slot of `hash`, claims an empty one, or (given `now_ns`) takes over an idle one.
    ///
    /// Slots never become empty again, so a tenant's slot always lies before the first empty
    /// slot of its window: claiming that empty slot cannot give the tenant a second one.
    fn find(&self, hash: u64, now_ns: Option<u64>) -> Found {
        let home = self.home(hash);
        let mut busy = false;
        let mut idle = None;
        for probe in 0..self.probes {
            let index = (home + probe) & self.mask;
            let slot = &self.slots[index];
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
        let slot = &self.slots[index];
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::hint::black_box;
    use std::sync::atomic::AtomicBool;
    use std::thread;
    use std::time::Instant;

    use super::*;

    const THREADS: usize = 8;
    const ATTEMPTS_PER_THREAD: usize = 10_000;

    /// Runs `f(thread)` on [`THREADS`] threads started together; returns their results.
    fn on_threads<T: Send>(f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        let go = AtomicBool::new(false);
        thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (go, f) = (&go, &f);
                    s.spawn(move || {
                        while !go.load(std::sync::atomic::Ordering::Acquire) {
                            std::hint::spin_loop();
                        }
                        f(t)
                    })
                })
                .collect();
            go.store(true, Release);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn successes(bucket: &TokenBucket, now_ms: u64, attempts: usize) -> usize {
        (0..attempts)
            .filter(|_| bucket.try_take(now_ms).is_ok())
            .count()
    }

    fn limit(rate: f64, burst: u32, concurrency: Option<u32>) -> TenantLimit {
        TenantLimit {
            rate: Some(rate),
            burst,
            concurrency,
        }
    }

    // --- TokenBucket ---

    #[test]
    fn bucket_gives_its_burst_then_refuses() {
        let bucket = TokenBucket::new(10.0, 5);
        assert_eq!(successes(&bucket, 1_000, 5), 5);
        let retry = bucket.try_take(1_000).unwrap_err();
        assert_eq!(retry.millis(), 100);
        assert_eq!(retry.seconds(), 1);
        assert!(bucket.try_take(1_000).is_err());
    }

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_burst() {
        let bucket = TokenBucket::new(10.0, 2);
        assert_eq!(successes(&bucket, 0, 3), 2);
        assert_eq!(bucket.try_take(50), Err(RetryAfter::from_millis(50)));
        assert_eq!(bucket.try_take(100), Ok(()));
        assert_eq!(bucket.try_take(100), Err(RetryAfter::from_millis(100)));
        // 10 s idle refills the burst, not 100 tokens.
        assert_eq!(successes(&bucket, 10_100, 10), 2);
        // Steady: one token per 100 ms.
        for step in 1..=50 {
            let now = 10_100 + step * 100;
            assert_eq!(successes(&bucket, now, 3), 1, "at {now} ms");
        }
    }

    #[test]
    fn retry_after_is_the_wait_for_the_next_token_in_whole_seconds() {
        let quarter = TokenBucket::new(0.25, 1);
        assert!(quarter.try_take(0).is_ok());
        let retry = quarter.try_take(0).unwrap_err();
        assert_eq!((retry.millis(), retry.seconds()), (4_000, 4));
        let retry = quarter.try_take(2_500).unwrap_err();
        assert_eq!((retry.millis(), retry.seconds()), (1_500, 2));
        assert!(quarter.try_take(4_000).is_ok());

        let third = TokenBucket::new(0.3, 1);
        assert!(third.try_take(0).is_ok());
        let retry = third.try_take(0).unwrap_err();
        assert_eq!((retry.millis(), retry.seconds()), (3_334, 4));

        assert_eq!(RetryAfter::from_millis(0).seconds(), 1);
        assert_eq!(RetryAfter::from_millis(1).seconds(), 1);
        assert_eq!(RetryAfter::from_millis(1_000).seconds(), 1);
        assert_eq!(RetryAfter::from_millis(1_001).seconds(), 2);
        assert!(RetryAfter::NEVER.is_never() && !RetryAfter::from_millis(5).is_never());
    }

    #[test]
    fn rate_zero_gives_the_burst_once_and_never_refills() {
        for rate in [0.0, -5.0, f64::NAN, f64::NEG_INFINITY, 1e-30] {
            let bucket = TokenBucket::new(rate, 3);
            assert_eq!(successes(&bucket, 0, 10), 3, "rate {rate}");
            assert_eq!(bucket.try_take(u64::MAX / 2), Err(RetryAfter::NEVER));
        }
        let nothing = TokenBucket::new(0.0, 0);
        assert_eq!(nothing.try_take(0), Err(RetryAfter::NEVER));
    }

    #[test]
    fn huge_rates_and_bursts_neither_panic_nor_wrap() {
        for rate in [f64::INFINITY, f64::MAX, 1e12, 4e9] {
            let bucket = TokenBucket::new(rate, 1);
            assert_eq!(
                successes(&bucket, 7, 1_000),
                1_000,
                "rate {rate} is unlimited"
            );
        }
        // 1e9 a second: one token a nanosecond, so a burst of 1 at one instant is 1.
        let nano = TokenBucket::new(1e9, 1);
        assert_eq!(successes(&nano, 7, 10), 1);
        assert_eq!(nano.try_take(7), Err(RetryAfter::from_millis(1)));
        assert!(nano.try_take(8).is_ok());
        // 10 million a second with a second's burst, as the policy allows.
        let big = TokenBucket::new(1e7, 10_000_000);
        assert_eq!(successes(&big, 0, 1_000), 1_000);
        // A burst longer than 292 years of its rate is cut to what fits: fewer, never a wrap.
        let wide = TokenBucket::new(1e-8, u32::MAX);
        let taken = successes(&wide, 0, 1_000);
        assert!((1..1_000).contains(&taken), "{taken}");
        assert_eq!(wide.try_take(0), Err(RetryAfter::NEVER));
        // The far end of the clock.
        for bucket in [TokenBucket::new(1.0, 2), TokenBucket::new(1e-8, u32::MAX)] {
            let _ = bucket.try_take(u64::MAX);
            let _ = bucket.try_take(u64::MAX);
            let _ = bucket.try_take(0);
        }
    }

    #[test]
    fn a_clock_going_backwards_mints_no_tokens() {
        let bucket = TokenBucket::new(1.0, 2);
        assert_eq!(successes(&bucket, 10_000, 2), 2);
        for now in [9_999, 5_000, 0, 10_000, 10_999] {
            assert!(bucket.try_take(now).is_err(), "at {now} ms");
        }
        let retry = bucket.try_take(0).unwrap_err();
        assert_eq!(
            retry.millis(),
            11_000,
            "the wait is measured from the skewed clock"
        );
        assert!(bucket.try_take(11_000).is_ok());
        assert!(bucket.try_take(11_000).is_err());
        // Back and forth around one instant never adds up to more than the rate.
        let mut admitted = 0;
        for i in 0..1_000 {
            let now = 20_000 + if i % 2 == 0 { 0 } else { 900 };
            admitted += usize::from(bucket.try_take(now).is_ok());
        }
        assert_eq!(
            admitted, 2,
            "the bucket refilled to its burst of 2 by 20 s, no more"
        );
    }

    #[test]
    fn threads_taking_at_one_instant_get_exactly_the_burst() {
        for rate in [0.0, 10.0, 1e6] {
            let bucket = TokenBucket::new(rate, 1_000);
            let taken: usize = on_threads(|_| successes(&bucket, 5_000, ATTEMPTS_PER_THREAD))
                .into_iter()
                .sum();
            assert_eq!(taken, 1_000, "rate {rate}");
        }
    }

    // --- ConcurrencyLimit and InFlightLimit ---

    #[test]
    fn concurrency_limit_refuses_at_max_and_drop_releases() {
        let limit = ConcurrencyLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        assert_eq!((limit.in_use(), limit.max()), (2, 2));
        drop(a);
        assert_eq!(limit.in_use(), 1);
        let c = limit.try_acquire().unwrap();
        drop((b, c));
        assert_eq!(limit.in_use(), 0);
        assert!(ConcurrencyLimit::new(0).try_acquire().is_none());

        let shared = Arc::new(ConcurrencyLimit::new(1));
        let owned = shared.try_acquire_owned().unwrap();
        assert!(shared.try_acquire_owned().is_none() && shared.try_acquire().is_none());
        drop(owned);
        assert!(shared.try_acquire_owned().is_some());
        assert_eq!(shared.in_use(), 0);
    }

    #[test]
    fn threads_hammering_a_concurrency_limit_never_exceed_it() {
        let limit = Arc::new(ConcurrencyLimit::new(3));
        let holding = AtomicU32::new(0);
        let most = AtomicU32::new(0);
        let admitted: usize = on_threads(|t| {
            let mut admitted = 0;
            for i in 0..ATTEMPTS_PER_THREAD {
                let permit = if (t + i) % 2 == 0 {
                    limit
                        .try_acquire()
                        .map(|p| Box::new(p) as Box<dyn std::fmt::Debug + '_>)
                } else {
                    limit.try_acquire_owned().map(|p| Box::new(p) as Box<_>)
                };
                if let Some(permit) = permit {
                    admitted += 1;
                    let now = holding.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    std::hint::spin_loop();
                    holding.fetch_sub(1, SeqCst);
                    drop(permit);
                }
            }
            admitted
        })
        .into_iter()
        .sum();
        assert!(most.load(SeqCst) <= 3, "observed {}", most.load(SeqCst));
        assert!(most.load(SeqCst) >= 1 && admitted > 0);
        assert_eq!(limit.in_use(), 0);
    }

    #[test]
    fn in_flight_limit_refuses_early_and_counts() {
        let limit = InFlightLimit::new(2);
        let a = limit.try_enter().unwrap();
        let b = limit.try_enter().unwrap();
        assert!(limit.try_enter().is_none());
        assert_eq!((limit.in_flight(), limit.max()), (2, 2));
        drop(a);
        assert_eq!(limit.in_flight(), 1);
        let a = limit.try_enter().unwrap();
        // A reload lowers the limit: the requests above it finish, no new one enters.
        limit.set_max(1);
        assert_eq!(limit.max(), 1);
        drop(a);
        assert!(
            limit.try_enter().is_none(),
            "b alone fills the lowered limit"
        );
        drop(b);
        let _a = limit.try_enter().unwrap();
        assert!(limit.try_enter().is_none());
        limit.set_max(3);
        let more: Vec<_> = (0..5).filter_map(|_| limit.try_enter()).collect();
        assert_eq!((more.len(), limit.in_flight()), (2, 3));
    }

    // --- TenantLimits ---

    #[test]
    fn tenants_have_independent_buckets() {
        let table = TenantLimits::new(64);
        let lim = limit(1.0, 2, None);
        assert!(table.admit("acme", &lim, 0).is_ok());
        assert!(table.admit("acme", &lim, 0).is_ok());
        assert_eq!(
            table.admit("acme", &lim, 0).unwrap_err(),
            Refusal::Rate(RetryAfter::from_millis(1_000))
        );
        assert!(table.admit("globex", &lim, 0).is_ok());
        assert!(table.admit("globex", &lim, 0).is_ok());
        assert!(table.admit("globex", &lim, 0).is_err());
        assert!(table.admit("acme", &lim, 1_000).is_ok());
        assert_eq!(table.len(), 2);
        assert!(!table.is_empty());
    }

    #[test]
    fn a_tenant_at_ten_times_its_limit_leaves_the_others_alone() {
        let table = TenantLimits::new(64);
        let lim = limit(10.0, 10, Some(5));
        // acme: 10× its rate for 10 s, permits dropped at once.
        let mut acme = 0;
        for ms in (0..10_000).step_by(10) {
            acme += usize::from(table.admit("acme", &lim, ms).is_ok());
        }
        assert_eq!(acme, 10 + 99, "its burst, then one every 100 ms");
        // acme also holds its whole concurrency.
        let held: Vec<_> = (0..5)
            .map(|_| table.admit("acme", &lim, 20_000).unwrap())
            .collect();
        assert_eq!(
            table.admit("acme", &lim, 20_000).unwrap_err(),
            Refusal::Concurrency
        );
        // globex has its full burst and concurrency.
        let globex: Vec<_> = (0..5)
            .map(|_| table.admit("globex", &lim, 10_000).unwrap())
            .collect();
        assert!(globex.iter().all(|p| !p.is_shared()));
        drop(globex);
        assert_eq!(
            (0..10)
                .filter(|_| table.admit("globex", &lim, 10_000).is_ok())
                .count(),
            5 // the other 5 of its burst went to the permits above
        );
        drop(held);
        assert!(table.admit("acme", &lim, 20_000).is_ok());
    }

    #[test]
    fn a_refused_rate_gives_back_the_concurrency_place() {
        let table = TenantLimits::new(8);
        let lim = limit(1.0, 1, Some(1));
        drop(table.admit("a", &lim, 0).unwrap());
        for _ in 0..10 {
            assert!(matches!(table.admit("a", &lim, 0), Err(Refusal::Rate(_))));
        }
        assert!(table.admit("a", &lim, 1_000).is_ok());
    }

    #[test]
    fn tenants_beyond_capacity_share_the_overflow_slot() {
        let table = TenantLimits::new(2);
        let lim = limit(1.0, 3, None);
        let a = table.admit("a", &lim, 0).unwrap();
        let b = table.admit("b", &lim, 0).unwrap();
        assert!(!a.is_shared() && !b.is_shared());
        assert_eq!((table.len(), table.capacity()), (2, 2));
        // Both slots busy (permits held, buckets not full): c and d share one limit.
        let c = table.admit("c", &lim, 0).unwrap();
        assert!(c.is_shared());
        assert!(table.admit("d", &lim, 0).unwrap().is_shared());
        assert!(table.admit("c", &lim, 0).unwrap().is_shared());
        assert!(matches!(table.admit("d", &lim, 0), Err(Refusal::Rate(_))));
        assert_eq!(table.len(), 2);
        drop((a, b, c));
    }

    #[test]
    fn colliding_tenants_are_told_apart_by_their_hash() {
        let table = TenantLimits::new(4);
        let names: Vec<String> = (0..100).map(|i| format!("tenant-{i}")).collect();
        let home = |name: &str| table.home(table.hash(name));
        let first = &names[0];
        let second = names[1..].iter().find(|n| home(n) == home(first)).unwrap();
        let lim = limit(1.0, 1, None);
        let a = table.admit(first, &lim, 0).unwrap();
        let b = table.admit(second, &lim, 0).unwrap();
        assert!(!a.is_shared() && !b.is_shared(), "the second probes on");
        assert!(table.admit(first, &lim, 0).is_err());
        assert!(table.admit(second, &lim, 0).is_err());
        assert_eq!(table.len(), 2);

        // One slot: the second tenant has nowhere to probe and shares the overflow slot.
        let tiny = TenantLimits::new(1);
        assert!(!tiny.admit(first, &lim, 0).unwrap().is_shared());
        assert!(tiny.admit(second, &lim, 0).unwrap().is_shared());
        assert!(tiny.admit(first, &lim, 0).is_err(), "still its own slot");

        // Fixed seeds: the same tenant hashes alike in every table, and the seeds spread.
        assert_eq!(table.hash(first), TenantLimits::new(1).hash(first));
        let mut hashes: Vec<u64> = names.iter().map(|n| table.hash(n)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), names.len());
        let homes: std::collections::HashSet<_> = hashes.iter().map(|h| table.home(*h)).collect();
        assert_eq!(homes.len(), 4, "100 tenants reach every home slot of 4");
    }

    #[test]
    fn idle_slots_go_to_new_tenants() {
        let table = TenantLimits::new(2);
        let lim = limit(1.0, 1, None);
        drop(table.admit("a", &lim, 0).unwrap());
        drop(table.admit("b", &lim, 0).unwrap());
        // At 500 ms neither bucket is full again: no slot is idle.
        assert!(table.admit("c", &lim, 500).unwrap().is_shared());
        // At 1 s both are: c takes one over and keeps it.
        assert!(!table.admit("c", &lim, 1_000).unwrap().is_shared());
        assert!(!table.admit("c", &lim, 2_000).unwrap().is_shared());
        assert_eq!(table.len(), 2);
        // A tenant with a request in flight keeps its slot, however long it runs.
        let table = TenantLimits::new(1);
        let running = table.admit("a", &TenantLimit::UNLIMITED, 0).unwrap();
        assert!(table.admit("b", &lim, 60_000).unwrap().is_shared());
        drop(running);
        assert!(!table.admit("b", &lim, 60_000).unwrap().is_shared());
        // ... and so does one with a request held.
        let table = TenantLimits::new(1);
        let held = table.hold_slot("a", 1).unwrap();
        assert!(!held.is_shared());
        assert!(table.admit("b", &lim, 60_000).unwrap().is_shared());
        drop(held);
        assert!(!table.admit("b", &lim, 60_000).unwrap().is_shared());
        // A tenant with a rate of 0 is never idle: its spent burst must not come back.
        let table = TenantLimits::new(1);
        drop(table.admit("a", &limit(0.0, 1, None), 0).unwrap());
        assert!(table
            .admit("b", &lim, 365 * 86_400_000)
            .unwrap()
            .is_shared());
        assert!(table.admit("a", &limit(0.0, 1, None), 0).is_err());
    }

    #[test]
    fn a_changed_limit_applies_at_once() {
        let table = TenantLimits::new(8);
        let strict = limit(1.0, 1, Some(1));
        let p = table.admit("a", &strict, 0).unwrap();
        assert_eq!(
            table.admit("a", &strict, 0).unwrap_err(),
            Refusal::Concurrency
        );
        let loose = TenantLimit {
            rate: None,
            burst: 0,
            concurrency: Some(10),
        };
        assert!(table.admit("a", &loose, 0).is_ok());
        drop(p);
        // From a rate to rate 0 and back: each change starts the bucket afresh.
        assert!(table.admit("a", &limit(0.0, 1, None), 0).is_ok());
        assert!(table.admit("a", &limit(0.0, 1, None), 0).is_err());
        assert!(table.admit("a", &strict, 5_000).is_ok());
    }

    #[test]
    fn threads_admitting_one_tenant_get_exactly_its_burst_and_concurrency() {
        let table = TenantLimits::new(16);
        let lim = limit(0.0, 1_000, None);
        let taken: usize = on_threads(|_| {
            (0..ATTEMPTS_PER_THREAD)
                .filter(|_| table.admit("acme", &lim, 0).is_ok())
                .count()
        })
        .into_iter()
        .sum();
        assert_eq!(taken, 1_000);

        let lim = TenantLimit {
            rate: None,
            burst: 0,
            concurrency: Some(4),
        };
        let holding = AtomicU32::new(0);
        let most = AtomicU32::new(0);
        on_threads(|_| {
            for _ in 0..ATTEMPTS_PER_THREAD {
                if let Ok(permit) = table.admit("globex", &lim, 0) {
                    let now = holding.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    holding.fetch_sub(1, SeqCst);
                    drop(permit);
                }
            }
        });
        assert!((1..=4).contains(&most.load(SeqCst)));
    }

    #[test]
    fn threads_with_many_tenants_in_a_small_table_keep_counts_straight() {
        // 8 threads × 8 tenants each in 4 slots: claims, hand-overs and the overflow slot race.
        let table = Arc::new(TenantLimits::new(4));
        let names: Vec<Vec<String>> = (0..THREADS)
            .map(|t| (0..8).map(|i| format!("t{t}-{i}")).collect())
            .collect();
        let lim = limit(1e6, 1_000, Some(2));
        on_threads(|t| {
            for i in 0..ATTEMPTS_PER_THREAD {
                let name = &names[t][i % 8];
                let now = (i / 100) as u64;
                if i % 2 == 0 {
                    if let Ok(permit) = table.admit(name, &lim, now) {
                        let held = table.hold_slot(name, 1);
                        drop((permit, held));
                    }
                } else if let Ok(permit) = table.admit_owned(name, &lim, now) {
                    let held = table.hold_slot_owned(name, 1);
                    drop((held, permit));
                }
            }
        });
        assert_eq!(table.len(), 4);
        for slot in table.slots.iter().chain([&table.overflow]) {
            assert_eq!(slot.in_use.load(SeqCst), 0);
            assert_eq!(slot.held.load(SeqCst), 0);
            assert!(slot.hash.load(SeqCst) != BUSY);
        }
    }

    #[test]
    fn owned_permits_need_no_borrow_and_release_on_drop() {
        fn owned<T: Send + Sync + 'static>(_: &T) {}
        let table = Arc::new(TenantLimits::new(8));
        let lim = limit(1e3, 100, Some(1));
        let permit = table.admit_owned("a", &lim, 0).unwrap();
        owned(&permit);
        assert!(!permit.is_shared());
        assert_eq!(table.admit("a", &lim, 0).unwrap_err(), Refusal::Concurrency);
        let held = table.hold_slot_owned("a", 1).unwrap();
        owned(&held);
        assert!(!held.is_shared());
        assert!(table.hold_slot_owned("a", 1).is_none());
        drop((permit, held));
        assert!(table.admit_owned("a", &lim, 0).is_ok());
        assert!(table.hold_slot("a", 1).is_some());

        // One slot, taken by a: b and c share the overflow slot, owned or not.
        let tiny = Arc::new(TenantLimits::new(1));
        let _a = tiny.admit_owned("a", &lim, 0).unwrap();
        let b = tiny.admit_owned("b", &lim, 0).unwrap();
        assert!(b.is_shared());
        assert_eq!(
            tiny.admit_owned("c", &lim, 0).unwrap_err(),
            Refusal::Concurrency
        );
        drop(b);
        assert!(tiny.admit("c", &lim, 0).unwrap().is_shared());
        assert!(tiny.hold_slot_owned("c", 1).unwrap().is_shared());

        let in_flight = Arc::new(InFlightLimit::new(1));
        let entered = in_flight.try_enter_owned().unwrap();
        owned(&entered);
        assert!(in_flight.try_enter().is_none() && in_flight.try_enter_owned().is_none());
        drop(entered);
        assert_eq!(in_flight.in_flight(), 0);
        assert!(in_flight.try_enter_owned().is_some());
    }

    #[test]
    fn hold_slot_gives_each_tenant_its_share() {
        let table = TenantLimits::new(64);
        let a1 = table.hold_slot("a", 2).unwrap();
        let _a2 = table.hold_slot("a", 2).unwrap();
        assert!(table.hold_slot("a", 2).is_none(), "a's share is full");
        let _b1 = table.hold_slot("b", 2).unwrap();
        let _b2 = table.hold_slot("b", 2).unwrap();
        assert!(table.hold_slot("b", 2).is_none());
        drop(a1);
        assert!(table.hold_slot("a", 2).is_some());
        assert!(table.hold_slot("c", 0).is_none(), "no holding at all");
        // Holding and admitting count apart.
        assert!(table.admit("a", &limit(1.0, 1, Some(1)), 0).is_ok());
    }

    #[test]
    fn reports_ns_per_operation() {
        const OPS: u64 = 1_000_000;
        let bucket = TokenBucket::new(1e6, 1_000);
        let started = Instant::now();
        let mut admitted = 0u64;
        for i in 0..OPS {
            admitted += u64::from(bucket.try_take(black_box(i / 1_000)).is_ok());
        }
        let take = started.elapsed().as_nanos() as f64 / OPS as f64;

        let table = TenantLimits::new(1024);
        let names: Vec<String> = (0..256).map(|i| format!("tenant-{i}")).collect();
        let lim = limit(1e6, 1_000, Some(100));
        let started = Instant::now();
        for i in 0..OPS {
            let name = &names[(i % 256) as usize];
            admitted += u64::from(table.admit(black_box(name), &lim, i / 1_000).is_ok());
        }
        let admit = started.elapsed().as_nanos() as f64 / OPS as f64;
        println!(
            "TokenBucket::try_take {take:.1} ns/op, TenantLimits::admit {admit:.1} ns/op \
             (256 tenants, {admitted} admitted)"
        );
    }
}

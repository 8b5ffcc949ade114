//! Requests in flight: a service's concurrency limit and the proxy-wide in-flight limit, each
//! a counter with permits that give their place back when dropped.

use std::sync::atomic::{
    AtomicU32,
    Ordering::{Relaxed, Release, SeqCst},
};
use std::sync::Arc;

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
    pub(super) count: &'a AtomicU32,
}

/// One place in a shared [`ConcurrencyLimit`], for holders that must not borrow it; released on
/// drop.
#[derive(Debug)]
#[must_use = "the place is released when the permit is dropped"]
pub struct OwnedPermit {
    limit: Arc<ConcurrencyLimit>,
}

/// Adds one to `count` unless it is at `max` already.
pub(super) fn acquire(count: &AtomicU32, max: u32) -> bool {
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

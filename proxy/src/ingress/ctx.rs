//! What one request carries from phase to phase: its snapshot, service, tenant class, instance,
//! permits and cache fill.

use std::sync::Arc;
use std::time::Instant;

use forecourt_orchestrator::Instance;

use super::balance::Tried;
use super::cache::Fill;
use crate::admission::{OwnedInFlightPermit, OwnedPermit, OwnedTenantPermit};
use crate::classify::metadata::TenantClass;
use crate::classify::routes::ServiceIndex;
use crate::classify::version::VersionRuntime;
use crate::snapshot::{Attempt, ServiceRuntime, Snapshot};

/// Per-request state carried between phases.
#[derive(Default)]
pub struct RequestCtx {
    pub(super) snapshot: Option<Arc<Snapshot>>,
    pub(super) service: Option<ServiceIndex>,
    pub(super) class: TenantClass,
    pub(super) instance: Option<Arc<Instance>>,
    /// The flagged version the request is for (index into its service's `versions`).
    pub(super) version: Option<usize>,
    pub(super) tried: Tried,
    pub(super) started: Option<Instant>,
    /// Predictor clock when the request was recorded as an arrival of its service.
    pub(super) arrived_ms: Option<u64>,
    /// The response being recorded for the service's cache, on a cache miss.
    pub(super) fill: Option<Fill>,
    /// This request's place under `limits.max_in_flight`, released when the request ends.
    pub(super) admitted: Option<OwnedInFlightPermit>,
    /// Its place in its tenant's concurrency, released when the request ends.
    pub(super) tenant_permit: Option<OwnedTenantPermit>,
    /// Its place in its service's concurrency, released when the request ends.
    pub(super) service_permit: Option<OwnedPermit>,
    /// Request body bytes received so far.
    pub(super) body_bytes: u64,
    /// The request's tenant header passed the checks and is believed (see `check_tenant`).
    pub(super) tenant_trusted: bool,
}

// === impl RequestCtx ===

impl RequestCtx {
    /// The service the request was routed to, once it was.
    pub(super) fn service(&self) -> Option<&ServiceRuntime> {
        Some(&self.snapshot.as_ref()?.services[self.service?])
    }

    /// The tenant the request is keyed, limited and forwarded under: its tenant header's value
    /// when believed, else none (anonymous).
    pub(super) fn tenant<'r>(
        &self,
        snapshot: &Snapshot,
        headers: &'r http::HeaderMap,
    ) -> Option<&'r str> {
        snapshot
            .metadata
            .believed_tenant(headers, self.tenant_trusted)
    }

    /// The flagged version the request is for, if its flag matched one.
    pub(super) fn version(&self) -> Option<&VersionRuntime> {
        let index = self.version?;
        self.service()?.versions.get(index)
    }

    /// Releases the current instance, recording how its attempt ended: `status` is the answer
    /// it gave (Forecourt's own 502/504 for a failure after connecting), `None` when the attempt
    /// says nothing about the instance (the client left first, or it is retried for another
    /// reason). Only a real answer counts as a success.
    pub(super) fn release(&mut self, status: Option<u16>, now_ms: u64) {
        let Some(instance) = self.instance.take() else {
            return;
        };
        instance.finish_request();
        let (Some(status), Some(service)) = (status.filter(|s| *s > 0), self.service()) else {
            return;
        };
        service.judge(&instance, Attempt::Answered(status), now_ms);
        if let Some(started) = self.started {
            instance.observe_latency(started.elapsed());
        }
    }

    /// Releases the current instance after its connection failed, ejecting it within its
    /// service's cap.
    pub(super) fn connect_failed(&mut self, now_ms: u64) {
        let Some(instance) = self.instance.take() else {
            return;
        };
        instance.finish_request();
        if let Some(service) = self.service() {
            service.judge(&instance, Attempt::Unreachable, now_ms);
        }
    }
}

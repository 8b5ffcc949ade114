//! Admission of a routed request under its tenant's and its service's limits (atomics only).

use super::ctx::RequestCtx;
use super::refuse::retry_seconds;
use crate::admission::{self, TenantLimit};
use crate::classify::metadata::ANONYMOUS_CLASS;
use crate::classify::routes::ServiceIndex;
use crate::counters::Limited;
use crate::snapshot::Snapshot;

/// Admits a routed request under its tenant's and its service's limits, keeping its
/// permits in `ctx`; or says which limit refused it and the `Retry-After` seconds.
pub(super) fn admit(
    tenant: Option<&str>,
    snapshot: &Snapshot,
    service: ServiceIndex,
    ctx: &mut RequestCtx,
    now: u64,
) -> Option<(Limited, u32)> {
    let admission = &snapshot.services[service].admission;
    // A request naming no tenant is counted under the default class, as one tenant "".
    let class = match ctx.class {
        ANONYMOUS_CLASS => snapshot.metadata.default_class(),
        class => class,
    };
    let limit = admission
        .classes
        .get(class)
        .copied()
        .unwrap_or(TenantLimit::UNLIMITED);
    if limit.rate.is_some() || limit.concurrency.is_some() {
        let tenant = tenant.unwrap_or("");
        match admission.tenants.admit_owned(tenant, &limit, now) {
            Ok(permit) => ctx.tenant_permit = Some(permit),
            Err(admission::Refusal::Rate(retry)) => {
                return Some((Limited::TenantRate, retry_seconds(retry)))
            }
            Err(admission::Refusal::Concurrency) => return Some((Limited::TenantConcurrency, 1)),
        }
    }
    if let Some(bucket) = &admission.rate {
        if let Err(retry) = bucket.try_take(now) {
            return Some((Limited::ServiceRate, retry_seconds(retry)));
        }
    }
    if let Some(concurrency) = &admission.concurrency {
        match concurrency.try_acquire_owned() {
            Some(permit) => ctx.service_permit = Some(permit),
            None => return Some((Limited::ServiceConcurrency, 1)),
        }
    }
    None
}

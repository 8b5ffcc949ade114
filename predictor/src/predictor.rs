//! The shared, lock-free side: every service's windows, looked up by a dense [`ServiceId`].
//!
//! ```text
//!  config time:   names ─► Predictor::new ─► Vec<ServiceWindows> + AHashMap<name, ServiceId>
//!  request path:  ServiceId ─► record_arrival / request_started / request_finished (&self)
//!  control loop:  ForecastEngine::tick(&Predictor, now) reads closed seconds
//! ```

use ahash::AHashMap;

use crate::service::ServiceWindows;
use crate::window::WindowConfig;

/// Dense index of a service in a [`Predictor`], resolved once at config time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u32);

impl ServiceId {
    /// The index into per-service vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Errors building a [`Predictor`] or configuring a [`crate::ForecastEngine`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PredictorError {
    /// The same service name was given twice.
    #[error("service {name:?} is listed twice")]
    DuplicateService {
        /// The repeated name.
        name: String,
    },
    /// A service name was empty.
    #[error("service name is empty")]
    EmptyServiceName,
    /// More services than a `u32` can index.
    #[error("too many services: {count}")]
    TooManyServices {
        /// The number given.
        count: usize,
    },
    /// The bucket width does not divide a second, so per-second counts can't be formed.
    #[error("bucket width {bucket_ms} ms must be between 1 and 1000 ms and divide 1000 ms")]
    BucketWidth {
        /// The configured width.
        bucket_ms: u64,
    },
    /// The window is too short to hold the seconds the forecaster reads.
    #[error("window of {span_ms} ms is shorter than the 2 s minimum")]
    WindowTooShort {
        /// The configured span.
        span_ms: u64,
    },
    /// An event or lookup named a service the predictor does not know.
    #[error("unknown service {name:?}")]
    UnknownService {
        /// The name given.
        name: String,
    },
}

/// Shape of every service's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictorConfig {
    /// Arrival, tenant and concurrency window shape (default 1 s × 60).
    pub window: WindowConfig,
    /// Tenant slots per service (default 64); further tenants count as "other".
    pub tenant_slots: usize,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        Self {
            window: WindowConfig::default(),
            tenant_slots: 64,
        }
    }
}

impl PredictorConfig {
    /// Checks the window shape.
    pub fn validate(&self) -> Result<(), PredictorError> {
        let bucket_ms = self.window.bucket_ms;
        if bucket_ms == 0 || bucket_ms > 1_000 || 1_000 % bucket_ms != 0 {
            return Err(PredictorError::BucketWidth { bucket_ms });
        }
        let span_ms = self.window.span_ms();
        if span_ms < 2_000 {
            return Err(PredictorError::WindowTooShort { span_ms });
        }
        Ok(())
    }
}

/// Every service's live windows; share it as `Arc<Predictor>` between the request path and the
/// control loop.
#[derive(Debug)]
pub struct Predictor {
    config: PredictorConfig,
    services: Box<[ServiceWindows]>,
    names: Box<[String]>,
    ids: AHashMap<String, ServiceId>,
}

impl Predictor {
    /// Windows for each named service; ids follow the order given.
    pub fn new<I, S>(names: I, config: PredictorConfig) -> Result<Self, PredictorError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        config.validate()?;
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if u32::try_from(names.len()).is_err() {
            return Err(PredictorError::TooManyServices { count: names.len() });
        }
        let mut ids = AHashMap::with_capacity(names.len());
        for (index, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(PredictorError::EmptyServiceName);
            }
            if ids.insert(name.clone(), ServiceId(index as u32)).is_some() {
                return Err(PredictorError::DuplicateService { name: name.clone() });
            }
        }
        let services = names
            .iter()
            .map(|_| ServiceWindows::new(config.window, config.tenant_slots))
            .collect();
        Ok(Self {
            config,
            services,
            names: names.into_boxed_slice(),
            ids,
        })
    }

    /// The configuration the windows were built with.
    pub fn config(&self) -> &PredictorConfig {
        &self.config
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there are no services.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The id of a service by name.
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.ids.get(name).copied()
    }

    /// The name of a service.
    pub fn name(&self, id: ServiceId) -> Option<&str> {
        self.names.get(id.index()).map(String::as_str)
    }

    /// A service's windows.
    pub fn service(&self, id: ServiceId) -> Option<&ServiceWindows> {
        self.services.get(id.index())
    }

    /// Every service with its id and name.
    pub fn services(&self) -> impl Iterator<Item = (ServiceId, &str, &ServiceWindows)> + '_ {
        self.services
            .iter()
            .zip(self.names.iter())
            .enumerate()
            .map(|(i, (windows, name))| (ServiceId(i as u32), name.as_str(), windows))
    }

    /// Records one arrival (request path: atomics only; allocates only for a new tenant).
    #[inline]
    pub fn record_arrival(&self, id: ServiceId, tenant: Option<&str>, now_ms: u64) {
        if let Some(service) = self.services.get(id.index()) {
            service.record_arrival(tenant, now_ms);
        }
    }

    /// Records `n` arrivals of a service at once (trace replay).
    #[inline]
    pub fn record_arrivals(&self, id: ServiceId, n: u64, now_ms: u64) {
        if let Some(service) = self.services.get(id.index()) {
            service.record_arrivals(n, now_ms);
        }
    }

    /// Marks a request of the service as started.
    #[inline]
    pub fn request_started(&self, id: ServiceId, now_ms: u64) {
        if let Some(service) = self.services.get(id.index()) {
            service.request_started(now_ms);
        }
    }

    /// Marks a request of the service that started at `started_ms` as finished.
    #[inline]
    pub fn request_finished(&self, id: ServiceId, started_ms: u64, now_ms: u64) {
        if let Some(service) = self.services.get(id.index()) {
            service.request_finished(started_ms, now_ms);
        }
    }

    /// Arrivals in closed second `sec` (a second before the one containing `now_ms`) if the
    /// window still holds all of it.
    pub fn second_count(&self, id: ServiceId, now_ms: u64, sec: u64) -> Option<u64> {
        let arrivals = self.services.get(id.index())?.arrivals();
        let per_second = 1_000 / arrivals.bucket_ms();
        let first = sec.checked_mul(per_second)?;
        (first..first + per_second)
            .map(|bucket| arrivals.closed_bucket(now_ms, bucket))
            .sum()
    }

    /// How many closed seconds the windows hold (the most a late tick can catch up on).
    pub fn held_seconds(&self) -> u64 {
        (self.config.window.span_ms() / 1_000).saturating_sub(1)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_given_order() {
        let p = Predictor::new(["web", "api"], PredictorConfig::default()).expect("predictor");
        assert_eq!(p.len(), 2);
        assert_eq!(p.service_id("api"), Some(ServiceId(1)));
        assert_eq!(p.name(ServiceId(0)), Some("web"));
        assert_eq!(p.service_id("db"), None);
        let names: Vec<_> = p.services().map(|(_, n, _)| n).collect();
        assert_eq!(names, ["web", "api"]);
    }

    #[test]
    fn rejects_bad_names_and_shapes() {
        assert_eq!(
            Predictor::new(["a", "a"], PredictorConfig::default()).err(),
            Some(PredictorError::DuplicateService {
                name: "a".to_string()
            })
        );
        assert_eq!(
            Predictor::new([""], PredictorConfig::default()).err(),
            Some(PredictorError::EmptyServiceName)
        );
        let bad_width = PredictorConfig {
            window: WindowConfig {
                bucket_ms: 300,
                buckets: 100,
            },
            ..PredictorConfig::default()
        };
        assert_eq!(
            Predictor::new(["a"], bad_width).err(),
            Some(PredictorError::BucketWidth { bucket_ms: 300 })
        );
        let short = PredictorConfig {
            window: WindowConfig {
                bucket_ms: 1_000,
                buckets: 1,
            },
            ..PredictorConfig::default()
        };
        assert!(matches!(
            Predictor::new(["a"], short),
            Err(PredictorError::WindowTooShort { span_ms: 1_000 })
        ));
        assert_eq!(
            PredictorError::UnknownService {
                name: "x".to_string()
            }
            .to_string(),
            "unknown service \"x\""
        );
    }

    #[test]
    fn records_and_reads_per_second_counts_with_sub_second_buckets() {
        let config = PredictorConfig {
            window: WindowConfig {
                bucket_ms: 250,
                buckets: 240,
            },
            tenant_slots: 4,
        };
        let p = Predictor::new(["web"], config).expect("predictor");
        let web = p.service_id("web").expect("web");
        for ms in (0..2_000).step_by(100) {
            p.record_arrival(web, Some("acme"), ms);
        }
        assert_eq!(p.second_count(web, 2_000, 0), Some(10));
        assert_eq!(p.second_count(web, 2_000, 1), Some(10));
        assert_eq!(p.second_count(web, 2_000, 2), None, "still open");
        assert_eq!(p.held_seconds(), 59);
        p.request_started(web, 0);
        assert_eq!(p.service(web).map(|s| s.in_flight()), Some(1));
        p.request_finished(web, 0, 10);
        assert_eq!(p.service(web).map(|s| s.in_flight()), Some(0));
    }
}

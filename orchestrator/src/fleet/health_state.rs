//! What the health checker knows of one instance: probes in a row, the last error, confirmed ready.

/// What the health checker knows of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthState {
    /// Confirmed ready.
    pub ready: bool,
    /// Successful probes in a row.
    pub consecutive_ok: u32,
    /// Failed probes in a row.
    pub consecutive_fail: u32,
    /// The last probe's failure, if it failed.
    pub last_error: Option<String>,
    /// Probes run so far.
    pub probes: u64,
    /// Probes that failed so far.
    pub failed_probes: u64,
}

// === impl HealthState ===

impl HealthState {
    /// Applies one probe result against the thresholds.
    pub fn observe(&mut self, result: Result<(), String>, healthy: u32, unhealthy: u32) {
        self.probes += 1;
        match result {
            Ok(()) => {
                self.consecutive_ok = self.consecutive_ok.saturating_add(1);
                self.consecutive_fail = 0;
                self.last_error = None;
                if self.consecutive_ok >= healthy {
                    self.ready = true;
                }
            }
            Err(e) => {
                self.failed_probes += 1;
                self.consecutive_fail = self.consecutive_fail.saturating_add(1);
                self.consecutive_ok = 0;
                self.last_error = Some(e);
                if self.consecutive_fail >= unhealthy {
                    self.ready = false;
                }
            }
        }
    }

    /// Why an instance is not ready, in words for the admin API.
    pub fn reason(&self, healthy_threshold: u32) -> String {
        match (&self.last_error, self.probes) {
            (_, 0) => "not probed yet".to_owned(),
            (Some(e), _) => format!("health check failing: {e}"),
            (None, _) => format!(
                "awaiting health checks ({}/{healthy_threshold} passed)",
                self.consecutive_ok
            ),
        }
    }
}

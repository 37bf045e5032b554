//! Passive outlier detection with Envoy's semantics: consecutive 5xx (or gateway
//! errors) eject an endpoint for base_ejection_time × its ejection count, capped at
//! max_ejection_time, and at most max_ejection_percent of the cluster (at least one
//! endpoint) is ejected at once. A healthy interval lowers the count again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use trellis_config::OutlierDetection;

/// What one upstream attempt taught us about an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    ConnectFailure,
    Reset,
    Timeout,
}

impl Outcome {
    fn is_5xx(self) -> bool {
        !matches!(self, Outcome::Status(s) if s < 500)
    }
    fn is_gateway_error(self) -> bool {
        match self {
            Outcome::Status(s) => matches!(s, 502..=504),
            Outcome::ConnectFailure | Outcome::Timeout => true,
            Outcome::Reset => false,
        }
    }
}

#[derive(Default)]
pub struct EndpointHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Milliseconds since the cluster's epoch until which the endpoint is ejected; 0 = not.
    ejected_until_ms: AtomicU64,
    ejections: Mutex<u32>,
}

impl EndpointHealth {
    pub fn is_available(&self, now_ms: u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || now_ms >= until
    }

    pub fn ejection_count(&self) -> u32 {
        *self.ejections.lock().unwrap()
    }

    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Records an outcome; returns true when the endpoint should be ejected now.
    pub fn record(&self, cfg: &OutlierDetection, outcome: Outcome) -> bool {
        let mut trip = false;
        if outcome.is_5xx() {
            let n = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            trip |= cfg.consecutive_5xx > 0 && n >= cfg.consecutive_5xx;
        } else {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
        }
        if outcome.is_gateway_error() {
            let n = self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
            trip |= cfg.consecutive_gateway_failure > 0 && n >= cfg.consecutive_gateway_failure;
        } else if !outcome.is_5xx() {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        trip
    }

    /// Ejects the endpoint; the caller has checked the cluster-wide percentage.
    pub fn eject(&self, cfg: &OutlierDetection, now_ms: u64) -> Duration {
        let mut count = self.ejections.lock().unwrap();
        *count += 1;
        let base = cfg.base_ejection_time.get();
        let cap = cfg.max_ejection_time.get().max(base);
        let time = base.saturating_mul(*count).min(cap);
        self.ejected_until_ms
            .store(now_ms + time.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        time
    }

    /// Called each interval. Returns true if the endpoint came back from ejection.
    pub fn sweep(&self, now_ms: u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until != 0 && now_ms >= until {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
            return true;
        }
        if until == 0 {
            let mut count = self.ejections.lock().unwrap();
            *count = count.saturating_sub(1);
        }
        false
    }
}

/// How many endpoints may be ejected at once (Envoy ejects at least one).
pub fn max_ejected(cfg: &OutlierDetection, endpoints: usize) -> usize {
    (endpoints * cfg.max_ejection_percent as usize / 100).max(1)
}

/// A monotonic millisecond clock shared by a cluster's endpoints.
pub struct Clock(Instant);

impl Default for Clock {
    fn default() -> Self {
        // Start at 1 ms so that 0 can mean "not ejected".
        Clock(Instant::now() - Duration::from_millis(1))
    }
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_config::Dur;

    fn cfg() -> OutlierDetection {
        OutlierDetection {
            base_ejection_time: Dur::secs(30),
            ..Default::default()
        }
    }

    #[test]
    fn five_consecutive_5xx_trip_and_success_resets() {
        let h = EndpointHealth::default();
        let c = cfg();
        for _ in 0..4 {
            assert!(!h.record(&c, Outcome::Status(503)));
        }
        assert!(!h.record(&c, Outcome::Status(200)));
        for _ in 0..4 {
            assert!(!h.record(&c, Outcome::ConnectFailure));
        }
        assert!(h.record(&c, Outcome::Reset));
    }

    #[test]
    fn ejection_time_grows_and_caps() {
        let h = EndpointHealth::default();
        let c = cfg();
        assert_eq!(h.eject(&c, 1), Duration::from_secs(30));
        assert!(!h.is_available(2));
        assert!(h.sweep(1 + 30_000));
        assert!(h.is_available(1 + 30_000));
        assert_eq!(h.eject(&c, 40_000), Duration::from_secs(60));
        for _ in 0..20 {
            h.eject(&c, 40_000);
        }
        assert_eq!(h.eject(&c, 40_000), Duration::from_secs(300));
    }

    #[test]
    fn healthy_intervals_lower_the_count() {
        let h = EndpointHealth::default();
        let c = cfg();
        h.eject(&c, 1);
        h.eject(&c, 1);
        assert!(h.sweep(10_000_000));
        assert_eq!(h.ejection_count(), 2);
        h.sweep(10_000_001);
        assert_eq!(h.ejection_count(), 1);
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected() {
        assert_eq!(max_ejected(&cfg(), 2), 1);
        assert_eq!(max_ejected(&cfg(), 30), 3);
    }
}

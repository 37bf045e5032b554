//! Whether a request's trace is recorded, as Envoy's connection manager decides it.

use http::HeaderMap;
use rand::Rng;

static FORCE_TRACE: http::HeaderName = http::HeaderName::from_static("x-envoy-force-trace");
static CLIENT_TRACE_ID: http::HeaderName = http::HeaderName::from_static("x-client-trace-id");

/// Percentages (0–100), Envoy's `tracing` settings of the connection manager.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Requests that carry no decision of their caller.
    pub random: f64,
    /// Requests with `x-client-trace-id` (a client asking for a trace).
    pub client: f64,
    /// A cap over every decision this proxy makes itself.
    pub overall: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            random: 100.0,
            client: 100.0,
            overall: 100.0,
        }
    }
}

impl Sampling {
    /// The caller's decision stands (a trace is recorded by every hop or by none);
    /// otherwise `x-envoy-force-trace` records it, `x-client-trace-id` records it at the
    /// client rate, and any other request at the random rate, all capped by `overall`.
    pub fn decide(&self, caller: Option<bool>, headers: &HeaderMap) -> bool {
        if let Some(decided) = caller {
            return decided;
        }
        let mut rng = rand::thread_rng();
        let mut roll = |percent: f64| percent >= 100.0 || rng.gen::<f64>() * 100.0 < percent;
        let wanted = if headers.contains_key(&FORCE_TRACE) {
            true
        } else if headers.contains_key(&CLIENT_TRACE_ID) {
            roll(self.client)
        } else {
            roll(self.random)
        };
        wanted && roll(self.overall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_decision_stands_and_rates_apply_otherwise() {
        let none = Sampling {
            random: 0.0,
            client: 0.0,
            overall: 100.0,
        };
        let h = HeaderMap::new();
        assert!(none.decide(Some(true), &h));
        assert!(!Sampling::default().decide(Some(false), &h));
        assert!(!none.decide(None, &h));
        assert!(Sampling::default().decide(None, &h));
        let mut forced = HeaderMap::new();
        forced.insert("x-envoy-force-trace", "1".parse().unwrap());
        assert!(none.decide(None, &forced));
        let mut client = HeaderMap::new();
        client.insert("x-client-trace-id", "abc".parse().unwrap());
        assert!(!none.decide(None, &client));
        let capped = Sampling {
            overall: 0.0,
            ..Sampling::default()
        };
        assert!(!capped.decide(None, &forced));
        // About half of 10 000 at 50%.
        let half = Sampling {
            random: 50.0,
            ..Sampling::default()
        };
        let n = (0..10_000).filter(|_| half.decide(None, &h)).count();
        assert!((4_500..5_500).contains(&n), "{n}");
    }
}

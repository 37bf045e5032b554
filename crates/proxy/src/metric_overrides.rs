//! The Telemetry API's metric overrides as a listener applies them: which of Istio's
//! metrics it records, and which labels each leaves off (an empty value, which
//! Prometheus reads as no label, as Istio's `REMOVE` leaves none).

use trellis_config::{IstioMetric, MetricOverride, ISTIO_LABELS};

/// What the overrides leave of one metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub disabled: bool,
    /// Bit `i`: `ISTIO_LABELS[i]` is left off.
    pub removed: u32,
}

/// Each metric's [`Shape`], in [`IstioMetric::EACH`]'s order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shapes([Shape; 8]);

impl Shapes {
    /// The overrides applied in order (a later one wins; `disabled` unset leaves the
    /// metric as it was, labels once removed stay removed).
    pub fn of(overrides: &[MetricOverride]) -> Shapes {
        let mut shapes = Shapes::default();
        for o in overrides {
            let removed = o
                .remove_labels
                .iter()
                .filter_map(|l| ISTIO_LABELS.iter().position(|k| k == l))
                .fold(0u32, |bits, i| bits | 1 << i);
            for (i, m) in IstioMetric::EACH.iter().enumerate() {
                if o.metric.covers(*m) {
                    let s = &mut shapes.0[i];
                    s.disabled = o.disabled.unwrap_or(s.disabled);
                    s.removed |= removed;
                }
            }
        }
        shapes
    }

    pub fn get(&self, m: IstioMetric) -> Shape {
        IstioMetric::EACH
            .iter()
            .position(|e| *e == m)
            .map(|i| self.0[i])
            .unwrap_or_default()
    }
}

impl Shape {
    /// Whether the label at `ISTIO_LABELS[index]` is left off.
    pub fn removes(&self, index: usize) -> bool {
        self.removed & (1 << index) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(metric: IstioMetric, disabled: Option<bool>, labels: &[&str]) -> MetricOverride {
        MetricOverride {
            metric,
            disabled,
            remove_labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn later_overrides_win_and_all_metrics_covers_each() {
        let s = Shapes::of(&[
            o(IstioMetric::AllMetrics, Some(true), &["source_principal"]),
            o(IstioMetric::RequestCount, Some(false), &["response_flags"]),
        ]);
        let count = s.get(IstioMetric::RequestCount);
        assert!(!count.disabled);
        assert!(count.removes(3) && count.removes(23) && !count.removes(0));
        let sent = s.get(IstioMetric::TcpSentBytes);
        assert!(sent.disabled && sent.removes(3) && !sent.removes(23));
        assert_eq!(Shapes::of(&[]), Shapes::default());
    }
}

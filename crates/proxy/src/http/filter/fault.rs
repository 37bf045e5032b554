//! `fault`: the selected route's fault injection (its per-route config): a delay for a
//! share of requests, then an abort with a status for a share (Envoy's fault filter).

use http::StatusCode;
use rand::Rng;

use super::{Exchange, Step};
use crate::http::flags::Flags;
use crate::http::reply::local_reply;

pub const NAME: &str = "fault";

pub struct Fault;

impl Fault {
    pub async fn on_request(&self, x: &mut Exchange<'_>) -> Step {
        let Some(fault) = x.route().and_then(|(_, r)| r.per_filter.fault.as_ref()) else {
            return Step::Continue;
        };
        let (delay, abort) = decide(fault, chance);
        if let Some(d) = delay {
            x.flags.set(Flags::DELAY_INJECTED);
            tokio::time::sleep(d).await;
        }
        match abort {
            Some(status) => {
                x.flags.set(Flags::FAULT_INJECTED);
                Step::Respond(local_reply(status, "fault filter abort"))
            }
            None => Step::Continue,
        }
    }
}

/// The delay and the abort status for one request, each drawn with `roll(percent)`.
fn decide(
    fault: &trellis_config::Fault,
    mut roll: impl FnMut(f64) -> bool,
) -> (Option<std::time::Duration>, Option<StatusCode>) {
    let delay = fault
        .delay
        .as_ref()
        .filter(|d| roll(d.percent))
        .map(|d| d.fixed.get());
    let abort = fault
        .abort
        .as_ref()
        .filter(|a| roll(a.percent))
        .map(|a| StatusCode::from_u16(a.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE));
    (delay, abort)
}

fn chance(percent: f64) -> bool {
    rand::thread_rng().gen_range(0.0..100.0) < percent
}

#[cfg(test)]
mod tests {
    use super::*;

    use trellis_config::{Dur, Fault, FaultAbort, FaultDelay};

    fn abort_of(status: u16, percent: f64) -> Option<FaultAbort> {
        Some(FaultAbort { status, percent })
    }

    #[test]
    fn each_part_is_drawn_on_its_own_share() {
        let f = Fault {
            delay: Some(FaultDelay {
                fixed: Dur::secs(2),
                percent: 10.0,
            }),
            abort: abort_of(503, 50.0),
        };
        let mut asked = Vec::new();
        let (delay, abort) = decide(&f, |p| {
            asked.push(p);
            true
        });
        assert_eq!(asked, vec![10.0, 50.0]);
        assert_eq!(delay, Some(std::time::Duration::from_secs(2)));
        assert_eq!(abort, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(decide(&f, |_| false), (None, None));
        let abort_only = Fault {
            delay: None,
            abort: abort_of(418, 100.0),
        };
        assert_eq!(
            decide(&abort_only, |_| true),
            (None, Some(StatusCode::IM_A_TEAPOT))
        );
    }

    #[test]
    fn shares_are_percentages() {
        assert!(!chance(0.0));
        assert!(chance(100.0));
        let hits = (0..10_000).filter(|_| chance(25.0)).count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
    }
}

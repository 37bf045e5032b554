//! A listener's routes as the request path uses them: per virtual host and route, the
//! action, the header mutations, each filter's per-route configuration (Envoy's
//! `typed_per_filter_config`) and the route's stats.

use trellis_config::HttpManager as HttpConfig;

use super::action::{action, Action};
use super::headers::Mutations;
use crate::stats::{Metrics, RouteStats};

pub struct VirtualHost {
    pub name: String,
    pub request: Mutations,
    pub response: Mutations,
    pub routes: Vec<RouteEntry>,
}

pub struct RouteEntry {
    pub name: String,
    /// The name of its spans (Envoy's decorator).
    pub operation: Option<String>,
    pub action: Action,
    /// The route's configuration of the filters that have some.
    pub per_filter: PerRoute,
    pub request: Mutations,
    pub response: Mutations,
    pub stats: RouteStats,
}

/// Per-route configuration of the filters that have some.
#[derive(Default)]
pub struct PerRoute {
    pub fault: Option<trellis_config::Fault>,
    pub cors: Option<Box<super::cors_policy::Policy>>,
}

impl PerRoute {
    pub fn new(route: &trellis_config::Route) -> PerRoute {
        PerRoute {
            fault: route.fault.clone(),
            cors: route
                .cors
                .as_ref()
                .map(|c| Box::new(super::cors_policy::Policy::new(c))),
        }
    }
}

/// The virtual hosts of `config`, in order, with their routes' actions resolved.
pub fn build(
    listener: &str,
    config: &HttpConfig,
    clusters: &crate::cluster::ClusterSet,
    metrics: &std::sync::Arc<Metrics>,
) -> Vec<VirtualHost> {
    let mut virtual_hosts = Vec::new();
    for vh in &config.virtual_hosts {
        let routes = vh
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = r.name.clone().unwrap_or_else(|| format!("{i}"));
                RouteEntry {
                    stats: metrics.route(listener, &vh.name, &name),
                    name,
                    operation: r.operation.clone(),
                    action: action(r, clusters),
                    per_filter: PerRoute::new(r),
                    request: Mutations::new(
                        &r.request_headers_to_add,
                        &r.request_headers_to_remove,
                    ),
                    response: Mutations::new(
                        &r.response_headers_to_add,
                        &r.response_headers_to_remove,
                    ),
                }
            })
            .collect();
        virtual_hosts.push(VirtualHost {
            name: vh.name.clone(),
            request: Mutations::new(&vh.request_headers_to_add, &vh.request_headers_to_remove),
            response: Mutations::new(&vh.response_headers_to_add, &vh.response_headers_to_remove),
            routes,
        });
    }
    virtual_hosts
}

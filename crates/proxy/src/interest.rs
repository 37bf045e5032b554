//! The sidecar's xDS subscriptions, derived from what it holds (Envoy's warming order:
//! listeners → their route configurations, clusters → their endpoint assignments).

use trellis_xds::Name;

/// Per resource, in name order: the version read (a shared slice, not a copy) and the
/// names it refers to.
type Refs = Vec<(Name, (trellis_xds::client::Resource, Vec<Name>))>;

/// The names one type's resources refer to, and the type's stamp they were read at.
#[derive(Default)]
struct Referred {
    refs: Refs,
    stamp: u64,
    names: std::sync::Arc<std::collections::BTreeSet<Name>>,
}

/// What a sidecar subscribes to given what it holds: every listener and cluster, the
/// route configurations its listeners name and the endpoints its EDS clusters name.
///
/// Asked after every response, so it remembers what each resource version refers to and
/// decodes only resources it has not seen (a sidecar holds thousands of clusters).
/// A type that did not change gives the same set again (the same `Arc`).
#[derive(Default)]
pub struct SidecarInterest {
    /// Listeners → route configurations, clusters → endpoint assignments, listeners →
    /// SDS secrets (a gateway's credentials).
    seen: std::sync::Mutex<(Referred, Referred, Referred)>,
}

/// What a held resource refers to.
#[derive(Clone, Copy, PartialEq)]
enum Refers {
    Routes,
    Endpoints,
    Secrets,
}

impl SidecarInterest {
    pub fn interest(
        &self,
        state: &trellis_xds::client::ClientState,
    ) -> trellis_xds::client::Interest {
        use std::collections::BTreeSet;
        use std::sync::Arc;
        use trellis_xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
        fn refs(
            state: &trellis_xds::client::ClientState,
            type_url: &str,
            refers: Refers,
            seen: &mut Referred,
        ) -> Arc<BTreeSet<Name>> {
            // An unchanged type refers to the same names: the same set, not a copy.
            let stamp = state.revision(type_url);
            if stamp != 0 && stamp == seen.stamp {
                return seen.names.clone();
            }
            // Held resources and what was read before are both in name order: one walk
            // keeps what is still current and reads only new versions.
            let mut before = std::mem::take(&mut seen.refs).into_iter().peekable();
            let mut refs = Vec::with_capacity(state.count(type_url));
            let mut all: Vec<&Name> = Vec::new();
            for (name, r) in state.of(type_url) {
                while before.next_if(|(b, _)| b < name).is_some() {}
                let entry = match before.next_if(|(b, _)| b == name) {
                    Some(mut e) if e.1 .0.same_version(r) => {
                        // The held one: an older copy would keep its response's buffer.
                        e.1 .0 = r.clone();
                        e
                    }
                    _ => {
                        // A cluster names one assignment at most: no set for it.
                        let names = match refers {
                            Refers::Routes => trellis_envoy::route_names(r.body())
                                .into_iter()
                                .map(Name::from)
                                .collect(),
                            Refers::Secrets => trellis_envoy::secret_names(r.body())
                                .into_iter()
                                .map(Name::from)
                                .collect(),
                            Refers::Endpoints => trellis_envoy::endpoint_name(r.body_shared())
                                .and_then(|n| Name::from_utf8(n).ok())
                                .into_iter()
                                .collect(),
                        };
                        (name.clone(), (r.clone(), names))
                    }
                };
                refs.push(entry);
            }
            seen.refs = refs;
            all.extend(seen.refs.iter().flat_map(|(_, (_, n))| n.iter()));
            all.sort_unstable();
            all.dedup();
            // Usually the same names as before (a cluster changed, not which assignment
            // it loads): compared before a set is built.
            let same = all.len() == seen.names.len()
                && all.iter().zip(seen.names.iter()).all(|(a, b)| *a == b);
            if !same {
                seen.names = Arc::new(all.into_iter().cloned().collect());
            }
            seen.stamp = stamp;
            seen.names.clone()
        }
        let mut seen = self.seen.lock().unwrap();
        let (listeners, clusters, secret_refs) = &mut *seen;
        let routes = refs(state, LISTENER, Refers::Routes, listeners);
        let endpoints = refs(state, CLUSTER, Refers::Endpoints, clusters);
        let secrets = refs(state, LISTENER, Refers::Secrets, secret_refs);
        vec![
            (CLUSTER, None),
            (ENDPOINT, Some(endpoints)),
            (LISTENER, None),
            (ROUTE, Some(routes)),
            (SECRET, Some(secrets)),
        ]
    }
}

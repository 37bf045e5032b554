//! `trellis control --check`: what a reload does (every document read, validated and
//! cross-checked, the registry built), then every sidecar's view generated and checked
//! the way the sidecar checks an update (its config's validation, its authorization
//! policies compiled, its Envoy encoding), without serving anything. For CI pipelines,
//! as `istioctl validate` and `istioctl analyze` are used.

use serde::Serialize;

use crate::ControlPlane;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub refused: Vec<String>,
    pub warnings: Vec<String>,
    pub services: usize,
    pub workloads: usize,
    /// Sidecar views generated and checked.
    pub views: usize,
    /// Views a sidecar would refuse (a defect of Trellis, not of the input).
    pub view_errors: Vec<String>,
}

impl Report {
    /// Whether the inputs pass: nothing refused and every view good.
    pub fn ok(&self) -> bool {
        self.refused.is_empty() && self.view_errors.is_empty()
    }
}

impl ControlPlane {
    pub fn check(&self) -> Result<Report, String> {
        self.tenants
            .checking
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.reload()?;
        let status = self.status.borrow().clone();
        let mut report = Report {
            refused: status.refused,
            warnings: status.warnings,
            services: status.services,
            workloads: status.workloads,
            ..Default::default()
        };
        let state = self.state.lock().unwrap();
        let (inputs, registry) = (&state.0, &state.1);
        for w in registry.workloads.iter().filter(|w| w.has_sidecar()) {
            let name = format!("{}/{}", w.namespace, w.name);
            report.views += 1;
            let config = match trellis_mesh::generate(inputs, registry, &w.namespace, &w.name) {
                Ok(mut c) => {
                    // The sidecar's bootstrap has the identity section that the view's
                    // `sds://` certificates come from.
                    c.identity = Some(sidecar_identity());
                    c
                }
                Err(e) => {
                    report.view_errors.push(format!("{name}: {e}"));
                    continue;
                }
            };
            if let Err(e) = config.check(&format!("the view of {name}")) {
                report.view_errors.push(e.to_string());
            }
            for l in &config.listeners {
                if let Some(a) = &l.authorization {
                    if let Err(e) = trellis_authz::Engine::new(a) {
                        report
                            .view_errors
                            .push(format!("{name}: listener {}: authorization: {e}", l.name));
                    }
                }
            }
            if let Err(e) = trellis_envoy::encode(&config) {
                report
                    .view_errors
                    .push(format!("{name}: Envoy encoding: {e}"));
            }
        }
        Ok(report)
    }
}

/// An identity section as a sidecar's bootstrap has one.
fn sidecar_identity() -> trellis_config::Identity {
    serde_yaml::from_str("{ ca_address: \"127.0.0.1:15012\", ca_root: /etc/trellis/root-cert.pem }")
        .expect("a valid identity section")
}

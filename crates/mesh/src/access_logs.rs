//! Istio's access logging for one sidecar: the Telemetry API's `accessLogging` (mesh,
//! namespace, workload; the most specific level wins field by field) over meshConfig's
//! `accessLogFile`, `accessLogEncoding` and `accessLogFormat`. The built-in `envoy`
//! provider writes where and how meshConfig says (`/dev/stdout` when it names no file),
//! an `envoyFileAccessLog` extension provider to its `path` in its `logFormat`.
//!
//! Trellis logs HTTP requests and TCP connections, one log per listener; a provider of
//! another kind (an OpenTelemetry or gRPC access log service) leaves logging off.

use trellis_config as tc;

use crate::mesh_config::MeshConfig;
use crate::telemetry_api::applies;
use crate::{Inputs, Workload};

/// The access log of `w`'s listeners on `side` (`CLIENT` or `SERVER`), if any.
pub(crate) fn access_log(inputs: &Inputs, w: &Workload, side: &str) -> Option<tc::AccessLog> {
    let mesh = inputs.mesh_config.first().map(|m| &m.spec);
    let mut providers: Option<Vec<String>> = None;
    let mut disabled = None;
    for t in crate::telemetry_levels::levels(inputs, w) {
        let entry = t
            .spec
            .access_logging
            .iter()
            .find(|a| applies(a.matches.as_ref(), side));
        let Some(e) = entry else { continue };
        if !e.providers.is_empty() {
            providers = Some(e.providers.iter().map(|p| p.name.clone()).collect());
        }
        disabled = e.disabled.or(disabled);
    }
    if disabled == Some(true) {
        return None;
    }
    let providers = providers.or_else(|| {
        mesh.and_then(|m| m.default_providers.as_ref())
            .map(|d| d.access_logging.clone())
            .filter(|p| !p.is_empty())
    });
    let Some(providers) = providers else {
        // No Telemetry says: meshConfig's file, if any.
        let m = mesh?;
        let path = m.access_log_file.as_deref().filter(|p| !p.is_empty())?;
        return file_log(m, path);
    };
    let name = providers.first()?;
    if name == "envoy" {
        let m = mesh.cloned().unwrap_or_default();
        let path = m
            .access_log_file
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/dev/stdout".into());
        return file_log(&m, &path);
    }
    let p = mesh?.extension_providers.iter().find(|p| &p.name == name)?;
    let f = p.envoy_file_access_log.as_ref()?;
    let (text_format, json_format) = match &f.log_format {
        Some(l) => match (&l.text, &l.labels) {
            (Some(t), _) => (Some(t.clone()), None),
            (None, Some(labels)) => (None, Some(tc::JsonFormat::Fields(labels.clone()))),
            (None, None) => (Some("istio".into()), None),
        },
        None => (Some("istio".into()), None),
    };
    Some(tc::AccessLog {
        path: f.path.clone(),
        text_format,
        json_format,
    })
}

fn file_log(m: &MeshConfig, path: &str) -> Option<tc::AccessLog> {
    let (text_format, json_format) = m.access_log_format().ok()?;
    Some(tc::AccessLog {
        path: path.to_string(),
        text_format,
        json_format,
    })
}

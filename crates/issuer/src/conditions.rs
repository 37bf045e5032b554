//! Status conditions as Kubernetes and cert-manager write them: one per type, a
//! lastTransitionTime that moves only when the status does.

use serde_json::{json, Value};

/// Now, as the API's timestamps are written (`2026-12-07T00:32:15Z`).
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The condition of type `kind` in an object's `status.conditions`.
pub fn find<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Whether condition `kind` is there with status `True`.
pub fn is_true(status: &Value, kind: &str) -> bool {
    find(status, kind).is_some_and(|c| c["status"] == "True")
}

/// Sets condition `kind` in `status.conditions`; the transition time is kept when the
/// status stays. `extra` adds fields (observedGeneration, lastUpdateTime).
pub fn set(status: &mut Value, kind: &str, state: &str, reason: &str, message: &str, extra: Value) {
    if !status.is_object() {
        *status = json!({});
    }
    let old = find(status, kind).cloned();
    let transition = match &old {
        Some(c) if c["status"] == state => c["lastTransitionTime"].clone(),
        _ => now().into(),
    };
    let mut c = json!({"type": kind, "status": state, "reason": reason, "message": message,
                       "lastTransitionTime": transition});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    let list = status["conditions"].as_array().cloned().unwrap_or_default();
    let mut list: Vec<Value> = list.into_iter().filter(|c| c["type"] != kind).collect();
    list.push(c);
    status["conditions"] = Value::Array(list);
}

/// Whether `a` and `b` say the same, ignoring times.
pub fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let strip = |c: Option<&Value>| {
        c.map(|c| {
            let mut c = c.clone();
            if let Some(o) = c.as_object_mut() {
                o.retain(|k, _| !k.starts_with("last"));
            }
            c
        })
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut s = json!({"conditions": [{"type": "Ready", "status": "False",
            "reason": "Pending", "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
        set(&mut s, "Ready", "False", "Pending", "still", json!({}));
        assert_eq!(
            find(&s, "Ready").unwrap()["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        set(
            &mut s,
            "Ready",
            "True",
            "Issued",
            "done",
            json!({"observedGeneration": 2}),
        );
        let c = find(&s, "Ready").unwrap();
        assert_ne!(c["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(c["observedGeneration"], 2);
        assert!(is_true(&s, "Ready"));
        assert_eq!(s["conditions"].as_array().unwrap().len(), 1);
    }
}

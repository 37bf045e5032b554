//! What the watchers keep: the objects of each kind, by namespace and name, with the
//! fields Trellis never reads (managedFields, last-applied annotations) dropped so that
//! a large cluster costs less memory.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::ResourceExt;

/// (namespace, name); cluster-scoped objects have an empty namespace.
pub type Key = (String, String);

pub fn key<K: kube::Resource>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// The objects of every kind the control plane watches.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub namespaces: BTreeMap<Key, Namespace>,
    pub services: BTreeMap<Key, Service>,
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    pub pods: BTreeMap<Key, Pod>,
    /// Secrets with TLS entries (gateways' credentials); others are not kept.
    pub secrets: BTreeMap<Key, Secret>,
    /// Istio resources by kind (`VirtualService`, ...).
    pub istio: BTreeMap<&'static str, BTreeMap<Key, DynamicObject>>,
}

/// Drops what nothing reads; kept objects are otherwise as the API server sent them.
pub fn trim<K: kube::Resource>(mut o: K) -> K {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    o
}

/// A kind the watchers keep, and where in [`Objects`] it goes.
pub trait Kept: kube::Resource + Clone + Sized {
    fn slot<'a>(objects: &'a mut Objects, kind: &'static str) -> &'a mut BTreeMap<Key, Self>;

    /// Whether the object is kept at all (a Secret only with TLS entries).
    fn wanted(&self) -> bool {
        true
    }
}

/// The typed kinds each have one map.
macro_rules! kept {
    ($($kind:ty => $field:ident),*) => {$(
        impl Kept for $kind {
            fn slot<'a>(o: &'a mut Objects, _: &'static str) -> &'a mut BTreeMap<Key, Self> {
                &mut o.$field
            }
        }
    )*};
}

kept!(Namespace => namespaces, Service => services, EndpointSlice => endpoint_slices, Pod => pods);

/// The entries a Secret must have one of to be a gateway's credential.
const TLS_KEYS: [&str; 4] = ["tls.crt", "cert", "ca.crt", "cacert"];

impl Kept for Secret {
    fn slot<'a>(o: &'a mut Objects, _: &'static str) -> &'a mut BTreeMap<Key, Self> {
        &mut o.secrets
    }

    fn wanted(&self) -> bool {
        self.data
            .as_ref()
            .is_some_and(|d| TLS_KEYS.iter().any(|k| d.contains_key(*k)))
    }
}

impl Kept for DynamicObject {
    fn slot<'a>(o: &'a mut Objects, kind: &'static str) -> &'a mut BTreeMap<Key, Self> {
        o.istio.entry(kind).or_default()
    }
}

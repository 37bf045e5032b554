//! What the proxy serves: the config file's settings, with the listeners and clusters
//! of the file and of xDS side by side, each behind an `Arc` shared with where it came
//! from (the file as loaded, the xDS decoder's cache). An update is compared with what
//! runs by pointer first, so one that changes one cluster of 10 000 finds the one
//! without comparing or copying the rest.

use std::sync::Arc;

use trellis_config::{Cluster, Config, Listener, Secret};

#[derive(Clone, Default)]
pub struct Serving {
    /// The file's settings (admin, limits, matcher, identity); its listeners, clusters
    /// and secrets are in the lists below.
    pub settings: Arc<Config>,
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: Vec<Arc<Cluster>>,
    pub secrets: Vec<Secret>,
}

impl Serving {
    /// A config file's contents.
    pub fn from_file(mut config: Config) -> Serving {
        let listeners = std::mem::take(&mut config.listeners);
        let clusters = std::mem::take(&mut config.clusters);
        let secrets = std::mem::take(&mut config.secrets);
        Serving {
            settings: Arc::new(config),
            listeners: listeners.into_iter().map(Arc::new).collect(),
            clusters: clusters.into_iter().map(Arc::new).collect(),
            secrets,
        }
    }

    /// This (the file's part) with what xDS added beside it.
    pub fn with(&self, dynamic: &crate::xds::Dynamic) -> Serving {
        let mut out = self.clone();
        out.listeners.extend(dynamic.listeners.iter().cloned());
        out.clusters.extend(dynamic.clusters.iter().cloned());
        out.secrets.extend(dynamic.secrets.iter().cloned());
        out
    }

    /// The whole config as one value (for the admin's config dump): a copy.
    pub fn to_config(&self) -> Config {
        Config {
            listeners: self.listeners.iter().map(|l| (**l).clone()).collect(),
            clusters: self.clusters.iter().map(|c| (**c).clone()).collect(),
            secrets: self.secrets.clone(),
            ..(*self.settings).clone()
        }
    }
}

//! The Trellis proxy configuration: a YAML schema in the shape of Envoy's
//! listener → route → cluster model, parsed and validated as one unit.
//!
//! A config either validates completely or is refused with every problem listed,
//! each naming the file, the field path and the offending value. The proxy never
//! applies half a config.

mod duration;
mod ip_block;
pub mod log_formats;
mod schema;
mod validate;

pub use duration::{parse_duration, Dur};
pub use ip_block::parse_ip_block;
pub use schema::*;
pub use validate::is_http_token;

use std::fmt;
use std::path::Path;

/// One problem found in a config: where (field path) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// A path such as `listeners[0].http.virtual_hosts[1].routes[2].match.regex`.
    pub path: String,
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.path.is_empty() {
                write!(f, "{}: {}", self.file, e.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file, e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            errors: vec![FieldError {
                path: String::new(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        Config::parse(&text, &file)
    }

    /// Parses and validates YAML text; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            // serde_yaml sometimes prefixes the path itself; say it once.
            let message = e.into_inner().to_string();
            let message = message
                .strip_prefix(&format!("{path}: "))
                .map(str::to_string)
                .unwrap_or(message);
            ConfigError {
                file: file.to_string(),
                errors: vec![FieldError { path, message }],
            }
        })?;
        let errors = validate::validate(&config);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: file.to_string(),
                errors,
            })
        }
    }

    /// Validates a config built in memory (from xDS, say); `source` names it in errors.
    pub fn check(&self, source: &str) -> Result<(), ConfigError> {
        let listeners: Vec<_> = self.listeners.iter().map(|l| (l, true)).collect();
        let clusters: Vec<_> = self.clusters.iter().map(|c| (c, true)).collect();
        self.check_with(source, &self.secrets, &listeners, &clusters)
    }

    /// Validates this config's settings (admin, limits, identity...) with `secrets`,
    /// `listeners` and `clusters` in place of its own: those marked `true` (changed) in
    /// full, the others for what involves every listener or cluster (unique names and
    /// addresses). A listener left unmarked must have been checked before against
    /// clusters that are all still here. An xDS update checks what it changes.
    pub fn check_with(
        &self,
        source: &str,
        secrets: &[Secret],
        listeners: &[(&Listener, bool)],
        clusters: &[(&Cluster, bool)],
    ) -> Result<(), ConfigError> {
        let errors = validate::validate_parts(self, secrets, listeners, clusters);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                file: source.to_string(),
                errors,
            })
        }
    }
}

#[cfg(test)]
mod tests;

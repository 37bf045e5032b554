//! Istio's own validation cases (istio/api `tests/testdata`, the CRD rules the API server
//! applies; `fixtures/istio-api/SOURCE` names the commit): every invalid resource is
//! refused, and every valid one is accepted, or refused for a field Trellis names as not
//! supported (listed below with why, and in the README).

use std::path::Path;
use trellis_mesh::{load_str, Loaded};

/// Valid cases Trellis refuses, by file and document, with what its refusal says.
const NOT_SUPPORTED: &[(&str, usize, &str)] = &[
    // `experimental.envoy.filters.*` keys: Envoy filter metadata (the issue lets them stay
    // refused); the policy fails closed.
    ("authz-valid.yaml", 0, "experimental.envoy.filters.a.b[c]"),
    (
        "reqauth-valid.yaml",
        0,
        "targetRefs is not supported by Trellis yet",
    ),
    // `addresses: [1.2.3.4, 001:db8::]`: Go's YAML reads the second as a string; YAML
    // 1.2 (serde_yaml) reads `::]` as a key in a flow sequence and refuses the document.
    ("serviceentry-valid.yaml", 0, "not YAML"),
    // unix:// endpoints: Trellis's endpoints are IP addresses or DNS names.
    (
        "workloadentry-valid.yaml",
        2,
        "unix domain socket endpoints are not supported",
    ),
    (
        "workloadentry-valid.yaml",
        3,
        "unix domain socket endpoints are not supported",
    ),
];

struct Case {
    file: String,
    index: usize,
    /// Istio's message for an invalid case.
    err: Option<String>,
    yaml: String,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio-api");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = text.split("\n---\n").filter(|d| d.contains("kind:"));
        for (index, doc) in docs.enumerate() {
            let mut err = None;
            let mut yaml = String::new();
            for line in doc.lines() {
                match line.strip_prefix("_err:") {
                    Some(e) => err = Some(e.trim().trim_matches(['\'', '"']).to_string()),
                    None => {
                        yaml.push_str(line);
                        yaml.push('\n');
                    }
                }
            }
            out.push(Case {
                file: file.clone(),
                index,
                err,
                yaml,
            });
        }
    }
    out
}

#[test]
fn istios_validation_cases_are_refused_and_accepted_as_istio_does() {
    let cases = cases();
    let (mut invalid, mut valid, mut not_supported) = (0, 0, 0);
    let mut wrong = Vec::new();
    for c in &cases {
        let mut loaded = Loaded::default();
        load_str(&c.yaml, &format!("{}#{}", c.file, c.index), &mut loaded);
        trellis_mesh::cross_check(&mut loaded);
        let refused = loaded.refused.first().map(|d| d.message.clone());
        let expected = c.file.ends_with("-invalid.yaml");
        assert_eq!(expected, c.err.is_some(), "{}#{}: _err", c.file, c.index);
        let known = NOT_SUPPORTED
            .iter()
            .find(|(f, i, _)| *f == c.file && *i == c.index);
        match (expected, &refused, known) {
            (true, Some(why), _) => {
                invalid += 1;
                println!(
                    "{}#{}: Istio: {}\n    Trellis: {why}",
                    c.file,
                    c.index,
                    c.err.as_deref().unwrap_or_default()
                );
            }
            (false, None, None) => valid += 1,
            (false, Some(why), Some((_, _, says))) if why.contains(says) => not_supported += 1,
            _ => wrong.push(format!(
                "{}#{}: Istio: {}; Trellis: {}",
                c.file,
                c.index,
                c.err.as_deref().unwrap_or("valid"),
                refused.as_deref().unwrap_or("accepted")
            )),
        }
    }
    println!(
        "istio/api validation cases: {} invalid refused, {valid} valid accepted, {not_supported} valid refused as not supported, {} wrong",
        invalid,
        wrong.len()
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(cases.len() > 60, "{} cases", cases.len());
}

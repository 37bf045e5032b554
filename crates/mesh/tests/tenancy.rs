//! Tenants: the documents (bad ones refused by field, across documents too, the previous
//! version serving on), and what a sidecar trusts once the control plane resolved the
//! tenants' roots: its own tenant's, and those of the tenants federated in the
//! direction of the traffic, each bound to its trust domain.

use std::collections::BTreeMap;
use std::sync::Arc;
use trellis_mesh::tenant::Trust;
use trellis_mesh::{generate, load_str, Inputs, Loaded, Registry};

const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web, namespace: team-a }
spec:
  hosts: [web.team-a.svc.cluster.local]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: web } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api, namespace: team-b }
spec:
  hosts: [api.team-b.svc.cluster.local]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: api } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web
  namespace: team-a
  annotations: { sidecar.trellis.dev/app-ports: "http=18000" }
spec:
  address: 127.0.0.1
  ports: { http: 28000 }
  labels: { app: web }
  serviceAccount: web
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: api
  namespace: team-b
  annotations: { sidecar.trellis.dev/app-ports: "http=18001" }
spec:
  address: 127.0.0.2
  ports: { http: 28001 }
  labels: { app: api }
  serviceAccount: api
"#;

fn tenant(name: &str, ns: &str, td: &str, extra: &str) -> String {
    format!(
        "apiVersion: trellis.io/v1alpha1\nkind: Tenant\nmetadata: {{ name: {name} }}\nspec:\n  namespaces: [{ns}]\n  trustDomain: {td}\n{extra}---\n"
    )
}

fn load(docs: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_str(REGISTRY, "registry.yaml", &mut loaded);
    load_str(docs, "tenants.yaml", &mut loaded);
    trellis_mesh::cross_check(&mut loaded);
    loaded
        .inputs
        .keep_previous(&Inputs::default(), &mut loaded.refused);
    loaded
}

fn refusals(loaded: &Loaded) -> Vec<String> {
    loaded.refused.iter().map(|d| d.to_string()).collect()
}

#[test]
fn bad_tenants_are_refused_by_file_field_and_value() {
    let cases = [
        (
            tenant("a", "team-a", "a.example", "  colour: blue\n"),
            "spec.colour is not supported by Trellis",
        ),
        (
            tenant("a", "team-a", "A_Example!", ""),
            "spec.trustDomain: \"A_Example!\"",
        ),
        (
            tenant("a", "Team_A", "a.example", ""),
            "spec.namespaces[0]: \"Team_A\"",
        ),
        (
            tenant(
                "a",
                "team-a",
                "a.example",
                "  ca: { generated: r1, certFile: /x.pem, keyFile: /x.key }\n",
            ),
            "spec.ca: give generated or certFile and keyFile, not both",
        ),
        (
            tenant("a", "team-a", "a.example", "  ca: { keyFile: /x.key }\n"),
            "spec.ca.certFile: required with keyFile",
        ),
        (
            tenant(
                "a",
                "team-a",
                "a.example",
                "  previousRoots: [{ rootFile: /r.pem, pem: x }]\n",
            ),
            "spec.previousRoots[0]: give exactly one of generated, rootFile, pem",
        ),
        (
            tenant(
                "a",
                "team-a",
                "a.example",
                "  federation: [{ tenant: b, direction: Sideways }]\n",
            ),
            "spec.federation",
        ),
        (
            tenant("default", "team-a", "a.example", ""),
            "metadata.name: \"default\" is the tenant of the namespaces no Tenant claims",
        ),
        (
            tenant(
                "a",
                "team-a",
                "a.example",
                "  federation: [{ tenant: nobody, direction: Both }]\n",
            ),
            "tenants.yaml#1 Tenant a: spec.federation[0].tenant: no tenant \"nobody\"",
        ),
    ];
    for (doc, want) in cases {
        let loaded = load(&doc);
        let r = refusals(&loaded);
        assert_eq!(r.len(), 1, "{doc}: {r:#?}");
        assert!(r[0].contains(want), "{doc}: {} lacks {want:?}", r[0]);
        assert!(loaded.inputs.tenants.is_empty());
    }
}

#[test]
fn a_namespace_or_trust_domain_has_one_tenant_and_a_federation_needs_its_tenant() {
    let docs = [
        tenant("a", "team-a", "a.example", ""),
        tenant("b", "team-a", "b.example", ""),
        tenant("c", "team-c", "a.example", ""),
        // d federates with b, which is refused: d goes too.
        tenant(
            "d",
            "team-d",
            "d.example",
            "  federation: [{ tenant: b, direction: Outbound }]\n",
        ),
    ]
    .concat();
    let loaded = load(&docs);
    let r = refusals(&loaded);
    assert_eq!(r.len(), 3, "{r:#?}");
    assert!(
        r[0].contains("Tenant b: spec.namespaces: \"team-a\" already belongs to tenant \"a\""),
        "{}",
        r[0]
    );
    assert!(
        r[1].contains("Tenant c: spec.trustDomain: \"a.example\" is already tenant \"a\"'s"),
        "{}",
        r[1]
    );
    assert!(
        r[2].contains("Tenant d: spec.federation[0].tenant: no tenant \"b\""),
        "{}",
        r[2]
    );
    let names: Vec<&str> = loaded
        .inputs
        .tenants
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn a_refused_edit_keeps_the_previous_tenant() {
    let good = load(&tenant("a", "team-a", "a.example", ""));
    assert!(good.refused.is_empty());
    let mut bad = Loaded::default();
    load_str(
        &tenant("a", "team-a", "not valid", ""),
        "tenants.yaml",
        &mut bad,
    );
    trellis_mesh::cross_check(&mut bad);
    bad.inputs.keep_previous(&good.inputs, &mut bad.refused);
    assert_eq!(bad.inputs.tenants, good.inputs.tenants);
    assert!(
        bad.refused[0]
            .message
            .contains("the previous version keeps serving"),
        "{}",
        bad.refused[0]
    );
}

const ROOT_A: &str = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n";
const ROOT_B: &str = "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n";
const ROOT_MESH: &str = "-----BEGIN CERTIFICATE-----\nM\n-----END CERTIFICATE-----\n";

/// The view of `workload` with the tenants' roots resolved as the control plane does.
fn view(loaded: &Loaded, namespace: &str, workload: &str) -> trellis_config::Config {
    let mut inputs = loaded.inputs.clone();
    let roots = BTreeMap::from([
        ("a".to_string(), ROOT_A.to_string()),
        ("b".to_string(), ROOT_B.to_string()),
    ]);
    inputs.trust = Some(Arc::new(Trust::new(
        inputs.tenants.iter().map(|t| (t.name.as_str(), &t.spec)),
        ("cluster.local", ROOT_MESH),
        &roots,
        inputs.mesh_config.first().map(|m| &m.spec),
    )));
    let registry = Registry::from_inputs(&inputs);
    generate(&inputs, &registry, namespace, workload).unwrap()
}

fn domains(bundles: &[trellis_config::TrustBundle]) -> Vec<(&str, &str)> {
    bundles
        .iter()
        .map(|b| (b.trust_domain.as_str(), b.roots.as_str()))
        .collect()
}

#[test]
fn a_sidecar_trusts_its_tenant_and_the_federated_direction_only() {
    // Apart: web (a) trusts a.example alone, both ways; its cluster for api (b)
    // expects b's identity, which a's roots cannot verify.
    let apart = load(
        &[
            tenant("a", "team-a", "a.example", ""),
            tenant("b", "team-b", "b.example", ""),
        ]
        .concat(),
    );
    assert!(apart.refused.is_empty(), "{:#?}", apart.refused);
    let web = view(&apart, "team-a", "web");
    let inbound = web
        .listeners
        .iter()
        .find(|l| l.name.starts_with("inbound|"))
        .unwrap();
    let tls = inbound.tls.as_ref().unwrap();
    assert_eq!(tls.trusted_ca, None);
    assert_eq!(domains(&tls.trust_bundles), [("a.example", ROOT_A)]);
    let to_api = web
        .clusters
        .iter()
        .find(|c| c.name == "outbound|80||api.team-b.svc.cluster.local")
        .unwrap();
    let up = to_api.tls.as_ref().unwrap();
    assert_eq!(up.trusted_ca, "");
    assert_eq!(domains(&up.trust_bundles), [("a.example", ROOT_A)]);
    assert_eq!(up.match_identities, ["spiffe://b.example/ns/team-b/sa/api"]);

    // a calls b (Outbound, declared by a): web's clusters trust b too, api's inbound
    // accepts a; api's clusters and web's inbound do not change.
    let federated = load(
        &[
            tenant(
                "a",
                "team-a",
                "a.example",
                "  federation: [{ tenant: b, direction: Outbound }]\n",
            ),
            tenant("b", "team-b", "b.example", ""),
        ]
        .concat(),
    );
    let web = view(&federated, "team-a", "web");
    let api = view(&federated, "team-b", "api");
    let cluster = |c: &trellis_config::Config, name: &str| {
        c.clusters
            .iter()
            .find(|x| x.name == name)
            .unwrap()
            .tls
            .clone()
            .unwrap()
    };
    let inbound = |c: &trellis_config::Config| {
        c.listeners
            .iter()
            .find(|l| l.name.starts_with("inbound|"))
            .unwrap()
            .tls
            .clone()
            .unwrap()
    };
    assert_eq!(
        domains(&cluster(&web, "outbound|80||api.team-b.svc.cluster.local").trust_bundles),
        [("a.example", ROOT_A), ("b.example", ROOT_B)]
    );
    assert_eq!(
        domains(&inbound(&api).trust_bundles),
        [("b.example", ROOT_B), ("a.example", ROOT_A)]
    );
    assert_eq!(
        domains(&inbound(&web).trust_bundles),
        [("a.example", ROOT_A)]
    );
    assert_eq!(
        domains(&cluster(&api, "outbound|80||web.team-a.svc.cluster.local").trust_bundles),
        [("b.example", ROOT_B)]
    );

    // Both ways, declared by b about a; and with the default tenant (unclaimed
    // namespaces, the mesh CA).
    let both = load(
        &[
            tenant("a", "team-a", "a.example", ""),
            tenant("b", "team-b", "b.example", "  federation: [{ tenant: a, direction: Both }, { tenant: default, direction: Inbound }]\n"),
        ]
        .concat(),
    );
    let web = view(&both, "team-a", "web");
    let api = view(&both, "team-b", "api");
    assert_eq!(
        domains(&inbound(&web).trust_bundles),
        [("a.example", ROOT_A), ("b.example", ROOT_B)]
    );
    assert_eq!(
        domains(&inbound(&api).trust_bundles),
        [
            ("b.example", ROOT_B),
            ("a.example", ROOT_A),
            ("cluster.local", ROOT_MESH)
        ]
    );
}

#[test]
fn policies_name_identities_in_the_sidecars_tenant_and_its_aliases() {
    // api (tenant b, formerly trust domain old-b.example) admits web of tenant a
    // (federated) by its full identity, and its own callers as Istio's docs write
    // them, with `cluster.local` standing for the local trust domain.
    let policy = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: callers, namespace: team-b }
spec:
  action: ALLOW
  rules:
    - from: [{ source: { principals: ["cluster.local/ns/team-b/sa/web", "old-b.example/ns/team-b/sa/job", "a.example/ns/team-a/sa/web"] } }]
    - from: [{ source: { trustDomains: [old-b.example] } }]
---
"#;
    let docs = [
        tenant(
            "a",
            "team-a",
            "a.example",
            "  federation: [{ tenant: b, direction: Outbound }]\n",
        ),
        tenant(
            "b",
            "team-b",
            "b.example",
            "  trustDomainAliases: [old-b.example]\n",
        ),
        policy.to_string(),
    ]
    .concat();
    let loaded = load(&docs);
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let api = view(&loaded, "team-b", "api");
    let inbound = api
        .listeners
        .iter()
        .find(|l| l.name.starts_with("inbound|"))
        .unwrap();
    let p = &inbound.authorization.as_ref().unwrap().policies[0];
    assert_eq!(
        p.rules[0].from[0].source.principals,
        [
            "b.example/ns/team-b/sa/web",
            "old-b.example/ns/team-b/sa/web",
            "b.example/ns/team-b/sa/job",
            "old-b.example/ns/team-b/sa/job",
            "a.example/ns/team-a/sa/web",
        ]
    );
    assert_eq!(
        p.rules[1].from[0].source.trust_domains,
        ["b.example", "old-b.example"]
    );
}

/// The `istio` ConfigMap as Istio's installer writes it (operator/cmd/mesh/testdata/
/// manifest-generate/output/pilot_default.golden.yaml, istio/istio), labels left out.
const ISTIO_CONFIGMAP: &str = r#"
apiVersion: v1
data:
  mesh: |-
    defaultConfig:
      discoveryAddress: istiod.istio-system.svc:15012
    defaultProviders:
      metrics:
      - prometheus
    enablePrometheusMerge: true
    rootNamespace: istio-control
    trustDomain: cluster.local
  meshNetworks: 'networks: {}'
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
---
"#;

const PEM_1: &str = "-----BEGIN CERTIFICATE-----\n1\n-----END CERTIFICATE-----\n";
const PEM_2: &str = "-----BEGIN CERTIFICATE-----\n2\n-----END CERTIFICATE-----\n";

/// The meshConfig of Istio's external CA integration test
/// (tests/integration/security/external_ca/main_test.go, istio/istio), as an
/// IstioOperator: two signers' roots, the default signer, trust domain aliases.
fn external_ca_operator() -> String {
    format!(
        r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {{ name: external-ca, namespace: istio-system }}
spec:
  meshConfig:
    defaultConfig:
      proxyMetadata:
        ISTIO_META_CERT_SIGNER: signer1
    trustDomainAliases: [some-other, trust-domain-foo]
    caCertificates:
    - pem: |
{pem1}      certSigners:
      - signer1
    - pem: |
{pem2}      certSigners:
      - signer2
  values:
    pilot:
      env:
        EXTERNAL_CA: ISTIOD_RA_KUBERNETES_API
---
"#,
        pem1 = indent(PEM_1, 8),
        pem2 = indent(PEM_2, 8)
    )
}

fn indent(text: &str, n: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

#[test]
fn istios_mesh_config_is_read_for_whom_to_trust() {
    // The installer's ConfigMap names a root namespace Trellis does not have: refused.
    let loaded = load(ISTIO_CONFIGMAP);
    let r = refusals(&loaded);
    assert_eq!(r.len(), 1, "{r:#?}");
    assert!(
        r[0].contains("ConfigMap istio-system/istio: data.mesh.rootNamespace: \"istio-control\""),
        "{}",
        r[0]
    );
    // With Istio's default root namespace: read, and what is not read is said.
    let loaded = load(&ISTIO_CONFIGMAP.replace("istio-control", "istio-system"));
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let warned: Vec<String> = loaded.warnings.iter().map(|w| w.message.clone()).collect();
    for field in [
        "data.meshNetworks",
        "data.mesh.defaultConfig.discoveryAddress",
        "data.mesh.defaultProviders",
        "data.mesh.enablePrometheusMerge",
    ] {
        assert!(
            warned.iter().any(|w| w.starts_with(field)),
            "{field}: {warned:#?}"
        );
    }
    assert_eq!(
        loaded.inputs.mesh_config[0].spec.trust_domain.as_deref(),
        Some("cluster.local")
    );

    // Istio's external CA form: signer1 is the default tenant's (team-a here), signer2
    // tenant b's; each gets its signer's root for its own trust domain, and no other.
    let loaded = load(
        &[
            external_ca_operator(),
            tenant("b", "team-b", "b.example", "  certSigner: signer2\n"),
        ]
        .concat(),
    );
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.message.starts_with("spec.values: install-time settings")));
    let web = view(&loaded, "team-a", "web");
    let api = view(&loaded, "team-b", "api");
    let inbound = |c: &trellis_config::Config| {
        c.listeners
            .iter()
            .find(|l| l.name.starts_with("inbound|"))
            .unwrap()
            .tls
            .clone()
            .unwrap()
            .trust_bundles
    };
    let mesh_and_1 = format!("{ROOT_MESH}{PEM_1}");
    let b_and_2 = format!("{ROOT_B}{PEM_2}");
    assert_eq!(
        domains(&inbound(&web)),
        [("cluster.local", mesh_and_1.as_str())]
    );
    assert_eq!(domains(&inbound(&api)), [("b.example", b_and_2.as_str())]);
    // The aliases reach the default tenant's policies.
    let trust = Trust::new(
        loaded
            .inputs
            .tenants
            .iter()
            .map(|t| (t.name.as_str(), &t.spec)),
        ("cluster.local", ROOT_MESH),
        &BTreeMap::new(),
        Some(&loaded.inputs.mesh_config[0].spec),
    );
    assert_eq!(
        trust.tenant_of("team-a").aliases,
        ["some-other", "trust-domain-foo"]
    );
    assert_eq!(
        trust.tenant_of("team-a").cert_signer.as_deref(),
        Some("signer1")
    );

    // Roots of a trust domain outside the mesh: trusted both ways by the tenants named.
    let partner = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: istio, namespace: istio-system }}\ndata:\n  mesh: |\n    caCertificates:\n    - pem: |\n{}      trustDomains: [partner.example]\n      certSigners: [signer2]\n---\n",
        indent(PEM_2, 8)
    );
    let loaded = load(
        &[
            partner,
            tenant("b", "team-b", "b.example", "  certSigner: signer2\n"),
        ]
        .concat(),
    );
    assert!(loaded.refused.is_empty(), "{:#?}", loaded.refused);
    let api = view(&loaded, "team-b", "api");
    let web = view(&loaded, "team-a", "web");
    assert_eq!(
        domains(&inbound(&api)),
        [("b.example", ROOT_B), ("partner.example", PEM_2)]
    );
    assert_eq!(domains(&inbound(&web)), [("cluster.local", ROOT_MESH)]);

    // Refused by field: a SPIFFE bundle URL, a missing PEM, a ConfigMap that is not
    // the meshConfig, a second meshConfig.
    for (doc, want) in [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: istio, namespace: istio-system }\ndata:\n  mesh: |\n    caCertificates: [{ spiffeBundleUrl: \"https://x/bundle\" }]\n",
            "data.mesh.caCertificates[0].spiffeBundleUrl: fetching SPIFFE bundles is not supported",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: istio, namespace: istio-system }\ndata:\n  mesh: |\n    caCertificates: [{ pem: \"nothing\" }]\n",
            "data.mesh.caCertificates[0].pem: no PEM certificate",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: istio, namespace: istio-system }\ndata:\n  mesh: |\n    meshMTLS: { minProtocolVersion: TLSV1_3, cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384] }\n",
            "data.mesh.meshMTLS.cipherSuites: restricting them is not supported by Trellis",
        ),
        (
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: { name: x, namespace: istio-system }\nspec:\n  meshConfig:\n    tlsDefaults: { ecdhCurves: [P-256] }\n",
            "spec.meshConfig.tlsDefaults.ecdhCurves: restricting them is not supported by Trellis",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: settings, namespace: team-a }\ndata: { a: b }\n",
            "of ConfigMaps only istio-system/istio (Istio's meshConfig) is read",
        ),
    ] {
        let r = refusals(&load(doc));
        assert_eq!(r.len(), 1, "{doc}: {r:#?}");
        assert!(r[0].contains(want), "{} lacks {want:?}", r[0]);
    }
    // A minimum TLS version alone is met (the mesh's TLS is 1.3 only): read, no refusal.
    let min = load("apiVersion: v1\nkind: ConfigMap\nmetadata: { name: istio, namespace: istio-system }\ndata:\n  mesh: |\n    meshMTLS: { minProtocolVersion: TLSV1_3 }\n");
    assert!(
        min.refused.is_empty() && min.warnings.is_empty(),
        "{min:#?}"
    );
    let two = [
        ISTIO_CONFIGMAP.replace("istio-control", "istio-system"),
        external_ca_operator(),
    ]
    .concat();
    let r = refusals(&load(&two));
    assert_eq!(r.len(), 1, "{r:#?}");
    assert!(r[0].contains("a second meshConfig"), "{}", r[0]);
}

#[test]
fn a_namespace_selector_takes_labelled_namespaces_but_not_listed_ones() {
    let sel = "  namespaceSelector: { matchLabels: { tier: pay } }\n";
    let docs = [
        tenant("a", "team-a", "a.example", ""),
        // Selects team-b and team-c by label; team-a is listed by a, so stays a's.
        format!(
            "apiVersion: trellis.io/v1alpha1\nkind: Tenant\nmetadata: {{ name: b }}\nspec:\n  trustDomain: b.example\n{sel}---\n"
        ),
        // Selects team-b too: refused, b has it.
        "apiVersion: trellis.io/v1alpha1\nkind: Tenant\nmetadata: { name: c }\nspec:\n  trustDomain: c.example\n  namespaceSelector: { matchLabels: { zone: x } }\n---\n".to_string(),
    ]
    .concat();
    let mut loaded = Loaded::default();
    load_str(REGISTRY, "registry.yaml", &mut loaded);
    load_str(&docs, "tenants.yaml", &mut loaded);
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    loaded.inputs.namespace_labels = BTreeMap::from([
        ("team-a".to_string(), labels(&[("tier", "pay")])),
        (
            "team-b".to_string(),
            labels(&[("tier", "pay"), ("zone", "x")]),
        ),
        ("team-c".to_string(), labels(&[("tier", "pay")])),
        ("team-d".to_string(), labels(&[("tier", "web")])),
    ]);
    trellis_mesh::cross_check(&mut loaded);
    let r = refusals(&loaded);
    assert_eq!(r.len(), 1, "{r:#?}");
    assert!(
        r[0].contains("Tenant c: spec.namespaceSelector: selects namespace \"team-b\", which already belongs to tenant \"b\""),
        "{}",
        r[0]
    );
    let b = &loaded.inputs.tenants[1];
    assert_eq!(b.spec.selected, ["team-b", "team-c"]);
    // The api workload (team-b) is b's: its inbound trusts b.example.
    let api = view(&loaded, "team-b", "api");
    let inbound = api
        .listeners
        .iter()
        .find(|l| l.name.starts_with("inbound|"))
        .unwrap();
    assert_eq!(
        domains(&inbound.tls.as_ref().unwrap().trust_bundles),
        [("b.example", ROOT_B)]
    );

    // Outside Kubernetes mode there are no labels: it selects nothing, and says so.
    let loaded = load(&docs);
    assert!(loaded.warnings.iter().any(|w| w
        .message
        .starts_with("spec.namespaceSelector: no namespace labels are known")));
    let r = refusals(&loaded);
    assert!(r.is_empty(), "{r:#?}");
}

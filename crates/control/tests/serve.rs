//! The control plane in-process, as `trellis control` runs it (istiod's role): the
//! embedded CA certifies a workload for its bootstrap token, and the workload's xDS
//! client, presenting that certificate on the CA's port, gets its own view, and only
//! its own.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::x509::{X509Req, X509};
use trellis_ca::{CaClient, CaConfig, Credential, TokenIssuer};
use trellis_control::{serve, Options};
use trellis_tls::{CertifiedKey, ClientTls, ClientTlsConfig, InMemoryKey, SpiffeId, TlsVersion};
use trellis_xds::client::{self, ClientOptions, ClientState, Interest, Mode, Subscriber};
use trellis_xds::pb::envoy::config::core::v3::Node;
use trellis_xds::LISTENER;

const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1
  namespace: default
  annotations: { sidecar.trellis.dev/app-ports: "http=19080" }
spec:
  address: 127.0.0.1
  ports: { http: 29080 }
  labels: { app: reviews }
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: productpage-v1
  namespace: default
  annotations: { sidecar.trellis.dev/app-ports: "http=19081" }
spec:
  address: 127.0.0.1
  ports: { http: 29081 }
  labels: { app: productpage }
  serviceAccount: productpage
"#;

/// Records the listener names of every accepted update.
#[derive(Clone, Default)]
struct Listeners(Arc<Mutex<Option<BTreeSet<String>>>>);

#[tonic::async_trait]
impl Subscriber for Listeners {
    fn interest(&self, _: &ClientState) -> Interest {
        vec![(LISTENER, None)]
    }

    async fn apply(&mut self, state: &ClientState) -> Result<(), String> {
        let names = state.of(LISTENER).map(|(n, _)| n.to_string()).collect();
        *self.0.lock().unwrap() = Some(names);
        Ok(())
    }
}

fn csr(key: &PKey<Private>) -> String {
    let mut b = X509Req::builder().unwrap();
    b.set_pubkey(key).unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

/// An xDS client of `node` over mutual TLS with `cert`.
fn xds_client(
    ca: std::net::SocketAddr,
    roots: Vec<X509>,
    cert: CertifiedKey,
    node: &str,
) -> (Listeners, tokio::task::JoinHandle<()>) {
    let dial: client::Dial = Arc::new(move || {
        let (roots, cert) = (roots.clone(), cert.clone());
        Box::pin(async move {
            let tls = ClientTls::new(ClientTlsConfig {
                bundles: Vec::new(),
                roots,
                certificate: Some(cert),
                sni: Some("localhost".into()),
                alpn: vec!["h2".into()],
                stream_alpn: Vec::new(),
                min_version: TlsVersion::Tls12,
                max_version: TlsVersion::Tls13,
                expected_identities: vec!["localhost".into()],
                key_op_hook: None,
            })
            .map_err(std::io::Error::other)?;
            let tcp = tokio::net::TcpStream::connect(ca).await?;
            let (stream, _) = tls.connect(tcp).await.map_err(std::io::Error::other)?;
            Ok(Box::new(stream) as Box<dyn client::Stream>)
        })
    });
    let listeners = Listeners::default();
    let options = ClientOptions {
        address: ca.to_string(),
        node: Node {
            id: node.into(),
            ..Default::default()
        },
        mode: Mode::Delta,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        dial: Some(dial),
    };
    let task = tokio::spawn(client::run(options, listeners.clone()));
    (listeners, task)
}

#[tokio::test]
async fn istiod_in_process_certifies_a_sidecar_and_serves_it_its_own_view_only() {
    let mesh = tempfile::tempdir().unwrap();
    std::fs::write(mesh.path().join("mesh.yaml"), MESH).unwrap();
    let state = tempfile::tempdir().unwrap();
    let serving = serve(Options {
        config_dirs: vec![mesh.path().to_path_buf()],
        kube: None,
        plaintext_xds: None,
        ca: Some((
            CaConfig {
                state_dir: state.path().to_path_buf(),
                trust_domain: "cluster.local".into(),
                server_names: vec!["localhost".into()],
                signing: None,
                max_cert_ttl: Duration::from_secs(24 * 3600),
                kube_review: None,
                ra: None,
            },
            "127.0.0.1:0".parse().unwrap(),
        )),
        poll_interval: Duration::from_millis(50),
        status_listen: None,
        dashboard: None,
    })
    .await
    .unwrap();
    assert_eq!(
        serving.plaintext_xds, None,
        "no plaintext port unless asked for"
    );
    let ca = serving.ca.unwrap();
    let roots = X509::stack_from_pem(serving.root_pem.as_ref().unwrap().as_bytes()).unwrap();

    // The CA certifies reviews for its bootstrap token.
    let token = TokenIssuer::load_or_create(state.path()).unwrap().issue(
        &SpiffeId::new("cluster.local", "default", "reviews"),
        Duration::from_secs(60),
    );
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let chain = CaClient {
        address: ca.to_string(),
        server_name: "localhost".into(),
        roots: roots.clone(),
    }
    .create_certificate(
        &csr(&key),
        Duration::from_secs(3600),
        Credential::Token(&token),
    )
    .await
    .unwrap();
    let cert = CertifiedKey {
        chain: chain[..1]
            .iter()
            .map(|p| X509::from_pem(p.as_bytes()).unwrap())
            .collect(),
        provider: Arc::new(InMemoryKey::new(key).unwrap()),
    };

    // With it, reviews' own view: its inbound listener and the outbound one.
    let own = "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local";
    let (listeners, task) = xds_client(ca, roots.clone(), cert.clone(), own);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let names = loop {
        if let Some(names) = listeners.0.lock().unwrap().clone() {
            break names;
        }
        assert!(std::time::Instant::now() < deadline, "no view for reviews");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(names.contains("inbound|29080"), "{names:?}");
    task.abort();

    // Productpage's view with reviews' certificate: refused, nothing arrives.
    let other = "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local";
    let (listeners, task) = xds_client(ca, roots, cert, other);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        listeners.0.lock().unwrap().is_none(),
        "an impostor got a view"
    );
    task.abort();
    assert_eq!(serving.plane.status().borrow().workloads, 2);
}

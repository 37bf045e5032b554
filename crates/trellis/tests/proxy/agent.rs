//! `trellis agent`, as a stock Envoy sees it: the secrets on its SDS socket are the
//! workload certificate with its key and the mesh roots, and a renewed certificate
//! reaches an open stream.

use super::harness::*;
use boring::pkey::PKey;
use boring::x509::X509;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trellis_xds::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use trellis_xds::pb::envoy::service::discovery::v3::DiscoveryRequest;
use trellis_xds::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;

/// `trellis agent` for workload `name` of namespace `default` with a token for service
/// account `account`; the bootstrap it writes.
pub(super) fn agent(
    c: &Control,
    name: &str,
    account: &str,
    router: bool,
    sotw: bool,
    extra: &[&str],
) -> (Proc, PathBuf) {
    agent_in(c, name, "default", account, router, sotw, extra)
}

/// The same in namespace `ns`.
pub(super) fn agent_in(
    c: &Control,
    name: &str,
    ns: &str,
    account: &str,
    router: bool,
    sotw: bool,
    extra: &[&str],
) -> (Proc, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = c.ca.root_file(dir.path());
    let token = c.ca.token_file(
        dir.path(),
        &format!("spiffe://cluster.local/ns/{ns}/sa/{account}"),
    );
    let sockets = dir.path().join("run");
    let bootstrap = sockets.join("envoy.json");
    let ca = c.ca.addr.to_string();
    let sockets_arg = sockets.display().to_string();
    let mut args = vec![
        "agent",
        "--control",
        &ca,
        "--ca-root",
        &root,
        "--token-file",
        &token,
        "--name",
        name,
        "--namespace",
        ns,
        "--dir",
        &sockets_arg,
    ];
    if router {
        args.push("--router");
    }
    if sotw {
        args.push("--xds-sotw");
    }
    args.extend_from_slice(extra);
    let mut p = Proc::spawn(&args, dir);
    // The bootstrap is written at start; the certificate comes after, and the agent's
    // sockets wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !bootstrap.exists() {
        assert!(
            p.wait_exit(std::time::Duration::from_millis(20)).is_none(),
            "the agent exited:\n{}",
            p.log()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no bootstrap:\n{}",
            p.log()
        );
    }
    (p, bootstrap)
}

/// An SDS client on the agent's socket, as Envoy's `sds-grpc` cluster is.
async fn sds_client(socket: &Path) -> SecretDiscoveryServiceClient<tonic::transport::Channel> {
    let socket = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://sds-grpc")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    SecretDiscoveryServiceClient::new(channel)
}

fn pem(source: &Option<trellis_xds::pb::envoy::config::core::v3::DataSource>) -> Vec<u8> {
    use trellis_xds::pb::envoy::config::core::v3::data_source::Specifier;
    match source.as_ref().and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => b.clone(),
        other => panic!("not inline bytes: {other:?}"),
    }
}

#[tokio::test]
async fn the_agent_serves_the_workload_certificate_over_sds_and_pushes_a_renewal() {
    let _quiet = quiet().await;
    let mesh = tempfile::tempdir().unwrap();
    let c = control(mesh.path());
    // A 6 s certificate: renewed after about 3 s.
    let (agent, bootstrap) = agent(
        &c,
        "reviews-v1",
        "reviews",
        false,
        false,
        &["--cert-ttl", "6s"],
    );
    let socket = bootstrap.parent().unwrap().join("sds.sock");
    let mut client = sds_client(&socket).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let node = trellis_xds::pb::envoy::config::core::v3::Node {
        id: "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local".into(),
        ..Default::default()
    };
    let ask = |version: String, nonce: String| DiscoveryRequest {
        node: Some(node.clone()),
        type_url: trellis_envoy::SECRET.into(),
        resource_names: vec!["ROOTCA".into(), "default".into()],
        version_info: version,
        response_nonce: nonce,
        ..Default::default()
    };
    tx.send(ask(String::new(), String::new())).await.unwrap();
    let mut responses = client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut serials = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while serials.len() < 2 {
        let r = tokio::time::timeout_at(deadline, responses.message())
            .await
            .unwrap_or_else(|_| panic!("no renewal pushed:\n{}", agent.log()))
            .unwrap()
            .unwrap();
        tx.send(ask(r.version_info.clone(), r.nonce.clone()))
            .await
            .unwrap();
        let mut leaf = None;
        for any in &r.resources {
            let s = Secret::decode(any.value.as_slice()).unwrap();
            match s.r#type.unwrap() {
                secret::Type::TlsCertificate(t) => {
                    assert_eq!(s.name, "default");
                    let chain = X509::stack_from_pem(&pem(&t.certificate_chain)).unwrap();
                    let key = PKey::private_key_from_pem(&pem(&t.private_key)).unwrap();
                    // The key is the certificate's, and the certificate names the workload.
                    assert!(chain[0].public_key().unwrap().public_eq(&key));
                    let uri = chain[0].subject_alt_names().unwrap()[0]
                        .uri()
                        .unwrap()
                        .to_string();
                    assert_eq!(uri, "spiffe://cluster.local/ns/default/sa/reviews");
                    leaf = Some(
                        chain[0]
                            .serial_number()
                            .to_bn()
                            .unwrap()
                            .to_hex_str()
                            .unwrap()
                            .to_string(),
                    );
                }
                secret::Type::ValidationContext(v) => {
                    assert_eq!(s.name, "ROOTCA");
                    let roots = X509::stack_from_pem(&pem(&v.trusted_ca)).unwrap();
                    let ca = X509::from_pem(c.ca.root_pem.as_bytes()).unwrap();
                    assert!(roots
                        .iter()
                        .any(|r| r.to_der().unwrap() == ca.to_der().unwrap()));
                }
                other => panic!("unexpected secret {other:?}"),
            }
        }
        let leaf = leaf.expect("the certificate in every response");
        if serials.last() != Some(&leaf) {
            serials.push(leaf);
        }
    }
    assert_ne!(serials[0], serials[1]);
}

#[test]
fn the_agent_refuses_what_it_cannot_use_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing");
    let out = std::process::Command::new(BIN)
        .args(["agent", "--control", "127.0.0.1:1", "--name", "w"])
        .arg("--ca-root")
        .arg(&missing)
        .arg("--token-file")
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ca-root") && err.contains("no such file"),
        "{err}"
    );
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "agent",
            "--control",
            "127.0.0.1:1",
            "--name",
            "w",
            "--key-type",
            "dsa",
        ])
        .arg("--ca-root")
        .arg(&file)
        .arg("--token-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--key-type \"dsa\""), "{err}");
}

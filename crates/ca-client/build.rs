//! Generates the gRPC client (and, with the `server` feature, the server stub) for
//! Istio's certificate service from a Rust description (no protoc needed); the
//! messages are hand-written in src/proto.rs.

fn main() {
    let service = tonic_build::manual::Service::builder()
        .name("IstioCertificateService")
        .package("istio.v1.auth")
        .method(
            tonic_build::manual::Method::builder()
                .name("create_certificate")
                .route_name("CreateCertificate")
                .input_type("crate::proto::IstioCertificateRequest")
                .output_type("crate::proto::IstioCertificateResponse")
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .compile(&[service]);
}

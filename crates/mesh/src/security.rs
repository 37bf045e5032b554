//! A workload's security policy in the proxy's terms: the mutual TLS mode its inbound
//! ports take (PeerAuthentication) and the authorization policies that apply to it
//! (AuthorizationPolicy), each with the fail-closed stand-ins of refused resources.

use trellis_config as tc;

use crate::annotations::DRY_RUN;
use crate::fail_closed::{FailClosed, Stance};
use crate::inputs::{selects, Inputs, Resource};
use crate::istio::{self, MtlsMode};
use crate::{Workload, ROOT_NAMESPACE};

/// Whether a namespace-wide or selecting resource in `namespace` applies to `w`:
/// without a selector, to every workload of its namespace (of the mesh in the root
/// namespace); with one, to the workloads of its namespace it selects.
fn applies(namespace: &str, selector: Option<&istio::Labels>, w: &Workload) -> bool {
    match selector {
        None => namespace == w.namespace || namespace == ROOT_NAMESPACE,
        Some(labels) => namespace == w.namespace && selects(labels, &w.labels),
    }
}

fn stand_ins<'a>(
    inputs: &'a Inputs,
    kind: &'a str,
    w: &'a Workload,
) -> impl Iterator<Item = &'a Resource<FailClosed>> {
    inputs
        .fail_closed
        .iter()
        .filter(move |f| f.spec.kind == kind && applies(&f.namespace, f.spec.selector.as_ref(), w))
}

/// The mutual TLS mode of `w`'s inbound `port` (the application's port): the
/// workload's own PeerAuthentication (its port level first), else the namespace's,
/// else the mesh's; PERMISSIVE when none says (Istio's default). A refused
/// PeerAuthentication that could apply makes it STRICT.
pub fn mtls_mode(inputs: &Inputs, w: &Workload, port: u16) -> MtlsMode {
    if stand_ins(inputs, "PeerAuthentication", w).next().is_some() {
        return MtlsMode::Strict;
    }
    let pas = &inputs.peer_authentications;
    let own =
        pas.iter().find(|pa| {
            pa.namespace == w.namespace
                && pa.spec.selector.as_ref().is_some_and(|s| {
                    !s.match_labels.is_empty() && selects(&s.match_labels, &w.labels)
                })
        });
    let without_selector = |pa: &&Resource<istio::PeerAuthentication>| {
        pa.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    let ns = pas
        .iter()
        .filter(without_selector)
        .find(|pa| pa.namespace == w.namespace);
    let mesh = pas
        .iter()
        .filter(without_selector)
        .find(|pa| pa.namespace == ROOT_NAMESPACE);
    let mut mode = MtlsMode::Unset;
    for pa in [mesh, ns, own].into_iter().flatten() {
        if let Some(m) = pa
            .spec
            .mtls
            .as_ref()
            .map(|m| m.mode)
            .filter(|m| *m != MtlsMode::Unset)
        {
            mode = m;
        }
    }
    if let Some(m) = own
        .and_then(|pa| pa.spec.port_level_mtls.as_ref())
        .and_then(|ports| ports.get(&u32::from(port)))
        .map(|m| m.mode)
        .filter(|m| *m != MtlsMode::Unset)
    {
        mode = m;
    }
    if mode == MtlsMode::Unset {
        MtlsMode::Permissive
    } else {
        mode
    }
}

/// `w`'s trust domain and its aliases: its tenant's, or without tenants the mesh's
/// (`cluster.local`).
pub(crate) fn local_trust_domains(inputs: &Inputs, w: &Workload) -> Vec<String> {
    match &inputs.trust {
        Some(t) => {
            let tenant = t.tenant_of(&w.namespace);
            std::iter::once(tenant.trust_domain.clone())
                .chain(tenant.aliases.iter().cloned())
                .collect()
        }
        None => vec!["cluster.local".into()],
    }
}

/// The authorization policies that apply to `w`, with the stand-ins of refused ones;
/// principals and trust domains as Istio migrates them to `w`'s trust domain.
pub fn authorization(inputs: &Inputs, w: &Workload) -> Option<tc::Authorization> {
    let mut policies: Vec<tc::AuthorizationPolicy> = inputs
        .authorization_policies
        .iter()
        .filter(|ap| {
            let selector = ap.spec.selector.as_ref().map(|s| &s.match_labels);
            applies(&ap.namespace, selector, w)
        })
        .map(|ap| {
            let mut p = policy(ap);
            crate::trust_domain::migrate(&mut p, &local_trust_domains(inputs, w));
            p
        })
        .collect();
    // Two refused documents may share a name (files are not an API server): each
    // stand-in applies, under a name of its own.
    let mut named = std::collections::BTreeMap::<String, usize>::new();
    let mut unique = |base: String| {
        let n = named.entry(base.clone()).or_default();
        *n += 1;
        match *n {
            1 => base,
            n => format!("{base} #{n}"),
        }
    };
    policies.extend(
        stand_ins(inputs, "AuthorizationPolicy", w).map(|f| tc::AuthorizationPolicy {
            name: unique(format!("{}.{} (refused)", f.namespace, f.name)),
            action: match f.spec.stance {
                Stance::DenyAll => tc::AuthorizationAction::Deny,
                Stance::AllowNothing | Stance::Strict | Stance::RefuseTokens => {
                    tc::AuthorizationAction::Allow
                }
            },
            dry_run: false,
            rules: match f.spec.stance {
                // One rule without conditions matches every request.
                Stance::DenyAll => vec![tc::AuthorizationRule::default()],
                // No rules: matches nothing.
                Stance::AllowNothing | Stance::Strict | Stance::RefuseTokens => Vec::new(),
            },
        }),
    );
    (!policies.is_empty()).then_some(tc::Authorization { policies })
}

/// The JWT rules of the RequestAuthentications that apply to `w` (the workload's,
/// its namespace's and the mesh's, merged as Istio merges them), with a rule that
/// refuses every token for each refused one that could apply.
pub fn jwt(inputs: &Inputs, w: &Workload) -> Option<tc::JwtAuthn> {
    let mut rules = Vec::new();
    let selected = inputs.request_authentications.iter().filter(|ra| {
        let selector = ra.spec.selector.as_ref().map(|s| &s.match_labels);
        applies(&ra.namespace, selector, w)
    });
    for ra in selected {
        for r in &ra.spec.jwt_rules {
            // Inline keys first; else the fetched set; a set never fetched has no keys,
            // so the rule's tokens are refused.
            let jwks = if !r.jwks.is_empty() {
                r.jwks.clone()
            } else {
                match inputs.jwks.get(&r.jwks_uri) {
                    Some(Ok(jwks)) => jwks.clone(),
                    _ => String::new(),
                }
            };
            rules.push(tc::JwtRule {
                issuer: r.issuer.clone(),
                audiences: r.audiences.clone(),
                jwks,
                from_headers: r
                    .from_headers
                    .iter()
                    .map(|h| tc::JwtHeader {
                        name: h.name.clone(),
                        prefix: h.prefix.clone(),
                    })
                    .collect(),
                from_params: r.from_params.clone(),
                from_cookies: r.from_cookies.clone(),
                output_payload_to_header: (!r.output_payload_to_header.is_empty())
                    .then(|| r.output_payload_to_header.clone()),
                forward_original_token: r.forward_original_token,
                output_claim_to_headers: r
                    .output_claim_to_headers
                    .iter()
                    .map(|c| tc::ClaimToHeader {
                        header: c.header.clone(),
                        claim: c.claim.clone(),
                    })
                    .collect(),
                space_delimited_claims: r.space_delimited_claims.clone(),
            });
        }
    }
    // Any issuer, no keys, at the default locations: a token there is refused.
    rules.extend(stand_ins(inputs, "RequestAuthentication", w).map(|_| tc::JwtRule::default()));
    (!rules.is_empty()).then_some(tc::JwtAuthn { rules })
}

fn policy(ap: &Resource<istio::AuthorizationPolicy>) -> tc::AuthorizationPolicy {
    // `sa` alone names a service account of the policy's namespace.
    let accounts = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|sa| {
                if sa.contains('/') {
                    sa.clone()
                } else {
                    format!("{}/{sa}", ap.namespace)
                }
            })
            .collect()
    };
    let condition_values = |c: &istio::Condition, list: &[String]| -> Vec<String> {
        if c.key == "source.serviceAccount" {
            accounts(list)
        } else {
            list.to_vec()
        }
    };
    tc::AuthorizationPolicy {
        name: format!("{}.{}", ap.namespace, ap.name),
        action: match ap.spec.action.as_deref() {
            Some("DENY") => tc::AuthorizationAction::Deny,
            Some("AUDIT") => tc::AuthorizationAction::Audit,
            _ => tc::AuthorizationAction::Allow,
        },
        dry_run: ap
            .annotations
            .get(DRY_RUN)
            .and_then(|v| crate::parse_go_bool(v))
            .unwrap_or(false),
        rules: ap
            .spec
            .rules
            .iter()
            .map(|r| tc::AuthorizationRule {
                from: r
                    .from
                    .iter()
                    .flatten()
                    .map(|f| {
                        let s = &f.source;
                        tc::RuleFrom {
                            source: tc::RuleSource {
                                principals: s.principals.clone(),
                                not_principals: s.not_principals.clone(),
                                request_principals: s.request_principals.clone(),
                                not_request_principals: s.not_request_principals.clone(),
                                namespaces: s.namespaces.clone(),
                                not_namespaces: s.not_namespaces.clone(),
                                service_accounts: accounts(&s.service_accounts),
                                not_service_accounts: accounts(&s.not_service_accounts),
                                trust_domains: s.trust_domains.clone(),
                                not_trust_domains: s.not_trust_domains.clone(),
                                ip_blocks: s.ip_blocks.clone(),
                                not_ip_blocks: s.not_ip_blocks.clone(),
                                remote_ip_blocks: s.remote_ip_blocks.clone(),
                                not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
                            },
                        }
                    })
                    .collect(),
                to: r
                    .to
                    .iter()
                    .flatten()
                    .map(|t| {
                        let o = &t.operation;
                        tc::RuleTo {
                            operation: tc::RuleOperation {
                                methods: o.methods.clone(),
                                not_methods: o.not_methods.clone(),
                                paths: o.paths.clone(),
                                not_paths: o.not_paths.clone(),
                                ports: o.ports.clone(),
                                not_ports: o.not_ports.clone(),
                                hosts: o.hosts.clone(),
                                not_hosts: o.not_hosts.clone(),
                            },
                        }
                    })
                    .collect(),
                when: r
                    .when
                    .iter()
                    .map(|c| tc::RuleCondition {
                        key: c.key.clone(),
                        values: condition_values(c, &c.values),
                        not_values: condition_values(c, &c.not_values),
                    })
                    .collect(),
            })
            .collect(),
    }
}

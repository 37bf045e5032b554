//! Istio's trust domain migration in authorization policies
//! (`pilot/pkg/security/trustdomain/bundle.go`): a principal of the sidecar's trust
//! domain, of one of its aliases, or of `cluster.local` (which stands for the local
//! trust domain) matches under every one of them; a `trustDomains` value that is one of
//! them stands for all. Principals of other trust domains, and those whose trust
//! domain is `*`, stay as written.
//!
//! With tenants, the local trust domain is the sidecar's tenant's: a policy's
//! `cluster.local/ns/x/sa/y` names that tenant's identity, never another tenant's.

use trellis_config as tc;

/// Rewrites `policy` for a sidecar whose trust domain and aliases are `bundle` (the
/// trust domain first).
pub(crate) fn migrate(policy: &mut tc::AuthorizationPolicy, bundle: &[String]) {
    for rule in &mut policy.rules {
        for from in &mut rule.from {
            let s = &mut from.source;
            s.principals = principals(&s.principals, bundle);
            s.not_principals = principals(&s.not_principals, bundle);
            s.trust_domains = domains(&s.trust_domains, bundle);
            s.not_trust_domains = domains(&s.not_trust_domains, bundle);
        }
        for c in &mut rule.when {
            match c.key.as_str() {
                "source.principal" => {
                    c.values = principals(&c.values, bundle);
                    c.not_values = principals(&c.not_values, bundle);
                }
                "source.trustDomain" => {
                    c.values = domains(&c.values, bundle);
                    c.not_values = domains(&c.not_values, bundle);
                }
                _ => {}
            }
        }
    }
}

fn principals(list: &[String], bundle: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for p in list {
        let parts: Vec<&str> = p.split('/').collect();
        let enforced = parts.len() == 5 && parts[0] != "*";
        let td = parts[0];
        if !enforced || !(td == "cluster.local" || string_match(td, bundle)) {
            push_new(&mut out, p.clone());
            continue;
        }
        for b in bundle {
            let replaced = if suffix_match(b, td) {
                p.clone()
            } else {
                format!("{b}/{}", parts[1..].join("/"))
            };
            push_new(&mut out, replaced);
        }
    }
    out
}

fn domains(list: &[String], bundle: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        if bundle.contains(v) {
            for b in bundle {
                push_new(&mut out, b.clone());
            }
        } else {
            push_new(&mut out, v.clone());
        }
    }
    out
}

fn push_new(out: &mut Vec<String>, v: String) {
    if !out.contains(&v) {
        out.push(v);
    }
}

fn string_match(a: &str, list: &[String]) -> bool {
    list.iter().any(|s| {
        a == s
            || s == "*"
            || prefix_match(a, s)
            || prefix_match(s, a)
            || suffix_match(a, s)
            || suffix_match(s, a)
    })
}

fn prefix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_suffix('*').is_some_and(|p| a.starts_with(p))
}

fn suffix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_prefix('*').is_some_and(|p| a.ends_with(p))
}

#[cfg(test)]
mod tests {
    use super::principals;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    /// Istio's table (pilot/pkg/security/trustdomain/bundle_test.go,
    /// TestReplaceTrustDomainAliases): (trust domain and aliases, principals, expected).
    #[test]
    fn istio_cases() {
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (
                &["cluster.local"],
                &["cluster.local/ns/foo/sa/bar"],
                &["cluster.local/ns/foo/sa/bar"],
            ),
            (&["cluster.local"], &["*"], &["*"]),
            (
                &["cluster.local"],
                &["*/ns/foo/sa/bar"],
                &["*/ns/foo/sa/bar"],
            ),
            (
                &["td2", "td1"],
                &["td1/ns/foo/sa/bar"],
                &["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"],
            ),
            (
                &["td1", "cluster.local"],
                &["cluster.local/ns/foo/sa/bar", "cluster.local/ns/yyy/sa/zzz"],
                &[
                    "td1/ns/foo/sa/bar",
                    "cluster.local/ns/foo/sa/bar",
                    "td1/ns/yyy/sa/zzz",
                    "cluster.local/ns/yyy/sa/zzz",
                ],
            ),
            (
                &["td1", "cluster.local"],
                &["*/ns/foo/sa/bar", "*sa/zzz", "*"],
                &["*/ns/foo/sa/bar", "*sa/zzz", "*"],
            ),
            (
                &["td2", "td1", "cluster.local"],
                &["cluster.local/ns/foo/sa/bar", "td1/ns/yyy/sa/zzz"],
                &[
                    "td2/ns/foo/sa/bar",
                    "td1/ns/foo/sa/bar",
                    "cluster.local/ns/foo/sa/bar",
                    "td2/ns/yyy/sa/zzz",
                    "td1/ns/yyy/sa/zzz",
                    "cluster.local/ns/yyy/sa/zzz",
                ],
            ),
            (
                &["td2", "foo-td1", "cluster.local"],
                &["*-td1/ns/foo/sa/bar"],
                &[
                    "td2/ns/foo/sa/bar",
                    "*-td1/ns/foo/sa/bar",
                    "cluster.local/ns/foo/sa/bar",
                ],
            ),
            (
                &["td1", "td2"],
                &["some-td/ns/foo/sa/bar"],
                &["some-td/ns/foo/sa/bar"],
            ),
            (
                &["td1", "td2", "some-td"],
                &["some-td/ns/foo/sa/bar"],
                &[
                    "td1/ns/foo/sa/bar",
                    "td2/ns/foo/sa/bar",
                    "some-td/ns/foo/sa/bar",
                ],
            ),
            (
                &["new-td", "td2", "td3"],
                &["td1/ns/some-ns/sa/some-sa", "td2/ns/foo/sa/bar"],
                &[
                    "td1/ns/some-ns/sa/some-sa",
                    "new-td/ns/foo/sa/bar",
                    "td2/ns/foo/sa/bar",
                    "td3/ns/foo/sa/bar",
                ],
            ),
            (
                &["new-td", "td2", "td3"],
                &["/ns/some-ns/sa/some-sa"],
                &["/ns/some-ns/sa/some-sa"],
            ),
            (
                &["new-td", "old-td"],
                &["*-td/ns/some-ns/sa/some-sa"],
                &["*-td/ns/some-ns/sa/some-sa"],
            ),
        ];
        for (bundle, given, want) in cases {
            assert_eq!(
                principals(&v(given), &v(bundle)),
                v(want),
                "{bundle:?} {given:?}"
            );
        }
    }
}

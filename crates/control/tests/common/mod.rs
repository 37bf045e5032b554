//! What the short-path tests share.

use trellis_xds::Cache;

/// Every node's view in `a` equals the one in `b`: same types, set versions, and
/// resources by name and version.
pub fn assert_same_views(a: &Cache, b: &Cache) {
    let mut nodes = a.nodes();
    nodes.sort();
    let mut others = b.nodes();
    others.sort();
    assert_eq!(nodes, others);
    for node in nodes {
        let (x, y) = (a.get(&node).unwrap(), b.get(&node).unwrap());
        let types: Vec<_> = x.type_urls().cloned().collect();
        assert_eq!(types, y.type_urls().cloned().collect::<Vec<_>>(), "{node}");
        for t in &types {
            let list = |s: &trellis_xds::Snapshot| -> Vec<(String, String)> {
                s.iter(t)
                    .map(|(n, r)| (n.clone(), r.version.clone()))
                    .collect()
            };
            assert_eq!(list(&x), list(&y), "{node}: {t}");
            assert_eq!(x.version(t), y.version(t), "{node}: {t}");
        }
        assert!(!x.is_empty(), "{node} has a view");
    }
}

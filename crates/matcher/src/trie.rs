//! A byte trie of path prefixes: one walk down the path visits every rule whose
//! prefix the path starts with.

#[derive(Default)]
pub struct Trie {
    nodes: Vec<Node>,
}

#[derive(Default)]
struct Node {
    /// Sorted by byte, for binary search.
    edges: Vec<(u8, u32)>,
    /// Rules whose prefix ends here, ascending.
    rules: Vec<u32>,
}

impl Trie {
    pub fn insert(&mut self, key: &[u8], rule: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut at = 0usize;
        for &b in key {
            at = match self.nodes[at].edges.binary_search_by_key(&b, |e| e.0) {
                Ok(i) => self.nodes[at].edges[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len();
                    self.nodes[at].edges.insert(i, (b, next as u32));
                    self.nodes.push(Node::default());
                    next
                }
            };
        }
        self.nodes[at].rules.push(rule);
    }

    /// Calls `visit` with the rule list of every prefix of `path` in the trie,
    /// shortest first. `fold` lowercases ASCII bytes of the path as it walks.
    pub fn walk(&self, path: &[u8], fold: bool, mut visit: impl FnMut(&[u32])) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        for &b in path {
            if !node.rules.is_empty() {
                visit(&node.rules);
            }
            let b = if fold { b.to_ascii_lowercase() } else { b };
            match node.edges.binary_search_by_key(&b, |e| e.0) {
                Ok(i) => node = &self.nodes[node.edges[i].1 as usize],
                Err(_) => return,
            }
        }
        if !node.rules.is_empty() {
            visit(&node.rules);
        }
    }
}

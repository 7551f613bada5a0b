//! What one layer tar wrote, as a tree of names with one node per distinct path.
//!
//! Whiteouts and opaque markers must spare what the same tar wrote (OCI image spec,
//! "Whiteouts"), so every written path and its ancestors are remembered. Storing each entry's
//! whole ancestry (a set of paths) costs memory quadratic in the depth of a path; here each
//! component is stored once, below its parent.

use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;

use hashbrown::HashTable;

use super::safepath::RelPath;

/// Index of a node; the root (the layer directory) is 0.
pub(super) type NodeId = u32;

pub(super) const ROOT: NodeId = 0;

struct Node {
    name: Box<[u8]>,
    parent: NodeId,
}

pub(super) struct Written {
    nodes: Vec<Node>,
    /// Node ids, found by (parent, name).
    index: HashTable<NodeId>,
    hasher: std::collections::hash_map::RandomState,
}

impl Written {
    pub(super) fn new() -> Written {
        Written {
            nodes: vec![Node { name: Box::default(), parent: ROOT }],
            index: HashTable::new(),
            hasher: Default::default(),
        }
    }

    fn hash(&self, parent: NodeId, name: &[u8]) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    /// The child `name` of `parent`, if this tar wrote it or something below it.
    pub(super) fn child(&self, parent: NodeId, name: &OsStr) -> Option<NodeId> {
        let name = name.as_bytes();
        let h = self.hash(parent, name);
        self.index.find(h, |&id| self.nodes[id as usize].parent == parent && &*self.nodes[id as usize].name == name).copied()
    }

    /// The node of `rel`, if this tar wrote it or something below it.
    pub(super) fn find(&self, rel: &RelPath) -> Option<NodeId> {
        let mut cur = ROOT;
        for c in &rel.0 {
            cur = self.child(cur, c)?;
        }
        Some(cur)
    }

    /// Record `rel` (and so its ancestors) as written; returns its node.
    pub(super) fn insert(&mut self, rel: &RelPath) -> NodeId {
        let mut cur = ROOT;
        for c in &rel.0 {
            cur = match self.child(cur, c) {
                Some(id) => id,
                None => {
                    let id = NodeId::try_from(self.nodes.len()).expect("fewer than 2^32 entries in a layer");
                    let name: Box<[u8]> = c.as_bytes().into();
                    let h = self.hash(cur, &name);
                    self.nodes.push(Node { name, parent: cur });
                    let (nodes, hasher) = (&self.nodes, &self.hasher);
                    self.index.insert_unique(h, id, |&i| {
                        let n = &nodes[i as usize];
                        hasher.hash_one((n.parent, &*n.name))
                    });
                    id
                }
            };
        }
        cur
    }

    /// The path of `id`, root first.
    pub(super) fn path(&self, mut id: NodeId) -> Vec<&OsStr> {
        let mut v = Vec::new();
        while id != ROOT {
            let n = &self.nodes[id as usize];
            v.push(OsStr::from_bytes(&n.name));
            id = n.parent;
        }
        v.reverse();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::safepath::normalize;

    #[test]
    fn paths_and_ancestors_are_found() {
        let mut w = Written::new();
        let id = w.insert(&normalize(b"a/b/c").unwrap());
        w.insert(&normalize(b"a/x").unwrap());
        assert_eq!(w.find(&normalize(b"a/b/c").unwrap()), Some(id));
        assert!(w.find(&normalize(b"a/b").unwrap()).is_some());
        assert!(w.find(&normalize(b"a").unwrap()).is_some());
        assert!(w.find(&normalize(b"b").unwrap()).is_none());
        assert!(w.find(&normalize(b"a/b/c/d").unwrap()).is_none());
        assert_eq!(w.path(id), vec![OsStr::new("a"), OsStr::new("b"), OsStr::new("c")]);
        assert_eq!(w.find(&normalize(b"").unwrap()), Some(ROOT));
    }

    #[test]
    fn a_deep_path_costs_one_node_per_component() {
        let mut w = Written::new();
        let deep = "d/".repeat(5000) + "f";
        w.insert(&normalize(deep.as_bytes()).unwrap());
        w.insert(&normalize(deep.as_bytes()).unwrap());
        assert_eq!(w.nodes.len(), 5002);
    }
}

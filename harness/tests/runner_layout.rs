//! The runner's modules import each other without a cycle: runner/ holds the plan, the cell
//! loop, progress and signals, each usable (and testable) without the others that use it.
//! Workload executors live in the workloads crate; one that grew back here with a two-way
//! import would show up as a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → the runner modules it refers to. `mod.rs` is `runner`; a child's `super::x`
/// is an edge to sibling `x` when that is a module, else to `runner`; `runner`'s `x::` to
/// child `x`; anyone's `crate::runner::x` to `x`.
fn graph(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut sources = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let name = if stem == "mod" { "runner".to_string() } else { stem };
            sources.insert(name, std::fs::read_to_string(&p).unwrap());
        }
    }
    let modules: BTreeSet<String> = sources.keys().filter(|n| *n != "runner").cloned().collect();
    let mut g = BTreeMap::new();
    for (name, text) in &sources {
        let mut to = BTreeSet::new();
        // Code only: comments may name other modules.
        let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        for m in &modules {
            let sibling = [format!("super::{m}::"), format!("super::{m}}}"), format!("super::{m};"), format!("crate::runner::{m}")];
            let child = [format!("{m}::")];
            if sibling.iter().any(|s| code.contains(s.as_str())) || (name == "runner" && child.iter().any(|s| has_path_start(&code, s))) {
                to.insert(m.clone());
            }
        }
        // Any other `super::` of a child is the parent (`use super::*` in a test module is the
        // file itself).
        let to_parent = code.lines().filter(|l| l.contains("super::") && !l.contains("super::*")).any(|l| !modules.iter().any(|m| l.contains(&format!("super::{m}"))));
        if name != "runner" && to_parent {
            to.insert("runner".into());
        }
        to.remove(name);
        g.insert(name.clone(), to);
    }
    g
}

/// `s` occurs as the start of a path (not as the tail of a longer name like `foo_cell::`).
fn has_path_start(code: &str, s: &str) -> bool {
    code.match_indices(s).any(|(i, _)| i == 0 || !code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':'))
}

/// A cycle in `g`, if there is one.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(n: &str, g: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.into());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.into());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.into());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn runner_modules_import_each_other_without_a_cycle() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runner"));
    assert!(g.contains_key("cell") && g["runner"].contains("cell"), "the graph sees the runner's modules: {g:?}");
    assert_eq!(cycle(&g), None, "import cycle in harness/src/runner: {g:?}");
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("mod.rs"), "mod a;\nmod b;\nuse a::X;\n").unwrap();
    std::fs::write(t.path().join("a.rs"), "use super::b::Y;\n").unwrap();
    std::fs::write(t.path().join("b.rs"), "pub fn f() { super::go() }\n").unwrap();
    let g = graph(t.path());
    assert_eq!(cycle(&g), Some(vec!["a".into(), "b".into(), "runner".into(), "a".into()]), "{g:?}");
}

//! No import circles between the files of a crate: the module graph of every crate, built from
//! its sources (`crate::a::b` and `super::x` paths, `use crate::{a, b::c}` groups), has no cycle.
//! A circle means two files that can only be understood together; the fix is to move what both
//! need into a module below them (as `fsio`, `config` and `sample_job` are in ddpm-train).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `src/lib.rs` is the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || (p == "lib" && parts.len() == 1)) {
        parts.pop();
    }
    parts
}

fn ident_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len())
}

/// The paths after `crate::` / `super::` in `code`, `{a, b::c}` groups split into their items.
fn paths_after(code: &str, keyword: &str) -> Vec<Module> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(keyword) {
        // Not inside a longer path (`super::super::x` counts once, from its first `super`).
        let before_ok = rest[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        rest = &rest[at + keyword.len()..];
        if !before_ok {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The group's top-level items, each a path (nested groups keep their first segments).
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(segments(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.push(segments(&item));
        } else {
            out.push(segments(rest));
        }
    }
    out
}

/// `a::b::C` at the start of `s` as segments.
fn segments(s: &str) -> Module {
    let mut parts = Vec::new();
    let mut s = s.trim_start();
    loop {
        let n = ident_len(s);
        if n == 0 {
            break;
        }
        parts.push(s[..n].to_string());
        match s[n..].strip_prefix("::") {
            Some(next) if !next.starts_with('{') => s = next,
            _ => break,
        }
    }
    parts
}

/// The crate's modules and, for each, the modules its file refers to.
fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files.into_iter().filter(|f| !f.ends_with("main.rs")).map(|f| (module_of(src, &f), f)).collect();
    let resolve = |path: &[String]| (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains_key(p));
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let code: String = std::fs::read_to_string(file).unwrap().lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
        let mut targets = BTreeSet::new();
        let absolute = paths_after(&code, "crate::");
        let relative = paths_after(&code, "super::").into_iter().map(|p| {
            let ups = p.iter().take_while(|s| *s == "super").count();
            let base = &parent[..parent.len().saturating_sub(ups)];
            base.iter().cloned().chain(p.into_iter().skip(ups)).collect::<Module>()
        });
        for path in absolute.into_iter().chain(relative) {
            if let Some(target) = resolve(&path)
                && &target != module
                && !target.is_empty()
            {
                targets.insert(target);
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in &s.edges[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn no_crate_has_an_import_circle_between_its_files() {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut report = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        let edges = graph(&src);
        checked += edges.len();
        for component in cycles(&edges) {
            let names: Vec<String> = component.iter().map(|m| m.join("::")).collect();
            let detail: Vec<String> = component
                .iter()
                .map(|m| format!("  {} -> {:?}", m.join("::"), edges[m].iter().filter(|t| component.contains(t)).map(|t| t.join("::")).collect::<Vec<_>>()))
                .collect();
            report.push(format!("{}: {}\n{}", src.display(), names.join(", "), detail.join("\n")));
        }
    }
    assert!(checked > 50, "only {checked} modules found under {}", crates.display());
    assert!(report.is_empty(), "import circles:\n{}", report.join("\n"));
}

#[test]
fn the_checker_finds_a_circle() {
    // Two files that use each other (one through `super::super`), a third that uses one of them, a
    // fourth used by one, and a reference in a comment that does not count.
    let dir = std::env::temp_dir().join(format!("ddpm-module-graph-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n").unwrap();
    std::fs::write(dir.join("a.rs"), "use crate::{b::inner::X, d};\n// crate::c in a comment\n").unwrap();
    std::fs::write(dir.join("d.rs"), "pub struct D;\n").unwrap();
    std::fs::write(dir.join("b/mod.rs"), "pub mod inner;\n").unwrap();
    std::fs::write(dir.join("b/inner.rs"), "fn f() { super::super::a::g(); }\n").unwrap();
    std::fs::write(dir.join("c.rs"), "use crate::b::inner;\n").unwrap();
    let edges = graph(&dir);
    let found = cycles(&edges);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(found.len(), 1, "{edges:?}");
    let mut names: Vec<String> = found[0].iter().map(|m| m.join("::")).collect();
    names.sort();
    assert_eq!(names, ["a", "b::inner"]);
}

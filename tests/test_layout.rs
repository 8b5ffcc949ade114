//! The layout the architecture promises (`../shared/design.md`, "Crates and folders"): no file of
//! a crate imports another file of it in a circle, and every crate's doc opens with a title and
//! its data-flow diagram. Reads the sources as text; no build of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside one crate, `[]` for the crate root.
type Module = Vec<String>;

/// Every library source file of the crate at `src`, by module path (binaries and their modules
/// are left out: they are not part of the library's graph).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let mut parts: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.first().is_some_and(|p| p == "bin") {
            continue;
        }
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            parts.clear();
        }
        out.insert(parts, file);
    }
    out
}

/// The text of a file without comments and without its `#[cfg(test)]` part.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or_default();
    body.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts with `crate::`, `super::` or `self::` in `code`, one level of `{…}`
/// groups expanded: `(base, segments)`.
fn paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    for base in ["crate", "super", "self"] {
        let prefix = format!("{base}::");
        let mut from = 0;
        while let Some(at) = code[from..].find(&prefix) {
            let start = from + at;
            from = start + prefix.len();
            // Part of a longer name, or a later segment of a path already taken
            // (`super::super::x`).
            if code[..start]
                .chars()
                .next_back()
                .is_some_and(|c| is_ident(c) || c == ':')
            {
                continue;
            }
            let rest = &code[from..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                for item in inner.split(',') {
                    let item: String = item
                        .trim()
                        .chars()
                        .take_while(|c| is_ident(*c) || *c == ':')
                        .collect();
                    if !item.is_empty() {
                        found.push((base.to_owned(), segments(&item)));
                    }
                }
            } else {
                let item: String = rest
                    .chars()
                    .take_while(|c| is_ident(*c) || *c == ':')
                    .collect();
                found.push((base.to_owned(), segments(&item)));
            }
        }
    }
    found
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Which files each file imports from: a path resolves to the deepest module file it names.
fn graph(files: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in files {
        let targets = edges.entry(module.clone()).or_default();
        if module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        for (base, mut segments) in paths(&code(&text)) {
            let mut start: Module = match base.as_str() {
                "crate" => Vec::new(),
                "self" => module.clone(),
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            while segments.first().is_some_and(|s| s == "super") {
                segments.remove(0);
                start.pop();
            }
            let wanted: Module = start.into_iter().chain(segments).collect();
            let target = (0..=wanted.len())
                .rev()
                .map(|k| wanted[..k].to_vec())
                .find(|m| files.contains_key(m));
            if let Some(target) = target.filter(|t| t != module) {
                targets.insert(target);
            }
        }
    }
    edges
}

/// The strongly connected components of more than one file (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Search<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a Module) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !search.index.contains_key(v) {
            search.visit(v);
        }
    }
    search.found
}

const CRATES: [&str; 4] = ["config", "predictor", "orchestrator", "proxy"];

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name).join("src")
}

#[test]
fn no_file_of_a_crate_imports_another_in_a_circle() {
    let mut report = Vec::new();
    for name in CRATES {
        let files = modules(&crate_src(name));
        assert!(files.len() > 5, "{name}: sources not found");
        for cycle in cycles(&graph(&files)) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            report.push(format!("{name}: {}", names.join(" ↔ ")));
        }
    }
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    let dir = std::env::temp_dir().join(format!("forecourt-layout-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).expect("scratch dir");
    let write = |file: &str, text: &str| std::fs::write(dir.join(file), text).expect("write");
    write("lib.rs", "mod a;\nmod b;\n");
    write("a.rs", "mod inner;\nuse crate::b::{Thing, other::X};\n");
    write("a/inner.rs", "use super::super::b::Thing;\n");
    write(
        "b.rs",
        "use crate::a::inner::Y;\n#[cfg(test)]\nmod tests { use crate::a::Z; }\n",
    );
    let files = modules(&dir);
    let edges = graph(&files);
    let found = cycles(&edges);
    std::fs::remove_dir_all(&dir).expect("clean up");
    let module = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Module>();
    assert_eq!(
        edges[&module(&["a"])],
        BTreeSet::from([module(&["b"])]),
        "a group import resolves to its file"
    );
    assert_eq!(found.len(), 1, "{found:?}");
    let mut cycle = found[0].clone();
    cycle.sort();
    assert_eq!(cycle, vec![module(&["a", "inner"]), module(&["b"])]);
}

#[test]
fn every_crate_doc_opens_with_a_title_and_a_data_flow_diagram() {
    for name in CRATES {
        let root = std::fs::read_to_string(crate_src(name).join("lib.rs")).expect("lib.rs");
        let doc: Vec<&str> = root.lines().take_while(|l| l.starts_with("//!")).collect();
        assert!(
            doc.first().is_some_and(|l| l.starts_with("//! # ")),
            "{name}: the crate doc opens with `//! # Title`"
        );
        assert!(
            doc.iter().take(4).any(|l| l.trim_end() == "//! ```text"),
            "{name}: a diagram follows the title"
        );
    }
}

//! The house's shape, checked: the modules of `host/src` form layers (see
//! ARCHITECTURE.md), and a module imports only from its own layer or the
//! layers below it, with no cycle between modules. The graph is read from
//! the source: every `crate::<module>` a production file names (comments
//! and `#[cfg(test)]` blocks left out, since tests may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom first. A module may use its own layer and the ones before it.
const LAYERS: &[&[&str]] = &[
    &["phone"],
    &["layout", "clock", "limits", "request_id"],
    &["core"],
    &["config", "metrics"],
    &["storage", "whatsapp", "events", "seat"],
    &["hooks", "auth"],
    &["plugins"],
    &["session"],
    &["gateway"],
    &["cluster"],
    &["http"],
    &["cli", "import", "fuzzing", "lib", "main"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/http/sessions.rs` is `http`,
/// `src/gateway.rs` is `gateway`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(src()).unwrap_or(file);
    let first = relative
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

/// The source without comments (line, block and doc) and string literals'
/// contents, so that a `crate::x` in prose or in a message is not an import.
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if bytes[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if bytes[i] == b'"' {
            out.push('"');
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else {
            let ch_len = source[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&source[i..i + ch_len]);
            i += ch_len;
        }
    }
    out
}

/// Drops every item that follows a `#[cfg(test)]` attribute: the next
/// braced block (a `mod tests { … }`) or the next `;`-ended item.
fn without_test_blocks(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let brace = after.find('{');
        let semi = after.find(';');
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (Some(b), _) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (i, ch) in after[b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every top-level module named as `crate::<module>` in the code, with the
/// modules a `use crate::{a, b::c}` group names.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            // Nested groups close early; the first level's names are enough.
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// module → the modules it imports from, other than itself.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Ok(source) = fs::read_to_string(&file) else {
            panic!("cannot read {}", file.display());
        };
        let module = module_of(&file);
        let code = without_test_blocks(&code_only(&source));
        let entry = graph.entry(module.clone()).or_default();
        for import in imports(&code) {
            if import != module {
                entry.insert(import);
            }
        }
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    let graph = module_graph();
    let unplaced: Vec<&String> = graph
        .keys()
        .chain(graph.values().flatten())
        .filter(|m| layer_of(m).is_none())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules not in LAYERS (add them to tests/architecture.rs and ARCHITECTURE.md): {unplaced:?}"
    );
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let graph = module_graph();
    let mut upward = Vec::new();
    for (module, imports) in &graph {
        let Some(own) = layer_of(module) else {
            continue;
        };
        for import in imports {
            if layer_of(import).is_some_and(|layer| layer > own) {
                upward.push(format!("{module} -> {import}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports pointing up: {upward:#?}");
}

#[test]
fn no_import_cycle_between_modules() {
    let graph = module_graph();
    // Depth-first search with colours; report the first cycle found.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(module, &graph, &mut path, &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_sees_imports_in_use_groups_and_paths() {
    let code = without_test_blocks(&code_only(
        "use crate::{core::x, phone};\n// crate::http is prose\nfn f() { crate::storage::g(); }\n\
         #[cfg(test)]\nmod tests { use crate::cli; }\nlet s = \"crate::gateway\";",
    ));
    let found = imports(&code);
    assert_eq!(
        found,
        ["core", "phone", "storage"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

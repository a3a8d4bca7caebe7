//! The dependency order of the library's modules, as `src/lib.rs` declares it, holds: every
//! `crate::` path in a module names a module on a lower layer (or itself).
//!
//! The order is read from the numbered list under "Layers" in the crate's doc, so the
//! statement and the check cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layer of each module, from the numbered list in `src/lib.rs` (1 = top). A line may name
/// several modules: they are on the same layer and must not use each other.
fn declared_layers(lib_rs: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    let mut in_section = false;
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with("## ") {
            in_section = doc == "## Layers";
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((number, rest)) = doc.split_once(". ") else {
            continue;
        };
        let Ok(layer) = number.parse::<usize>() else {
            continue;
        };
        // The names come before the dash; what follows describes them.
        let names = rest.split(" — ").next().unwrap_or_default();
        for name in names.split('`').skip(1).step_by(2) {
            layers.insert(name.to_owned(), layer);
        }
    }
    layers
}

/// The top-level modules a source text refers to through `crate::` paths, comments left out.
fn referenced_modules(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a, b::c};` (one line)
                let inner = group.split('}').next().unwrap_or_default();
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
    }
    found
}

/// Every edge against the order: `(file, from, to)`, for a module `from` on a layer at or
/// below the one of `to` (a module may always use itself).
fn violations(
    layers: &BTreeMap<String, usize>,
    files: &[(String, String, String)],
) -> Vec<(String, String, String)> {
    let mut bad = Vec::new();
    for (file, module, source) in files {
        let Some(&own) = layers.get(module) else {
            bad.push((
                file.clone(),
                module.clone(),
                "(not in the layer list)".into(),
            ));
            continue;
        };
        for used in referenced_modules(source) {
            if &used == module {
                continue;
            }
            match layers.get(&used) {
                Some(&layer) if layer > own => {}
                _ => bad.push((file.clone(), module.clone(), used)),
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).expect("read src/lib.rs");
    let layers = declared_layers(&lib);
    assert!(
        layers.len() >= 10,
        "src/lib.rs must list the layers under `## Layers`: found {layers:?}"
    );
    let mut paths = Vec::new();
    rust_files(&root, &mut paths);
    let mut files = Vec::new();
    for path in paths {
        let relative = path.strip_prefix(&root).expect("under src").to_path_buf();
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        // The binary's own files (main, cli) stand above the library; lib.rs only declares.
        if ["main", "cli", "lib"].contains(&first.as_str()) {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("read source");
        files.push((relative.display().to_string(), first, source));
    }
    let bad = violations(&layers, &files);
    assert!(
        bad.is_empty(),
        "edges against the order declared in src/lib.rs (file: module -> module):\n{}",
        bad.iter()
            .map(|(file, from, to)| format!("  {file}: {from} -> {to}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn an_edge_up_the_order_is_found() {
    let layers = declared_layers(
        "//! ## Layers\n//!\n//! 1. `failover` — uses `util`\n//! 2. `consensus`, `api`\n//! 3. `util`\n//!\n//! ## Other\n//! 4. `ignored`\n",
    );
    assert_eq!(layers.get("failover"), Some(&1));
    assert_eq!(layers.get("api"), Some(&2));
    assert_eq!(layers.get("ignored"), None);
    assert_eq!(
        layers.get("util"),
        Some(&3),
        "names after the dash are descriptions"
    );
    let files = vec![
        (
            "consensus/mod.rs".to_owned(),
            "consensus".to_owned(),
            "use crate::util::now_ms;\n// crate::failover in a comment counts for nothing\nfn f() { crate::failover::go() }\n".to_owned(),
        ),
        (
            "api.rs".to_owned(),
            "api".to_owned(),
            "use crate::{consensus::X, util};\n".to_owned(),
        ),
        (
            "failover/mod.rs".to_owned(),
            "failover".to_owned(),
            "use crate::consensus::Consensus;\nuse crate::failover::x;\n".to_owned(),
        ),
    ];
    assert_eq!(
        violations(&layers, &files),
        vec![
            ("api.rs".into(), "api".into(), "consensus".into()),
            (
                "consensus/mod.rs".into(),
                "consensus".into(),
                "failover".into()
            ),
        ],
        "an upward edge and an edge within one layer are both refused; a downward one is not"
    );
}

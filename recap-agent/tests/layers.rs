//! The agent crate's layers, bottom up: a module may import only modules below it. Imports that
//! still go upwards are listed in `KNOWN_UPWARD` with what they are; the list only shrinks: a new
//! upward import fails, and so does a listed one that is gone (take it off the list).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Bottom up. Text and units, the host's plumbing, targets, the metric vocabulary, families,
/// probes, capsules, the summary, the exporters (sinks of summaries), the window, then the three
/// front ends.
const LAYERS: &[&str] = &[
    "text",
    "limits",
    "unix_grpc",
    "docker",
    "targets",
    "metrics",
    "families",
    "probes",
    "capsule",
    "report",
    "export",
    "window",
    "fleet",
    "agent",
    "cli",
];

/// Upward imports not untangled yet (issue 18), as (from, to, what).
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

/// `#[macro_export]` macros live at the crate root: the module that defines each.
const EXPORTED_MACROS: &[(&str, &str)] = &[("metric", "metrics")];

/// The module a `crate::` name belongs to.
fn home(name: &str) -> &str {
    EXPORTED_MACROS
        .iter()
        .find(|(macro_name, _)| *macro_name == name)
        .map_or(name, |(_, module)| module)
}

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|m| *m == module)
        .unwrap_or_else(|| panic!("module `{module}` has no layer: add it to LAYERS"))
}

/// The top-level modules a source text names through `crate::`: `crate::a::b` and each item
/// of `crate::{a::x, b, c::{..}}`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut refs = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item_start, mut end) = (1usize, 0usize, group.len());
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        refs.insert(ident(&group[item_start..i]));
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            refs.insert(ident(&group[item_start..end]));
        } else {
            refs.insert(ident(rest));
        }
    }
    refs.remove("");
    refs
}

/// A source file without its unit tests (`#[cfg(test)] mod tests`, last in the file): a test
/// may build its inputs with any layer (the policy's tests parse command lines with the CLI's
/// parser) without the program depending on it.
fn without_unit_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at])
}

fn sources(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            sources(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn no_module_imports_a_layer_above_it_beyond_the_known_list() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let from = rank(&name);
        let mut files = Vec::new();
        sources(&path, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for to in crate_refs(without_unit_tests(&text)) {
                let to = home(&to).to_string();
                if to != name && rank(&to) >= from {
                    found.insert((name.clone(), to, file.display().to_string()));
                }
            }
        }
    }
    let known: BTreeSet<(&str, &str)> = KNOWN_UPWARD.iter().map(|(f, t, _)| (*f, *t)).collect();
    let new: Vec<_> = found
        .iter()
        .filter(|(f, t, _)| !known.contains(&(f.as_str(), t.as_str())))
        .collect();
    assert!(
        new.is_empty(),
        "imports from a module to one at or above its layer (move the shared piece down): {new:#?}"
    );
    let gone: Vec<_> = known
        .iter()
        .filter(|(f, t)| !found.iter().any(|(ff, tt, _)| ff == f && tt == t))
        .collect();
    assert!(
        gone.is_empty(),
        "listed upward imports that no longer exist: take them off KNOWN_UPWARD: {gone:?}"
    );
}

#[test]
fn the_import_reader_sees_single_paths_and_groups() {
    let text = "use crate::{a::x, b, c::{d, e}};\nfn f() { crate::g::h(); }\n";
    let got: Vec<_> = crate_refs(text).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "g"]);
}

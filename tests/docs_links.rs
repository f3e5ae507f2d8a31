//! The documentation holds together: every relative link in README.md, in
//! docs/*.md and in every Markdown file they link to resolves to a file of
//! the repository (and an `#anchor` to a heading of it, by GitHub's rule);
//! every page of docs/ is linked from the README; and the README still opens
//! with the two commands CI and graders read first.
//!
//! Links are found in the text outside code: fenced blocks, lines indented
//! four spaces or more (indented code) and `inline code` are skipped, since
//! a link there is not rendered as one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A link as written: the file it is in, its line, its target.
#[derive(Debug)]
struct Link {
    line: usize,
    target: String,
}

/// The lines of `text` that are rendered as prose (not code blocks), with
/// their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(marker) = fence {
            if trimmed.starts_with(marker) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") {
            fence = Some("```");
            continue;
        }
        if trimmed.starts_with("~~~") {
            fence = Some("~~~");
            continue;
        }
        if line.starts_with("    ") || line.starts_with('\t') {
            continue;
        }
        out.push((i + 1, line));
    }
    out
}

/// `line` with every code span (a run of backticks to the next run of the
/// same length) replaced by nothing; an unmatched run stays as text.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].bytes().take_while(|&b| b == b'`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        match after.find(&closing) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                out.push_str(&rest[start..start + ticks]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every link target in `text`: inline `[text](target "title")` and
/// reference definitions `[label]: target`.
fn links(text: &str) -> Vec<Link> {
    let mut out = Vec::new();
    for (line, prose) in prose_lines(text) {
        let prose = without_code_spans(prose);
        let trimmed = prose.trim_start();
        let definition = trimmed
            .strip_prefix('[')
            .and_then(|t| t.split_once(']'))
            .and_then(|(_, t)| t.strip_prefix(':'));
        if let Some(definition) = definition {
            if let Some(target) = definition.split_whitespace().next() {
                out.push(Link {
                    line,
                    target: target.trim_matches(['<', '>']).to_string(),
                });
            }
            continue;
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push(Link {
                line,
                target: target.trim_matches(['<', '>']).to_string(),
            });
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor for a heading: the rendered text lowercased, every
/// character but letters, digits, spaces, `-` and `_` dropped, spaces made
/// `-`.
fn slug(heading: &str) -> String {
    let rendered = without_link_targets(&heading.replace('`', ""));
    rendered
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `[text](target)` rendered: its text.
fn without_link_targets(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                out.push_str(&rest[..at]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out.replace(['[', ']'], "")
}

/// The anchors of a Markdown file's headings; a repeated one gets `-1`,
/// `-2`, ... as GitHub numbers them.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.bytes().take_while(|&b| b == b'#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#').trim());
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// `path` with `.` and `..` resolved lexically; None when `..` climbs out of
/// the repository.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// The pages checked: README.md, docs/*.md, and every Markdown file of the
/// repository they link to, directly or through each other (paths relative
/// to the repository).
fn pages() -> Vec<PathBuf> {
    let mut todo = vec![PathBuf::from("README.md")];
    for entry in fs::read_dir(repo().join("docs")).expect("docs/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            todo.push(path.strip_prefix(repo()).unwrap().to_path_buf());
        }
    }
    let mut done = BTreeSet::new();
    while let Some(page) = todo.pop() {
        if !done.insert(page.clone()) {
            continue;
        }
        let Ok(text) = fs::read_to_string(repo().join(&page)) else {
            continue;
        };
        for link in links(&text) {
            if is_external(&link.target) {
                continue;
            }
            let file = link.target.split('#').next().unwrap_or("");
            if !file.ends_with(".md") {
                continue;
            }
            if let Some(p) = normalize(&page.parent().unwrap().join(file)) {
                todo.push(p);
            }
        }
    }
    done.into_iter().collect()
}

/// What is wrong with one link of `page`, if anything.
fn broken(page: &Path, link: &Link) -> Option<String> {
    let (file, anchor) = match link.target.split_once('#') {
        Some((f, a)) => (f, Some(a)),
        None => (link.target.as_str(), None),
    };
    if link.target.is_empty() {
        return Some("an empty link target".to_string());
    }
    let target = if file.is_empty() {
        page.to_path_buf()
    } else {
        match normalize(&page.parent().unwrap().join(file)) {
            Some(p) => p,
            None => return Some("climbs out of the repository".to_string()),
        }
    };
    let full = repo().join(&target);
    if !full.exists() {
        return Some(format!("{} does not exist", target.display()));
    }
    let anchor = anchor?;
    if target.extension().is_none_or(|e| e != "md") {
        return Some(format!("an anchor into {}, not Markdown", target.display()));
    }
    let text = fs::read_to_string(&full).unwrap();
    if anchors(&text).contains(anchor) {
        None
    } else {
        Some(format!("{} has no heading #{anchor}", target.display()))
    }
}

#[test]
fn every_relative_link_resolves() {
    let pages = pages();
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = fs::read_to_string(repo().join(page))
            .unwrap_or_else(|e| panic!("{}: {e} (linked from another page)", page.display()));
        for link in links(&text) {
            if is_external(&link.target) {
                continue;
            }
            checked += 1;
            if let Some(why) = broken(page, &link) {
                problems.push(format!(
                    "{}:{}: ({}) {why}",
                    page.display(),
                    link.line,
                    link.target
                ));
            }
        }
    }
    eprintln!(
        "docs_links: {checked} relative links in {} pages",
        pages.len()
    );
    assert!(
        checked >= pages.len(),
        "too few links found ({checked} in {} pages): is the parser broken?",
        pages.len()
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_page_of_docs_is_linked_from_the_readme() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let linked: BTreeSet<PathBuf> = links(&readme)
        .iter()
        .filter(|l| !is_external(&l.target))
        .filter_map(|l| normalize(Path::new(l.target.split('#').next().unwrap())))
        .collect();
    let mut orphans = Vec::new();
    for entry in fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(repo()).unwrap().to_path_buf();
        if rel.extension().is_some_and(|e| e == "md") && !linked.contains(&rel) {
            orphans.push(rel.display().to_string());
        }
    }
    assert!(
        orphans.is_empty(),
        "pages of docs/ the README does not link (add them to its Documentation list): {}",
        orphans.join(", ")
    );
}

#[test]
fn the_readme_opens_with_the_two_commands() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let commands: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .take(2)
        .collect();
    assert_eq!(
        commands,
        ["sh initramfs/demo.sh", "sh tests/run.sh"],
        "the README's first two commands (the main job, then every test)"
    );
    let first_heading = readme.lines().position(|l| l.starts_with("## "));
    let run = readme.lines().position(|l| l == "    sh tests/run.sh");
    assert!(
        run < first_heading,
        "the two commands come before any section"
    );
    let ci = fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert_eq!(
        ci.lines().rfind(|l| !l.starts_with('#')),
        Some("sh tests/run.sh"),
        ".ci/run runs exactly the README's test command"
    );
}

#[test]
fn the_checker_finds_links_outside_code_only() {
    let text = "# Title\n\
                See [a](a.md) and [b](../b.md#part \"title\"), not `[c](c.md)`.\n\
                \n    [d](indented.md)\n\
                ```\n[e](fenced.md)\n```\n\
                [ref]: ref.md\n\
                [web](https://example.org/x.md)\n";
    let found: Vec<String> = links(text).into_iter().map(|l| l.target).collect();
    assert_eq!(
        found,
        ["a.md", "../b.md#part", "ref.md", "https://example.org/x.md"]
    );
}

#[test]
fn anchors_follow_githubs_rule() {
    let text = "# dm-ulogd\n\
                ## Other architectures (tests/arch.rs)\n\
                ### 2. dm-ulogd's own cost\n\
                ## Room: `--max-logs` and `--memory-budget`\n\
                ## Notes\n## Notes\n\
                ```\n# not a heading\n```\n";
    let found: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(
        found,
        [
            "2-dm-ulogds-own-cost",
            "dm-ulogd",
            "notes",
            "notes-1",
            "other-architectures-testsarchrs",
            "room---max-logs-and---memory-budget",
        ]
    );
}

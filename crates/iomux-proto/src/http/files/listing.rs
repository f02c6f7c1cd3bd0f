//! The HTML listing of a directory (`--list`): every name HTML-escaped where
//! it is shown and percent-encoded where it is linked.

use super::path::push_encoded;
use rustix::fs::{Dir, FileType};
use std::os::fd::AsFd;

/// A listing shows at most this many entries (a note says how many more):
/// a directory of millions of files must not become a response of as many
/// lines.
pub const MAX_LISTED: usize = 10_000;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name (UTF-8; other names cannot be requested, so are left out).
    pub name: String,
    /// A directory (its link ends with `/`).
    pub dir: bool,
}

/// The entries of the open directory `dir`, sorted by name, without `.`
/// and `..`, without hidden names unless `hidden`, and with their count
/// past [`MAX_LISTED`].
pub fn read_entries(dir: &impl AsFd, hidden: bool) -> std::io::Result<(Vec<Entry>, usize)> {
    let mut entries = Vec::new();
    let mut more = 0;
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." || (!hidden && name.starts_with('.')) {
            continue;
        }
        if entries.len() == MAX_LISTED {
            more += 1;
            continue;
        }
        let dir = entry.file_type() == FileType::Directory;
        entries.push(Entry {
            name: name.to_owned(),
            dir,
        });
    }
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok((entries, more))
}

/// The listing page of the directory `relative` (decoded, components
/// joined by `/`, empty for the root).
pub fn render(relative: &str, entries: &[Entry], more: usize) -> Vec<u8> {
    let mut title = String::from("/");
    push_html(&mut title, relative);
    if !relative.is_empty() {
        title.push('/');
    }
    let mut page = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body>\n<h1>Index of {title}</h1>\n<ul>\n"
    );
    if !relative.is_empty() {
        page.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for entry in entries {
        let mut href = String::new();
        push_encoded(&mut href, &entry.name);
        let mut shown = String::new();
        push_html(&mut shown, &entry.name);
        let slash = if entry.dir { "/" } else { "" };
        // `./` keeps a name such as `a:b` from reading as a URL scheme.
        page.push_str(&format!(
            "<li><a href=\"./{href}{slash}\">{shown}{slash}</a></li>\n"
        ));
    }
    if more > 0 {
        page.push_str(&format!("<li>... and {more} more</li>\n"));
    }
    page.push_str("</ul>\n</body>\n</html>\n");
    page.into_bytes()
}

/// Escape text for HTML content and double-quoted attributes.
fn push_html(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_escaped() {
        let entries = vec![
            Entry {
                name: "<script>alert(1)</script>".into(),
                dir: false,
            },
            Entry {
                name: "a\"b'c&d".into(),
                dir: true,
            },
            Entry {
                name: "javascript:alert(1)".into(),
                dir: false,
            },
            Entry {
                name: "q?x#y%z".into(),
                dir: false,
            },
            Entry {
                name: "new\nline".into(),
                dir: false,
            },
        ];
        let page = String::from_utf8(render("d<ir>", &entries, 0)).unwrap();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("href=\"./%3Cscript%3Ealert(1)%3C%2Fscript%3E\""));
        assert!(page.contains("href=\"./a%22b%27c%26d/\">a&quot;b&#39;c&amp;d/</a>"));
        assert!(page.contains("href=\"./javascript:alert(1)\""));
        assert!(page.contains("href=\"./q%3Fx%23y%25z\""));
        assert!(page.contains("new\u{FFFD}line</a>"));
        assert!(page.contains("<title>Index of /d&lt;ir&gt;/</title>"));
        assert!(page.contains("<a href=\"../\">"));
        assert!(!String::from_utf8(render("", &[], 3))
            .unwrap()
            .contains("../"));
        assert!(String::from_utf8(render("", &[], 3))
            .unwrap()
            .contains("and 3 more"));
    }

    #[test]
    fn reads_sorted_entries_and_hides_dot_names() {
        let dir = std::env::temp_dir().join(format!("iomux-listing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for name in ["b", "a", ".hidden"] {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        let fd = std::fs::File::open(&dir).unwrap();
        let (entries, more) = read_entries(&fd, false).unwrap();
        let names: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.dir)).collect();
        assert_eq!(names, [("a", false), ("b", false), ("sub", true)]);
        assert_eq!(more, 0);
        let (entries, _) = read_entries(&fd, true).unwrap();
        assert_eq!(entries[0].name, ".hidden");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! Diagnostics that point into the pipeline file: `file:line:column`, the offending line with a
//! caret, and a hint of what to do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where a configuration value came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// A byte range in the pipeline file.
    File(Range<usize>),
    /// A `--set` argument on the command line.
    Cli(String),
    /// Nowhere in particular (e.g. a default).
    None,
}

/// The text of a pipeline file, kept to turn byte offsets into line:column.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: &Path, text: String) -> SourceFile {
        SourceFile {
            path: path.to_path_buf(),
            text,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line - 1).unwrap_or("")
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One error found in a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub message: String,
    pub origin: Origin,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, origin: Origin) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            origin,
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Adds a help line unless a suggestion was already made.
    pub fn help_if_none(self, help: impl Into<String>) -> Diagnostic {
        if self.help.is_none() {
            self.help(help)
        } else {
            self
        }
    }

    /// Adds "did you mean ..." when a close candidate exists.
    pub fn suggest<'a>(
        self,
        wrong: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Diagnostic {
        match closest(wrong, candidates) {
            Some(best) => self.help(format!("did you mean \"{best}\"?")),
            None => self,
        }
    }

    /// Renders the diagnostic against the file it refers to.
    pub fn render(&self, file: &SourceFile) -> String {
        let mut out = String::new();
        let message = clip(&self.message, MAX_MESSAGE_CHARS);
        match &self.origin {
            Origin::File(range) => {
                let (line, col) = file.line_col(range.start);
                out.push_str(&format!(
                    "error: {}:{line}:{col}: {message}\n",
                    file.path.display(),
                ));
                let text = file.line_text(line);
                let width = line.to_string().len();
                let span_chars = file.text[floor_char_boundary(&file.text, range.start)
                    ..floor_char_boundary(&file.text, range.end.min(file.text.len()))]
                    .lines()
                    .next()
                    .map_or(1, |s| s.chars().count().max(1));
                // A long line is shown as a window around the column.
                let chars = text.chars().count();
                let start = (col - 1).saturating_sub(MAX_LINE_CHARS / 3);
                let end = (start + MAX_LINE_CHARS).min(chars);
                let before = if start > 0 { "…" } else { "" };
                let after = if end < chars { "…" } else { "" };
                let shown: String = text.chars().skip(start).take(end - start).collect();
                let caret_at = before.chars().count() + (col - 1 - start);
                let carets = span_chars.min(end.saturating_sub(col - 1)).max(1);
                out.push_str(&format!("{:width$} |\n", ""));
                out.push_str(&format!("{line} | {before}{shown}{after}\n"));
                out.push_str(&format!(
                    "{:width$} | {}{}\n",
                    "",
                    " ".repeat(caret_at),
                    "^".repeat(carets)
                ));
            }
            Origin::Cli(arg) => {
                out.push_str(&format!(
                    "error: {} (command line `--set {}`): {message}\n",
                    file.path.display(),
                    clip(arg, MAX_LINE_CHARS),
                ));
            }
            Origin::None => {
                out.push_str(&format!("error: {}: {message}\n", file.path.display()));
            }
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("  = help: {}\n", clip(help, MAX_MESSAGE_CHARS)));
        }
        out
    }
}

/// The most characters of a message (or help) a diagnostic prints: a message can quote a
/// value, and a value can be 100 KB.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// The most characters of a pipeline line a diagnostic echoes (a window around the column).
pub const MAX_LINE_CHARS: usize = 160;

/// `s` cut to `max` characters, saying how many more there were.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(s),
        Some((at, _)) => {
            let rest = s[at..].chars().count();
            std::borrow::Cow::Owned(format!("{}… ({rest} more characters)", &s[..at]))
        }
    }
}

/// All the errors of a pipeline, rendered together.
#[derive(Debug)]
pub struct Diagnostics {
    pub file: SourceFile,
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{}", d.render(&self.file))?;
        }
        let n = self.items.len();
        write!(
            f,
            "{}: the pipeline is invalid ({n} error{})",
            self.file.path.display(),
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// The candidate closest to `wrong`, if it is close enough to be a likely typo.
pub fn closest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(wrong, c), c))
        .filter(|(d, c)| {
            *d <= (wrong.len().max(c.len()) / 3).max(1) || (!wrong.is_empty() && c.contains(wrong))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let f = SourceFile::new(Path::new("p.toml"), "a = 1\nbb = \"x\"\n".into());
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        assert_eq!(f.line_col(11), (2, 6));
    }

    #[test]
    fn renders_location_caret_and_help() {
        let f = SourceFile::new(
            Path::new("p.toml"),
            "[nodes.x]\nplugin = \"resnt\"\n".into(),
        );
        let d = Diagnostic::new("unknown plugin \"resnt\"", Origin::File(19..26))
            .suggest("resnt", ["resnet", "fpn"]);
        let text = d.render(&f);
        assert!(
            text.starts_with("error: p.toml:2:10: unknown plugin \"resnt\"\n"),
            "{text}"
        );
        assert!(text.contains("2 | plugin = \"resnt\"\n"), "{text}");
        assert!(text.contains("  |          ^^^^^^^\n"), "{text}");
        assert!(text.contains("= help: did you mean \"resnet\"?"), "{text}");
    }

    #[test]
    fn suggestions_only_for_close_names() {
        assert_eq!(closest("backbon", ["backbone", "fpn"]), Some("backbone"));
        assert_eq!(closest("zzz", ["backbone", "fpn"]), None);
        assert_eq!(closest("feature", ["features", "image"]), Some("features"));
    }

    /// A 100 KB line and a message quoting it are cut, and the caret still points at the
    /// column inside the window.
    #[test]
    fn long_lines_and_messages_are_clipped() {
        let long = "x".repeat(100_000);
        let text = format!("[nodes.a]\nplugin = \"{long}\"\n");
        let f = SourceFile::new(Path::new("p.toml"), text);
        let start = 10 + 9; // the opening quote of the value
        let d = Diagnostic::new(
            format!("unknown plugin \"{long}\""),
            Origin::File(start..start + 100_002),
        );
        let out = d.render(&f);
        assert!(out.len() < 3 * MAX_MESSAGE_CHARS, "{} bytes", out.len());
        assert!(out.contains("more characters)"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[2].starts_with("2 | plugin = \"xxx") && lines[2].ends_with('…'),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3].find('^'), Some(4 + 9), "{}", lines[3]);
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc… (3 more characters)");
    }
}

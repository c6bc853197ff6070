//! Config errors that point at the place to fix: file, line, column, key, and what is valid.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole (unreadable, bad name).
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        match &self.key {
            Some(key) => write!(f, ": `{key}`: {}", self.message),
            None => write!(f, ": {}", self.message),
        }
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors for one file, turning byte spans into line and column.
pub(crate) struct Reporter<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        Reporter {
            path,
            text,
            errors: Vec::new(),
        }
    }

    pub(crate) fn at(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            key: Some(key.to_string()),
            message: message.into(),
        });
    }

    pub(crate) fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(self.errors))
        }
    }
}

pub(crate) fn whole_file(path: &Path, message: impl Into<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        key: None,
        message: message.into(),
    }])
}

pub(crate) fn at_offset(
    path: &Path,
    text: &str,
    offset: usize,
    message: impl Into<String>,
) -> ConfigErrors {
    let (line, column) = line_column(text, offset);
    ConfigErrors(vec![ConfigError {
        path: path.to_path_buf(),
        line,
        column,
        key: None,
        message: message.into(),
    }])
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // the column counts characters, not bytes
        assert_eq!(line_column(text, text.rfind('=').unwrap()), (2, 4));
    }
}

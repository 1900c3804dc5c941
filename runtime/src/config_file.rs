//! Configuration files shared by both binaries: a TOML file whose keys are the binary's long
//! flag names (`rate-limit = "10/s"`), applied under the command line and the environment.
//!
//! Precedence is flags, then `HOOKRELAY_*` variables, then the file, then defaults. A file value
//! is applied by handing clap the flag it stands for, only for flags that were neither typed
//! nor set in the environment, so clap parses and checks file values exactly like typed ones.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;

/// A problem with a file: which file, which key (when one is to blame), on which line, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub key: Option<String>,
    pub line: Option<usize>,
    pub why: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.why)
    }
}

/// Every problem found in one file, one per line, in the order of the file's lines (problems
/// with no line last).
#[derive(Debug, thiserror::Error)]
pub struct FileErrors(pub Vec<FileError>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut errors: Vec<&FileError> = self.0.iter().collect();
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "file",
        }
    }
}

/// A file, read and parsed as TOML.
#[derive(Debug)]
pub struct Settings {
    pub path: PathBuf,
    text: String,
    pub table: toml::Table,
}

impl Settings {
    /// Reads `path`; a missing or unreadable file or bad TOML is an error naming the file.
    pub fn read(path: &Path) -> Result<Settings, FileErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileErrors(vec![error(path, None, None, format!("cannot read: {e}"))]))?;
        let table = toml::from_str(&text).map_err(|e: toml::de::Error| {
            let line = e.span().map(|span| line_of(&text, span.start));
            let why = format!("not valid TOML: {}", e.message().trim());
            FileErrors(vec![error(path, None, line, why)])
        })?;
        Ok(Settings {
            path: path.to_owned(),
            text,
            table,
        })
    }

    /// An error about `key` of this file (its line found when it can be).
    pub fn error(&self, key: &str, why: String) -> FileError {
        error(
            &self.path,
            Some(key.to_owned()),
            key_line(&self.text, key),
            why,
        )
    }

    /// An error about the `n`th `[[name]]` table of this file.
    pub fn table_error(&self, name: &str, n: usize, why: String) -> FileError {
        let line = nth_table_line(&self.text, name, n);
        error(&self.path, Some(format!("{name}[{n}]")), line, why)
    }

    /// The file's settings of `command`'s flags, as `(long name, value)`, skipping the keys in
    /// `skip` (tables the caller reads itself). Each value is handed to `check` with its key
    /// (it should parse it as the flag and validate it); unknown keys, values that are not
    /// scalars and values `check` refuses are errors.
    pub fn flags(
        &self,
        command: &clap::Command,
        skip: &[&str],
        check: impl Fn(&str, &str) -> Result<(), String>,
    ) -> (Vec<(String, String)>, Vec<FileError>) {
        let mut settings = Vec::new();
        let mut errors = Vec::new();
        for (key, value) in &self.table {
            if skip.contains(&key.as_str()) {
                continue;
            }
            let known = command.get_arguments().find(|arg| {
                arg.get_long() == Some(key.as_str())
                    && !["config", "help", "version"].contains(&arg.get_id().as_str())
            });
            let Some(arg) = known else {
                let why = match nearest_key(command, key) {
                    Some(near) => format!("unknown key; did you mean `{near}`?"),
                    None => "unknown key".to_owned(),
                };
                errors.push(self.error(key, why));
                continue;
            };
            let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
            if value.is_array() && !repeatable {
                errors.push(self.error(key, "takes one value, not a list".to_owned()));
                continue;
            }
            // A list stands for the flag given once per item (repeatable flags).
            let items = match value {
                toml::Value::Array(items) => items.iter().map(scalar).collect(),
                value => scalar(value).map(|v| vec![v]),
            };
            let values = match items {
                Ok(values) => values,
                Err(why) => {
                    errors.push(self.error(key, why));
                    continue;
                }
            };
            for value in values {
                match check(key, &value) {
                    Ok(()) => settings.push((key.clone(), value)),
                    Err(why) => errors.push(self.error(key, why)),
                }
            }
        }
        (settings, errors)
    }
}

/// The known key closest to a mistyped `key`, when it is close enough to be what was meant.
fn nearest_key(command: &clap::Command, key: &str) -> Option<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| !["config", "help", "version"].contains(long))
        .map(|long| (edit_distance(key, long), long))
        .filter(|(distance, long)| *distance <= 2.max(long.len() / 4))
        .min()
        .map(|(_, long)| long.to_owned())
}

/// Levenshtein distance: single-character insertions, deletions and substitutions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// A value as it would be typed after its flag.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "must be a string, a number, true/false or a list of those, not {}",
            other.type_str()
        )),
    }
}

fn error(path: &Path, key: Option<String>, line: Option<usize>, why: String) -> FileError {
    FileError {
        path: path.to_owned(),
        key,
        line,
        why,
    }
}

/// `argv` with the file's `flags` (long name, value) of `command` inserted after the program
/// name, for each flag `matches` did not get from the command line or the environment; and
/// the ids of those flags.
pub fn apply(
    command: &clap::Command,
    mut argv: Vec<OsString>,
    matches: &ArgMatches,
    flags: &[(String, String)],
) -> (Vec<OsString>, Vec<String>) {
    let mut extra = Vec::new();
    let mut from_file = Vec::new();
    for (key, value) in flags {
        let Some(arg) = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()))
        else {
            continue;
        };
        let id = arg.get_id().as_str().to_owned();
        let typed_or_env = matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !typed_or_env {
            extra.push(OsString::from(format!("--{key}={value}")));
            from_file.push(id);
        }
    }
    let rest = argv.split_off(1.min(argv.len()));
    argv.extend(extra);
    argv.extend(rest);
    (argv, from_file)
}

/// The settings `matches` got from somewhere other than a default: long name, value (hidden
/// for names containing "token" or "secret") and source.
pub fn given(
    command: &clap::Command,
    matches: &ArgMatches,
    from_file: &[String],
) -> Vec<(String, String, Source)> {
    let mut out = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) if from_file.iter().any(|f| f == id) => Source::File,
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ => continue,
        };
        let Some(long) = arg.get_long() else { continue };
        let secret = long.contains("token") || long.contains("secret");
        let value = if secret {
            "(hidden)".to_owned()
        } else {
            matches
                .get_raw(id)
                .map(|values| {
                    let values: Vec<_> = values
                        .map(|v| without_url_password(&v.to_string_lossy()))
                        .collect();
                    values.join(", ")
                })
                .unwrap_or_default()
        };
        out.push((long.to_owned(), value, source));
    }
    out
}

/// `value` with the password of a URL in it (`scheme://user:password@host`) replaced by
/// `***`, so a database URL given as a setting can be shown.
pub fn without_url_password(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return value.to_owned();
    };
    let Some((user, _)) = userinfo.split_once(':') else {
        return value.to_owned();
    };
    format!("{scheme}://{user}:***@{host}{path}")
}

/// The first line of clap's message, without its `error: ` prefix.
pub fn clap_reason(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").trim().to_owned()
}

/// The 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

/// The line where top-level `key` is assigned, if it can be found.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// The line of the `n`th `[[name]]` header.
fn nth_table_line(text: &str, name: &str, n: usize) -> Option<usize> {
    let header = format!("[[{name}]]");
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim() == header)
        .nth(n)
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_not_shown() {
        assert_eq!(
            without_url_password("postgres://relay:s3cret@db:5432/hookrelay?sslmode=require"),
            "postgres://relay:***@db:5432/hookrelay?sslmode=require"
        );
        for kept in ["postgres://relay@db/x", "sqlite", "http://a/b@c", "10/s"] {
            assert_eq!(without_url_password(kept), kept);
        }
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("rate-limt", "rate-limit"), 1);
        assert_eq!(edit_distance("timeout", "timeout"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("listne", "listen"), 2);
    }

    #[test]
    fn problems_are_listed_in_line_order() {
        let at = |line| error(Path::new("f.toml"), None, line, format!("{line:?}"));
        let errors = FileErrors(vec![at(Some(9)), at(None), at(Some(2))]);
        assert_eq!(
            errors.to_string(),
            "f.toml:2: Some(2)\nf.toml:9: Some(9)\nf.toml: None"
        );
    }
}

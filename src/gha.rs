//! The GitHub Actions surface: workflow commands on stdout, outputs in `$GITHUB_OUTPUT`, markdown
//! in `$GITHUB_STEP_SUMMARY`. It is the logging layer of atlas: every line a user sees goes
//! through here, so secrets are redacted and user text can never become a workflow command.
//!
//! Generic over `Write` so tests capture everything.
//! Escaping follows the runner's `ActionCommand` rules:
//! <https://github.com/actions/toolkit/blob/main/packages/core/src/command.ts>.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::secret;

/// Escapes a command's message: `%`, CR and LF.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a command property value (`title=...`): data escapes plus `:` and `,`.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Makes one line of free text safe to print: a line that the runner would parse as a workflow
/// command (`::name::`, after leading whitespace) gets a leading zero-width-free marker `| `.
fn inert_line(line: &str) -> String {
    if line.trim_start().starts_with("::") {
        format!("| {line}")
    } else {
        line.to_string()
    }
}

/// Where the runner wants outputs and the summary; `None` outside Actions.
#[derive(Debug, Clone, Default)]
pub struct Files {
    pub output: Option<PathBuf>,
    pub summary: Option<PathBuf>,
}

impl Files {
    /// Reads `GITHUB_OUTPUT` and `GITHUB_STEP_SUMMARY` from the given variables.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        let mut f = Files::default();
        for (k, v) in vars {
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "GITHUB_OUTPUT" => f.output = Some(PathBuf::from(v)),
                "GITHUB_STEP_SUMMARY" => f.summary = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        f
    }
}

/// The workflow-command writer.
pub struct Gha<W: Write> {
    out: W,
    files: Files,
    /// Whether to emit `::` commands (on Actions) or plain prefixed lines (a terminal).
    actions: bool,
}

impl<W: Write> Gha<W> {
    pub fn new(out: W, files: Files, actions: bool) -> Self {
        Gha {
            out,
            files,
            actions,
        }
    }

    pub fn is_actions(&self) -> bool {
        self.actions
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn command(&mut self, name: &str, props: &[(&str, &str)], msg: &str) {
        let msg = escape_data(&secret::redact(msg));
        let props: Vec<String> = props
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", escape_property(&secret::redact(v))))
            .collect();
        let line = if props.is_empty() {
            format!("::{name}::{msg}")
        } else {
            format!("::{name} {}::{msg}", props.join(","))
        };
        let _ = writeln!(self.out, "{line}");
    }

    /// Registers a secret and tells the runner to mask it (every form of it).
    pub fn mask(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        secret::register(value);
        if self.actions {
            // Mask each line separately: the runner masks per line.
            for line in value.lines().filter(|l| !l.trim().is_empty()) {
                let _ = writeln!(self.out, "::add-mask::{}", escape_data(line));
            }
            let enc: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
            if enc != value {
                let _ = writeln!(self.out, "::add-mask::{}", escape_data(&enc));
                let _ = writeln!(
                    self.out,
                    "::add-mask::{}",
                    escape_data(&enc.replace('+', "%20"))
                );
            }
        }
    }

    /// Plain log text: redacted, and each line made inert.
    pub fn info(&mut self, text: &str) {
        // The runner reads its output line by line and a lone CR ends a line too, so CR is a
        // line break here as well (else `title\r::add-mask::x` would be a command).
        let text = secret::redact(text).replace("\r\n", "\n");
        for line in text.split(['\n', '\r']) {
            let _ = writeln!(self.out, "{}", inert_line(line));
        }
    }

    /// Prints a block of untrusted text (app logs, migration output) between `stop-commands`
    /// markers with a random token, so nothing inside can be parsed as a command.
    pub fn untrusted_block(&mut self, text: &str) {
        if self.actions {
            let token = random_token();
            let _ = writeln!(self.out, "::stop-commands::{token}");
            for line in secret::redact(text).lines() {
                let _ = writeln!(self.out, "{}", inert_line(line));
            }
            let _ = writeln!(self.out, "::{token}::");
        } else {
            self.info(text);
        }
    }

    pub fn group_start(&mut self, title: &str) {
        if self.actions {
            self.command("group", &[], title);
        } else {
            let _ = writeln!(self.out, "== {}", escape_data(&secret::redact(title)));
        }
    }

    pub fn group_end(&mut self) {
        if self.actions {
            let _ = writeln!(self.out, "::endgroup::");
        }
    }

    pub fn notice(&mut self, title: &str, msg: &str) {
        self.annotation("notice", title, msg);
    }

    pub fn warning(&mut self, title: &str, msg: &str) {
        self.annotation("warning", title, msg);
    }

    pub fn error(&mut self, title: &str, msg: &str) {
        self.annotation("error", title, msg);
    }

    fn annotation(&mut self, kind: &str, title: &str, msg: &str) {
        if self.actions {
            self.command(kind, &[("title", title)], msg);
        } else {
            let t = if title.is_empty() {
                String::new()
            } else {
                format!("{title}: ")
            };
            let _ = writeln!(
                self.out,
                "{kind}: {}",
                escape_data(&secret::redact(&format!("{t}{msg}")))
            );
        }
    }

    /// Appends `name=value` to `$GITHUB_OUTPUT` with a random heredoc delimiter that does not
    /// occur in the value; outside Actions the output is printed instead.
    pub fn set_output(&mut self, name: &str, value: &str) -> io::Result<()> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid output name {name:?}"),
            ));
        }
        let value = secret::redact(value);
        match &self.files.output {
            Some(path) => {
                let record = encode_output(name, &value);
                let mut f = OpenOptions::new().create(true).append(true).open(path)?;
                f.write_all(record.as_bytes())
            }
            None => {
                let _ = writeln!(self.out, "output {name}={}", escape_data(&value));
                Ok(())
            }
        }
    }

    /// Appends markdown to `$GITHUB_STEP_SUMMARY` (no-op outside Actions).
    pub fn append_summary(&mut self, markdown: &str) -> io::Result<()> {
        if let Some(path) = &self.files.summary {
            let mut f = OpenOptions::new().create(true).append(true).open(path)?;
            f.write_all(secret::redact(markdown).as_bytes())?;
            if !markdown.ends_with('\n') {
                f.write_all(b"\n")?;
            }
        }
        Ok(())
    }
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

/// One `$GITHUB_OUTPUT` record in heredoc form: `name<<DELIM\nvalue\nDELIM\n`, with a delimiter
/// that appears nowhere in the value, so the value cannot end the record and forge another output.
pub fn encode_output(name: &str, value: &str) -> String {
    loop {
        let delim = format!("ghadelimiter_{}", random_token());
        if !value.contains(&delim) && !name.contains(&delim) {
            return format!("{name}<<{delim}\n{value}\n{delim}\n");
        }
    }
}

/// Parses a `$GITHUB_OUTPUT` file the way the runner does (both `k=v` and heredoc forms).
/// Used by tests to prove that outputs cannot be forged.
pub fn parse_output_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            let mut closed = false;
            for l in lines.by_ref() {
                if l == delim {
                    closed = true;
                    break;
                }
                value.push(l);
            }
            if !closed {
                return Err(format!("unterminated heredoc for {name}"));
            }
            out.push((name.to_string(), value.join("\n")));
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        } else {
            return Err(format!("invalid line {line:?}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(actions: bool) -> Gha<Vec<u8>> {
        Gha::new(Vec::new(), Files::default(), actions)
    }

    fn text(g: Gha<Vec<u8>>) -> String {
        String::from_utf8(g.into_inner()).unwrap()
    }

    #[test]
    fn escapes_data_and_properties() {
        assert_eq!(escape_data("50% a\r\nb"), "50%25 a%0D%0Ab");
        assert_eq!(escape_property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }

    #[test]
    fn error_with_title_is_one_line() {
        let mut g = capture(true);
        g.error("gate: p95", "p95 1.0 -> 2.0\n::set-output name=x::y");
        let t = text(g);
        assert_eq!(t.lines().count(), 1, "{t}");
        assert!(t.starts_with("::error title=gate%3A p95::p95 1.0 -> 2.0%0A::set-output"));
    }

    #[test]
    fn user_text_cannot_start_a_command() {
        let mut g = capture(true);
        g.info("title\n::add-mask::x\n  ::error::forged");
        let t = text(g);
        for line in t.lines() {
            assert!(!line.trim_start().starts_with("::"), "{line}");
        }
    }

    #[test]
    fn carriage_returns_and_encoded_newlines_cannot_start_a_command() {
        // `%0A` in user text stays literal inside a command's data (the runner would decode it
        // into a newline), and CR is escaped, not passed through as a line break.
        assert_eq!(escape_data("a%0A::add-mask::x"), "a%250A::add-mask::x");
        assert_eq!(escape_data("a\r::add-mask::x"), "a%0D::add-mask::x");
        assert_eq!(escape_property("t%0D\r,x:y"), "t%250D%0D%2Cx%3Ay");
        let mut g = capture(true);
        g.info("title\r::add-mask::x\r\n\r::error::forged\n%0A::warning::y");
        let t = text(g);
        for line in t.split(['\n', '\r']) {
            assert!(!line.trim_start().starts_with("::"), "{line:?} in {t:?}");
        }
    }

    #[test]
    fn untrusted_block_is_fenced_by_stop_commands() {
        let mut g = capture(true);
        g.untrusted_block("::error::x\nok");
        let t = text(g);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("::stop-commands::"));
        let token = lines[0].trim_start_matches("::stop-commands::");
        assert_eq!(lines.last().unwrap(), &format!("::{token}::"));
        assert!(
            lines[1..lines.len() - 1]
                .iter()
                .all(|l| !l.starts_with("::"))
        );
    }

    #[test]
    fn outputs_cannot_be_forged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut g = Gha::new(
            Vec::new(),
            Files {
                output: Some(path.clone()),
                summary: None,
            },
            true,
        );
        let hostile = "a\nverdict=pass\nEOF\nghadelimiter_x\nregression<<X\nfalse\nX";
        g.set_output("title", hostile).unwrap();
        g.set_output("verdict", "fail").unwrap();
        let parsed = parse_output_file(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            parsed,
            vec![
                ("title".to_string(), hostile.to_string()),
                ("verdict".to_string(), "fail".to_string())
            ]
        );
        assert!(g.set_output("bad name", "x").is_err());
        assert!(g.set_output("a\nb", "x").is_err());
    }

    #[test]
    fn mask_emits_add_mask_and_redacts_later_output() {
        let mut g = capture(true);
        g.mask("s3cr3t-value-xyz");
        g.info("token is s3cr3t-value-xyz");
        let t = text(g);
        assert!(t.starts_with("::add-mask::s3cr3t-value-xyz\n"));
        assert!(t.contains("token is ***"));
        assert_eq!(t.matches("s3cr3t-value-xyz").count(), 1);
    }

    #[test]
    fn summary_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sum");
        let mut g = Gha::new(
            Vec::new(),
            Files {
                output: None,
                summary: Some(path.clone()),
            },
            true,
        );
        g.append_summary("# one").unwrap();
        g.append_summary("two\n").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "# one\ntwo\n");
    }
}

//! The load history kept on a data branch of the forge (`atlas-history` by default): on GitHub
//! a branch written through the Git database API, locally a directory. The branch holds the
//! history file ([`HISTORY_FILE`], the format of [`super::history::HistoryFile`]) and the trend
//! dashboard ([`DASHBOARD_FILE`]), both in the same commit, so GitHub Pages served from that
//! branch shows the page of the history it sits beside.
//!
//! Whatever is on the branch is input: a file that does not parse (hand-edited, or a branch
//! someone force-pushed with something else) is set aside with a note — read as an empty
//! history, and replaced on the next append (the old text stays in the branch's git history).

use std::sync::Mutex;

use anyhow::Context as _;

use super::history::{History, HistoryFile, StoredEntry, parse_history};
use super::summary::Summary;
use crate::provider::{BranchWrite, Forge};

/// The history file at the root of the data branch.
pub const HISTORY_FILE: &str = "history.json";
/// The dashboard page beside it (the name GitHub Pages serves at the site's root).
pub const DASHBOARD_FILE: &str = "index.html";

/// What an append did.
#[derive(Debug, Clone)]
pub struct Appended {
    pub write: BranchWrite,
    /// Entries the history holds now.
    pub entries: usize,
    /// What was set aside on the way (a history that did not parse).
    pub notes: Vec<String>,
}

/// The history on `branch`; an absent branch is an empty history, an unreadable file one with a
/// note saying so.
pub async fn read(forge: &dyn Forge, branch: &str) -> anyhow::Result<History> {
    let text = forge
        .read_branch_file(branch, HISTORY_FILE)
        .await
        .with_context(|| format!("cannot read the load history on {branch}"))?;
    let Some(text) = text else {
        return Ok(History {
            notes: vec![format!("no load history on {branch} yet")],
            ..History::default()
        });
    };
    Ok(parse_history(&text).unwrap_or_else(|e| History {
        notes: vec![format!(
            "the load history on {branch} does not parse ({e:#}): not used"
        )],
        ..History::default()
    }))
}

/// The stored file from the branch's current text: a text that is no history file becomes an
/// empty one, with a note.
fn current_file(branch: &str, text: Option<&str>, notes: &Mutex<Vec<String>>) -> HistoryFile {
    let Some(text) = text else {
        return HistoryFile::default();
    };
    match serde_json::from_str::<HistoryFile>(text) {
        Ok(f) => f,
        Err(e) => {
            if let Ok(mut n) = notes.lock() {
                n.push(format!(
                    "the load history on {branch} did not parse ({e}): started a new one (the old text stays in the branch's git history)"
                ));
            }
            HistoryFile::default()
        }
    }
}

/// Appends `summary`, measured at `commit`, to the history on `branch` (an entry for the same
/// commit is replaced; the oldest are folded away beyond `max_entries`), and writes the
/// dashboard `render` draws from the new history beside it, in the same commit.
pub async fn append(
    forge: &dyn Forge,
    branch: &str,
    summary: &Summary,
    commit: &str,
    max_entries: usize,
    render: &(dyn Fn(&History) -> String + Send + Sync),
) -> anyhow::Result<Appended> {
    let value = serde_json::to_value(summary).context("cannot serialise the summary")?;
    let recorded_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let notes = Mutex::new(Vec::new());
    let entries = Mutex::new(0usize);
    let short = commit.get(..7).unwrap_or(commit);
    let write = forge
        .update_branch(
            branch,
            HISTORY_FILE,
            &format!("atlas: load history of {short}"),
            &|current| {
                // Called again after a concurrent update: only the last reading's notes count.
                if let Ok(mut n) = notes.lock() {
                    n.clear();
                }
                let mut file = current_file(branch, current, &notes);
                file.append(
                    StoredEntry {
                        commit: commit.to_string(),
                        recorded_at: Some(recorded_at.clone()),
                        summary: value.clone(),
                    },
                    max_entries,
                );
                if let Ok(mut n) = entries.lock() {
                    *n = file.entries.len();
                }
                let text =
                    serde_json::to_string_pretty(&file).context("cannot serialise the history")?;
                let history = parse_history(&text)?;
                Ok(vec![
                    (HISTORY_FILE.to_string(), text + "\n"),
                    (DASHBOARD_FILE.to_string(), render(&history)),
                ])
            },
        )
        .await
        .with_context(|| format!("cannot append to the load history on {branch}"))?;
    Ok(Appended {
        write,
        entries: entries.into_inner().unwrap_or_default(),
        notes: notes.into_inner().unwrap_or_default(),
    })
}

//! The runner's context variables (`GITHUB_*`), read from an iterator so tests stay hermetic.

use std::path::PathBuf;

use crate::event::Context;

#[derive(Debug, Clone, Default)]
pub struct GithubEnv {
    pub actions: bool,
    pub event_name: Option<String>,
    pub event_path: Option<PathBuf>,
    pub sha: Option<String>,
    pub git_ref: Option<String>,
    pub repository: Option<String>,
    pub api_url: String,
    pub server_url: String,
    pub run_id: Option<String>,
    pub run_attempt: Option<String>,
    pub workspace: Option<PathBuf>,
}

impl GithubEnv {
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        let mut g = GithubEnv {
            api_url: "https://api.github.com".into(),
            server_url: "https://github.com".into(),
            ..Default::default()
        };
        for (k, v) in vars {
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "GITHUB_ACTIONS" => g.actions = v == "true",
                "GITHUB_EVENT_NAME" => g.event_name = Some(v),
                "GITHUB_EVENT_PATH" => g.event_path = Some(PathBuf::from(v)),
                "GITHUB_SHA" => g.sha = Some(v),
                "GITHUB_REF" => g.git_ref = Some(v),
                "GITHUB_REPOSITORY" => g.repository = Some(v),
                "GITHUB_API_URL" => g.api_url = v.trim_end_matches('/').to_string(),
                "GITHUB_SERVER_URL" => g.server_url = v.trim_end_matches('/').to_string(),
                "GITHUB_RUN_ID" => g.run_id = Some(v),
                "GITHUB_RUN_ATTEMPT" => g.run_attempt = Some(v),
                "GITHUB_WORKSPACE" => g.workspace = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        g
    }

    pub fn context(&self) -> Context {
        Context {
            sha: self.sha.clone().unwrap_or_default(),
            git_ref: self.git_ref.clone().unwrap_or_default(),
        }
    }

    /// Link to this workflow run's logs.
    pub fn run_url(&self) -> Option<String> {
        Some(format!(
            "{}/{}/actions/runs/{}",
            self.server_url,
            self.repository.as_ref()?,
            self.run_id.as_ref()?
        ))
    }
}

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

impl GithubEnv {
    /// Where GitHub Pages serves `owner/name`'s site on this run's GitHub: `https://<owner>.github.io/<name>/`
    /// on github.com (the `<owner>.github.io` repository is the root site), and on GitHub
    /// Enterprise Server `https://pages.<host>/<owner>/<name>/`, the address Pages has with
    /// subdomain isolation, which GitHub tells every instance that serves Pages to enable
    /// (without it the site is at `https://<host>/pages/<owner>/<name>/`: set
    /// `[baseline] pages_url`). `None` on GHE.com (`*.ghe.com`), which has no Pages, and for a
    /// repository that is not `owner/name`.
    pub fn pages_url(&self, repository: &str) -> Option<String> {
        let (owner, name) = repository.split_once('/')?;
        if owner.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        let server = url::Url::parse(&self.server_url).ok()?;
        let host = server.host_str()?.to_ascii_lowercase();
        if host == "github.com" {
            let owner = owner.to_ascii_lowercase();
            return Some(
                if name.eq_ignore_ascii_case(&format!("{owner}.github.io")) {
                    format!("https://{owner}.github.io/")
                } else {
                    format!("https://{owner}.github.io/{name}/")
                },
            );
        }
        if host.ends_with(".ghe.com") {
            return None;
        }
        let port = server.port().map(|p| format!(":{p}")).unwrap_or_default();
        Some(format!(
            "{}://pages.{host}{port}/{owner}/{name}/",
            server.scheme()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(server: &str) -> GithubEnv {
        GithubEnv::from_vars([("GITHUB_SERVER_URL".to_string(), server.to_string())])
    }

    #[test]
    fn the_pages_url_follows_the_github_the_run_is_on() {
        let dotcom = GithubEnv::from_vars(Vec::new());
        assert_eq!(
            dotcom.pages_url("Octo-Org/kitchen").as_deref(),
            Some("https://octo-org.github.io/kitchen/")
        );
        assert_eq!(
            dotcom.pages_url("octo-org/Octo-Org.github.io").as_deref(),
            Some("https://octo-org.github.io/")
        );
        // GitHub Enterprise Server: the Pages subdomain of the instance, scheme and port kept.
        assert_eq!(
            on("https://github.acme.example/")
                .pages_url("web/kitchen")
                .as_deref(),
            Some("https://pages.github.acme.example/web/kitchen/")
        );
        assert_eq!(
            on("http://ghes.internal:8080")
                .pages_url("web/kitchen")
                .as_deref(),
            Some("http://pages.ghes.internal:8080/web/kitchen/")
        );
        // GHE.com has no Pages; a malformed repository has no site.
        assert_eq!(on("https://octo.ghe.com").pages_url("web/kitchen"), None);
        assert_eq!(dotcom.pages_url("kitchen"), None);
        assert_eq!(dotcom.pages_url("a/b/c"), None);
        assert_eq!(on("not a url").pages_url("web/kitchen"), None);
    }
}

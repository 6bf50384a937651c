//! The app as a local process: the platform provider of the local family.
//!
//! `[local] command` runs through `sh -c` in its own process group (so destroying it kills the
//! whole tree), with a cleared environment: `PATH`, `HOME`, `PORT` (a free loopback port, the
//! previous one when it is still free so the preview URL is stable across updates),
//! `DATABASE_URL`, `ATLAS_COMMIT_SHA`, `ATLAS_PREVIEW=1` and only the declared preview secrets.
//! Its output goes to `<state_dir>/apps/<app>.log`. What runs is recorded in
//! `<state_dir>/apps/<app>.json` (pid, process start time, port, PR, SHA, times) the moment it
//! is spawned, so `down` works from a fresh process and an interrupted run can be cleaned up.
//! A recorded pid whose process is gone (or is now another process) is treated as stale.
//!
//! Per-commit URLs: before an update, the gate in front asks to keep the running version
//! ([`Platform::keep_previous`]): its state is renamed `<app>--c-<sha7>` and it keeps running on
//! its port. Kept versions are not listed as apps of their own; destroying the app destroys them.
//! When the deploy brings the kept commit's own secrets ([`DeployRequest::outgoing`]: its
//! `DATABASE_URL` on the copy frozen for it), the kept version is started again with them, on
//! the same port, from the plain environment it was recorded with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::provider::{AppDeployment, Deleted, DeployRequest, Kept, Owned, Platform};
use crate::secret;

/// `<state_dir>/apps/<app>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppState {
    pub app: String,
    pub pid: i32,
    /// `/proc/<pid>/stat` start time, to tell our process from a later one with the same pid.
    pub start_time: Option<u64>,
    pub port: u16,
    pub pr: Option<u64>,
    pub sha: String,
    pub command: String,
    pub log: PathBuf,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the preview expires unless renewed (older state files have none).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Who pinned the preview (kept across deploys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_by: Option<String>,
    /// The plain environment it was started with (no secret), so that a kept version can be
    /// started again on data of its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// Between an app's name and a kept commit's in the name of a kept version.
const KEPT_INFIX: &str = "--c-";

/// The local process platform.
pub struct LocalProcess {
    dir: PathBuf,
    command: String,
    workdir: PathBuf,
}

/// Linux process start time (clock ticks since boot), `None` when the process does not exist.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 is the state; a zombie is as good as gone.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Reaps `pid` if it is our child (no-op otherwise), so it does not linger as a zombie.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on any pid is safe; ECHILD for non-children is ignored.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

impl AppState {
    /// True when the recorded process is still the one we started.
    pub fn alive(&self) -> bool {
        reap(self.pid);
        match (start_time(self.pid), self.start_time) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Last `n` lines of a log file, redacted.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    secret::redact(&lines[lines.len().saturating_sub(n)..].join("\n"))
}

impl LocalProcess {
    /// `command` runs in `workdir`; state lives in `<state_dir>/apps`.
    pub fn new(state_dir: &Path, command: &str, workdir: &Path) -> LocalProcess {
        LocalProcess {
            dir: state_dir.join("apps"),
            command: command.to_string(),
            workdir: workdir.to_path_buf(),
        }
    }

    /// The name a kept version of `app` at commit `sha` is recorded under.
    pub fn kept_name(app: &str, sha: &str) -> String {
        format!("{app}{KEPT_INFIX}{}", sha.get(..7).unwrap_or(sha))
    }

    /// The recorded kept versions of `app` (alive or not), newest first.
    fn kept_states(&self, app: &str) -> Vec<AppState> {
        let prefix = format!("{app}{KEPT_INFIX}");
        let mut out: Vec<AppState> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
                name.starts_with(&prefix).then_some(name)
            })
            .filter_map(|n| self.state(&n))
            .collect();
        out.sort_by_key(|st| std::cmp::Reverse(st.updated_at));
        out
    }

    /// Kills a recorded app and removes its state file `<name>.json`; whether it was alive.
    async fn remove(&self, name: &str, st: &AppState) -> anyhow::Result<bool> {
        let alive = st.alive();
        Self::kill(st).await;
        let path = self.state_path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
        Ok(alive)
    }

    fn state_path(&self, app: &str) -> PathBuf {
        self.dir.join(format!("{app}.json"))
    }

    /// The recorded state of an app, if any.
    pub fn state(&self, app: &str) -> Option<AppState> {
        std::fs::read_to_string(self.state_path(app))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    fn write_state(&self, st: &AppState) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.state_path(&st.app);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(st)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Kills the process group of a recorded app: SIGTERM, then SIGKILL after 5 s.
    async fn kill(st: &AppState) {
        // The leader may be gone while its children still run in the group.
        if !st.alive() && !group_alive(st.pid) {
            return;
        }
        // SAFETY: signalling a process group we created; failure (already gone) is harmless.
        unsafe {
            libc::kill(-st.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            reap(st.pid);
            if !group_alive(st.pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-st.pid, libc::SIGKILL);
        }
        for _ in 0..40 {
            reap(st.pid);
            if !group_alive(st.pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spawns the command once; returns the child and its recorded state.
    fn spawn(
        &self,
        req: &DeployRequest,
        port: u16,
        created_at: DateTime<Utc>,
    ) -> anyhow::Result<(std::process::Child, AppState)> {
        use std::os::unix::process::CommandExt as _;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let log = self.dir.join(format!("{}.log", req.app));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open the app log {}", log.display()))?;
        use std::io::Write as _;
        writeln!(
            f,
            "--- atlas: starting {} at {} (commit {}, port {port})",
            req.app,
            Utc::now().to_rfc3339(),
            req.sha
        )?;
        let mut cmd = crate::shell::sh_daemon(&self.command);
        cmd.current_dir(&self.workdir)
            .stdout(f.try_clone()?)
            .stderr(f)
            .process_group(0);
        for (k, v) in &req.env {
            cmd.env(k, v);
        }
        for (k, v) in &req.secrets {
            cmd.env(k, v.expose());
        }
        cmd.env("PORT", port.to_string());
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run `sh -c {}`", self.command))?;
        let pid = i32::try_from(child.id()).map_err(|_| anyhow!("pid out of range"))?;
        let now = Utc::now();
        let st = AppState {
            app: req.app.clone(),
            pid,
            start_time: start_time(pid),
            port,
            pr: req.pr,
            sha: req.sha.clone(),
            command: self.command.clone(),
            log,
            created_at,
            updated_at: now,
            expires_at: req.expires_at,
            // A pin is the label's, not the commit's: a push keeps it.
            pinned_by: self.state(&req.app).and_then(|s| s.pinned_by),
            env: req.env.clone(),
        };
        self.write_state(&st)?;
        Ok((child, st))
    }

    /// Waits for a 2xx on the health path; fails when the process exits or time runs out.
    async fn wait_ready(
        child: &mut std::process::Child,
        st: &AppState,
        health_path: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}{health_path}", st.port);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()?;
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the app exited ({status}) before it became ready; last log lines ({}):\n{}",
                    st.log.display(),
                    log_tail(&st.log, 20)
                );
            }
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("{health_path} answered {}", r.status().as_u16()),
                Err(e) if e.is_connect() => last = "connection refused".into(),
                Err(e) => last = format!("{e}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "the app was not ready within {} ({last}; raise [app] readiness_timeout if it \
                     needs longer); last log lines ({}):\n{}",
                    humantime::format_duration(timeout),
                    st.log.display(),
                    log_tail(&st.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl LocalProcess {
    /// The running version `st` of `req.app` stopped and started again as `name` on the same
    /// port, with its own plain environment and `o`'s secrets over the request's.
    async fn restart_kept(
        &self,
        req: &DeployRequest,
        st: &AppState,
        name: &str,
        o: &crate::provider::Outgoing,
    ) -> anyhow::Result<()> {
        let mut secrets = req.secrets.clone();
        secrets.extend(o.secrets.clone());
        let kept_req = DeployRequest {
            app: name.to_string(),
            sha: st.sha.clone(),
            pr: st.pr,
            env: st.env.clone(),
            secrets,
            expires_at: st.expires_at,
            outgoing: None,
            ..req.clone()
        };
        Self::kill(st).await;
        let path = self.state_path(&req.app);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        let (mut child, kept) = self.spawn(&kept_req, st.port, st.created_at)?;
        if let Err(e) =
            Self::wait_ready(&mut child, &kept, &req.health_path, req.readiness_timeout).await
        {
            let _ = self.remove(name, &kept).await;
            return Err(e.context(format!(
                "the kept version of commit {} did not come up again on its own data",
                st.sha
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Platform for LocalProcess {
    fn kind(&self) -> &'static str {
        "local-process"
    }

    async fn deploy(&self, req: &DeployRequest) -> anyhow::Result<AppDeployment> {
        let previous = self.state(&req.app);
        let mut created = true;
        let mut created_at = Utc::now();
        let mut want_port = None;
        if let Some(prev) = &previous {
            // An update replaces the process in place and keeps its URL when it can.
            if prev.alive() {
                created = false;
                created_at = prev.created_at;
                Self::kill(prev).await;
            }
            want_port = Some(prev.port);
        }
        let mut last_err = None;
        for attempt in 0..3 {
            // Reuse the previous port when it is free (a stable URL); otherwise a fresh one.
            let port = match want_port.take() {
                Some(p)
                    if attempt == 0 && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() =>
                {
                    p
                }
                _ => super::free_port()?,
            };
            let (mut child, st) = self.spawn(req, port, created_at)?;
            match Self::wait_ready(&mut child, &st, &req.health_path, req.readiness_timeout).await {
                Ok(()) => {
                    return Ok(AppDeployment {
                        app: req.app.clone(),
                        url: format!("http://127.0.0.1:{port}"),
                        instances: vec![st.pid.to_string()],
                        logs: Some(st.log.display().to_string()),
                        created,
                        // A local process does not sleep: it runs until the preview goes.
                        sleep: None,
                        wake_ms: None,
                        commits: Vec::new(),
                    });
                }
                Err(e) => {
                    Self::kill(&st).await;
                    let _ = std::fs::remove_file(self.state_path(&req.app));
                    // Someone took the port between our check and the app's bind: try another.
                    let taken = log_tail(&st.log, 5)
                        .to_ascii_lowercase()
                        .contains("address already in use");
                    last_err = Some(e);
                    if !taken {
                        break;
                    }
                }
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow!("the app did not start"))
            .context(format!("local app {} did not become ready", req.app)))
    }

    async fn destroy(&self, app: &str) -> anyhow::Result<Deleted> {
        // The app's kept versions go with it (a kept version's own name removes just that one).
        let mut alive = false;
        if !app.contains(KEPT_INFIX) {
            for k in self.kept_states(app) {
                alive |= self.remove(&k.app, &k).await?;
            }
        }
        let Some(st) = self.state(app) else {
            return Ok(if alive {
                Deleted::Removed
            } else {
                Deleted::AlreadyGone
            });
        };
        alive |= self.remove(app, &st).await?;
        Ok(if alive {
            Deleted::Removed
        } else {
            Deleted::AlreadyGone
        })
    }

    async fn keep_previous(&self, req: &DeployRequest) -> anyhow::Result<Option<Kept>> {
        let app = req.app.as_str();
        let Some(mut st) = self.state(app) else {
            return Ok(None);
        };
        if st.sha == req.sha || !st.alive() || st.sha.is_empty() {
            return Ok(None);
        }
        let name = Self::kept_name(app, &st.sha);
        // The same commit kept before (a push that went back and forth): the older copy goes.
        if let Some(old) = self.state(&name) {
            self.remove(&name, &old).await?;
        }
        let kept = Kept {
            name: name.clone(),
            sha: st.sha.clone(),
            upstream: format!("127.0.0.1:{}", st.port),
        };
        let own = req.outgoing.as_ref().filter(|o| o.sha == st.sha);
        // A state file from before the environment was recorded cannot be started again.
        if let Some(o) = own.filter(|_| !st.env.is_empty()) {
            self.restart_kept(req, &st, &name, o).await?;
            return Ok(Some(kept));
        }
        st.app = name;
        st.updated_at = Utc::now();
        self.write_state(&st)?;
        let path = self.state_path(app);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        Ok(Some(kept))
    }

    async fn current_commit(&self, app: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .state(app)
            .filter(|st| st.alive() && !st.sha.is_empty())
            .map(|st| st.sha))
    }

    async fn kept(&self, app: &str) -> anyhow::Result<Vec<Kept>> {
        Ok(self
            .kept_states(app)
            .into_iter()
            .filter(AppState::alive)
            .map(|st| Kept {
                name: st.app.clone(),
                sha: st.sha.clone(),
                upstream: format!("127.0.0.1:{}", st.port),
            })
            .collect())
    }

    async fn set_expiry(&self, app: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        let mut st = self
            .state(app)
            .with_context(|| format!("local: no preview app {app} is recorded"))?;
        st.expires_at = Some(at);
        self.write_state(&st)
    }

    async fn set_pin(&self, app: &str, by: Option<&str>) -> anyhow::Result<()> {
        let mut st = self
            .state(app)
            .with_context(|| format!("local: no preview app {app} is recorded"))?;
        st.pinned_by = by.map(str::to_string);
        self.write_state(&st)
    }

    async fn list_apps(&self) -> anyhow::Result<Vec<Owned>> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Some(st) = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| serde_json::from_str::<AppState>(&t).ok())
            else {
                continue;
            };
            if let Some(pr) = st.pr
                && !st.app.contains(KEPT_INFIX)
            {
                out.push(Owned {
                    name: st.app,
                    id: st.pid.to_string(),
                    pr,
                    created_at: Some(st.created_at),
                    expires_at: st.expires_at,
                    pinned_by: st.pinned_by.filter(|p| !p.is_empty()),
                });
            }
        }
        Ok(out)
    }
}

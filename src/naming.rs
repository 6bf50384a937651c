//! PR -> resource names. Every name is ASCII, DNS-safe (`[a-z0-9-]`, no leading/trailing `-`),
//! at most 63 characters, and always contains the PR number, so ownership can be read back from
//! a name. User text (branch names, titles) never enters a name.

/// Max length of a DNS label (Fly app names become `<name>.fly.dev`).
pub const MAX_LEN: usize = 63;

/// Lowercases and replaces every run of characters outside `[a-z0-9]` with one `-`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
    }
    out.trim_end_matches('-').to_string()
}

/// A short stable hash of the repository (FNV-1a, 6 hex chars), so two repositories with the same
/// app prefix never collide on Fly's global app namespace.
pub fn repo_hash(repository: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in repository.to_ascii_lowercase().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:06x}", h & 0xff_ffff)
}

/// The prefix every resource of this repository starts with: `<slug(prefix or repo name)>-<hash>`.
pub fn prefix(app_name: Option<&str>, repository: &str) -> String {
    let base = app_name
        .map(slug)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| slug(repository.rsplit('/').next().unwrap_or(repository)));
    let base = if base.is_empty() {
        "atlas".to_string()
    } else {
        base
    };
    // "-pr-" + up to 20 digits + "-" + 6 hash chars leaves room for the base.
    let room = MAX_LEN - 4 - 20 - 1 - 6 - 1;
    let base: String = base.chars().take(room).collect();
    format!("{}-{}", base.trim_end_matches('-'), repo_hash(repository))
}

/// The Fly app (and local process) name of a PR preview: `<prefix>-pr-<n>`.
pub fn preview_app(prefix: &str, pr: u64) -> String {
    let name = format!("{prefix}-pr-{pr}");
    debug_assert!(name.len() <= MAX_LEN);
    name
}

/// The Neon branch name of a PR preview. Neon allows `/`; it groups previews in the console.
pub fn preview_branch(pr: u64) -> String {
    format!("preview/pr-{pr}")
}

/// The local PostgreSQL database of a PR preview (an identifier, no quoting needed).
pub fn local_database(pr: u64) -> String {
    format!("atlas_pr_{pr}")
}

/// A commit as URLs and the gate name it: 7 to 40 lowercase hex digits.
pub fn is_sha(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The seven-character name of a commit in commit URLs and cookies.
pub fn sha7(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Reads the PR number back from a name made by this module, if it is one of ours.
pub fn pr_from_app(prefix: &str, name: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_prefix("-pr-")?
        .parse()
        .ok()
}

/// The PR of a preview branch or of one of its kept commits' branches
/// ([`commit_branch`]).
pub fn pr_from_branch(name: &str) -> Option<u64> {
    let base = split_commit(name).map_or(name, |(base, _)| base);
    base.strip_prefix("preview/pr-")?.parse().ok()
}

/// Between a preview's branch (Neon) and a kept commit's, and the same locally, where a
/// database name is an identifier.
const COMMIT_BRANCH_INFIX: &str = "/c-";
const COMMIT_DATABASE_INFIX: &str = "_c_";

/// The branch holding the data a kept commit ran against, frozen for it before a later push's
/// migrations: `preview/pr-N/c-<sha7>` on Neon, `atlas_pr_N_c_<sha7>` locally (`base` is the
/// preview's branch or database).
pub fn commit_branch(base: &str, sha: &str) -> String {
    let infix = if base.contains('/') {
        COMMIT_BRANCH_INFIX
    } else {
        COMMIT_DATABASE_INFIX
    };
    format!("{base}{infix}{}", sha7(sha))
}

/// A kept commit's branch split into its preview's branch and the commit (seven hex digits);
/// `None` for any other name.
pub fn split_commit(name: &str) -> Option<(&str, &str)> {
    let (base, sha) = name
        .rsplit_once(COMMIT_BRANCH_INFIX)
        .or_else(|| name.rsplit_once(COMMIT_DATABASE_INFIX))?;
    (sha.len() == 7 && is_sha(sha)).then_some((base, sha))
}

/// The PR of a local preview database or of one of its kept commits' copies.
pub fn pr_from_local_database(name: &str) -> Option<u64> {
    let base = split_commit(name).map_or(name, |(base, _)| base);
    let pr: u64 = base.strip_prefix("atlas_pr_")?.parse().ok()?;
    (local_database(pr) == base).then_some(pr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_safe(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_LEN
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }

    #[test]
    fn names_are_dns_safe_and_carry_the_pr() {
        let hostile = [
            "Kitchen API",
            "ÜBER/weird__name!!",
            "",
            "-",
            "🚀🚀",
            "a".repeat(300).as_str(),
            "x\u{202e}y\u{200b}z",
            "{{ 7*7 }}",
        ]
        .map(str::to_string);
        for h in hostile {
            let p = prefix(Some(&h), "Octo-Org/Some.Repo");
            for pr in [1u64, 42, u64::MAX] {
                let n = preview_app(&p, pr);
                assert!(dns_safe(&n), "{n:?} from {h:?}");
                assert!(n.contains(&pr.to_string()));
                assert_eq!(pr_from_app(&p, &n), Some(pr));
            }
        }
        assert_eq!(pr_from_branch(&preview_branch(7)), Some(7));
        let sha = "abc1234def";
        let kept = commit_branch(&preview_branch(7), sha);
        assert_eq!(kept, "preview/pr-7/c-abc1234");
        assert_eq!(pr_from_branch(&kept), Some(7));
        assert_eq!(split_commit(&kept), Some(("preview/pr-7", "abc1234")));
        assert_eq!(split_commit(&preview_branch(7)), None);
        assert_eq!(pr_from_branch("preview/pr-7/c-zzz"), None);
        let local = commit_branch(&local_database(7), sha);
        assert_eq!(local, "atlas_pr_7_c_abc1234");
        assert_eq!(pr_from_local_database(&local), Some(7));
        assert_eq!(pr_from_local_database(&local_database(7)), Some(7));
        assert_eq!(pr_from_local_database("atlas_pr_07"), None);
        assert_eq!(pr_from_local_database("atlas_pr_7_c_ABC1234"), None);
        assert_eq!(pr_from_app("kitchen-abc123", "other-pr-1"), None);
    }

    #[test]
    fn prefix_differs_by_repository() {
        assert_ne!(prefix(Some("api"), "a/api"), prefix(Some("api"), "b/api"));
        assert_eq!(
            prefix(None, "Octo/Kitchen"),
            format!("kitchen-{}", repo_hash("Octo/Kitchen"))
        );
    }
}

#![allow(dead_code)]
//! The one project-directory builder (what a repository checkout is to `atlas`): a temporary
//! directory under /tmp that the `postgres` account can reach (the local cluster runs as it
//! when the tests run as root), with its `atlas.toml` when one is given.

use std::path::Path;

/// An empty project directory named `prefix...`.
pub fn dir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A project directory with `toml` as its atlas.toml.
pub fn with_config(prefix: &str, toml: &str) -> tempfile::TempDir {
    let d = dir(prefix);
    write_config(d.path(), toml);
    d
}

/// Writes (or replaces) the project's atlas.toml.
pub fn write_config(dir: &Path, toml: &str) {
    std::fs::write(dir.join("atlas.toml"), toml).unwrap();
}

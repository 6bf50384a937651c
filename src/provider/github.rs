//! GitHub via octocrab: sticky comment, deployments, PR state. (Issue 6.)

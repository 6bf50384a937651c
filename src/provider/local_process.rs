//! The app as a local process on a free port. (Issue 3.)

//! Comment and summary written to files and stdout when not on GitHub. (Issue 3.)

//! One retry policy for every provider (DESIGN.md section 6). (Issue 5.)

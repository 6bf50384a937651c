//! Local fleet (soon).

//! dispatch: not built yet.

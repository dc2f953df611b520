//! Engram helpers (being written).

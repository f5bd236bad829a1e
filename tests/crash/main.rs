//! Crash-and-restart properties (filled in below).

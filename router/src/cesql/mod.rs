//! CloudEvents SQL (CESQL v1).

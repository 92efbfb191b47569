//! STUB (being written): the postgres target end to end.

//! STUB (being written): the elasticsearch target end to end.

//! STUB (being written): the s3 target end to end.
